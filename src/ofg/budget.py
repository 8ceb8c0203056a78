"""How long to train: where a validation-Dice learning curve stops rising.

A run's ``history.csv`` has one row per epoch with ``val_dice`` (mean validation Dice after the
epoch); the iterations done so far are (``epoch`` + 1) times the iterations per epoch. Validation Dice
is noisy from epoch to epoch and flat at first (a network starts near the identity), so the rule reads
the running best: the curve has stopped rising at the first iteration whose running best is within
``tolerance`` (Dice units) of the best of the whole curve. That is only meaningful if the curve itself
has flattened: if its running best still rose by more than ``tolerance`` over its last ``horizon``
iterations, the probe was too short and there is no answer (None).

The default tolerance, 0.02 Dice, is about twice the seed-to-seed standard deviation of the final
validation Dice measured on the embedded brain (0.007-0.008 over 3 seeds at 600 iterations): smaller gains
could not be told apart from a change of seed.

``python -m ofg.budget curves <history.csv>...`` prints each curve's answer (in iterations and epochs)
and the largest, the budget every run of the comparison gets (never chosen per method).
``python -m ofg.budget rules <results>`` prints where a workflow run's time went: per stage, the jobs,
their summed and longest wall time from Snakemake's ``benchmarks/`` files (:func:`stage_breakdown`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ofg.io import DataError, require_file
from ofg.layout import Layout

TOLERANCE = 0.02
HORIZON = 500


def plateau_iteration(iterations: Sequence[int], val_dice: Sequence[float], tolerance: float = TOLERANCE,
                      horizon: int = HORIZON) -> int | None:
    """First iteration whose running-best Dice is within ``tolerance`` of the curve's best; None if the
    running best rose by more than ``tolerance`` over the last ``horizon`` iterations (still rising).

    ``iterations`` (increasing) are when each ``val_dice`` was measured; NaN Dice values are skipped.
    """
    x = np.asarray(iterations, dtype=float)
    y = np.asarray(val_dice, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"iterations and val_dice must be 1-D of one non-zero length, got {x.shape} and {y.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("iterations must increase")
    if tolerance < 0 or horizon <= 0:
        raise ValueError(f"need tolerance >= 0 and horizon > 0, got {tolerance} and {horizon}")
    if not np.isfinite(y).any():
        return None
    best = np.fmax.accumulate(np.where(np.isfinite(y), y, -np.inf))
    before_horizon = np.nonzero(x <= x[-1] - horizon)[0]
    if before_horizon.size == 0 or best[-1] - best[before_horizon[-1]] > tolerance:
        return None
    return int(x[np.argmax(best >= best[-1] - tolerance)])


def history_curve(path: str | Path, iterations_per_epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(iterations done, val_dice) after each epoch of a run's ``history.csv``: the running sum of its
    ``iterations`` column (an epoch is capped by the train pairs there are, so it may hold fewer than
    ``iterations_per_epoch``), or (``epoch`` + 1)·``iterations_per_epoch`` for a history without it.
    DataError naming the file if it has no curve."""
    frame = pd.read_csv(require_file(path, "training history"))
    if not {"epoch", "val_dice"} <= set(frame.columns):
        raise DataError(f"{path}: a training history needs 'epoch' and 'val_dice' columns, has {list(frame.columns)}")
    if "iterations" in frame:
        done = frame["iterations"].cumsum().to_numpy()
    elif iterations_per_epoch is not None:
        done = (frame["epoch"].to_numpy() + 1) * iterations_per_epoch
    else:
        raise DataError(f"{path}: no 'iterations' column; give --iterations-per-epoch")
    return done, frame["val_dice"].to_numpy(dtype=float)


def stage_breakdown(results: str | Path) -> pd.DataFrame:
    """Per stage folder of ``<results>/benchmarks`` (one Snakemake ``benchmark:`` TSV per job): the number
    of jobs, their summed and longest wall seconds (column ``s``), their summed CPU seconds (column
    ``cpu_time``, NaN where Snakemake did not record it) and the largest max RSS (MB), sorted by summed
    wall time; DataError naming the folder if it holds no benchmark. Wall time depends on what else the
    machine ran; CPU time much less so (a 1-thread job's CPU seconds are its work)."""
    root = Layout(results).benchmarks
    rows = []
    for path in sorted(root.glob("*/**/*.tsv")):
        last = pd.read_csv(path, sep="\t").apply(pd.to_numeric, errors="coerce").iloc[-1]  # "-" -> NaN
        rows.append({"stage": path.relative_to(root).parts[0], "s": float(last["s"]),
                     "cpu": float(last.get("cpu_time", np.nan)), "max_rss": float(last["max_rss"])})
    if not rows:
        raise DataError(f"no Snakemake benchmark files under {root}: run the workflow first")
    table = pd.DataFrame(rows).groupby("stage").agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"),
                                                   cpu_s=("cpu", lambda v: v.sum(min_count=1)),
                                                   max_rss_mb=("max_rss", "max"))
    return table.sort_values("total_s", ascending=False).reset_index()


def _curves(args: argparse.Namespace) -> int:
    plateaus = []
    for path in args.histories:
        x, y = history_curve(path, args.iterations_per_epoch)
        plateau = plateau_iteration(x, y, args.tolerance, args.horizon)
        plateaus.append(plateau)
        shown = plateau if plateau is not None else f"none within {int(x[-1])}"
        epoch = int(np.searchsorted(x, plateau)) + 1 if plateau is not None else None
        print(f"{path}: plateau {shown}" + (f" (epoch {epoch})" if epoch else "")
              + f"; best val Dice {np.nanmax(y):.3f} at {int(x[np.nanargmax(y)])}")
    if any(p is None for p in plateaus):
        print("some curve is still rising at its end: train longer to find its plateau")
        return 1
    print(f"iterations for every run: {max(plateaus)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofg.budget", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    curves = commands.add_parser("curves", help="where learning curves stop rising")
    curves.add_argument("histories", nargs="+", help="history.csv files of the runs to compare")
    curves.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="only for histories without an 'iterations' column")
    curves.add_argument("--tolerance", type=float, default=TOLERANCE, help="Dice units (default %(default)s)")
    curves.add_argument("--horizon", type=int, default=HORIZON, help="iterations (default %(default)s)")
    rules = commands.add_parser("rules", help="wall time per workflow stage from benchmarks/")
    rules.add_argument("results", help="the workflow's results folder")
    args = parser.parse_args(argv)
    if args.command == "rules":
        table = stage_breakdown(args.results)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        print(f"summed job time {table.total_s.sum():.0f} s over {table.jobs.sum()} jobs; "
              f"summed CPU time {table.cpu_s.sum():.0f} s")
        return 0
    return _curves(args)


if __name__ == "__main__":
    sys.exit(main())
