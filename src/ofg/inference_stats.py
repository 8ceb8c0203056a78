"""Estimates, standard errors, tests and intervals of a mean over pairs and seeds (pure: no I/O).

Every function takes arrays whose last axes are pairs × seeds (``d[..., p, s]``) and works on any
leading axes, so that :mod:`ofg.calibration` runs the claims engine on thousands of tables at once.
``incidence`` is the pair × unit matrix of :class:`ofg.units.Design`. The effect is
``θ = mean over pairs and seeds of d``; with ``D[p] = mean_s d[p, s]`` and ``m_s = mean_p d[p, s]``
(the per-seed effects), its variance has two parts:

- **seeds** ``V_s = var_s(m)/S``: given the pairs, the per-seed effects are i.i.d. (seed effect plus
  the pair × seed residual averaged over pairs), so ``V_s`` is exact with ``S − 1`` df;
- **units** ``V_u = max(0, J − MS_res/(nS))``: ``J`` is the delete-one-unit jackknife of the mean of
  ``D``, ``(G−1)/G Σ_g (θ_(g) − θ_(·))²`` with ``θ_(g)`` the mean over the pairs that do not involve
  unit ``g`` (a crossed design deletes every pair of a subject; with units = pairs, ``J = var(D)/n``);
  the pair × seed residual (mean square ``MS_res``, balanced two-way ANOVA) is in both ``J`` and
  ``V_s`` and is taken out of ``J``. ``G − 1`` df.

``se = sqrt(V_u + V_s)``; the reference is Cochran–Cox's: the two-sided critical value is the average
of ``t_{G−1}`` and ``t_{S−1}`` weighted by ``V_u`` and ``V_s``. With one seed it is the paired t-test
over units; with no unit-level variance, the one-sample t-test of the per-seed effects. p is the α
whose critical value equals ``|θ − θ0|/se``, so a test rejects at α exactly when the (1 − α) interval
``θ ± critical·se`` excludes θ0.

Why these (``python -m ofg.calibration``, 1,000 null tables per setting, see
``docs_statistics_draft.md``): on the crossed 7-subject design, pairs taken as independent reject 25–33 %
of nulls and the dyadic cluster-robust sandwich (t on G − 1 df) 20–23 %; the two-way (pigeonhole)
bootstrap is anti-conservative on independent pairs (6.3–7.0 %); the jackknife holds 5.0–6.0 % on
independent pairs and 2.2–2.7 % (conservative: Efron–Stein) on the crossed design. With 3 seeds,
Welch–Satterthwaite df reject 5.2–7.8 % of nulls once the seeds carry 5–20 % of the variance;
Cochran–Cox stays within 3.0–5.3 %.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Iterable

import numpy as np
from scipy import stats

ALPHA = 0.05
#: the smallest p that :func:`p_value` resolves
TINY = 1e-300


@dataclass(frozen=True)
class Estimate:
    """An effect with the two parts of its variance (arrays over the leading axes), their degrees of
    freedom, and the per-seed effects (last axis: seeds)."""

    effect: np.ndarray
    var_units: np.ndarray
    var_seeds: np.ndarray
    df_units: int
    df_seeds: int
    per_seed: np.ndarray

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(self.var_units + self.var_seeds)


def min_units(alpha: float = ALPHA) -> int:
    """Fewest units whose exact sign-flip test over units can reach two-sided p < ``alpha`` (2/2^n < α):
    6 at 0.05. Fewer units leave the t-test's normal tail as the only source of significance."""
    return next(n for n in range(1, 64) if 2.0 / 2 ** n < alpha)


def jackknife_variance(values: np.ndarray, incidence: np.ndarray) -> np.ndarray:
    """Delete-one-unit jackknife variance of the mean over pairs (last axis of ``values``)."""
    keep = ~np.asarray(incidence, dtype=bool)
    counts = keep.sum(axis=0)
    if keep.shape[1] < 2 or np.any(counts == 0):
        return np.full(values.shape[:-1], np.nan)
    left_out = (values @ keep) / counts
    units = keep.shape[1]
    spread = left_out - left_out.mean(axis=-1, keepdims=True)
    return (units - 1) / units * (spread ** 2).sum(axis=-1)


