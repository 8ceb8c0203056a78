# Shared setup: config checks, the plan (ofg.workflow) and the papermill command.
import json
from pathlib import Path

from ofg import report as ofg_report
from ofg import workflow as wf


try:
    wf.check_config(config)
except ValueError as error:
    raise WorkflowError(f"Invalid workflow config: {error}") from None


R = str(wf.results_dir(config))
RUNS = wf.training_runs(config)
PLAN = wf.report_plan(config)
REPORT_OUTPUTS = [str(p) for p in ofg_report.output_paths(PLAN)]
ENV = "../../envs/ofg.yaml"
NOTEBOOKS = Path(workflow.basedir) / "notebooks"
# ofg is importable from the source tree in a --use-conda env (conda copies env files, so a relative
# `pip install -e` in the env file cannot find the repository).
# Threads go to the notebooks with -p, not in params: a different --cores must not trigger re-runs.
PAPERMILL = (
    f"PYTHONPATH={Path(workflow.basedir) / 'src'}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
    "papermill --no-progress-bar -k python3"
)


wildcard_constraints:
    dataset="[a-z]+(-[a-z]+)?",
    model="[a-z]+",
    run="unsupervised|self_training|opt_self_training|ofg-k[0-9]+",


def as_run(wildcards):
    return wf.Run(wildcards.dataset, wildcards.model, wildcards.run)


def data_input(dataset):
    """The prepared cohort's manifest for embedded data; nothing for a user's real data root."""
    if dataset in wf.EMBEDDED:
        return [f"{R}/data/{dataset}/manifest.json"]
    return []


def parameters(value):
    return json.dumps(value, sort_keys=True)


def train_inputs(wildcards):
    inputs = {"data": data_input(wildcards.dataset)}
    if wildcards.run in ("self_training", "opt_self_training"):
        inputs["teacher"] = f"{R}/runs/{wildcards.dataset}/{wildcards.model}/unsupervised/summary.json"
    return inputs


CAPTIONS = "../report"


def reported(paths):
    """Flag the CSV tables and PNG figures for the HTML report, with the caption of their kind."""
    flagged = []
    for path in paths:
        stem, suffix = Path(path).stem, Path(path).suffix
        if suffix == ".csv":
            flagged.append(report(path, caption=f"{CAPTIONS}/table_{stem}.rst", category="Tables"))
        elif suffix == ".png":
            kind = next(k for k in ("training_curves", "ablation", "refinement", "structure_dice", "qualitative")
                        if stem.startswith(k))
            flagged.append(report(path, caption=f"{CAPTIONS}/figure_{kind}.rst", category="Figures",
                                  subcategory=kind.replace("_", " ")))
        else:
            flagged.append(path)
    return flagged
