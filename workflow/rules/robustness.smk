# The robustness experiment (ofg.robustness; config section `robustness`, declared in config/robustness.yaml):
# the main comparison once as the default trained it (reused) and once per variant, one departure of the
# default reverted at a time. Target `robustness`, never part of `all`:
#   snakemake robustness --cores 4 --configfile config/config.yaml config/robustness.yaml
# A variant that trains lives in its own results tree, LAYOUT.robustness(variant): the rules below are the
# default's prepare/train/evaluate rules on that tree, with the variant's config (`{variant}` wildcard;
# robustness_common.smk).
use rule prepare_data as robustness_prepare_data with:
    output:
        manifest=VARIANT.manifest("{dataset}"),
    log:
        notebook=VARIANT.notebook("prepare", "{dataset}"),
    benchmark:
        VARIANT.benchmark("prepare", "{dataset}")
    params:
        parameters=lambda wc: parameters(ofg_stages.prepare_parameters(VARIANTS[wc.variant], wc.dataset)),


use rule train as robustness_train with:
    input:
        unpack(variant_train_inputs),
    output:
        summary=VARIANT.run(WILDCARDS).summary,
    log:
        notebook=VARIANT.notebook("train", *WILDCARDS.parts()),
    benchmark:
        VARIANT.benchmark("train", *WILDCARDS.parts())
    params:
        parameters=lambda wc: parameters(ofg_stages.train_parameters(VARIANTS[wc.variant], variant_run(wc))),


use rule evaluate as robustness_evaluate with:
    input:
        summary=VARIANT.run(WILDCARDS).summary,
    output:
        metrics=VARIANT.metrics(WILDCARDS),
        sample=VARIANT.sample(WILDCARDS),
    log:
        notebook=VARIANT.notebook("evaluate", *WILDCARDS.parts()),
    benchmark:
        VARIANT.benchmark("evaluate", *WILDCARDS.parts())
    params:
        parameters=lambda wc: parameters(ofg_stages.evaluate_parameters(VARIANTS[wc.variant], variant_run(wc))),


rule robustness:
    input:
        robustness_inputs,


if ROBUSTNESS_PLAN["settings"]:

    rule robustness_report:
        input:
            ofg_robustness.inputs(config),
        output:
            reported_robustness(ROBUSTNESS_PLAN),
        log:
            notebook=LAYOUT.notebook("robustness"),
        benchmark:
            LAYOUT.benchmark("robustness", "robustness_report")
        params:
            parameters=parameters({"plan": ROBUSTNESS_PLAN, "progress": False}),
        threads: config["threads"]["report"]
        resources:
            machine_cores=machine_cores,
            mem_mb=4000,
            runtime=60,
        conda:
            ENV
        shell:
            PAPERMILL + f" {notebook('robustness')} {{log.notebook}} -y {{params.parameters:q}}"
