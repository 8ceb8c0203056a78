# Tables and figures of every run; each output is flagged for `snakemake --report`.


rule tables_and_figures:
    input:
        metrics=expand(rules.evaluate.output.metrics, zip, **ofg_plan.wildcard_lists(RUNS)),
        samples=expand(rules.evaluate.output.sample, zip, **ofg_plan.wildcard_lists(RUNS)),
        runs=expand(rules.train.output.summary, zip, **ofg_plan.wildcard_lists(RUNS)),
        benchmarks=[str(LAYOUT.benchmark("train", *run.key.parts())) for run in RUNS],
        refinement=expand(rules.refinement.output.curves, dataset=config["refinement"]["datasets"]),
        baselines=expand(rules.baselines.output.rows, dataset=config["baselines"]["datasets"]),
        timing=[str(LAYOUT.timing(d, m)) for d, m in ofg_stages.timing_pairs(config)],
    output:
        reported(OUTPUTS),
    log:
        notebook=LAYOUT.notebook("report"),
    benchmark:
        LAYOUT.benchmark("report", "tables_and_figures")
    params:
        parameters=parameters({"plan": PLAN, "progress": False}),
    threads: config["threads"]["report"]
    resources:
        machine_cores=machine_cores,
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        PAPERMILL + f" {notebook('report')} {{log.notebook}} -y {{params.parameters:q}}"
