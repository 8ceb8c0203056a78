# Embedded cohorts are prepared here; real datasets are read from the user's roots as they are.


rule prepare_data:
    output:
        manifest=LAYOUT.manifest("{dataset}"),
    log:
        notebook=LAYOUT.notebook("prepare", "{dataset}"),
    benchmark:
        LAYOUT.benchmark("prepare", "{dataset}")
    params:
        parameters=lambda wc: parameters(ofg_stages.prepare_parameters(config, wc.dataset)),
    threads: config["threads"]["prepare"]
    resources:
        machine_cores=machine_cores,
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('prepare')} {{log.notebook}} -y {{params.parameters:q}}"
