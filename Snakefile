# The OFG workflow: prepare data -> train -> evaluate -> experiments -> tables, figures and report.
#   snakemake --cores 4                                   (default config: embedded data, CPU-sized)
#   snakemake --cores 2 --configfile config/tiny.yaml     (CI end to end)
#   snakemake --workflow-profile profiles/slurm --configfile my_paper.yaml
# Every rule runs one papermill notebook of notebooks/; the executed notebook is the rule's log.
# Parsing needs Snakemake alone: the plan (ofg.plan, ofg.stages and what they import) is standard library and PyYAML,
# read from this repository's src/ (nothing installed on the host); the rules' notebooks do the computing.
import os
import sys

from snakemake.utils import min_version, validate

min_version("8.10")
sys.path.insert(0, os.path.join(workflow.basedir, "src"))


# A --configfile on the command line replaces the default config instead of being merged into it
# (merging would keep the default's datasets); --config KEY=VALUE still overrides single keys.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/robustness_common.smk"
include: "workflow/rules/robustness.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        [str(path) for record in OUTPUTS for path in record.paths],
    default_target: True
