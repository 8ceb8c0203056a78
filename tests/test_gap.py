"""ofg.gap: the guidance gap (prediction vs its refined target) per epoch in history.csv, and its figure.

Tiny synthetic runs (16^3, a 2-level VoxelMorph, see test_train): the columns of OFG and unsupervised
runs, their learning rate, a recomputation from the saved weights, energies checked against an
independent float64 computation, and training left bitwise unchanged by the measurement.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

import ofg.gap as gap_module
import synthetic
from ofg import kernels
from ofg.checkpoint import read_checkpoint
from ofg.config import RunConfig
from ofg.gap import GAP_COLUMNS, epoch_gap, gap_settings, guidance_gap
from ofg.guidance import poly_lr
from ofg.layout import Layout, RunKey
from ofg.models import build_model
from ofg.report import figures
from ofg.settings import RefineSettings
from ofg.train import train
from test_train import TINY, assert_same_weights, make_config, make_teacher, weights

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _synthetic(monkeypatch):
    synthetic.register(monkeypatch)


def gap_config(method: str, **changes) -> dict:
    """Two epochs on 2 train and 2 validation pairs, k = 2 refinement steps."""
    options = {**make_config()["dataset"]["options"], "n_val": 2, "amplitude": 3.0}
    return make_config(method, **{"epochs": 2, "dataset": {"options": options}, **changes})


def gap_of(history: pd.DataFrame) -> pd.DataFrame:
    return history[list(GAP_COLUMNS)]


# ---------------------------------------------------------------- the columns of a training run


@pytest.mark.parametrize("method", ["ofg", "unsupervised"])
def test_gap_columns_of_a_run_match_a_recomputation_from_its_weights(tmp_path, method):
    config = gap_config(method)
    run = train(config, tmp_path / "run", progress=False)
    history = pd.read_csv(run / "history.csv")
    assert set(GAP_COLUMNS) <= set(history.columns)
    # the refinement learning rate of the epoch: the OFG objective's poly-decayed one
    assert history["gap_lr"].tolist() == [poly_lr(0.1, epoch, 2) for epoch in range(2)]
    if method == "ofg":
        assert history["gap_lr"].tolist() == history["ofg_lr"].tolist()
    assert (history["gap_steps"] == 2).all()
    # the prediction is the validation's: its Dice is val_dice
    np.testing.assert_allclose(history["gap_dice_prediction"], history["val_dice"], rtol=0, atol=1e-12)
    assert gap_of(history).drop(columns="gap_seconds").notna().all().all()  # the synthetic pairs have true fields
    assert (history["gap_energy_target"] < history["gap_energy_prediction"]).all()
    assert (history["gap_seconds"] > 0).all()
    # the last row is the last epoch's network (last.pt) scored anew with that epoch's settings
    model = build_model("voxelmorph", (16, 16, 16), size="small", **TINY)
    model.load_state_dict(weights(run))
    dataset = synthetic.SyntheticDataset(n_train=2, n_val=2, n_test=1, amplitude=3.0)
    resolved = RunConfig.load(run / "config.yaml")
    again = guidance_gap(model, dataset, gap_settings(resolved, 1), max_pairs=None, device="cpu")
    for column, value in again.items():
        assert history[column].iloc[-1] == pytest.approx(value, rel=1e-9, abs=1e-12), column


def test_self_training_and_a_switched_off_gap_leave_the_columns_nan(tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt")
    runs = [train(gap_config("self_training", epochs=1, teacher=str(teacher)), tmp_path / "st", progress=False),
            train(gap_config("ofg", epochs=1, guidance_gap=False), tmp_path / "off", progress=False)]
    for run in runs:
        history = pd.read_csv(run / "history.csv")
        assert gap_of(history).isna().all().all(), run


def test_val_pairs_caps_the_measured_pairs(tmp_path, monkeypatch):
    counted = []
    original = gap_module.refine
    monkeypatch.setattr(gap_module, "refine", lambda *a, **k: counted.append(1) or original(*a, **k))
    train(gap_config("unsupervised", epochs=1, val_pairs=1), tmp_path / "run", progress=False)
    assert len(counted) == 1  # one validation pair of two, one epoch


@pytest.mark.parametrize("method", ["ofg", "unsupervised"])
def test_the_measurement_changes_no_weight_and_no_random_stream(tmp_path, method):
    """Flips, both directions, a draw from the torch RNG after every step: on or off, every step draws the
    same numbers and the run ends with the same weights, optimiser state and losses."""
    config = gap_config(method, bidirectional=True, augment_flips=True, iterations_per_epoch=2)
    draws: dict[bool, list[float]] = {True: [], False: []}
    runs = {}
    for on in (True, False):
        runs[on] = train({**config, "guidance_gap": on}, tmp_path / str(on), progress=False,
                         _step_callback=lambda step, on=on: draws[on].append(torch.rand(1).item()))
    assert len(draws[True]) == 8 and draws[True] == draws[False]
    for name in ("last.pt", "best.pt"):
        assert_same_weights(weights(runs[True], name), weights(runs[False], name))
    optimisers = [read_checkpoint(runs[on] / "checkpoints" / "last.pt")["optimizer"]["state"] for on in (True, False)]
    for key in optimisers[0]:
        assert torch.equal(optimisers[0][key]["max_exp_avg_sq"], optimisers[1][key]["max_exp_avg_sq"])
    on, off = (pd.read_csv(runs[flag] / "history.csv") for flag in (True, False))
    for column in ("loss", "val_dice", "lr"):
        assert on[column].tolist() == off[column].tolist()
    assert gap_of(on).notna().all().all() and gap_of(off).isna().all().all()


def test_epoch_gap_restores_every_rng_state(monkeypatch):
    """Even a refinement that drew random numbers would leave the torch, numpy and python streams as they were."""
    original = gap_module.refine

    def drawing(*args, **kwargs):
        torch.rand(5), np.random.rand(5), random.random()
        return original(*args, **kwargs)

    monkeypatch.setattr(gap_module, "refine", drawing)
    config = RunConfig.from_dict(gap_config("ofg"))
    dataset = synthetic.SyntheticDataset(n_val=1, amplitude=3.0)
    model = build_model("voxelmorph", (16, 16, 16), size="small", **TINY)

    def draw() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()

    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    expected = draw()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    model.train()
    row = epoch_gap(config, model, dataset, 1, "cpu")
    assert draw() == expected
    assert model.training and math.isfinite(row["gap_energy_target"]) and row["gap_lr"] == poly_lr(0.1, 1, 2)


def test_fused_setting_reaches_the_measurement(tmp_path, monkeypatch):
    """An unsupervised run never refines in training: with ofg.fused its gap runs the numba kernels."""
    calls = []
    original = kernels.refine
    monkeypatch.setattr(kernels, "refine", lambda *a: calls.append(1) or original(*a))
    run = train(gap_config("unsupervised", epochs=1, ofg={"steps": 2, "fused": True}), tmp_path / "run",
                progress=False)
    assert len(calls) == 2  # two validation pairs
    history = pd.read_csv(run / "history.csv")
    assert history["gap_energy_target"].iloc[0] < history["gap_energy_prediction"].iloc[0]


# ---------------------------------------------------------------- energies against float64


def energy64(moving: np.ndarray, fixed: np.ndarray, disp: np.ndarray, reg_weight: float, window: int) -> float:
    """NCC + reg_weight·Grad_l2 in float64, independently: scipy's trilinear warp (zero outside), box sums by
    ``uniform_filter`` (zero padding), forward differences by ``np.diff``."""
    warped = synthetic.warp_numpy(moving.astype(np.float64), disp.astype(np.float64), order=1)
    i, j, n = fixed.astype(np.float64), warped, float(window ** 3)

    def box(x):
        return ndimage.uniform_filter(x, size=window, mode="constant", cval=0.0) * n

    s_i, s_j = box(i), box(j)
    cross = box(i * j) - s_i * s_j / n
    var_i = np.maximum(box(i * i) - s_i * s_i / n, 0)
    var_j = np.maximum(box(j * j) - s_j * s_j / n, 0)
    ncc = -np.mean(cross * cross / (var_i * var_j + 1e-5))
    diffusion = np.mean([np.mean(np.diff(disp.astype(np.float64), axis=a) ** 2) for a in (1, 2, 3)])
    return float(ncc + reg_weight * diffusion)


@pytest.mark.parametrize("fused", [False, True])
def test_target_energy_is_below_a_far_prediction_and_both_match_float64(monkeypatch, fused):
    """The prediction is the true field reversed (far from optimal); a few small Adam steps must lower the
    energy. The reported energies and end-point errors match independent float64 values of the fields."""
    dataset = synthetic.SyntheticDataset(n_val=1, amplitude=3.0)
    truth = dataset.ground_truth("val", 0)
    pair = dataset.pairs("val")[0]
    targets = []
    original = gap_module.refine
    monkeypatch.setattr(gap_module, "refine", lambda *a, **k: targets.append(original(*a, **k)) or targets[-1])
    settings = RefineSettings(steps=5, lr=0.02, reg_weight=1.0, window=5, fused=fused)
    row = guidance_gap(synthetic.Oracle(dataset, "val", scale=-1.0), dataset, settings, device="cpu")
    target = targets[0][0][0].double().numpy()
    assert row["gap_energy_target"] < row["gap_energy_prediction"]
    expected = {"prediction": energy64(pair.moving, pair.fixed, -truth, 1.0, 5),
                "target": energy64(pair.moving, pair.fixed, target, 1.0, 5)}
    for role, value in expected.items():
        assert row[f"gap_energy_{role}"] == pytest.approx(value, abs=2e-5), role
    assert row["gap_epe_prediction"] == pytest.approx(np.mean(np.linalg.norm(2 * truth, axis=0)), rel=1e-6)
    assert row["gap_epe_target"] == pytest.approx(np.mean(np.linalg.norm(target - truth, axis=0)), rel=1e-6)
    assert row["gap_epe_target"] < row["gap_epe_prediction"]
    assert (row["gap_lr"], row["gap_steps"]) == (0.02, 5.0)


def test_without_a_true_field_the_end_point_errors_are_nan(monkeypatch):
    dataset = synthetic.SyntheticDataset(n_val=1)
    monkeypatch.setattr(dataset, "ground_truth", lambda split, index: None)
    row = guidance_gap(synthetic.Oracle(synthetic.SyntheticDataset(n_val=1), "val"), dataset,
                       RefineSettings(steps=1), device="cpu")
    assert math.isnan(row["gap_epe_prediction"]) and math.isnan(row["gap_epe_target"])
    assert math.isfinite(row["gap_dice_target"])


# ---------------------------------------------------------------- the report's figure


def write_history(results: Path, run: dict, frame: pd.DataFrame) -> None:
    folder = Layout(results).run(RunKey(run["dataset"], run["model"], run["run"], str(run["seed"])))
    folder.path.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder.history, index=False)


def gap_history(offset: float, epe: bool) -> pd.DataFrame:
    """Three epochs: prediction Dice rising from 0.5 + offset, target Dice 0.6 + offset, energies and EPEs flat."""
    epochs = np.arange(3)
    flat = np.ones(3)
    return pd.DataFrame({"epoch": epochs, "val_dice": 0.5 + offset + 0.01 * epochs,
                         "gap_dice_prediction": 0.5 + offset + 0.01 * epochs, "gap_dice_target": (0.6 + offset) * flat,
                         "gap_energy_prediction": (-0.5 - offset) * flat, "gap_energy_target": (-0.6 - offset) * flat,
                         "gap_epe_prediction": (1.0 + offset) * flat if epe else np.nan * flat,
                         "gap_epe_target": (0.8 + offset) * flat if epe else np.nan * flat})


def tiny_plan(results: Path) -> dict:
    runs = [{"dataset": "embedded-brain", "model": "voxelmorph", "run": run_id, "method": method, "steps": steps,
             "seed": seed} for run_id, method, steps in (("unsupervised", "unsupervised", None), ("ofg-k2", "ofg", 2))
            for seed in (0, 1)]
    return {"results": str(results), "runs": runs, "main_run": "ofg-k2", "main_steps": 2}


def captured_figure(monkeypatch, plan: dict, paths: list[Path]):
    """Draw the figure through the real writer, keeping the figure object for inspection."""
    kept = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, p, caveat: kept.append(fig) or save(fig, p, caveat))
    figures.figure_guidance_gap(plan, "embedded-brain", "voxelmorph", paths)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
    return kept[0]


@pytest.mark.parametrize("epe", [True, False])
def test_gap_figure_draws_mean_over_seeds_of_both_runs(tmp_path, monkeypatch, epe):
    plan = tiny_plan(tmp_path / "results")
    for run in plan["runs"]:
        write_history(tmp_path / "results", run, gap_history(0.1 * run["seed"] + (0.05 if run["method"] == "ofg" else 0), epe))
    fig = captured_figure(monkeypatch, plan, [tmp_path / "gap.png", tmp_path / "gap.pdf"])
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert [ax.get_ylabel().split(" ")[0] for ax in axes] == (["validation", "energy", "end-point"] if epe
                                                               else ["validation", "energy"])
    dice = {line.get_label(): line.get_ydata() for line in axes[0].lines}
    assert len(dice) == 4  # two runs x (prediction, target)
    np.testing.assert_allclose(dice["OFG (ofg-k2): prediction"], 0.5 + 0.05 + 0.05 + 0.01 * np.arange(3))
    np.testing.assert_allclose(dice["unsupervised: target"], [0.65] * 3)
    assert len(axes[0].collections) == 4  # a min-max band per curve (two seeds)
    assert "no guidance-gap columns" not in fig.get_suptitle()


def test_gap_figure_tolerates_histories_without_the_columns(tmp_path, monkeypatch):
    plan = tiny_plan(tmp_path / "results")
    for run in plan["runs"]:  # older histories: no gap columns at all, or the unsupervised run's only
        frame = gap_history(0.0, True)
        write_history(tmp_path / "results", run, frame if run["method"] == "unsupervised" else frame[["epoch", "val_dice"]])
    fig = captured_figure(monkeypatch, plan, [tmp_path / "some.png"])
    assert "no guidance-gap columns in the histories of ofg-k2" in fig.get_suptitle()
    assert len(fig.axes[0].lines) == 2  # the unsupervised run alone
    for run in plan["runs"]:
        write_history(tmp_path / "results", run, gap_history(0.0, True)[["epoch", "val_dice"]])
    fig = captured_figure(monkeypatch, plan, [tmp_path / "none.png"])
    assert len(fig.axes) == 1 and not fig.axes[0].lines and not fig.axes[0].axison
    assert "unsupervised, ofg-k2" in fig.get_suptitle()
