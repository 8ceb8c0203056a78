"""Every notebook runs alone with its default parameters (as from JupyterLab): each one in a fresh
temp folder, so it must prepare (and train) whatever it needs by itself."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from ofg.layout import Layout, RunKey

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_eight_notebooks_exist_clean_and_parameterised():
    assert [p.stem for p in NOTEBOOKS] == ["01_prepare_data", "02_train", "03_evaluate", "04_refinement",
                                           "05_tables_figures", "06_baselines", "07_timing", "08_robustness"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert book.metadata["kernelspec"]["name"] == "python3"
        # thin: the work is in src/ofg
        assert sum(len(c.source.splitlines()) for c in code) < 40, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_alone(path, tmp_path, monkeypatch):
    import papermill

    # the notebooks' default work folder is <tempdir>/ofg-standalone: isolate it per test
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), kernel_name="python3", cwd=str(REPO / "notebooks"),
                               parameters={"progress": False} if "progress" in path.read_text() else {},
                               progress_bar=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    layout = Layout(tmp_path / "ofg-standalone")
    demo = RunKey("embedded-brain", "voxelmorph", "ofg-k2", "0")
    expected = {
        "01_prepare_data": layout.manifest("embedded-brain"),
        "02_train": layout.run(demo).summary,
        "03_evaluate": layout.metrics(demo),
        "04_refinement": layout.refinement("embedded-brain"),
        "05_tables_figures": layout.table("main_results")[1],
        "06_baselines": layout.baselines("embedded-brain"),
        "07_timing": layout.timing("embedded-brain", "voxelmorph"),
        "08_robustness": layout.table("robustness")[1],
    }[path.stem]
    assert expected.is_file()


def test_every_parameter_a_rule_passes_is_declared_by_its_notebook():
    """papermill injects unknown parameters silently: a key the plan passes but the notebook never reads
    would be lost (as the refinement's window once was)."""
    import yaml
    from snakemake.utils import validate

    from ofg import plan, stages

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    run = plan.training_runs(config)[0]

    def declared(name: str) -> set[str]:
        book = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
        return {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and line[0] != " "}

    for name, params in (("01_prepare_data", stages.prepare_parameters(config, "embedded-brain")),
                         ("02_train", stages.train_parameters(config, run)),
                         ("03_evaluate", stages.evaluate_parameters(config, run)),
                         ("04_refinement", stages.refinement_parameters(config, "embedded-brain")),
                         ("05_tables_figures", {"plan": stages.report_plan(config), "progress": False}),
                         ("06_baselines", stages.baseline_parameters(config, "embedded-brain")),
                         ("07_timing", stages.timing_parameters(config, "embedded-brain", "voxelmorph")),
                         ("08_robustness", {"plan": {}, "progress": False})):
        assert set(params) <= declared(name), (name, set(params) - declared(name))
