"""The robustness experiment: the main comparison with one departure of the default reverted at a time.

The default config departs from the paper on purpose (README): the network's learning rate, the small
networks, one synthetic population per cohort. Whether the claims table's Dice verdict is ours or OFG's
is asked by *variants* (config section ``robustness``, declared in ``config/robustness.yaml``), each of
which reverts one departure and re-runs the main comparison: unsupervised vs OFG k = ``ofg.steps`` of
``robustness.model`` on ``robustness.datasets``, every seed of the model, evaluated on the test split and
tested by the claims table's Dice row (:mod:`ofg.report.robustness_table`).

A :class:`Setting` is the baseline (the default's own main runs) or one variant. Its config is the
workflow config with the variant's ``changes`` merged in key by key, restricted to that comparison
(:func:`main_comparison`) with the variant's ``model``, and with the variant's ``epochs`` per dataset.
Where it lives:

- **reused**: when every run of the setting is a run of the default plan with the same run config and
  evaluation parameters (:func:`reuses_default`), the setting *is* those runs: its results root is the
  default's and nothing is trained again (the baseline; a variant that only swaps in another network the
  default trains);
- **own tree**: otherwise it trains in a results tree of its own inside the default's
  (:meth:`ofg.layout.Layout.robustness`), which reads the default's prepared cohorts (config key
  ``cohorts``) unless the variant changes how one is prepared; then it prepares its own there.

A variant's ``epochs`` null means its learning curves are not measured yet: :func:`settings` refuses
with a ValueError naming the variant's ``probe``. Pure and light (standard library only): the Snakefile
calls it while parsing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from ofg import plan, stages
from ofg.names import EMBEDDED, GAP_FIGURE
from ofg.plan import Run

#: the setting of the default's own runs (a variant may not take this name)
BASELINE = "baseline"
#: the table's name (:meth:`ofg.layout.Layout.table`); each setting's tree holds its :data:`ofg.names.GAP_FIGURE`
TABLE = "robustness"
#: top-level keys a variant's ``changes`` may not touch: where results go, and the experiment itself
FIXED_KEYS = ("results", "cohorts", "robustness")


@dataclass(frozen=True, eq=False)
class Setting:
    """One row group of the robustness table: its ``name``, what it ``reverts``, the network it compares
    (``model``), its workflow ``config`` (:func:`settings`) and whether its runs are the default's (``reused``)."""

    name: str
    reverts: str
    model: str
    config: dict[str, Any]
    reused: bool

    @property
    def datasets(self) -> list[str]:
        return list(self.config["datasets"])

    def runs(self) -> list[Run]:
        """Every training run of the setting (each dataset × unsupervised and OFG × seed)."""
        return plan.training_runs(self.config)


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` merged in key by key (mappings merge, anything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def main_comparison(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``config`` restricted to the main comparison of ``model`` on ``robustness.datasets``: no
    self-training, ablation, reference rows, refinement or timing job."""
    out = copy.deepcopy(dict(config))
    out["datasets"] = {d: {**out["datasets"][d], "models": [model]} for d in config["robustness"]["datasets"]}
    for section in ("self_training", "ablation"):
        out[section] = {**out[section], "datasets": [], "models": []}
    for section in ("baselines", "refinement"):
        out[section] = {**out[section], "datasets": []}
    out["timing"] = {**out["timing"], "enabled": False}
    return out


def reuses_default(config: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` (rooted where ``config`` is) prepares its cohorts as ``config`` does and every
    run of it is a run of ``config``'s plan with the same run config and evaluation parameters: then its
    results are the default's."""
    default = set(plan.training_runs(config))
    same_runs = all(run in default and plan.run_config(candidate, run) == plan.run_config(config, run)
                    and stages.evaluate_parameters(candidate, run) == stages.evaluate_parameters(config, run)
                    for run in plan.training_runs(candidate))
    return same_runs and _same_cohorts(config, candidate)


def _check_section(config: Mapping[str, Any]) -> None:
    section = config["robustness"]
    if not section["datasets"]:
        raise ValueError("config robustness.datasets: empty; name the datasets of the robustness comparison")
    for dataset in section["datasets"]:
        entry = config["datasets"].get(dataset)
        if entry is None or section["model"] not in entry["models"]:
            raise ValueError(f"config robustness: the baseline is the default's {section['model']} on {dataset}, "
                             f"which this config does not train (datasets.{dataset}.models)")
    if BASELINE in section["variants"]:
        raise ValueError(f"config robustness.variants.{BASELINE}: the name of the default's setting; rename it")


