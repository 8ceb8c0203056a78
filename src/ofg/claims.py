"""The paper's claims as data, their families and the verdict rules (pure: no I/O).

Every rule and threshold below was fixed before any result was looked at.

**Data.** Per-pair frames, one row per (test pair, seed): pair keys (``split, pair_index, moving,
fixed``), ``seed`` and metrics (:mod:`ofg.evaluate`). Seed s of OFG is compared with seed s of the
comparator, on the seeds both have (a row notes it when the seed sets differ), on the pairs finite on
both sides at every common seed (:func:`ofg.units.match`).

**Units.** The independent unit is found from ``moving``/``fixed`` (:func:`ofg.units.find_design`): a
subject in every pair (the atlas) is a design constant; if every other subject is in one pair, units =
pairs, else units = subjects (a crossed design). A row needs :func:`ofg.inference_stats.min_units` units
(6: below, an exact sign-flip test over units cannot reach p < 0.05), else *insufficient data*.

**Effect, interval, test** (one choice for every inferential row, :mod:`ofg.inference_stats`): the
effect is the mean over seeds and pairs of the matched differences; its variance is the
delete-one-unit jackknife of the seed-averaged pair differences plus the between-seed variance of the
per-seed effects (less its residual part) / S, with Welch–Satterthwaite df; the test is the two-sided
t-test of effect = θ0 and the interval the matching 95 % t-interval (p < α exactly when it excludes
θ0; it is not adjusted for multiplicity). The jackknife was chosen by :mod:`ofg.calibration`.

**Verdicts** (:data:`VERDICTS`), one rule for every inferential row: with p' = Holm p in a family,
else p: *supported* when p' < α and the effect lies on the claim's side of θ0 (:attr:`Claim.direction`),
*contradicted* when p' < α on the other side, else *inconclusive*. θ0 is 0 except:

- "far fewer non-diffeomorphic voxels" is about size: effect = relative reduction 1 − mean(OFG) /
  mean(comparator) (delta method), θ0 = :data:`SIZE_THRESHOLD` (far fewer = at least halved);
- "20 steps are not better than 10 by more than a margin": effect = Dice(k=20) − Dice(k=10) (k = 10 is
  the main run, fixed a priori), θ0 = :data:`NONINFERIORITY_MARGIN`, claim side: below it.

**Step ablation** (k ≥ 1 only; k = 0 is the Dice claim): "5 steps beat 1" and "10 steps beat 1", two rows
(the paper says 5–10; each k is its own claim, no winner is picked from the data), and the margin row.
The paper's direction is tested at α/2 per side (the two-sided test), which also allows *contradicted*.

**Families** (:data:`FAMILIES`; Holm within each, over its rows with data, so adding a dataset or model
changes no other family's adjusted p): primary = Dice gain per (dataset, model), plus the
intersection-union row "consistently across datasets and models" (no adjustment needed: *supported*
only when every primary row is supported, *contradicted* when any is, *insufficient data* when any
lacks data, else inconclusive; p = the largest unadjusted p); secondary = folding (size) and SDlogJ;
Fig. 3 = beats self-training and optimised self-training; ablation = its three rows. Descriptive,
outside any family (unadjusted p): Fig. 2 (the optimiser alone), EPE (our addition, exploratory) and
the timing rows.

**Timing** (a controlled measurement, :meth:`ofg.layout.Layout.timing`; absent → *insufficient data*):
per (seed, repeat) ratio OFG ÷ unsupervised seconds, pooled over seeds, mean with a t-interval over the
ratios. Inference is the same network, so its cost is equal by construction; the row checks it:
*supported* when the interval lies within 1 ± :data:`INFERENCE_MARGIN`, *contradicted* when it lies
outside, else inconclusive (p = 2 × the larger one-sided TOST p). Training overhead: *supported* when
the interval's upper end is below :data:`OVERHEAD_LIMIT` (ours; the paper gives no number),
*contradicted* when its lower end is above (two-sided test of ratio = limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ofg.inference_stats import ALPHA, holm

SIZE_THRESHOLD = 0.5
NONINFERIORITY_MARGIN = 0.01
INFERENCE_MARGIN = 0.10
OVERHEAD_LIMIT = 1.5
VERDICTS = ("supported", "contradicted", "inconclusive", "insufficient data")
DIRECTIONS = ("higher", "lower")
RULES = ("difference", "size", "equal", "limit", "consistency")
EXPERIMENTS = ("main", "self_training", "ablation", "refinement", "timing", "summary")


@dataclass(frozen=True)
class Claim:
    """One claim: OFG's ``metric`` against ``comparator`` lies on the ``direction`` side of ``null``.

    ``experiment`` says which runs it compares: "main" (the main OFG run vs unsupervised),
    "self_training", "ablation" (``steps`` = (k, reference k)), "refinement" (the optimiser alone: step
    10 vs 0), "timing" (``metric`` is the timing kind) or "summary" (the intersection-union row).
    """

    name: str
    statement: str
    metric: str
    direction: str
    comparator: str
    experiment: str = "main"
    rule: str = "difference"
    null: float = 0.0
    steps: tuple[int, int] | None = None
    exploratory: bool = False


CLAIMS = (
    Claim("dice_gain", "OFG raises Dice over the unsupervised baseline", "dice_mean", "higher", "unsupervised"),
    Claim("dice_consistent", "OFG raises Dice consistently across datasets and models", "dice_mean", "higher",
          "unsupervised", experiment="summary", rule="consistency"),
    Claim("fewer_folds", f"OFG has far fewer non-diffeomorphic voxels (%|J|≤0 at least "
          f"{1 - SIZE_THRESHOLD:.0%} lower)", "folding_percent", "higher", "unsupervised", rule="size",
          null=SIZE_THRESHOLD),
    Claim("smoother", "OFG fields are smoother (SDlogJ)", "sdlogj_l2r", "lower", "unsupervised"),
    Claim("beats_self_training", "OFG beats self-training (Fig. 3)", "dice_mean", "higher", "self_training",
          experiment="self_training"),
    Claim("beats_opt_self_training", "OFG beats optimised self-training (Fig. 3)", "dice_mean", "higher",
          "opt_self_training", experiment="self_training"),
    Claim("steps_5_beat_1", "5 OFG steps beat 1 step (step ablation)", "dice_mean", "higher", "k = 1",
          experiment="ablation", steps=(5, 1)),
    Claim("steps_10_beat_1", "10 OFG steps beat 1 step (step ablation)", "dice_mean", "higher", "k = 1",
          experiment="ablation", steps=(10, 1)),
    Claim("steps_20_no_better", f"20 steps beat 10 by less than {NONINFERIORITY_MARGIN} Dice (step ablation)",
          "dice_mean", "lower", "k = 10", experiment="ablation", null=NONINFERIORITY_MARGIN, steps=(20, 10)),
    Claim("optimiser_alone", "The optimiser alone raises Dice within 10 steps (Fig. 2)", "dice", "higher",
          "step 0", experiment="refinement"),
    Claim("closer_to_truth", "OFG fields are closer to the true deformation (EPE; ours, exploratory)",
          "endpoint_error", "lower", "unsupervised", exploratory=True),
    Claim("no_inference_cost", f"OFG costs nothing at inference (s/pair ratio within 1 ± {INFERENCE_MARGIN})",
          "inference", "lower", "unsupervised", experiment="timing", rule="equal", null=1.0),
    Claim("modest_overhead", f"OFG's training overhead is modest (s/iter ratio below {OVERHEAD_LIMIT}; ours)",
          "iteration", "lower", "unsupervised", experiment="timing", rule="limit", null=OVERHEAD_LIMIT),
)
CLAIM_BY_NAME = {claim.name: claim for claim in CLAIMS}
#: family -> its claims (Holm within); the intersection-union row belongs to "primary" unadjusted
FAMILIES = {"primary": ("dice_gain",), "secondary": ("fewer_folds", "smoother"),
            "fig3": ("beats_self_training", "beats_opt_self_training"),
            "ablation": ("steps_5_beat_1", "steps_10_beat_1", "steps_20_no_better")}
DESCRIPTIVE = ("optimiser_alone", "closer_to_truth", "no_inference_cost", "modest_overhead")
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names} | {
    "dice_consistent": "primary (IUT)"} | {name: "descriptive" for name in DESCRIPTIVE}


def directional_verdict(p: Any, effect: Any, null: float, direction: str, alpha: float = ALPHA) -> np.ndarray:
    """The verdict of every inferential row (module docstring), elementwise over arrays of p and effect."""
    p, effect = np.asarray(p, dtype=float), np.asarray(effect, dtype=float)
    side = (effect - null) * (1.0 if direction == "higher" else -1.0)
    significant = np.isfinite(p) & (p < alpha)
    return np.where(significant & (side > 0), "supported",
                    np.where(significant & (side < 0), "contradicted", "inconclusive"))


def interval_verdict(low: float, high: float, lower: float, upper: float) -> str:
    """*supported* when [low, high] lies within [lower, upper], *contradicted* when it lies outside."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "insufficient data"
    if lower <= low and high <= upper:
        return "supported"
    return "contradicted" if high < lower or low > upper else "inconclusive"


