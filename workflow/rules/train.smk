# Training and evaluation. Only summary.json (written last by the trainer) is a declared output, so
# Snakemake never deletes a run folder's checkpoints: after a kill the job re-runs and the trainer
# resumes from checkpoints/last.pt.


rule train:
    input:
        unpack(train_inputs),
    output:
        summary=LAYOUT.run(WILDCARDS).summary,
    log:
        notebook=LAYOUT.notebook("train", *WILDCARDS.parts()),
    benchmark:
        LAYOUT.benchmark("train", *WILDCARDS.parts())
    params:
        parameters=lambda wc: parameters(ofg_stages.train_parameters(config, run_of(wc))),
    threads: config["threads"]["train"]
    resources:
        machine_cores=machine_cores,
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=24 * 60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('train')} {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"


rule evaluate:
    input:
        summary=rules.train.output.summary,
    output:
        metrics=LAYOUT.metrics(WILDCARDS),
        sample=LAYOUT.sample(WILDCARDS),
    log:
        notebook=LAYOUT.notebook("evaluate", *WILDCARDS.parts()),
    benchmark:
        LAYOUT.benchmark("evaluate", *WILDCARDS.parts())
    params:
        parameters=lambda wc: parameters(ofg_stages.evaluate_parameters(config, run_of(wc))),
    threads: config["threads"]["evaluate"]
    resources:
        machine_cores=machine_cores,
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('evaluate')} {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
