"""The rows of the claims table from per-pair frames and timing tables (pure: no I/O).

Conventions and rules are :mod:`ofg.claims`'. :func:`difference_row` and :func:`size_row` work on arrays
(``d[..., pair, seed]``) so that :mod:`ofg.calibration` runs the very same Dice row on simulated tables;
:func:`compare`, :func:`refinement_gain` and :func:`timing_row` build one row of the table each. A row
of a family gets its verdict in :func:`ofg.claims.finalize`; every other row gets it here.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ofg.claims import FAMILY_OF, INFERENCE_MARGIN, Claim, directional_verdict, interval_verdict
from ofg.inference_stats import (ALPHA, Estimate, critical_value, interval, mean_estimate, min_units, p_value,
                                 ratio_estimate)
from ofg.units import independent_pairs, match

PAIR_KEYS = ("split", "pair_index", "moving", "fixed")
TIMING_KINDS = {"inference": "s per test pair", "iteration": "s per training iteration"}


def summary(estimate: Estimate, null: float = 0.0) -> dict[str, np.ndarray]:
    """Effect, se, critical value, 95 % interval, two-sided p of effect = ``null`` and per-seed effects."""
    low, high = interval(estimate)
    return {"effect": estimate.effect, "se": estimate.se, "t_crit": critical_value(estimate), "ci_low": low,
            "ci_high": high, "p": p_value(estimate, null), "per_seed": estimate.per_seed}


def difference_row(d: np.ndarray, incidence: np.ndarray, null: float = 0.0) -> dict[str, np.ndarray]:
    """:func:`summary` of the mean of the matched differences ``d[..., pair, seed]``."""
    return summary(mean_estimate(d, incidence), null)


def size_row(a: np.ndarray, b: np.ndarray, incidence: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Relative reduction ``1 − mean(a)/mean(b)`` (delta method on the ratio of means) with the test of
    reduction = ``threshold``; per-seed reductions."""
    ratio = summary(ratio_estimate(a, b, incidence), 1 - threshold)
    return {**ratio, "effect": 1 - ratio["effect"], "ci_low": 1 - ratio["ci_high"], "ci_high": 1 - ratio["ci_low"],
            "per_seed": 1 - ratio["per_seed"]}


def base_row(claim: Claim, **context: Any) -> dict[str, Any]:
    """The claim's descriptive fields, the ``context`` (dataset, model, ...) and empty statistics."""
    return {**context, "claim": claim.name, "statement": claim.statement, "family": FAMILY_OF[claim.name],
            "metric": claim.metric, "direction": claim.direction, "comparator": claim.comparator,
            "rule": claim.rule, "null": claim.null, "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "se": math.nan, "t_crit": math.nan, "p": math.nan, "per_seed": "", "n_units": 0, "unit_kind": "",
            "n_pairs": 0, "n_seeds": 0, "n_seeds_comparator": 0, "n": "", "note": "", "verdict": None}


def _per_seed(values: np.ndarray) -> str:
    return "; ".join(f"{v:.6g}" for v in np.atleast_1d(values))


