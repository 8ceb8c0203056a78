# Setup of the robustness experiment (rules: robustness.smk): its plan (ofg.robustness), the variants that
# train in their own tree, each validated as a workflow config, and the functions of its rules.
from ofg import robustness as ofg_robustness


try:
    ROBUSTNESS_PLAN = ofg_robustness.report_plan(config)
    VARIANTS = ofg_robustness.trained(config)
except ValueError as error:
    raise WorkflowError(f"Invalid robustness config: {error}") from None
for variant_name, variant_config in VARIANTS.items():  # the merged config of each variant, as the workflow's own
    try:
        validate(variant_config, os.path.join(workflow.basedir, "config", "schema.yaml"))
    except WorkflowError as error:
        raise WorkflowError(f"Invalid robustness config: variant {variant_name}'s merged config: {error}") from None
VARIANT = LAYOUT.robustness("{variant}")


def reported_robustness(robustness_plan):
    """The robustness report's outputs, the CSV table and PNG figures flagged for the HTML report."""
    flagged = []
    for setting in robustness_plan["settings"]:
        for figure in setting["figures"]:
            flagged += [report(path, caption=f"{CAPTIONS}/figure_robustness_gap.rst", category="Robustness",
                               subcategory=setting["name"]) if path.endswith(".png") else path
                        for path in figure["paths"]]
    table = [report(path, caption=f"{CAPTIONS}/table_robustness.rst", category="Robustness")
             if path.endswith(".csv") else path for path in robustness_plan["table"]]
    return table + flagged


wildcard_constraints:
    variant=alternatives(VARIANTS),


def variant_run(wildcards):
    """The run of variant ``wildcards.variant``'s plan behind a job's wildcards."""
    key = (wildcards.dataset, wildcards.model, wildcards.run, wildcards.seed)
    return ofg_plan.find_run(VARIANTS[wildcards.variant], key)


def variant_train_inputs(wildcards):
    """The cohort manifest the variant's run reads (the default's or its own) and, for self-training, the teacher."""
    variant_config, run = VARIANTS[wildcards.variant], variant_run(wildcards)
    inputs = {"data": [str(ofg_plan.layout(variant_config).manifest(run.dataset))] if run.dataset in EMBEDDED else []}
    if run.method in TEACHER_METHODS:
        inputs["teacher"] = str(ofg_plan.layout(variant_config).run(run.teacher().key).summary)
    return inputs


def robustness_inputs(wildcards):
    """The robustness report's outputs; a clear error where the config declares no variant."""
    if not ROBUSTNESS_PLAN["settings"]:
        raise WorkflowError("the robustness experiment is not configured (config section robustness): run "
                            "snakemake robustness --configfile config/config.yaml config/robustness.yaml")
    return ofg_robustness.outputs(ROBUSTNESS_PLAN)
