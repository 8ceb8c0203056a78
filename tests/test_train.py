"""Tests of ofg.train on tiny synthetic data (16^3, a 2-level VoxelMorph): every method learns,
resume is exact (simulated and real kills), bad input is refused clearly."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import ofg
import ofg.train as train_module
import synthetic
from ofg.checkpoint import read_checkpoint, save_checkpoint
from ofg.config import RunConfig
from ofg.data import open_dataset
from ofg.data.fixtures import make_oasis_fixture
from ofg.data.torch_dataset import PairDataset
from ofg.inference import validation_scores
from ofg.io import DataError
from ofg.models import build_model
from ofg.spatial import warp
from ofg.spatial import flip_field
from ofg.teacher import TeacherFields
from ofg.train import Step, TrainingDiverged, epoch_order, main, pair_key, train

TINY = {"encoder": [4, 4], "decoder": [4, 4, 4]}
TESTS = Path(__file__).resolve().parent


def make_config(method: str = "ofg", **changes) -> dict:
    config = {
        "dataset": {"name": "synthetic", "root": "unused",
                    "options": {"size": [16, 16, 16], "n_train": 2, "n_val": 1, "n_test": 1}},
        "model": {"name": "voxelmorph", "size": "small", "overrides": dict(TINY)},
        "method": method, "ofg": {"steps": 2}, "epochs": 3, "lr": 3e-3, "seed": 0, "device": "cpu",
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture(autouse=True)
def _synthetic(monkeypatch):
    synthetic.register(monkeypatch)


def make_teacher(path: Path, shift=(1.0, -0.5, 0.5)) -> Path:
    """A teacher checkpoint (the TINY architecture) predicting the constant field ``shift`` voxels."""
    config = RunConfig.from_dict(make_config("unsupervised"))
    model = build_model("voxelmorph", (16, 16, 16), size="small", **TINY)
    with torch.no_grad():
        model.flow_head.weight.zero_()
        model.flow_head.bias.copy_(torch.tensor(shift))
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "config": config.to_dict(),
                           "image_size": [16, 16, 16]})
    return path


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoints" / name)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs by {(a[key] - b[key]).abs().max()}"


# ---------------------------------------------------------------------------------------------
# every method learns


@pytest.mark.parametrize("method", ["unsupervised", "ofg", "self_training", "opt_self_training"])
def test_each_method_lowers_its_loss(tmp_path, method):
    extra = {}
    if method in ("self_training", "opt_self_training"):
        extra["teacher"] = str(make_teacher(tmp_path / "teacher.pt"))
    options = {**make_config()["dataset"]["options"], "n_train": 1, "amplitude": 3.0}
    config = make_config(method, epochs=6, lr=1e-2, dataset={"options": options}, **extra)
    run = train(config, tmp_path / "run", progress=False)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(6))
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    expected_terms = {"unsupervised": {"loss_ncc"}, "ofg": {"loss_mse", "loss_energy_after"},
                      "self_training": {"loss_mse"}, "opt_self_training": {"loss_mse"}}[method]
    assert expected_terms | {"loss_diffusion", "val_dice", "val_folding_percent", "lr", "ofg_lr",
                             "seconds_per_iteration", "ofg_seconds_per_iteration", "peak_memory_mb"} <= set(history)
    assert history["lr"].iloc[0] == 1e-2 and history["lr"].is_monotonic_decreasing
    target_time = {"ofg": "ofg_seconds_per_iteration", "self_training": "teacher_seconds_per_iteration",
                   "opt_self_training": "teacher_seconds_per_iteration"}.get(method)
    for column in ("ofg_seconds_per_iteration", "teacher_seconds_per_iteration"):
        # the time spent making the regression target is logged for the method that has one
        assert history[column].notna().all() if column == target_time else history[column].isna().all()
    if target_time is not None:
        assert (history[target_time] <= history["seconds_per_iteration"]).all()
        assert history[target_time].iloc[0] > 0
    if method == "ofg":  # the optimiser lowers the energy of the predicted field
        assert (history["loss_energy_after"] < history["loss_energy_before"]).all()
        assert history["ofg_lr"].iloc[0] == 0.1 and np.isclose(history["ofg_lr"].iloc[1], 0.1 * (5 / 6) ** 0.9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_epoch"] == 5 and summary["best_val_dice"] == history["val_dice"].max()
    assert summary["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                   "numpy": np.__version__, "ofg": ofg.__version__}
    arithmetic = summary["arithmetic"]  # the path this run's numbers come from
    assert arithmetic["network"] == "float32" and arithmetic["channels_last"] is False
    assert arithmetic["float32_convolutions"] == "onednn" and arithmetic["device"] == "cpu"
    assert arithmetic["fused_refinement"] == ({"ofg": False, "opt_self_training": False}.get(method))
    assert arithmetic["cpu"] and arithmetic["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    saved = RunConfig.load(run / "config.yaml")
    assert saved.loss.diffusion_weight == (1.0 if method == "unsupervised" else 0.02)
    assert saved.bidirectional is False and saved.augment_flips is False  # the dataset's defaults
    assert "finished" in (run / "train.log").read_text()


def test_self_training_target_is_the_teacher_field(tmp_path):
    """With no regulariser and a constant-field teacher, the student moves towards that constant."""
    shift = torch.tensor([0.3, -0.2, 0.2])
    teacher = make_teacher(tmp_path / "teacher.pt", shift=tuple(shift.tolist()))
    options = {**make_config()["dataset"]["options"], "n_train": 1}
    config = make_config("self_training", epochs=15, lr=1e-2, teacher=str(teacher),
                         loss={"diffusion_weight": 0.0}, dataset={"options": options})
    run = train(config, tmp_path / "run", progress=False)
    model = build_model("voxelmorph", (16, 16, 16), size="small", **TINY)
    model.load_state_dict(weights(run))
    pair = synthetic.SyntheticDataset(n_train=1).pairs("train")[0]
    x = torch.from_numpy(np.stack([pair.moving, pair.fixed]))[None]
    with torch.no_grad():
        mean = model(x)[1].mean(dim=(0, 2, 3, 4))
    assert torch.allclose(mean, shift, atol=0.05), mean


# ---------------------------------------------------------------------------------------------
# data order, flips


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(0, 3, 10, None) == epoch_order(0, 3, 10, None)
    assert sorted(epoch_order(0, 3, 10, None)) == list(range(10))
    assert epoch_order(0, 3, 10, None) != epoch_order(0, 4, 10, None)
    assert epoch_order(0, 3, 10, 4) == epoch_order(0, 3, 10, None)[:4]


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)])
def test_flip_field_matches_flipped_images(axes):
    """warp(flip(M), flip_field(u)) == flip(warp(M, u)): the field of the flipped pair."""
    data = synthetic.SyntheticDataset(size=(16, 16, 16))
    moving = torch.from_numpy(data.pairs("train")[0].moving)[None, None].double()
    u = torch.from_numpy(data.ground_truth("train", 0))[None].double()
    dims = [a + 2 for a in axes]
    expected = warp(moving, u).flip(dims)
    got = warp(moving.flip(dims), flip_field(u, axes))
    assert torch.allclose(got, expected, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# exact resume


def resume_config(**changes) -> dict:
    options = {**make_config()["dataset"]["options"], "n_train": 3}
    settings = {"epochs": 2, "bidirectional": True, "augment_flips": True, "iterations_per_epoch": 2,
                "dataset": {"options": options}, **changes}
    return make_config("ofg", **settings)


def test_resume_after_simulated_kills_is_bitwise_exact(tmp_path):
    config = resume_config()
    reference = train(config, tmp_path / "straight", progress=False)

    # (a) killed between epochs: after the first epoch's checkpoint
    stopped = train(config, tmp_path / "stopped", progress=False, stop_after_epochs=1)
    assert not (stopped / "summary.json").exists()
    assert read_checkpoint(stopped / "checkpoints" / "last.pt")["epoch"] == 1
    train(config, stopped, progress=False)
    assert_same_weights(weights(reference), weights(stopped))

    # (b) killed in the middle of the second epoch (the 3rd optimiser step of that epoch)
    class Kill(Exception):
        pass

    calls = {"n": 0}

    def kill_in_epoch_two(step):
        calls["n"] += 1
        if calls["n"] == 4 + 3:  # epoch 1 has 4 steps (2 pairs x 2 directions)
            raise Kill

    with pytest.raises(Kill):
        train(config, tmp_path / "midway", progress=False, _step_callback=kill_in_epoch_two)
    assert read_checkpoint(tmp_path / "midway" / "checkpoints" / "last.pt")["epoch"] == 1
    train(config, tmp_path / "midway", progress=False)
    assert_same_weights(weights(reference), weights(tmp_path / "midway"))
    straight = pd.read_csv(reference / "history.csv")
    resumed = pd.read_csv(tmp_path / "midway" / "history.csv")
    assert len(resumed) == 2
    for column in ("loss", "loss_mse", "val_dice", "lr", "ofg_lr"):
        assert np.array_equal(straight[column].to_numpy(), resumed[column].to_numpy(), equal_nan=True)
    ref_opt = read_checkpoint(reference / "checkpoints" / "last.pt")["optimizer"]["state"]
    got_opt = read_checkpoint(tmp_path / "midway" / "checkpoints" / "last.pt")["optimizer"]["state"]
    for key in ref_opt:
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.equal(ref_opt[key][name], got_opt[key][name])


def test_resume_continues_the_device_rng_stream_and_is_exact(tmp_path, device):
    """Exact resume on --device (an OFG run with flips, both directions): every step draws a number on
    the device, as dropout would (on CUDA from the CUDA generator, which the checkpoint must carry); a
    run stopped after epoch 1 and resumed draws in epoch 2 what the straight run drew, and ends with its
    weights. On CUDA the device fixture asks cuDNN for deterministic algorithms."""
    config = resume_config(device=device.type)

    def recorder(draws: list[float]):
        return lambda step: draws.append(torch.rand(1, device=device).item())

    straight, first, second = [], [], []
    reference = train(config, tmp_path / "straight", progress=False, _step_callback=recorder(straight))
    stopped = train(config, tmp_path / "stopped", progress=False, stop_after_epochs=1, _step_callback=recorder(first))
    if device.type == "cuda":
        assert "cuda" in read_checkpoint(stopped / "checkpoints" / "last.pt")["rng"]
    train(config, stopped, progress=False, _step_callback=recorder(second))
    assert len(first) == len(second) == 4 and first + second == straight
    assert_same_weights(weights(reference), weights(stopped))


def test_reference_pairing_trains_new_pairs_every_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    """OASIS with train_pairs='reference' (pkl fixture): every epoch trains that epoch's pairs, both ways,
    and a run killed mid-epoch resumes to the weights of an uninterrupted one."""
    root = make_oasis_fixture(tmp_path / "oasis", layout="pkl", n_train=4, n_val=1)
    options = {"image_size": None, "train_pairs": "reference"}
    config = make_config("ofg", epochs=3, val_pairs=1, dataset={"name": "oasis", "root": str(root), "options": options})
    dataset = open_dataset("oasis", root, **options)
    expected = [sorted(pair_key(k, reverse) for k in dataset.epoch_pairs("train", e).keys for reverse in (False, True))
                for e in range(3)]
    assert expected[0] != expected[1] != expected[2]  # new partners every epoch
    seen: list[tuple[int, str]] = []
    step_call = Step.__call__

    def recording(self, moving, fixed, key, epoch, flips=()):
        seen.append((epoch, key))
        return step_call(self, moving, fixed, key, epoch, flips)

    monkeypatch.setattr(Step, "__call__", recording)
    reference = train(config, tmp_path / "straight", progress=False)
    assert [sorted(key for e, key in seen if e == epoch) for epoch in range(3)] == expected
    assert pd.read_csv(reference / "history.csv")["iterations"].tolist() == [8, 8, 8]  # 4 subjects x 2 directions

    class Kill(Exception):
        pass

    def kill_in_epoch_two(step):
        if step == 3:
            raise Kill

    train(config, tmp_path / "killed", progress=False, stop_after_epochs=1)
    with pytest.raises(Kill):
        train(config, tmp_path / "killed", progress=False, _step_callback=kill_in_epoch_two)
    assert read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 1
    seen.clear()
    train(config, tmp_path / "killed", progress=False)
    assert [sorted(key for e, key in seen if e == epoch) for epoch in (1, 2)] == expected[1:]
    assert_same_weights(weights(reference), weights(tmp_path / "killed"))
    straight, resumed = (pd.read_csv(run / "history.csv") for run in (reference, tmp_path / "killed"))
    for column in ("loss", "loss_mse", "val_dice"):
        assert np.array_equal(straight[column].to_numpy(), resumed[column].to_numpy(), equal_nan=True)


def test_validation_scores_dice_with_the_configured_label_mode_and_rule(tmp_path, monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        calls.append((kwargs["label_mode"], kwargs["dice_rule"]))
        return validation_scores(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_scores", recording)
    config = make_config("unsupervised", epochs=1, val_label_mode="nearest", val_dice_rule="both")
    run = train(config, tmp_path / "run", progress=False)
    assert calls == [("nearest", "both")]
    model = build_model("voxelmorph", (16, 16, 16), size="small", **TINY)
    model.load_state_dict(weights(run))
    dataset = synthetic.SyntheticDataset(n_train=2, n_val=1, n_test=1)
    expected, _ = validation_scores(model, dataset, "val", label_mode="nearest", dice_rule="both")
    assert pd.read_csv(run / "history.csv")["val_dice"].tolist() == [expected]
    train(make_config("unsupervised", epochs=1), tmp_path / "default", progress=False)
    assert calls[-1] == ("onehot", "either")  # the defaults: TransMorph's one-hot warping, labels in either map


@pytest.mark.slow
def test_resume_after_a_real_kill_of_the_cli(tmp_path):
    config = resume_config(epochs=4)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    reference = train(config, tmp_path / "straight", progress=False)

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ofg.data import DATASETS; "
            "DATASETS['synthetic'] = 'synthetic:open_synthetic'; from ofg.train import main; "
            "sys.exit(main(sys.argv[2:]))")
    command = [sys.executable, "-c", code, str(TESTS), str(config_path), "--out", str(tmp_path / "killed"),
               "--no-progress"]
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert checkpoint.exists(), "the CLI never wrote a checkpoint"
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before it was killed"
    epochs_before = read_checkpoint(checkpoint)["epoch"]
    assert 1 <= epochs_before < 4
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming {tmp_path / 'killed'} at epoch {epochs_before}" in (tmp_path / "killed" / "train.log").read_text()
    assert_same_weights(weights(reference), weights(tmp_path / "killed"))
    assert_same_weights(weights(reference, "best.pt"), weights(tmp_path / "killed", "best.pt"))


# ---------------------------------------------------------------------------------------------
# the output folder


def test_other_config_refused_finished_run_skipped_restart_allowed(tmp_path):
    config = make_config("unsupervised", epochs=1)
    run = train(config, tmp_path / "run", progress=False)
    stamp = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert train(config, run, progress=False) == run  # finished: nothing is redone
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    changed = make_config("unsupervised", epochs=2, ofg={"steps": 3})
    with pytest.raises(ValueError, match=r"different config.*epochs: 1 -> 2.*ofg\.steps: 2 -> 3.*--restart"):
        train(changed, run, progress=False)
    assert main([str(_write(tmp_path / "c.yaml", changed)), "--out", str(run), "--no-progress"]) == 1
    train(changed, run, restart=True, progress=False)
    assert len(pd.read_csv(run / "history.csv")) == 2
    assert RunConfig.load(run / "config.yaml").epochs == 2


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------------------------
# teacher fields


def test_teacher_fields_are_cached_and_reused(tmp_path, monkeypatch):
    predictions = []
    original = TeacherFields.predict

    def counting(self, moving, fixed):
        predictions.append(self.settings is not None)
        return original(self, moving, fixed)

    monkeypatch.setattr(TeacherFields, "predict", counting)
    teacher = str(make_teacher(tmp_path / "teacher.pt"))
    config = make_config("self_training", epochs=3, teacher=teacher, bidirectional=True, augment_flips=True)
    run = train(config, tmp_path / "run", progress=False, stop_after_epochs=1)
    assert len(predictions) == 4  # 2 pairs x 2 directions, once each
    train(config, run, progress=False)  # the resumed process reuses the files
    assert len(predictions) == 4
    files = sorted((run / "teacher_fields").rglob("*.pt"))
    assert len(files) == 4 and all(f.parent.name == "plain" for f in files)

    # opt_self_training: a separate cache of refined fields, each the refinement of the teacher's
    opt = make_config("opt_self_training", epochs=1, teacher=teacher)
    run = train(opt, tmp_path / "opt", progress=False)
    assert predictions[4:] == [True, True]
    data = synthetic.SyntheticDataset(n_train=2)
    pair = data.pairs("train")[0]
    moving = torch.from_numpy(pair.moving)[None, None]
    fixed = torch.from_numpy(pair.fixed)[None, None]
    from ofg.guidance import refine

    start = torch.tensor([1.0, -0.5, 0.5]).view(1, 3, 1, 1, 1).expand(1, 3, 16, 16, 16)
    expected, _ = refine(moving, fixed, start.contiguous(), steps=2, lr=0.1, reg_weight=1.0)
    cached = [f for f in (run / "teacher_fields").rglob("*.pt") if "train00" in f.name]
    assert len(cached) == 1 and cached[0].parent.name.startswith("refined_k2")
    assert torch.allclose(torch.load(cached[0]), expected, atol=1e-6)
    assert not torch.allclose(expected, start, atol=1e-3)


def test_teacher_missing_or_of_another_architecture(tmp_path):
    with pytest.raises(DataError, match="teacher checkpoint not found.*nothere.pt"):
        train(make_config("self_training", teacher=str(tmp_path / "nothere.pt")), tmp_path / "a", progress=False)
    config = RunConfig.from_dict(make_config("unsupervised", model={"overrides": {}}))
    other = build_model("voxelmorph", (16, 16, 16), size="small")
    save_checkpoint(tmp_path / "other.pt", {"model": other.state_dict(), "epoch": 1, "config": config.to_dict(),
                                            "image_size": [16, 16, 16]})
    with pytest.raises(DataError, match="other.pt.*same architecture"):
        train(make_config("self_training", teacher=str(tmp_path / "other.pt")), tmp_path / "b", progress=False)


# ---------------------------------------------------------------------------------------------
# bad input and divergence


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = make_config("unsupervised", epochs=3)
    run = train(config, tmp_path / "run", progress=False, stop_after_epochs=1)
    good = weights(run)
    original = PairDataset.__getitem__

    def poisoned(self, index):
        item = original(self, index)
        if index == 1 and self.epoch == 1:
            item["moving"][0, 0, 0, 0] = float("nan")
        return item

    monkeypatch.setattr(PairDataset, "__getitem__", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1 on pair train01_moving->train01_fixed"):
        train(config, run, progress=False)
    assert_same_weights(weights(run), good)
    assert read_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (run / "summary.json").exists()
    assert "train01_moving->train01_fixed" in (run / "train.log").read_text()


def test_nan_in_first_epoch_leaves_no_checkpoint(tmp_path):
    options = {**make_config()["dataset"]["options"], "nan_pair": 0}
    with pytest.raises(TrainingDiverged, match="epoch 0 on pair train00"):
        train(make_config("ofg", dataset={"options": options}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="method.*unsupervised, ofg, self_training, opt_self_training"):
        train(make_config("magic"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="unknown model 'resnet'.*voxelmorph, transmorph"):
        train(make_config(model={"name": "resnet"}), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*embedded-brain"):
        train(make_config(dataset={"name": "nope"}), tmp_path / "c", progress=False)


def test_image_size_the_model_cannot_take_surfaces_the_models_error(tmp_path):
    options = {**make_config()["dataset"]["options"], "size": [18, 18, 18]}
    with pytest.raises(ValueError, match="voxelmorph: img_size \\(18, 18, 18\\) is not supported"):
        train(make_config(dataset={"options": options}, model={"overrides": {}}), tmp_path / "a",
              progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    with pytest.raises(ValueError, match="device is 'cuda' but CUDA is not available"):
        train(make_config(device="cuda"), tmp_path / "a", progress=False)


def test_amp_runs_the_network_in_bfloat16_and_the_loss_in_float32(tmp_path, monkeypatch, device):
    import ofg.objectives as engine

    seen = []
    original = engine.ncc_loss

    def spy(fixed, warped, window=9):
        seen.append((warped.dtype, warped.device.type))
        return original(fixed, warped, window)

    monkeypatch.setattr(engine, "ncc_loss", spy)
    run = train(make_config("unsupervised", epochs=1, amp=True, device=device.type), tmp_path / "run", progress=False)
    assert seen and set(seen) == {(torch.float32, device.type)}
    assert all(t.dtype == torch.float32 for t in weights(run).values())


def test_fast_path_resumes_bitwise_and_auto_resolves_from_the_device(tmp_path):
    """The fast path (bf16 autocast + channels-last network) keeps exact resume on CPU; "auto" is
    stored resolved, so a resumed run knows which path it was on."""
    from ofg.runtime import bf16_is_fast

    config = resume_config(amp=True, channels_last=True)
    reference = train(config, tmp_path / "straight", progress=False)
    stopped = train(config, tmp_path / "stopped", progress=False, stop_after_epochs=1)
    train(config, stopped, progress=False)
    assert_same_weights(weights(reference), weights(stopped))
    auto = train(resume_config(amp="auto", channels_last="auto", epochs=1), tmp_path / "auto", progress=False)
    stored = RunConfig.load(auto / "config.yaml")
    assert stored.amp is stored.channels_last is bf16_is_fast(torch.device("cpu"))
    arithmetic = json.loads((auto / "summary.json").read_text())["arithmetic"]
    assert arithmetic["network"] == ("bfloat16 autocast" if stored.amp else "float32")
    assert arithmetic["bf16_native"] is bf16_is_fast(torch.device("cpu"))


def test_fused_refinement_option_trains_and_resumes(tmp_path, monkeypatch):
    """ofg.fused: true reaches the fused refinement, on CPU the numba kernels (ofg.kernels)."""
    from ofg import kernels

    calls = []
    original = kernels.refine
    monkeypatch.setattr(kernels, "refine", lambda *a: calls.append(1) or original(*a))
    config = resume_config(ofg={"steps": 2, "fused": True})
    reference = train(config, tmp_path / "straight", progress=False)
    assert calls
    assert json.loads((reference / "summary.json").read_text())["arithmetic"]["fused_refinement"] is True
    stopped = train(config, tmp_path / "stopped", progress=False, stop_after_epochs=1)
    train(config, stopped, progress=False)
    assert_same_weights(weights(reference), weights(stopped))
