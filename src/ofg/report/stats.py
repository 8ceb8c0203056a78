"""Summary statistics of per-pair metrics: means with spreads over pairs, structures and seeds.

Descriptive only: the inferential statistics (units, matched seeds, CIs, p, verdicts) are
:mod:`ofg.inference_stats` and the claims table's.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from ofg.report.load import pair_key_columns, structure_columns


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) over the finite values; NaNs where there are none (std NaN for n=1)."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std, int(array.size)


def seed_average(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-pair metrics averaged over the seeds of one run (one row per pair); unchanged with one seed."""
    if "seed" not in frame or frame["seed"].nunique() <= 1:
        return frame
    keys = pair_key_columns(frame)
    numeric = [c for c in frame.select_dtypes("number").columns if c not in keys and c not in ("seed", "steps")]
    return frame.groupby(keys, sort=False, as_index=False)[numeric].mean()


def seed_spread(frame: pd.DataFrame, column: str = "dice_mean") -> tuple[float, int]:
    """(sample std over seeds of the per-seed mean of ``column`` over pairs, NaN with one seed; number of
    seeds). A frame without a ``seed`` column is one seed."""
    seeds = frame["seed"] if "seed" in frame.columns else pd.Series(0, index=frame.index)
    means = frame.assign(_seed=seeds).groupby("_seed")[column].mean().dropna()
    return (float(means.std(ddof=1)) if len(means) > 1 else math.nan), int(seeds.nunique())


SUMMARY_METRICS = ("dice_mean_nearest", "dice_mean_onehot", "folding_percent", "sdlogj_l2r", "sdlogj_plain", "hd95", "hd95_mm", "endpoint_error",
                   "inference_seconds")


def summarize_run(frame: pd.DataFrame) -> dict[str, float]:
    """Mean/std over test pairs of each metric of one run's per-pair metrics, seeds averaged per pair,
    with the number of seeds and the spread of the mean Dice over seeds."""
    out: dict[str, float] = {}
    out["dice_std_seeds"], out["n_seeds"] = seed_spread(frame)
    frame = seed_average(frame)
    out["n_pairs"] = len(frame)
    out["dice_mean"], out["dice_std_pairs"], _ = mean_std(frame["dice_mean"])
    structures = frame[structure_columns(frame)].to_numpy(dtype=float).ravel()
    _, out["dice_std_structures_pairs"], _ = mean_std(structures)
    for column in SUMMARY_METRICS:
        values = frame[column] if column in frame else []
        out[column], out[f"{column}_std"], _ = mean_std(values)
    return out
