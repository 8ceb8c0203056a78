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
