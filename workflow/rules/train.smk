# Training and evaluation. Only summary.json (written last by the trainer) is a declared output, so
# Snakemake never deletes a run folder's checkpoints: after a kill the job re-runs and the trainer
# resumes from checkpoints/last.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        summary=f"{R}/runs/{{dataset}}/{{model}}/{{run}}/summary.json",
    log:
        notebook=f"{R}/notebooks/02_train/{{dataset}}/{{model}}/{{run}}.ipynb",
    benchmark:
        f"{R}/benchmarks/train/{{dataset}}/{{model}}/{{run}}.tsv"
    params:
        parameters=lambda wc: parameters(
            {
                "run_config": wf.run_config(config, as_run(wc)),
                "out_dir": str(wf.run_dir(config, as_run(wc))),
                "image_size": config["datasets"][wc.dataset].get("image_size"),
                "progress": False,
            }
        ),
    threads: config["threads"]["train"]
    resources:
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=24 * 60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {NOTEBOOKS}/02_train.ipynb {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"


rule evaluate:
    input:
        summary=f"{R}/runs/{{dataset}}/{{model}}/{{run}}/summary.json",
    output:
        metrics=f"{R}/metrics/{{dataset}}/{{model}}/{{run}}.csv",
    log:
        notebook=f"{R}/notebooks/03_evaluate/{{dataset}}/{{model}}/{{run}}.ipynb",
    benchmark:
        f"{R}/benchmarks/evaluate/{{dataset}}/{{model}}/{{run}}.tsv"
    params:
        parameters=lambda wc: parameters(wf.evaluate_parameters(config, as_run(wc))),
    threads: config["threads"]["evaluate"]
    resources:
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        PAPERMILL + f" {NOTEBOOKS}/03_evaluate.ipynb {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
