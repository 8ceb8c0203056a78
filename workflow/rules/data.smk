# Embedded cohorts are prepared here; real datasets are read from the user's roots as they are.


rule prepare_data:
    output:
        manifest=f"{R}/data/{{dataset}}/manifest.json",
    log:
        notebook=f"{R}/notebooks/01_prepare_data/{{dataset}}.ipynb",
    params:
        parameters=lambda wc: parameters(wf.prepare_parameters(config, wc.dataset)),
    threads: config["threads"]["prepare"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {NOTEBOOKS}/01_prepare_data.ipynb {{log.notebook}} -y {{params.parameters:q}}"