def consistency_row(rows: pd.DataFrame, claim: Claim = CLAIM_BY_NAME["dice_consistent"]) -> dict[str, Any]:
    """The intersection-union row over the finished primary rows (module docstring)."""
    verdicts = set(rows["verdict"])
    verdict = ("contradicted" if "contradicted" in verdicts else "supported" if verdicts == {"supported"}
               else "insufficient data" if "insufficient data" in verdicts else "inconclusive")
    labels = ", ".join(f"{d}/{m}" for d, m in zip(rows["dataset"], rows["model"]))
    return {"dataset": "all", "model": "all", "claim": claim.name, "statement": claim.statement,
            "family": FAMILY_OF[claim.name], "metric": claim.metric, "direction": claim.direction,
            "comparator": claim.comparator, "rule": claim.rule, "null": claim.null,
            "effect": float(rows["effect"].min()), "p": float(rows["p"].max()),
            "n": f"{len(rows)} rows", "note": f"smallest gain shown; intersection-union over {labels}",
            "verdict": verdict}


def finalize(rows: Iterable[Mapping[str, Any]], alpha: float = ALPHA) -> pd.DataFrame:
    """The claims table: Holm within each family (:data:`FAMILIES`), their verdicts, then the
    intersection-union row when there are two or more primary rows."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for family, names in FAMILIES.items():
        members = table["claim"].isin(names) & (table["verdict"] != "insufficient data")
        table.loc[members, "p_holm"] = holm(table.loc[members, "p"])
        for index in table.index[members]:
            claim = CLAIM_BY_NAME[table.at[index, "claim"]]
            table.at[index, "verdict"] = str(directional_verdict(
                table.at[index, "p_holm"], table.at[index, "effect"], claim.null, claim.direction, alpha))
    primary = table[table["claim"] == "dice_gain"]
    if len(primary) >= 2:
        table = pd.concat([table, pd.DataFrame([consistency_row(primary)])], ignore_index=True)
    order = {name: i for i, name in enumerate(CLAIM_BY_NAME)}
    return table.sort_values("claim", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
