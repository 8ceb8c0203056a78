"""The results layout: the only module that spells a file or folder name of the results tree.

Under the results folder ``R`` (config key ``results``)::

    R/data/<dataset>/manifest.json                   prepared embedded cohort (written last)
    R/runs/<dataset>/<model>/<run>/seed-<s>/         one training run, see :class:`RunFolder`
    R/metrics/<dataset>/<model>/<run>/seed-<s>.csv   per-pair test metrics
    R/samples/<dataset>/<model>/<run>/seed-<s>.npz   middle-slice sample for the qualitative figure
    R/refinement/<dataset>.csv                       optimiser-refinement curves
    R/baselines/<dataset>.csv                        reference rows: zero field, instance optimisation, SyN
    R/timing/<dataset>/<model>.csv                   controlled timing of the trained networks, see :meth:`Layout.timing`
    R/benchmarks/<stage>/<dataset>[/<model>/<run>/seed-<s>].tsv   Snakemake benchmark of one job
    R/notebooks/<NN_stage>/<dataset>[/<model>/<run>/seed-<s>].ipynb  executed notebooks (the rules' logs)
    R/tables/<name>.{csv,md,tex}                     tables
    R/figures/<kind>_<dataset>[_<model>].{png,pdf}   figures
    R/robustness/<variant>/                          a robustness variant's own tree (:meth:`Layout.robustness`)

The prepared cohorts may live elsewhere (``Layout(R, cohorts=C)``: ``C/<dataset>/``, config key ``cohorts``),
so that another results tree reads the same cohorts without preparing them again.

``<run>`` is a run id and ``<s>`` its training seed (:class:`RunKey`). Every function takes its parts as
plain strings, so the Snakefile builds its wildcard patterns with the same functions:
``Layout(R).metrics(WILDCARDS)``; :meth:`RunKey.parts` is a run's path components.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

TABLE_FORMATS = ("csv", "md", "tex")
FIGURE_FORMATS = ("png", "pdf")
#: workflow stage -> notebook name (notebooks/<name>.ipynb; its executed copies under R/notebooks/<name>/)
NOTEBOOKS = {"prepare": "01_prepare_data", "train": "02_train", "evaluate": "03_evaluate",
             "refinement": "04_refinement", "report": "05_tables_figures", "baselines": "06_baselines",
             "timing": "07_timing", "robustness": "08_robustness"}


class RunKey(NamedTuple):
    """Where a training run lives: dataset, model, run id and seed (strings, or Snakemake wildcards)."""

    dataset: str
    model: str
    run: str
    seed: str

    def parts(self) -> tuple[str, str, str, str]:
        """The path components of the run: dataset, model, run id, ``seed-<s>``."""
        return self.dataset, self.model, self.run, f"seed-{self.seed}"


#: the Snakefile's wildcard pattern of a run
WILDCARDS = RunKey("{dataset}", "{model}", "{run}", "{seed}")


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run's folder (any folder: the workflow's or a user's ``--out``)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        """The resolved run config (YAML), written when the run starts."""
        return self.path / "config.yaml"

    @property
    def summary(self) -> Path:
        """Written last, when training finished (JSON)."""
        return self.path / "summary.json"

    @property
    def history(self) -> Path:
        """One row per epoch (CSV)."""
        return self.path / "history.csv"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        """Checkpoint written at the end of every epoch (resume point)."""
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        """Checkpoint of the best validation Dice (the one evaluated)."""
        return self.checkpoints / "best.pt"

    @property
    def teacher_fields(self) -> Path:
        """Cache of a self-training run's teacher fields."""
        return self.path / "teacher_fields"

    def restartable(self) -> tuple[list[Path], list[Path]]:
        """(folders, files) that a restart deletes; the config is rewritten instead."""
        return [self.checkpoints, self.teacher_fields], [self.history, self.summary, self.log]


