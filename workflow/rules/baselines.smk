# Reference rows on the evaluation's test pairs: the zero field, the OFG optimiser alone and ANTs SyN.


rule baselines:
    input:
        data=lambda wc: data_input(wc.dataset),
    output:
        rows=LAYOUT.baselines("{dataset}"),
    log:
        notebook=LAYOUT.notebook("baselines", "{dataset}"),
    benchmark:
        LAYOUT.benchmark("baselines", "{dataset}")
    params:
        parameters=lambda wc: parameters(ofg_stages.baseline_parameters(config, wc.dataset)),
    threads: config["threads"]["evaluate"]
    resources:
        machine_cores=machine_cores,
        mem_mb=8000,
        runtime=240,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('baselines')} {{log.notebook}} -y {{params.parameters:q}} -p threads {{threads}}"
