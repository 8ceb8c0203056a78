"""The guidance gap in numbers: prediction against refined target through training, from history.csv files.

:mod:`ofg.gap` writes, per epoch, the validation Dice, energy and end-point error of the network's
prediction and of its k-step refined target. The figure ``guidance_gap_<dataset>_<model>`` draws them;
this module summarises them for a README or a note, by a rule fixed here rather than read off a plot:

- the runs of a group are its seeds (``runs/<dataset>/<model>/<run>/seed-<s>/history.csv`` → group
  ``<dataset> <model> <run>``; any other ``<folder>/history.csv`` → group ``<folder>``);
- at five epochs, the first, the last and the ones at 25, 50 and 75 % of the run (rounded down), each
  quantity is the mean over the group's seeds, and the gap is target − prediction (Dice: positive =
  the target is ahead; energy and EPE: negative = the target is ahead);
- ``dice ahead`` counts the epochs whose seed-mean target Dice exceeds the seed-mean prediction Dice,
  and ``last ahead`` is the last such epoch (None if never);
- ``seed-epochs ahead`` counts the (seed, epoch) rows whose own target Dice exceeds their own prediction
  Dice: "every epoch of every seed" is this count at its maximum, which a seed mean cannot show.

``python -m ofg.report.gap_summary HISTORY.csv ... [--csv OUT]`` prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ofg.io import DataError, atomic_path
from ofg.names import GAP_ROLES, gap_column

#: the quantities summarised, in the order of the table
QUANTITIES = ("dice", "energy", "epe")
#: where in the run the table looks (fractions of the last epoch)
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def group_name(path: Path) -> str:
    """``<dataset> <model> <run>`` for a workflow run folder ``.../<run>/seed-<s>/history.csv``, else the
    history's folder name."""
    folder = path.parent
    if folder.name.startswith("seed-") and len(folder.parents) >= 3:
        return " ".join(p.name for p in (folder.parents[2], folder.parents[1], folder.parents[0]))
    return folder.name


def _read(path: Path) -> pd.DataFrame:
    """One history with its gap columns; DataError naming the file when it has none."""
    try:
        history = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read the training history ({exc})") from exc
    columns = [gap_column(q, r) for q in QUANTITIES for r in GAP_ROLES]
    missing = [c for c in ("epoch", "gap_lr", *columns) if c not in history.columns]
    if missing or history[gap_column("dice", "target")].isna().all():
        raise DataError(f"{path}: no guidance-gap columns ({', '.join(missing) or 'all NaN'}); the run was "
                        "trained before the measurement, with training.guidance_gap: false, or is self-training")
    return history[["epoch", "gap_lr", *columns]]


def seed_mean(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per epoch, the mean over the histories (seeds) of every gap column, and how many seeds have the epoch."""
    stacked = pd.concat(histories)
    means = stacked.groupby("epoch").mean(numeric_only=True)
    means["seeds"] = stacked.groupby("epoch").size()
    return means


def _checkpoints(epochs: pd.Index) -> list[int]:
    last = int(epochs.max())
    return sorted({int(epochs[epochs <= int(f * last)].max()) for f in FRACTIONS})


def _target_ahead(frame: pd.DataFrame) -> pd.Series:
    """Per row (an epoch, or a seed's epoch), whether the target's Dice exceeds the prediction's."""
    return frame[gap_column("dice", "target")] > frame[gap_column("dice", "prediction")]


def summarise_group(name: str, histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The summary rows of one group (see the module docstring): one per checkpoint epoch."""
    means = seed_mean(histories)
    ahead = means.index[_target_ahead(means)]
    stacked = pd.concat(histories)
    each_ahead = int(_target_ahead(stacked).sum())
    rows = []
    for epoch in _checkpoints(means.index):
        row = means.loc[epoch]
        record = {"run": name, "seeds": int(row["seeds"]), "epoch": epoch, "refine lr": row["gap_lr"]}
        for q in QUANTITIES:
            prediction, target = (row[gap_column(q, role)] for role in GAP_ROLES)
            record.update({f"{q} prediction": prediction, f"{q} target": target, f"{q} gap": target - prediction})
        record["dice ahead"] = f"{len(ahead)}/{len(means)}"
        record["last ahead"] = int(ahead.max()) if len(ahead) else None
        record["seed-epochs ahead"] = f"{each_ahead}/{len(stacked)}"
        rows.append(record)
    return pd.DataFrame(rows)


def gap_summary(paths: Sequence[Path], skipped: list[str] | None = None) -> pd.DataFrame:
    """The summary table of the histories at ``paths``, grouped by :func:`group_name`, groups sorted.

    A history without gap columns (self-training, or trained before the measurement) is a DataError naming
    it; given a list ``skipped``, it is left out and its error appended there instead, and only a set of
    paths with no usable history at all is an error."""
    if not paths:
        raise DataError("no history.csv given")
    groups: dict[str, list[pd.DataFrame]] = {}
    for path in map(Path, paths):
        try:
            history = _read(path)
        except DataError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        groups.setdefault(group_name(path), []).append(history)
    if not groups:
        raise DataError(f"none of the {len(paths)} histories has guidance-gap columns; the first: {skipped[0]}")
    return pd.concat([summarise_group(n, groups[n]) for n in sorted(groups)], ignore_index=True)


def to_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, 3 decimals (EPE in voxels, energy in the refinement's units)."""
    shown = table.copy()
    numeric = [c for c in shown.columns if shown[c].dtype.kind == "f" and c != "last ahead"]
    shown[numeric] = shown[numeric].map(lambda v: "–" if np.isnan(v) else f"{v:.3f}")
    shown["refine lr"] = table["refine lr"].map(lambda v: f"{v:.3g}")
    shown["last ahead"] = table["last ahead"].map(lambda v: "never" if pd.isna(v) else str(int(v)))
    return shown.to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofg.report.gap_summary",
                                     description="Summarise the guidance gap of training histories.")
    parser.add_argument("histories", nargs="+", type=Path, help="history.csv files (seeds of a run are grouped)")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    skipped: list[str] = []
    try:
        table = gap_summary(args.histories, skipped)
    except DataError as exc:
        print(f"gap_summary: error: {exc}", file=sys.stderr)
        return 1
    for reason in skipped:
        print(f"gap_summary: skipped {reason}", file=sys.stderr)
    if args.csv:
        with atomic_path(args.csv) as tmp:
            table.to_csv(tmp, index=False)
    print(to_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
