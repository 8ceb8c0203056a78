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
        parameters=lambda wc: parameters(ofg_stages.refinement_parameters(config, wc.dataset)),
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


# Timing of the trained networks (ofg.timing), alone on the machine: it claims every core of the
# machine_cores pool, so no other local job runs beside it, and computes on the trainings' threads.
rule timing:
    input:
        timing_inputs,
    output:
        timing=LAYOUT.timing("{dataset}", "{model}"),
    log:
        notebook=LAYOUT.notebook("timing", "{dataset}", "{model}"),
    benchmark:
        LAYOUT.benchmark("timing", "{dataset}", "{model}")
    params:
        parameters=lambda wc: parameters(ofg_stages.timing_parameters(config, wc.dataset, wc.model)),
    threads: config["threads"]["train"]
    resources:
        machine_cores=lambda wildcards, threads: available_cores(),
        gpu=config["gpus_per_training"],
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('timing')} {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
