# The optimiser-refinement experiment (paper Fig. 2). The self-training comparison and the step
# ablation are training runs (rule train); ofg.plan.training_runs lists them without duplicates.


rule refinement:
    input:
        data=lambda wc: data_input(wc.dataset),
    output:
        curves=LAYOUT.refinement("{dataset}"),
    log:
        notebook=LAYOUT.notebook("refinement", "{dataset}"),
    benchmark:
        LAYOUT.benchmark("refinement", "{dataset}")
    params:
        parameters=lambda wc: parameters(ofg_plan.refinement_parameters(config, wc.dataset)),
    threads: config["threads"]["refinement"]
    resources:
        machine_cores=machine_cores,
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('refinement')} {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
