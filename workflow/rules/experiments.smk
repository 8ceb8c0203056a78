# The optimiser-refinement experiment (paper Fig. 2). The self-training comparison and the step
# ablation are training runs (rule train); ofg.workflow.training_runs lists them without duplicates.


rule refinement:
    input:
        data=lambda wc: data_input(wc.dataset),
    output:
        curves=f"{R}/refinement/{{dataset}}.csv",
    log:
        notebook=f"{R}/notebooks/04_refinement/{{dataset}}.ipynb",
    benchmark:
        f"{R}/benchmarks/refinement/{{dataset}}.tsv"
    params:
        parameters=lambda wc: parameters(wf.refinement_parameters(config, wc.dataset)),
    threads: config["threads"]["refinement"]
    resources:
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        PAPERMILL + f" {NOTEBOOKS}/04_refinement.ipynb {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