def _notes(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _seeds_text(n_ofg: int, n_other: int) -> str:
    return f"{n_ofg} / {n_other} seed{'s' if max(n_ofg, n_other) != 1 else ''}"


def _keys(frame: pd.DataFrame, keys: Sequence[str] | None) -> list[str]:
    found = [k for k in (PAIR_KEYS if keys is None else keys) if k in frame.columns]
    if not found and len(frame):
        raise ValueError(f"no pair-key column among {list(PAIR_KEYS if keys is None else keys)} in "
                         f"{list(frame.columns)}")
    return found


def _missing(metric: str, *frames: pd.DataFrame) -> str:
    """Why no pair has values on both sides."""
    if any(len(f) and (metric not in f.columns or f[metric].isna().all()) for f in frames):
        return f"no {metric} values in the metrics"
    return "no pair on both sides"


def compare(claim: Claim, ofg: pd.DataFrame, comparator: pd.DataFrame, keys: Sequence[str] | None = None,
            alpha: float = ALPHA, **context: Any) -> dict[str, Any]:
    """One row of a "difference" or "size" claim: seed-matched pairs, their design, effect and test."""
    names = [k for k in _keys(ofg, keys) if k in comparator.columns]
    matched = match(ofg, comparator, claim.metric, names)
    design = matched.design() if len(matched.a) else independent_pairs(0)
    row = base_row(claim, **context)
    n_ofg, n_other = len(matched.seeds_a), len(matched.seeds_b)
    one_seed = len(matched.seeds) == 1 and design.n_pairs > 0
    seeds_note = matched.seed_note or ("one seed: the seed variance is not estimable" if one_seed else "")
    row.update(n_units=design.n_units, unit_kind=design.kind, n_pairs=design.n_pairs, n_seeds=n_ofg,
               n_seeds_comparator=n_other, n=f"{design.describe()} × {_seeds_text(n_ofg, n_other)}",
               note=_notes(design.note, seeds_note))
    if design.n_units < min_units(alpha):
        why = (_missing(claim.metric, ofg, comparator) if design.n_pairs == 0
               else f"fewer than {min_units(alpha)} independent units")
        row.update(verdict="insufficient data", note=_notes(row["note"], why))
        return row
    if claim.rule == "size":
        if not np.mean(matched.b) > 0:
            row.update(verdict="insufficient data", note=_notes(row["note"], "comparator mean is 0"))
            return row
        stats = size_row(matched.a, matched.b, design.incidence, claim.null)
    else:
        stats = difference_row(matched.a - matched.b, design.incidence, claim.null)
    row.update({k: float(v) for k, v in stats.items() if k != "per_seed"}, per_seed=_per_seed(stats["per_seed"]))
    if row["family"] == "descriptive":
        row["verdict"] = str(directional_verdict(row["p"], row["effect"], claim.null, claim.direction, alpha))
    return row


def refinement_gain(claim: Claim, curve: pd.DataFrame, at: int = 10, **context: Any) -> dict[str, Any]:
    """The optimiser-alone row from a refinement curve (columns pair, step, dice; ``seed`` optional):
    Dice at step min(``at``, last step) against step 0, pair by pair."""
    step = int(min(at, curve["step"].max())) if len(curve) else 0
    after, start = curve[curve["step"] == step], curve[curve["step"] == 0]
    return {**compare(claim, after, start, keys=("pair",), **context), "step": step}


def _timing_ratios(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """OFG ÷ unsupervised seconds of ``kind``, one per (seed, repeat) measured on both."""
    rows = frame[frame["kind"] == kind]
    wide = rows.pivot_table(index=["seed", "repeat"], columns="method", values="seconds", aggfunc="mean")
    if not {"ofg", "unsupervised"} <= set(wide.columns):
        return np.zeros(0)
    ratios = (wide["ofg"] / wide["unsupervised"]).to_numpy(dtype=float)
    return ratios[np.isfinite(ratios)]


def timing_row(claim: Claim, frame: pd.DataFrame | None, alpha: float = ALPHA, **context: Any) -> dict[str, Any]:
    """A timing row ("equal": inference, "limit": training overhead) from the controlled measurement
    ``frame`` (:meth:`ofg.layout.Layout.timing`; ``None`` when absent)."""
    row = base_row(claim, **context)
    if frame is None:
        return {**row, "verdict": "insufficient data", "n": "–",
                "note": "no controlled timing measurement (timing file absent)"}
    ratios = _timing_ratios(frame, claim.metric)
    seeds = int(frame.loc[frame["kind"] == claim.metric, "seed"].nunique())
    row.update(n_units=len(ratios), unit_kind="repeats", n_seeds=seeds, n_seeds_comparator=seeds,
               n=f"{len(ratios)} repeats ({seeds} seeds pooled)",
               note=f"OFG ÷ unsupervised {TIMING_KINDS[claim.metric]}, per repeat")
    if len(ratios) < min_units(alpha):
        return {**row, "verdict": "insufficient data",
                "note": _notes(row["note"], f"fewer than {min_units(alpha)} repeats")}
    estimate = mean_estimate(ratios[:, None], np.eye(len(ratios), dtype=bool))
    row.update({k: float(v) for k, v in summary(estimate, claim.null).items() if k != "per_seed"})
    low, high = row["ci_low"], row["ci_high"]
    if claim.rule == "equal":
        lower, upper = 1 - INFERENCE_MARGIN, 1 + INFERENCE_MARGIN
        one_sided = [float(p_value(estimate, bound)) / 2 for bound in (lower, upper)]
        beyond = [row["effect"] <= lower, row["effect"] >= upper]
        row["p"] = min(1.0, 2 * max(1 - p if out else p for p, out in zip(one_sided, beyond)))
        row["verdict"] = interval_verdict(low, high, lower, upper)
    else:
        row["verdict"] = str(directional_verdict(row["p"], row["effect"], claim.null, claim.direction, alpha))
    return row
