# Shared setup: config checks, the plan (ofg.plan), each stage's parameters (ofg.stages), the layout (ofg.layout)
# and the papermill command.
# Only light modules of ofg (standard library and PyYAML: tests/test_plan_light.py) are imported here.
import json
import re
from pathlib import Path

from ofg import plan as ofg_plan
from ofg import stages as ofg_stages
from ofg.layout import WILDCARDS, notebook_source
from ofg.machine import available_cores
from ofg.names import EMBEDDED, TEACHER_METHODS
from ofg.report.outputs import outputs as report_outputs


try:
    ofg_plan.check_config(config)
except ValueError as error:
    raise WorkflowError(f"Invalid workflow config: {error}") from None


LAYOUT = ofg_plan.layout(config)
RUNS = ofg_plan.training_runs(config)
PLAN = ofg_stages.report_plan(config)
OUTPUTS = report_outputs(PLAN)
ENV = "../../envs/ofg.yaml"
CAPTIONS = "../report"
# ofg is importable from the source tree in a --use-conda env (conda copies env files, so a relative
# `pip install -e` in the env file cannot find the repository).
# Threads go to the notebooks with -p, not in params: a different --cores must not trigger re-runs.
PAPERMILL = (
    f"PYTHONPATH={Path(workflow.basedir) / 'src'}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
    "papermill --no-progress-bar -k python3"
)


def machine_cores(wildcards, threads):
    """A job's claim on the `machine_cores` resource: its threads, at most this machine's cores.

    profiles/default sets the pool to the cores this process may run on, so a local `--cores 4` on a
    2-core machine runs two 1-thread trainings side by side but never more compute threads than cores
    (oversubscribed PyTorch and numba threads run several times slower). Other executors have no pool.
    """
    return min(threads, available_cores())


def alternatives(values):
    return "|".join(re.escape(str(v)) for v in sorted(set(values))) or "(?!)"


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    model=alternatives(m for entry in config["datasets"].values() for m in entry["models"]),
    run=alternatives(run.id for run in RUNS),
    seed=alternatives(run.seed for run in RUNS),


def notebook(stage):
    return notebook_source(workflow.basedir, stage)


def run_of(wildcards):
    """The plan's run behind a job's wildcards (a look-up, never a parse)."""
    return ofg_plan.find_run(config, (wildcards.dataset, wildcards.model, wildcards.run, wildcards.seed))


def data_input(dataset):
    """The prepared cohort's manifest for embedded data; nothing for a user's real data root."""
    return [str(LAYOUT.manifest(dataset))] if dataset in EMBEDDED else []


def parameters(value):
    return json.dumps(value, sort_keys=True)


def train_inputs(wildcards):
    run = run_of(wildcards)
    inputs = {"data": data_input(run.dataset)}
    if run.method in TEACHER_METHODS:
        inputs["teacher"] = str(LAYOUT.run(run.teacher().key).summary)
    return inputs


def timing_inputs(wildcards):
    """The summaries of the runs the timing job measures (every seed of the main comparison)."""
    runs = ofg_stages.timing_runs(config, wildcards.dataset, wildcards.model)
    return [str(LAYOUT.run(run.key).summary) for run in runs]


def reported(records):
    """The report's outputs, the CSV tables and PNG figures flagged for the HTML report with the
    caption of their kind."""
    flagged = []
    for record in records:
        for path in map(str, record.paths):
            if record.category == "table" and path.endswith(".csv"):
                flagged.append(report(path, caption=f"{CAPTIONS}/table_{record.kind}.rst", category="Tables"))
            elif record.category == "figure" and path.endswith(".png"):
                flagged.append(report(path, caption=f"{CAPTIONS}/figure_{record.kind}.rst", category="Figures",
                                      subcategory=record.kind.replace("_", " ")))
            else:
                flagged.append(path)
    return flagged
