"""Calibration of the claims engine by simulation: false-positive rate, coverage and power (pure; CLI prints).

Null tables of per-pair, per-seed differences ``d[p, s]`` (OFG − comparator; total variance 1) are drawn
with random effects of the moving subject, the fixed subject and the unordered pair (each a third of
``subject_share``; a design constant such as the atlas has none), a seed effect shared by every pair
(``seed_share``) and a pair × seed residual (the rest), on the designs of :data:`DESIGNS`:

- ``atlas``: 40 atlas → subject pairs × 3 seeds (the brain datasets);
- ``disjoint``: 40 disjoint pairs × 3 seeds, each subject in one pair (the embedded CT test set);
- ``crossed``: every ordered pair of 7 subjects (42 pairs) × 3 seeds (the old CT set; OASIS and
  AbdomenCTCT share subjects the same way).

On each table the engine's Dice row (:func:`ofg.claim_rows.difference_row`: the design of
:func:`ofg.units.find_design`, :func:`ofg.inference_stats.mean_estimate`, two-sided t-test) is run and
:func:`calibrate` reports the false-positive rate at α (true effect 0), the coverage of the true effect
by the 95 % interval, and the power (verdict "supported") under a known effect :data:`EFFECT`. The old
engine (:func:`old_engine`: seeds averaged per pair, pairs taken as independent, Wilcoxon p and a
percentile bootstrap interval) is run on the same tables. :func:`unit_methods` compares the candidate
unit variances (seed share 0): pairs as independent, the dyadic cluster-robust sandwich (pairs that share
a subject correlated, t on G − 1 df), the two-way (pigeonhole) bootstrap over units, and the
delete-one-unit jackknife the engine uses.

``python -m ofg.calibration [--tables N] [--seed S]`` prints both tables (Markdown). Every draw comes
from ``numpy.random.default_rng`` with a fixed seed.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ofg.claim_rows import difference_row
from ofg.claims import directional_verdict
from ofg.inference_stats import ALPHA, jackknife_variance, seed_parts
from ofg.units import Design, find_design

SEEDS = 3
#: design name -> (moving, fixed) subject names of its pairs
DESIGNS = {
    "atlas": (("atlas",) * 40, tuple(f"s{i}" for i in range(40))),
    "disjoint": (tuple(f"m{i}" for i in range(40)), tuple(f"f{i}" for i in range(40))),
    "crossed": tuple(zip(*[(f"s{i}", f"s{j}") for i in range(7) for j in range(7) if i != j])),
}
SUBJECT_SHARES = (0.2, 0.4)
SEED_SHARES = (0.0, 0.05, 0.2)
#: the known effect of the power runs, in units of the total sd of d
EFFECT = 0.5
TABLES = 1000
RESAMPLES = 1000
UNIT_METHODS = ("pairs as independent", "dyadic cluster-robust", "two-way bootstrap", "jackknife (engine)")
SEED_METHODS = ("ANOVA variance, Satterthwaite df", "engine variance, Satterthwaite df",
                "engine variance, Cochran–Cox (engine)")


def design_of(name: str, subjects: int | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(moving, fixed) of design ``name``; ``subjects`` shrinks it (atlas/disjoint: pairs; crossed: subjects)."""
    if subjects is None:
        return DESIGNS[name]
    if name == "crossed":
        pairs = [(f"s{i}", f"s{j}") for i in range(subjects) for j in range(subjects) if i != j]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    moving, fixed = DESIGNS[name]
    return moving[:subjects], fixed[:subjects]


def _effects(names: Sequence[str], constants: set[str], sd: float, tables: int,
             rng: np.random.Generator) -> np.ndarray:
    """One random effect per name (``tables`` × names), zero for the design constants."""
    draws = rng.standard_normal((tables, len(names))) * sd
    draws[:, [i for i, name in enumerate(names) if name in constants]] = 0.0
    return draws


def simulate(moving: Sequence[str], fixed: Sequence[str], tables: int, subject_share: float, seed_share: float,
             effect: float, rng: np.random.Generator, seeds: int = SEEDS) -> np.ndarray:
    """``tables`` × pairs × seeds differences with true effect ``effect`` (module docstring)."""
    constants = set(find_design(moving, fixed).constants)
    subjects = sorted(set(moving) | set(fixed))
    dyads = sorted({tuple(sorted(p)) for p in zip(moving, fixed)})
    index = {name: i for i, name in enumerate(subjects)}
    sd = np.sqrt(subject_share / 3)
    mov = _effects(subjects, constants, sd, tables, rng)[:, [index[m] for m in moving]]
    fix = _effects(subjects, constants, sd, tables, rng)[:, [index[f] for f in fixed]]
    dyad_index = {d: i for i, d in enumerate(dyads)}
    pair = (rng.standard_normal((tables, len(dyads))) * sd)[:, [dyad_index[tuple(sorted(p))]
                                                               for p in zip(moving, fixed)]]
    seed = rng.standard_normal((tables, 1, seeds)) * np.sqrt(seed_share)
    residual = rng.standard_normal((tables, len(moving), seeds)) * np.sqrt(1 - subject_share - seed_share)
    return effect + (mov + fix + pair)[..., None] + seed + residual