def seed_parts(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(var over seeds of the per-seed effects ``m_s``, pair × seed residual mean square / n); zeros with
    one seed or one pair."""
    n, seeds = d.shape[-2:]
    if seeds < 2 or n < 2:
        zero = np.zeros(d.shape[:-2])
        return zero, zero
    per_seed = d.mean(axis=-2)
    pair_mean = d.mean(axis=-1, keepdims=True)
    resid = d - pair_mean - per_seed[..., None, :] + d.mean(axis=(-2, -1))[..., None, None]
    ms_res = (resid ** 2).sum(axis=(-2, -1)) / ((n - 1) * (seeds - 1))
    return per_seed.var(axis=-1, ddof=1), ms_res / n


def mean_estimate(d: np.ndarray, incidence: np.ndarray) -> Estimate:
    """The effect ``mean(d)`` over pairs × seeds with its unit and seed variance parts (module docstring)."""
    d = np.asarray(d, dtype=float)
    seeds = d.shape[-1]
    between, residual = seed_parts(d)
    var_units = np.maximum(jackknife_variance(d.mean(axis=-1), incidence) - residual / seeds, 0.0)
    units = np.asarray(incidence).shape[1]
    return Estimate(d.mean(axis=(-2, -1)), var_units, between / seeds, max(units - 1, 1), seeds - 1,
                    d.mean(axis=-2))


def ratio_estimate(a: np.ndarray, b: np.ndarray, incidence: np.ndarray) -> Estimate:
    """The ratio of means ``mean(a)/mean(b)`` with the delta method: the variance of :func:`mean_estimate`
    of the linearised values ``(a − r·b)/mean(b)``; per-seed effects are the per-seed ratios of means."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_b = b.mean(axis=(-2, -1))
        ratio = a.mean(axis=(-2, -1)) / mean_b
        linear = (a - ratio[..., None, None] * b) / mean_b[..., None, None]
        per_seed = a.mean(axis=-2) / b.mean(axis=-2)
    inner = mean_estimate(linear, incidence)
    return Estimate(ratio, inner.var_units, inner.var_seeds, inner.df_units, inner.df_seeds, per_seed)


def critical_value(estimate: Estimate, alpha: Any = ALPHA) -> np.ndarray:
    """Cochran–Cox two-sided critical value: the t quantiles of the two parts (``df_units``, ``df_seeds``)
    weighted by their variances; the units' quantile alone where both parts are 0."""
    alpha = np.asarray(alpha, dtype=float)
    t_units = stats.t.isf(alpha / 2, estimate.df_units)
    if estimate.df_seeds < 1:
        return np.broadcast_to(t_units, np.broadcast(alpha, estimate.effect).shape).copy()
    t_seeds = stats.t.isf(alpha / 2, estimate.df_seeds)
    total = estimate.var_units + estimate.var_seeds
    with np.errstate(divide="ignore", invalid="ignore"):
        mixed = (estimate.var_units * t_units + estimate.var_seeds * t_seeds) / total
    return np.where(total > 0, mixed, t_units)


def p_value(estimate: Estimate, null: float = 0.0, iterations: int = 60) -> np.ndarray:
    """Two-sided p of effect = ``null``: the α whose :func:`critical_value` equals |effect − null|/se
    (bisection on log α), so that p < α exactly when :func:`interval` at 1 − α excludes ``null``;
    se = 0 gives p 0 (1 where effect = null)."""
    se = estimate.se
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(estimate.effect - null) / se
    low, high = np.full(t.shape, math.log(TINY)), np.zeros(t.shape)
    for _ in range(iterations):
        middle = (low + high) / 2
        above = critical_value(estimate, np.exp(middle)) > t
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    p = np.where(np.isfinite(t), np.exp((low + high) / 2), np.nan)
    degenerate = (se == 0) & np.isfinite(estimate.effect)
    return np.where(degenerate, np.where(estimate.effect == null, 1.0, 0.0), p)


def interval(estimate: Estimate, level: float = 1 - ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """``effect ± critical_value(1 − level) · se`` (the interval that matches :func:`p_value`)."""
    half = critical_value(estimate, 1 - level) * estimate.se
    return estimate.effect - half, estimate.effect + half


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, capped at 1); NaN entries stay NaN and do not count in m."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out
