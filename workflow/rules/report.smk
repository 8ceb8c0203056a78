# Tables and figures of every run; each output is flagged for `snakemake --report`.

rule tables_and_figures:
    input:
        metrics=[str(wf.metrics_path(config, run)) for run in RUNS],
        runs=[f"{R}/runs/{r.dataset}/{r.model}/{r.run}/summary.json" for r in RUNS],
        benchmarks=[f"{R}/benchmarks/train/{r.dataset}/{r.model}/{r.run}.tsv" for r in RUNS],
        refinement=[f"{R}/refinement/{d}.csv" for d in config["refinement"]["datasets"]],
    output:
        reported(REPORT_OUTPUTS),
    log:
        notebook=f"{R}/notebooks/05_tables_figures.ipynb",
    params:
        parameters=parameters({"plan": PLAN, "progress": False}),
    threads: config["threads"]["report"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {NOTEBOOKS}/05_tables_figures.ipynb {{log.notebook}} -y {{params.parameters:q}}"
