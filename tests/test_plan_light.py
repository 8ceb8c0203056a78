"""The plan parses light: what the Snakefile imports while parsing needs the standard library and PyYAML.

A Snakemake host (a `--use-conda` run, a SLURM submit node, a dry run) has Snakemake alone; the heavy
libraries live in the rules' environment. Each check runs in a fresh interpreter, so modules that other
tests imported do not hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ofg.data import DATASETS
from ofg.extras import MissingExtraError, import_optional, require
from ofg.names import EMBEDDED, REAL

REPO = Path(__file__).resolve().parents[1]
#: the modules workflow/rules/common.smk imports (directly or through ofg.report's face)
PLAN_MODULES = ("ofg.plan", "ofg.stages", "ofg.layout", "ofg.machine", "ofg.names", "ofg.report",
                "ofg.report.outputs", "ofg.config", "ofg.settings", "ofg.files", "ofg.extras", "ofg.robustness")
HEAVY = ("torch", "numba", "matplotlib", "scipy", "nibabel", "numpy", "pandas", "tqdm")


def loaded_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``code`` with src/ first."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_plan_modules_loads_no_scientific_library():
    loaded = loaded_after("\n".join(f"import {m}" for m in PLAN_MODULES) + "\nimport ofg")
    assert not loaded & set(HEAVY), f"the plan imports {sorted(loaded & set(HEAVY))}"


def with_defaults(name: str) -> dict:
    """A config of config/ with the schema's defaults filled in, as Snakemake's validate does."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml"])
def test_planning_a_config_loads_no_scientific_library(name, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(with_defaults(name)))
    code = f"""
import json
from ofg import plan, robustness, stages
from ofg.report.outputs import outputs
config = json.load(open({str(path)!r}))
plan.check_config(config)
runs = plan.training_runs(config)
params = [stages.train_parameters(config, run) for run in runs]
params += [stages.evaluate_parameters(config, run) for run in runs]
assert outputs(stages.report_plan(config))
assert robustness.report_plan(config)["settings"] == []
"""
    loaded = loaded_after(code)
    assert not loaded & set(HEAVY), f"planning {name} imports {sorted(loaded & set(HEAVY))}"


def test_planning_the_robustness_experiment_loads_no_scientific_library(tmp_path):
    from snakemake.utils import update_config

    config = with_defaults("config.yaml")
    update_config(config, yaml.safe_load((REPO / "config" / "robustness.yaml").read_text()))
    config["robustness"]["variants"]["lr-1e-4"]["epochs"] = {"embedded-brain": 2, "embedded-ct": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = f"""
import json
from ofg import robustness
config = json.load(open({str(path)!r}))
assert len(robustness.report_plan(config)["settings"]) == 5 and robustness.trained(config)
"""
    loaded = loaded_after(code)
    assert not loaded & set(HEAVY), f"planning the robustness experiment imports {sorted(loaded & set(HEAVY))}"


def test_the_public_api_is_still_there_on_first_use():
    import ofg
    from ofg.guidance import OFGLoss

    assert ofg.OFGLoss is OFGLoss and set(ofg.__all__) <= set(dir(ofg))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        ofg.nonsense  # noqa: B018


def test_the_names_list_every_dataset_of_the_registry():
    assert set(DATASETS) == {*EMBEDDED, *REAL} and not set(EMBEDDED) & set(REAL)


def test_a_missing_extra_is_named():
    with pytest.raises(MissingExtraError, match=r"pip install 'ofg\[baselines\]'"):
        import_optional("ofg_no_such_module", "baselines", "the SyN baseline")
    with pytest.raises(MissingExtraError, match=r"ofg\[workflow\].*|'not_installed_here'"):
        require("workflow", "the report", ("not_installed_here",))
    require("workflow", "the report", ("yaml",))  # present: no error