def _epochs(name: str, variant: Mapping[str, Any], datasets: list[str]) -> dict[str, int]:
    """The variant's own epochs per dataset ({} for none); ValueError naming its probe where one is unset."""
    epochs = variant.get("epochs")
    if epochs is None:
        return {}
    missing = [d for d in datasets if epochs.get(d) is None]
    if missing:
        raise ValueError(
            f"config robustness.variants.{name}.epochs: not measured yet for {', '.join(missing)}. Measure the "
            f"variant's learning curves first ({variant.get('probe') or 'no probe given'}), set its epochs to "
            f"what `python -m ofg.budget curves` says, or set robustness.variants.{name}.enabled: false to run "
            "the other variants")
    return {d: int(epochs[d]) for d in datasets}


def _same_cohorts(config: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` prepares every embedded cohort as ``config`` does (same root)."""
    embedded = [d for d in candidate["datasets"] if d in EMBEDDED]
    return all(stages.prepare_parameters(candidate, d) == stages.prepare_parameters(config, d) for d in embedded)


def variant_setting(config: Mapping[str, Any], name: str, variant: Mapping[str, Any]) -> Setting:
    """The setting of variant ``name`` (module docstring: reused, or its own tree)."""
    changes = dict(variant.get("changes") or {})
    if fixed := sorted(set(changes) & set(FIXED_KEYS)):
        raise ValueError(f"config robustness.variants.{name}.changes: may not change {', '.join(fixed)}")
    model = variant.get("model") or config["robustness"]["model"]
    candidate = main_comparison(merged(config, changes), model)
    for dataset, epochs in _epochs(name, variant, list(candidate["datasets"])).items():
        candidate["datasets"][dataset]["epochs"] = epochs
    plan.check_config(candidate)
    if reuses_default(config, candidate):
        return Setting(name, variant["reverts"], model, candidate, reused=True)
    shared = _same_cohorts(config, candidate)
    candidate["results"] = str(plan.layout(config).robustness(name).root)
    candidate["cohorts"] = str(plan.layout(config).cohorts) if shared else None
    return Setting(name, variant["reverts"], model, candidate, reused=False)


def settings(config: Mapping[str, Any]) -> list[Setting]:
    """The baseline and every enabled variant of ``robustness.variants``, in order; [] when the config
    declares no variant. ValueError naming the key for a wrong section or an unmeasured variant."""
    section = config.get("robustness") or {}
    if not section.get("variants"):
        return []
    _check_section(config)
    baseline = Setting(BASELINE, "none: the default run's main comparison", section["model"],
                       main_comparison(config, section["model"]), reused=True)
    return [baseline, *(variant_setting(config, name, variant) for name, variant in section["variants"].items()
                        if variant.get("enabled", True))]


def trained(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{variant: config} of the settings that train in their own tree (the rules' ``{variant}``)."""
    return {s.name: s.config for s in settings(config) if not s.reused}


def _training(setting: Setting, dataset: str) -> dict[str, Any]:
    """What the table says about a setting's training on ``dataset``: lr, network size, epochs, cohort seed."""
    run = next(r for r in setting.runs() if r.dataset == dataset)
    resolved = plan.run_config(setting.config, run)
    prepare = setting.config["datasets"][dataset].get("prepare") or {}
    return {"lr": resolved["lr"], "model_size": resolved["model"]["size"], "epochs": resolved["epochs"],
            "cohort_seed": prepare.get("seed")}


def report_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """What notebook 08 (:func:`ofg.report.robustness_table.write_robustness`) needs (plain, YAML-safe):
    the table's paths and, per setting, its report plan (:func:`ofg.stages.report_plan`), training and figures."""
    layout = plan.layout(config)
    rows = []
    for setting in settings(config):
        figures = [{"dataset": d, "model": setting.model,
                    "paths": [str(p) for p in layout.robustness(setting.name).figure(GAP_FIGURE, d, setting.model)]}
                   for d in setting.datasets]
        rows.append({"name": setting.name, "reverts": setting.reverts, "reused": setting.reused,
                     "model": setting.model, "plan": stages.report_plan(setting.config), "figures": figures,
                     "training": {d: _training(setting, d) for d in setting.datasets}})
    return {"results": str(layout.root), "table": [str(p) for p in layout.table(TABLE)], "settings": rows}


def outputs(robustness_plan: Mapping[str, Any]) -> list[str]:
    """Every file the robustness report writes: the table, then each setting's figures."""
    figures = [p for s in robustness_plan["settings"] for f in s["figures"] for p in f["paths"]]
    return [*robustness_plan["table"], *figures]


def inputs(config: Mapping[str, Any]) -> list[str]:
    """The files the robustness report reads: every setting's run summaries and metrics."""
    paths = []
    for setting in settings(config):
        layout = plan.layout(setting.config)
        paths += [str(p) for run in setting.runs() for p in (layout.run(run.key).summary, layout.metrics(run.key))]
    return paths