@dataclass(frozen=True)
class Layout:
    """Paths of the results tree rooted at ``root``; its prepared embedded cohorts in ``cohorts``
    (default ``root/data``)."""

    root: Path
    cohorts: Path

    def __init__(self, root: str | Path, cohorts: str | Path | None = None) -> None:
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "cohorts", self.root / "data" if cohorts is None else Path(cohorts))

    def data(self, dataset: str) -> Path:
        return self.cohorts / dataset

    def manifest(self, dataset: str) -> Path:
        return cohort_manifest(self.data(dataset))

    def run(self, key: RunKey) -> RunFolder:
        return RunFolder(self.root / "runs" / Path(*key.parts()))

    def metrics(self, key: RunKey) -> Path:
        return self.root / "metrics" / Path(*key.parts()).with_suffix(".csv")

    def sample(self, key: RunKey) -> Path:
        return self.root / "samples" / Path(*key.parts()).with_suffix(".npz")

    def refinement(self, dataset: str) -> Path:
        return self.root / "refinement" / f"{dataset}.csv"

    def baselines(self, dataset: str) -> Path:
        return self.root / "baselines" / f"{dataset}.csv"

    def timing(self, dataset: str, model: str) -> Path:
        """Controlled timing of (dataset, model)'s trained networks (all cores to itself, warm-up, interleaved
        repeats, every seed): one row per (kind, method, run, seed, repeat) with columns ``kind``
        ("inference" | "iteration"), ``method`` ("unsupervised" | "ofg"), ``run`` (run id), ``seed``,
        ``repeat`` (0..R-1) and ``seconds`` (inference: s per test pair, mean over the test pairs of one
        repeat; iteration: s per training iteration, mean over the iterations of one repeat)."""
        return self.root / "timing" / dataset / f"{model}.csv"

    @property
    def benchmarks(self) -> Path:
        """Folder of Snakemake's ``benchmark:`` files, one subfolder per stage."""
        return self.root / "benchmarks"

    def benchmark(self, stage: str, *parts: str) -> Path:
        """``stage`` in :data:`NOTEBOOKS`; ``parts`` the dataset or, for a run, :meth:`RunKey.parts`."""
        return self.benchmarks / stage / Path(*parts[:-1], f"{parts[-1]}.tsv")

    def notebook(self, stage: str, *parts: str) -> Path:
        """Executed notebook of ``stage`` for ``parts`` (none for the single report notebook)."""
        name = NOTEBOOKS[stage]
        if not parts:
            return self.root / "notebooks" / f"{name}.ipynb"
        return self.root / "notebooks" / name / Path(*parts[:-1], f"{parts[-1]}.ipynb")

    def table(self, name: str) -> list[Path]:
        """[csv, md, tex] of table ``name``."""
        return [self.root / "tables" / f"{name}.{ext}" for ext in TABLE_FORMATS]

    def robustness(self, variant: str) -> "Layout":
        """The results tree of the robustness variant ``variant`` (:mod:`ofg.robustness`): its runs,
        metrics, samples, notebooks, benchmarks, figures and, where it prepares its own, its cohorts."""
        return Layout(self.root / "robustness" / variant)

    def figure(self, kind: str, *parts: str) -> list[Path]:
        """[png, pdf] of the figure ``kind`` of ``parts`` (dataset, and model where it has one)."""
        stem = "_".join((kind, *parts))
        return [self.root / "figures" / f"{stem}.{ext}" for ext in FIGURE_FORMATS]


def cohort_manifest(root: str | Path) -> Path:
    """The manifest of a prepared embedded cohort in ``root``, written last by the preparation."""
    return Path(root) / "manifest.json"


def notebook_source(repository: str | Path, stage: str) -> Path:
    """The notebook of ``stage`` in the repository's ``notebooks/`` folder."""
    return Path(repository) / "notebooks" / f"{NOTEBOOKS[stage]}.ipynb"
