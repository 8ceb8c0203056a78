"""Tests of ofg.checkpoint: atomic round trip, RNG capture/restore, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ofg.checkpoint import (build_from_checkpoint, capture_rng_state, read_checkpoint, restore_rng_state,
                            save_checkpoint, unwrap_model)
from ofg.config import RunConfig
from ofg.io import DataError
from ofg.models import build_model


def _draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "epoch": 0, "config": {}, "image_size": [4, 4, 4],
                                        "rng": capture_rng_state()})
    expected = [_draws() for _ in range(3)]
    _draws()
    restore_rng_state(read_checkpoint(tmp_path / "c.pt")["rng"])
    assert [_draws() for _ in range(3)] == expected


def _device_draws(device: torch.device) -> list[float]:
    return [*torch.rand(3, device=device).tolist(), *_draws()]


def test_rng_state_of_the_device_round_trips_as_training_reads_it(tmp_path, device):
    """On CUDA the checkpoint holds the CUDA generators' states, read back onto the device (training's
    ``map_location``) and restored: the device draws the same numbers again."""
    torch.zeros(1, device=device)  # CUDA starts lazily; training has initialised it by the first checkpoint
    torch.manual_seed(5)
    state = capture_rng_state()
    assert device.type != "cuda" or len(state["cuda"]) == torch.cuda.device_count()
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "epoch": 0, "config": {}, "image_size": [4, 4, 4], "rng": state})
    expected = _device_draws(device)
    torch.manual_seed(6)  # every generator elsewhere, CUDA's included
    payload = read_checkpoint(tmp_path / "c.pt", map_location=device)
    restore_rng_state(payload["rng"])
    assert _device_draws(device) == expected


class _OffTheCpu:
    """Stands for a tensor that ``read_checkpoint(map_location=cuda)`` put on the GPU: ``.numpy()``
    refuses, ``.cpu()`` copies back."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first")

    def cpu(self) -> torch.Tensor:
        return self.tensor


def test_rng_state_restores_from_tensors_off_the_cpu():
    """Training resumes from ``read_checkpoint(..., map_location=device)``: on CUDA every saved tensor,
    numpy's keys included, comes back on the GPU."""
    torch.manual_seed(7)
    np.random.seed(7)
    state = capture_rng_state()
    expected = [_draws() for _ in range(2)]
    state["torch"] = _OffTheCpu(state["torch"])
    state["numpy"] = {**state["numpy"], "keys": _OffTheCpu(state["numpy"]["keys"])}
    restore_rng_state(state)
    assert [_draws() for _ in range(2)] == expected


def test_cuda_rng_states_restore_only_onto_as_many_devices(monkeypatch):
    """The CUDA branch of restore_rng_state, on any machine: a device-count mismatch warns, a match restores."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = {**capture_rng_state(), "cuda": [torch.get_rng_state()]}  # one saved device (any ByteTensor)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.warns(RuntimeWarning, match=r"states of 1 device\(s\) but 2 are visible.*not a bitwise"):
        restore_rng_state(state)
    assert restored == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restore_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0][0], state["cuda"][0])


def test_model_round_trip_rebuilds_identical_network(tmp_path):
    config = RunConfig.from_dict({"model": {"name": "voxelmorph", "size": "small"}})
    model = build_model("voxelmorph", (16, 16, 16), size="small")
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "epoch": 1, "config": config.to_dict(),
                                        "image_size": [16, 16, 16]})
    payload = read_checkpoint(tmp_path / "m.pt")
    rebuilt = build_from_checkpoint(payload, tmp_path / "m.pt")
    assert not rebuilt.training
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_weights_of_another_architecture_are_refused(tmp_path):
    config = RunConfig.from_dict({"model": {"name": "voxelmorph", "size": "paper"}})
    small = build_model("voxelmorph", (16, 16, 16), size="small")
    save_checkpoint(tmp_path / "m.pt", {"model": small.state_dict(), "epoch": 1, "config": config.to_dict(),
                                        "image_size": [16, 16, 16]})
    with pytest.raises(DataError, match=r"m\.pt.*do not fit model 'voxelmorph' \(size 'paper'"):
        build_from_checkpoint(read_checkpoint(tmp_path / "m.pt"), tmp_path / "m.pt")


def test_missing_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="nothere.pt"):
        read_checkpoint(tmp_path / "nothere.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="foreign.pt.*not an ofg checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="corrupt.pt"):
        read_checkpoint(tmp_path / "corrupt.pt")
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})


def test_unwrap_model_sees_through_compile_wrappers():
    model = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = model

    assert unwrap_model(Wrapper()) is model and unwrap_model(model) is model
