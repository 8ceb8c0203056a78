"""Two claims tables side by side, verdict by verdict (e.g. the same plan on two arithmetic paths).

    python -m ofg.report.compare FIRST.csv SECOND.csv --labels bf16 float32 [--out comparison.md]

FIRST and SECOND are the claims tables (claims.csv) of two runs, e.g. the default run's and that of
``config/float32.yaml`` (README, "Which arithmetic made a table").

Rows are matched on what identifies a claim row (dataset, model, claim, comparator, metric and the
row's note, which names the ablation step or the Fig. 2 start); rows present in only one table are
listed with the other side empty. Verdicts are compared as written; effects and CIs are shown as
they are (metric units: Dice, percentage points, voxels, seconds or a ratio).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from ofg.io import DataError, write_text_atomic

#: the columns that identify a row of a claims table (ofg.report.claims_table)
KEY = ("dataset", "model", "claim", "comparator", "metric", "note")


def read_claims(path: str | Path) -> pd.DataFrame:
    """A claims table's CSV, its key columns as text (empty where absent)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={k: str for k in KEY}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read a claims table ({exc})") from exc
    missing = {"claim", "verdict", "effect"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: not a claims table (no column {', '.join(sorted(missing))})")
    for column in KEY:
        table[column] = table[column].fillna("").astype(str) if column in table else ""
    return table


def _cell(row: pd.Series | None, column: str) -> float | str:
    if row is None or column not in row or row[column] is None:
        return math.nan if column != "verdict" else ""
    return row[column]


def compare_claims(first: pd.DataFrame, second: pd.DataFrame, labels: Sequence[str] = ("A", "B")) -> pd.DataFrame:
    """One row per claim row of either table: key, effect, CI and verdict of each, whether both tables hold
    the row (``shared``) and whether the verdict differs (``changed``; True also where a row is in one
    table only)."""
    a, b = labels
    index_a = {tuple(r[k] for k in KEY): r for _, r in first.iterrows()}
    index_b = {tuple(r[k] for k in KEY): r for _, r in second.iterrows()}
    keys = list(index_a) + [k for k in index_b if k not in index_a]
    rows = []
    for key in keys:
        left, right = index_a.get(key), index_b.get(key)
        row = dict(zip(KEY, key))
        for label, side in ((a, left), (b, right)):
            row[f"effect {label}"] = _cell(side, "effect")
            row[f"CI {label}"] = _interval(side)
            row[f"verdict {label}"] = _cell(side, "verdict")
        row["shared"] = left is not None and right is not None
        row["changed"] = row[f"verdict {a}"] != row[f"verdict {b}"]
        rows.append(row)
    return pd.DataFrame(rows)


def _interval(row: pd.Series | None) -> str:
    low, high = _cell(row, "ci_low"), _cell(row, "ci_high")
    if not (isinstance(low, float) and isinstance(high, float)) or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:.4g}, {high:.4g}]"


def to_markdown(table: pd.DataFrame) -> str:
    """The comparison as a Markdown table, the effect columns to 4 significant digits."""
    shown = table.drop(columns=[c for c in ("note",) if c in table and not table[c].any()])
    for column in [c for c in shown.columns if c.startswith("effect ")]:
        shown[column] = [f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else "n/a" for v in shown[column]]
    shared = table[table["shared"]] if len(table) else table
    changed = int(shared["changed"].sum()) if len(shared) else 0
    return (f"{shown.to_markdown(index=False)}\n\n{changed} of {len(shared)} verdicts of the rows both tables hold "
            f"differ; {len(table) - len(shared)} rows are in one table only.\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofg.report.compare", description=__doc__.split("\n")[0])
    parser.add_argument("first", help="claims.csv of the first run")
    parser.add_argument("second", help="claims.csv of the second run")
    parser.add_argument("--labels", nargs=2, default=("A", "B"), metavar=("FIRST", "SECOND"))
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    try:
        table = compare_claims(read_claims(args.first), read_claims(args.second), args.labels)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(table)
    print(text, end="")
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