def old_engine(d: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
               chunk: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The replaced engine: (Wilcoxon p, bootstrap low, high) of the seed-averaged pairs taken as independent."""
    pairs = d.mean(axis=-1)
    p = stats.wilcoxon(pairs, axis=-1).pvalue
    draws = np.random.default_rng(seed).integers(0, pairs.shape[-1], (resamples, pairs.shape[-1]))
    low, high = np.empty(len(pairs)), np.empty(len(pairs))
    for start in range(0, len(pairs), chunk):
        means = pairs[start:start + chunk, draws].mean(axis=-1)
        low[start:start + chunk], high[start:start + chunk] = np.percentile(means, [2.5, 97.5], axis=-1)
    return p, low, high


def _rates(p: np.ndarray, low: np.ndarray, high: np.ndarray, truth: float) -> tuple[float, float]:
    return float(np.mean(p < ALPHA)), float(np.mean((low <= truth) & (truth <= high)))


def calibrate(name: str, subject_share: float, seed_share: float, tables: int = TABLES, seed: int = 0,
              subjects: int | None = None, effect: float = EFFECT, old: bool = True) -> dict[str, float]:
    """FPR and coverage under the null, and power under ``effect``, of the engine (and the old one) on
    ``tables`` simulated tables of design ``name``."""
    moving, fixed = design_of(name, subjects)
    design = find_design(moving, fixed)
    rng = np.random.default_rng(seed)
    null = simulate(moving, fixed, tables, subject_share, seed_share, 0.0, rng)
    row = difference_row(null, design.incidence)
    fpr, coverage = _rates(row["p"], row["ci_low"], row["ci_high"], 0.0)
    shifted = difference_row(null + effect, design.incidence)  # same noise, known effect
    power = float(np.mean(directional_verdict(shifted["p"], shifted["effect"], 0.0, "higher")
                          == "supported"))
    out = {"design": name, "units": design.describe(), "subject share": subject_share, "seed share": seed_share,
           "tables": tables, "FPR": fpr, "coverage": coverage, "power": power}
    if old:
        out["old FPR"], out["old coverage"] = _rates(*old_engine(null), 0.0)
    return out


def _dyadic(pairs: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, variance): dyadic cluster-robust variance, pairs sharing a unit correlated."""
    share = (design.incidence.astype(int) @ design.incidence.T.astype(int)) > 0
    u = pairs - pairs.mean(axis=-1, keepdims=True)
    return pairs.mean(axis=-1), np.einsum("tp,pq,tq->t", u, share, u) / pairs.shape[-1] ** 2


def _two_way_bootstrap(pairs: np.ndarray, design: Design, resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """Percentile interval of the pigeonhole bootstrap: units drawn with replacement, a pair weighted by
    the product of its units' counts; p from the interval's side of 0 (2 × the smaller tail)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(design.n_units, np.full(design.n_units, 1 / design.n_units), resamples)
    weights = np.ones((resamples, design.n_pairs))
    for g in range(design.n_units):
        weights *= np.where(design.incidence[:, g], counts[:, [g]], 1)
    means = (pairs @ weights.T) / weights.sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=-1)
    p = np.minimum(1.0, 2 * np.minimum((means <= 0).mean(axis=-1), (means >= 0).mean(axis=-1)))
    return p, low, high


def unit_methods(name: str, subject_share: float, tables: int = TABLES, seed: int = 1,
                 resamples: int = RESAMPLES) -> list[dict[str, float]]:
    """FPR and coverage of each candidate unit variance on null tables of design ``name`` (seed share 0,
    seeds averaged per pair)."""
    moving, fixed = design_of(name)
    design = find_design(moving, fixed)
    pairs = simulate(moving, fixed, tables, subject_share, 0.0, 0.0, np.random.default_rng(seed)).mean(axis=-1)
    n, df = design.n_pairs, design.n_units - 1
    estimate = pairs.mean(axis=-1)
    variances = {"pairs as independent": (pairs.var(axis=-1, ddof=1) / n, n - 1),
                 "dyadic cluster-robust": (_dyadic(pairs, design)[1], df),
                 "jackknife (engine)": (jackknife_variance(pairs, design.incidence), df)}
    rows = []
    for method in UNIT_METHODS:
        if method == "two-way bootstrap":
            p, low, high = _two_way_bootstrap(pairs, design, resamples, seed)
        else:
            variance, dof = variances[method]
            p, low, high = _t_test(estimate, np.sqrt(np.maximum(variance, 0.0)), dof)
        fpr, coverage = _rates(p, low, high, 0.0)
        rows.append({"design": name, "subject share": subject_share, "method": method, "FPR": fpr,
                     "coverage": coverage})
    return rows


def _t_test(estimate: np.ndarray, se: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, ...]:
    """(two-sided p of 0, 95 % low, high) of a t reference on ``df``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(estimate) / se, df)
    half = stats.t.isf(ALPHA / 2, df) * se
    return p, estimate - half, estimate + half


def satterthwaite(d: np.ndarray, incidence: np.ndarray, decomposition: str) -> tuple[np.ndarray, ...]:
    """The seed treatments on Welch–Satterthwaite df, :func:`_t_test`'s (p, low, high). "anova":
    ``V_u + max(0, var_s(m) − MS_res/n)/S``; "engine": the engine's ``max(0, V_u − MS_res/(nS)) + var_s(m)/S``."""
    n, seeds = d.shape[-2:]
    units = incidence.shape[1] - 1
    jackknife = jackknife_variance(d.mean(axis=-1), incidence)
    between, residual = seed_parts(d)
    pieces_seeds = (between / seeds) ** 2 / (seeds - 1)
    pieces_units = jackknife ** 2 / units + (residual / seeds) ** 2 / ((n - 1) * (seeds - 1))
    if decomposition == "anova":
        var_seeds = np.maximum(between - residual, 0.0) / seeds
        total = jackknife + var_seeds
        df = np.where(var_seeds > 0, total ** 2 / (pieces_units + pieces_seeds), units)
    else:
        var_units = np.maximum(jackknife - residual / seeds, 0.0)
        total = var_units + between / seeds
        df = total ** 2 / (pieces_seeds + np.where(var_units > 0, pieces_units, 0.0))
    return _t_test(d.mean(axis=(-2, -1)), np.sqrt(total), df)


def seed_methods(name: str, subject_share: float, seed_share: float, tables: int = TABLES,
                 seed: int = 2) -> list[dict[str, float]]:
    """FPR and coverage of the two seed treatments on null tables of design ``name``."""
    moving, fixed = design_of(name)
    design = find_design(moving, fixed)
    d = simulate(moving, fixed, tables, subject_share, seed_share, 0.0, np.random.default_rng(seed))
    engine = difference_row(d, design.incidence)
    results = dict(zip(SEED_METHODS, (satterthwaite(d, design.incidence, "anova"),
                                      satterthwaite(d, design.incidence, "engine"),
                                      (engine["p"], engine["ci_low"], engine["ci_high"]))))
    return [{"design": name, "subject share": subject_share, "seed share": seed_share, "method": method,
             **dict(zip(("FPR", "coverage"), _rates(*results[method], 0.0)))} for method in SEED_METHODS]


def calibration_table(tables: int = TABLES, seed: int = 0) -> pd.DataFrame:
    """:func:`calibrate` over every design × subject share × seed share."""
    return pd.DataFrame([calibrate(name, sub, seeds, tables, seed + i)
                         for i, (name, sub, seeds) in enumerate((n, a, b) for n in DESIGNS
                                                                for a in SUBJECT_SHARES for b in SEED_SHARES)])


def methods_table(tables: int = TABLES, seed: int = 1) -> pd.DataFrame:
    """:func:`unit_methods` over every design and subject share."""
    return pd.DataFrame([row for name in DESIGNS for share in SUBJECT_SHARES
                         for row in unit_methods(name, share, tables, seed)])


def seed_methods_table(tables: int = TABLES, seed: int = 2) -> pd.DataFrame:
    """:func:`seed_methods` on the designs with independent pairs, every subject share × seed share."""
    return pd.DataFrame([row for name in ("atlas", "disjoint") for share in SUBJECT_SHARES
                         for seeds in SEED_SHARES for row in seed_methods(name, share, seeds, tables, seed)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=TABLES, help="simulated tables per setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of numpy's Generator")
    args = parser.parse_args(argv)
    print(f"Claims engine, α = {ALPHA}, {args.tables} null tables per row; power at effect {EFFECT} sd:\n")
    print(calibration_table(args.tables, args.seed).to_markdown(index=False, floatfmt=".3f"))
    print("\nCandidate unit variances (seed share 0, seeds averaged per pair):\n")
    print(methods_table(args.tables, args.seed + 1).to_markdown(index=False, floatfmt=".3f"))
    print("\nSeed treatments (units = pairs):\n")
    print(seed_methods_table(args.tables, args.seed + 2).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
