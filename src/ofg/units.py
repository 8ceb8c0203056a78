"""The independent units of a table of registration pairs, and seed-matched value tables (pure: no I/O).

A test pair registers subject ``moving`` to subject ``fixed``. Pairs that share a subject are not
independent (i→j and j→i share both), so the unit of inference is found from the design:

1. subjects that are in *every* pair (the atlas of an atlas→subject design) are design constants: the
   results are conditional on them, they are dropped;
2. the remaining subjects are grouped by the set of pairs they are in (two subjects that only ever
   appear together, like the two subjects of a disjoint pair, are one unit);
3. if every unit is in one pair only, the pairs are independent: **units = pairs** (kind "pairs");
   otherwise the design is crossed and **units = subjects** (kind "subjects"; a pair touches one or two
   units, a pair with none is a unit of its own).

Without subject columns every pair is its own unit (the note says so). :class:`Design` holds the
pair × unit incidence that :mod:`ofg.inference_stats` resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

KINDS = ("pairs", "subjects")
NO_SUBJECTS = "no subject columns: pairs taken as independent"


@dataclass(frozen=True)
class Design:
    """``incidence[p, g]``: pair ``p`` involves unit ``g`` (bool, n_pairs × n_units)."""

    kind: str
    incidence: np.ndarray
    units: tuple[str, ...]
    constants: tuple[str, ...] = ()
    note: str = ""
    merged: bool = False

    @property
    def n_pairs(self) -> int:
        return int(self.incidence.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.incidence.shape[1])

    def describe(self) -> str:
        """"40 pairs" (independent pairs) or "7 subjects (42 pairs)" (crossed; "subject groups" where
        subjects that only appear together were merged)."""
        pairs = f"{self.n_pairs} pair{'s' if self.n_pairs != 1 else ''}"
        if self.kind == "pairs":
            return pairs
        word = "subject groups" if self.merged else "subjects"
        return f"{self.n_units} {word} ({pairs})"


def independent_pairs(n_pairs: int, note: str = "") -> Design:
    """Every pair its own unit."""
    return Design("pairs", np.eye(n_pairs, dtype=bool), tuple(str(p) for p in range(n_pairs)), note=note)


def find_design(moving: Sequence[str] | None, fixed: Sequence[str] | None) -> Design:
    """The design of pairs ``moving[p]`` → ``fixed[p]`` (see the module docstring); ``None``: no subjects."""
    if moving is None or fixed is None:
        return independent_pairs(len(moving if moving is not None else fixed or ()), NO_SUBJECTS)
    members = [{str(m), str(f)} for m, f in zip(moving, fixed)]
    constants = set.intersection(*members) if len(members) > 1 else set()
    pairs_of: dict[str, set[int]] = {}
    for p, subjects in enumerate(members):
        for subject in subjects - constants:
            pairs_of.setdefault(subject, set()).add(p)
    groups: dict[frozenset[int], list[str]] = {}
    for subject, pairs in sorted(pairs_of.items()):
        groups.setdefault(frozenset(pairs), []).append(subject)
    covered = set().union(*groups) if groups else set()
    for p in range(len(members)):  # a pair of constants only is a unit of its own
        if p not in covered:
            groups[frozenset({p})] = [f"pair {p}"]
    names = ["+".join(v) for v in groups.values()]
    incidence = np.zeros((len(members), len(groups)), dtype=bool)
    for g, pairs in enumerate(groups):
        incidence[sorted(pairs), g] = True
    note = f"design constant{'s' if len(constants) > 1 else ''} {', '.join(sorted(constants))} dropped" \
        if constants else ""
    if incidence.sum(axis=0).max(initial=0) <= 1 and incidence.sum(axis=1).max(initial=0) <= 1:
        order = np.argmax(incidence, axis=1)  # units = pairs, in pair order
        return Design("pairs", incidence[:, order], tuple(names[g] for g in order), tuple(sorted(constants)), note)
    merged = any(len(v) > 1 for v in groups.values())
    return Design("subjects", incidence, tuple(names), tuple(sorted(constants)), note, merged)


@dataclass(frozen=True)
class Matched:
    """Seed-matched values of two runs: ``a[p, s]`` (OFG) and ``b[p, s]`` (comparator) of pair ``p`` and
    common seed ``seeds[s]``; ``pairs`` holds the pair keys; ``seeds_a``/``seeds_b`` each side's seeds."""

    a: np.ndarray
    b: np.ndarray
    pairs: pd.DataFrame
    seeds: tuple[int, ...]
    seeds_a: tuple[int, ...]
    seeds_b: tuple[int, ...]

    @property
    def seed_note(self) -> str:
        """Empty when both sides have the same seeds (or one side has none); else which seeds were used."""
        if set(self.seeds_a) == set(self.seeds_b) or not self.seeds_a or not self.seeds_b:
            return ""
        return f"seeds differ ({list(self.seeds_a)} vs {list(self.seeds_b)}): common seeds {list(self.seeds)} used"

    def design(self) -> Design:
        """:func:`find_design` of the matched pairs."""
        has = {"moving", "fixed"} <= set(self.pairs.columns)
        if not has:
            return independent_pairs(len(self.pairs), NO_SUBJECTS)
        return find_design(self.pairs["moving"].tolist(), self.pairs["fixed"].tolist())


def _seeds(frame: pd.DataFrame) -> pd.Series:
    return frame["seed"].astype(int) if "seed" in frame.columns else pd.Series(0, index=frame.index)


def seed_table(frame: pd.DataFrame, metric: str, keys: Sequence[str]) -> pd.DataFrame:
    """``metric`` as a pairs × seeds table (rows indexed by ``keys``, one column per seed; duplicates averaged)."""
    values = frame.assign(_seed=_seeds(frame), _value=pd.to_numeric(frame[metric], errors="coerce"))
    return values.groupby([*keys, "_seed"], sort=True, dropna=False)["_value"].mean().unstack("_seed")


def match(ofg: pd.DataFrame, comparator: pd.DataFrame, metric: str, keys: Sequence[str]) -> Matched:
    """Seed s of OFG against seed s of the comparator, on the seeds both have, for the pairs whose values are
    finite on both sides at every common seed (a balanced pairs × seeds table)."""
    seeds_a = tuple(sorted(set(_seeds(ofg)))) if len(ofg) else ()
    seeds_b = tuple(sorted(set(_seeds(comparator)))) if len(comparator) else ()
    seeds = tuple(s for s in seeds_a if s in seeds_b)
    empty = np.zeros((0, len(seeds)))
    if not seeds or metric not in ofg.columns or metric not in comparator.columns:
        return Matched(empty, empty, pd.DataFrame(columns=list(keys)), seeds, seeds_a, seeds_b)
    a = seed_table(ofg, metric, keys).reindex(columns=list(seeds))
    b = seed_table(comparator, metric, keys).reindex(columns=list(seeds))
    both = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    both = both[np.isfinite(both.to_numpy(dtype=float)).all(axis=1)]
    width = len(seeds)
    values = both.to_numpy(dtype=float)
    return Matched(values[:, :width], values[:, width:], both.index.to_frame(index=False), seeds, seeds_a, seeds_b)
