"""Tests of ofg.register (ofg-register): outputs agree with ofg.evaluate and with scipy, bad input exits 2.

A tiny VoxelMorph (16^3) with a random flow head (fields of about 2 voxels) is saved as a checkpoint
of the synthetic test dataset; one of its test pairs is written as NIfTI on an LAS grid of
1.5 x 2 x 2.5 mm voxels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import synthetic
from ofg import metrics
from ofg.checkpoint import load_checkpoint, save_checkpoint
from ofg.config import RunConfig
from ofg.evaluate import evaluate_checkpoint
from ofg.inference import field_metrics, pair_tensors, predict
from ofg.io import load_nifti, save_nifti
from ofg.models import build_model
from ofg.register import main, normalise

TINY = {"encoder": [4, 4], "decoder": [4, 4, 4]}
SIZE = (16, 16, 16)
SPACING = (1.5, 2.0, 2.5)
OPTIONS = {"size": list(SIZE), "n_train": 1, "n_val": 1, "n_test": 1, "amplitude": 2.5}
SRC = Path(__file__).resolve().parents[1] / "src"


def grid(origin=(10.0, -20.0, 5.0), spacing=SPACING) -> np.ndarray:
    """An LAS affine: axis 0 runs right→left."""
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def make_checkpoint(path: Path, dataset: str = "synthetic", shift: tuple | None = None) -> Path:
    """A TINY VoxelMorph checkpoint: a random flow head, or the constant field ``shift`` voxels."""
    config = RunConfig.from_dict({"dataset": {"name": dataset, "root": "unused", "options": OPTIONS},
                                  "model": {"name": "voxelmorph", "size": "small", "overrides": TINY},
                                  "method": "unsupervised", "device": "cpu"})
    torch.manual_seed(0)
    model = build_model("voxelmorph", SIZE, size="small", **TINY)
    with torch.no_grad():
        if shift is None:
            model.flow_head.weight.normal_(0.0, 1.0)
        else:
            model.flow_head.weight.zero_()
            model.flow_head.bias.copy_(torch.tensor(shift))
    return save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "config": config.to_dict(),
                                  "image_size": list(SIZE)})


@pytest.fixture
def case(tmp_path):
    """(checkpoint, the test pair, its files): moving, fixed, moving labels (int16) as NIfTI."""
    pair = synthetic.SyntheticDataset(size=SIZE, **{k: v for k, v in OPTIONS.items() if k != "size"}).pairs("test")[0]
    files = {"moving": tmp_path / "moving.nii.gz", "fixed": tmp_path / "fixed.nii.gz",
             "labels": tmp_path / "moving_labels.nii.gz"}
    save_nifti(files["moving"], pair.moving, grid(origin=(13.0, -20.0, 5.0)))  # another subject: another origin
    save_nifti(files["fixed"], pair.fixed, grid())
    save_nifti(files["labels"], pair.moving_label.astype(np.int16), grid(origin=(13.0, -20.0, 5.0)))
    return make_checkpoint(tmp_path / "best.pt"), pair, files


def run(checkpoint: Path, files: dict, out: Path, *extra: str, labels: bool = True) -> int:
    argv = ["--checkpoint", str(checkpoint), "--moving", str(files["moving"]), "--fixed", str(files["fixed"]),
            "--warped", str(out / "warped.nii.gz"), "--field", str(out / "field.nii.gz"), "--device", "cpu"]
    if labels:
        argv += ["--moving-labels", str(files["labels"]), "--warped-labels", str(out / "warped_labels.nii.gz")]
    return main(argv + list(extra))


def read_field(path: Path) -> np.ndarray:
    """A written (D,H,W,1,3) field as (3,D,H,W)."""
    array = np.asanyarray(nib.load(str(path)).dataobj)
    assert array.shape == (*SIZE, 1, 3) and array.dtype == np.float32
    return np.moveaxis(array[:, :, :, 0, :], -1, 0)


def test_outputs_agree_with_evaluate_and_scipy(case, tmp_path, monkeypatch):
    checkpoint, pair, files = case
    assert run(checkpoint, files, tmp_path / "out") == 0
    field = read_field(tmp_path / "out" / "field.nii.gz")
    # the same forward pass as ofg.evaluate's, bit for bit
    model, _ = load_checkpoint(checkpoint)
    disp, _ = predict(model, *pair_tensors(pair, "cpu"))
    np.testing.assert_array_equal(field, disp[0].numpy())
    assert 1.0 < np.abs(field).max() < 5.0  # a real deformation, not the identity
    # evaluate's own numbers for this pair (nearest-neighbour labels): Dice, folding, SDlogJ, EPE
    synthetic.register(monkeypatch)
    row = evaluate_checkpoint(checkpoint, "test", label_mode="nearest", device="cpu", progress=False).iloc[0]
    warped_labels, affine = load_nifti(tmp_path / "out" / "warped_labels.nii.gz", dtype=None)
    assert warped_labels.dtype == np.int16
    for label, dice in zip((1, 2, 3), metrics.dice(warped_labels, pair.fixed_label, [1, 2, 3])):
        assert dice == pytest.approx(row[f"dice_{label}"], abs=1e-12)
    ours = field_metrics(torch.from_numpy(field)[None], pair.moving_label, pair.fixed_label, [1, 2, 3],
                         label_mode="nearest", ground_truth=synthetic.SyntheticDataset(
                             size=SIZE, n_train=1, n_val=1, n_test=1, amplitude=2.5).ground_truth("test", 0))
    for column in ("dice_mean", "folding_percent", "sdlogj_l2r", "sdlogj_plain", "endpoint_error"):
        assert ours[column] == pytest.approx(row[column], rel=1e-12, abs=1e-12), column
    # independent oracles: scipy's trilinear and nearest-neighbour warps of the written field
    warped, warped_affine = load_nifti(tmp_path / "out" / "warped.nii.gz")
    np.testing.assert_allclose(warped, synthetic.warp_numpy(pair.moving, field, order=1), atol=1e-5)
    assert np.mean(warped_labels != synthetic.warp_numpy(pair.moving_label, field, order=0)) < 1e-3
    np.testing.assert_allclose(affine, grid())
    np.testing.assert_allclose(warped_affine, grid())
    header = nib.load(str(tmp_path / "out" / "field.nii.gz")).header
    assert b"voxels" in header["descrip"].item() and header.get_intent()[0] == "vector"


def test_mm_field_is_the_voxel_field_times_the_spacing(case, tmp_path):
    checkpoint, _, files = case
    assert run(checkpoint, files, tmp_path / "vox", labels=False) == 0
    assert run(checkpoint, files, tmp_path / "mm", "--field-units", "mm", labels=False) == 0
    voxel, mm = read_field(tmp_path / "vox" / "field.nii.gz"), read_field(tmp_path / "mm" / "field.nii.gz")
    np.testing.assert_allclose(mm, voxel * np.asarray(SPACING).reshape(3, 1, 1, 1), rtol=1e-6)
    image = nib.load(str(tmp_path / "mm" / "field.nii.gz"))
    np.testing.assert_allclose(image.affine, grid())
    assert b" mm " in image.header["descrip"].item()
    assert not (tmp_path / "mm" / "warped_labels.nii.gz").exists()


def test_known_field_with_resample_and_minmax_intensity(tmp_path, capsys):
    """A network predicting a constant shift s: on a 31^3 grid (resampled to 16^3 and back) the field
    is s·30/15 = 2s, and the warped image is the raw moving image (scipy), whatever the network saw."""
    checkpoint = make_checkpoint(tmp_path / "shift.pt", shift=(0.5, -0.25, 0.75))
    rng = np.random.default_rng(0)
    moving = (1000 * rng.random((31, 31, 31))).astype(np.float32)  # scanner units
    files = {"moving": tmp_path / "m.nii.gz", "fixed": tmp_path / "f.nii.gz"}
    save_nifti(files["moving"], moving, grid())
    save_nifti(files["fixed"], moving[::-1].copy(), grid())
    assert run(checkpoint, files, tmp_path / "out", labels=False) == 2
    assert "(16, 16, 16)" in capsys.readouterr().err
    assert run(checkpoint, files, tmp_path / "out", "--resample", "--intensity", "minmax", labels=False) == 0
    field = np.moveaxis(np.asanyarray(nib.load(str(tmp_path / "out" / "field.nii.gz")).dataobj)[:, :, :, 0], -1, 0)
    np.testing.assert_allclose(field, np.broadcast_to(np.array([1.0, -0.5, 1.5]).reshape(3, 1, 1, 1), field.shape),
                               atol=1e-5)
    warped, _ = load_nifti(tmp_path / "out" / "warped.nii.gz")
    np.testing.assert_allclose(warped, synthetic.warp_numpy(moving, field, order=1), rtol=1e-5, atol=1e-3)
    assert "warning" not in capsys.readouterr().err
    assert run(checkpoint, files, tmp_path / "raw", "--resample", labels=False) == 0
    assert "warning: input values span" in capsys.readouterr().err  # scanner units fed as stored


def test_intensity_modes():
    image = np.array([-2000.0, -1000.0, 0.0, 500.0, 3000.0], dtype=np.float32)
    np.testing.assert_array_equal(normalise(image, "none"), image)
    np.testing.assert_allclose(normalise(image, "minmax"), (image + 2000) / 5000)
    np.testing.assert_allclose(normalise(image, "ct"), [-2.0, -2.0, 0.0, 1.0, 2.0])
    assert normalise(np.ones(3, np.float32), "minmax").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="intensity must be one of"):
        normalise(image, "zscore")


def _bad_inputs(tmp_path: Path, files: dict) -> dict[str, tuple[dict, str]]:
    """name -> (files with one bad entry, text the error must contain)."""
    small = tmp_path / "small.nii.gz"
    save_nifti(small, np.zeros((12, 12, 12), np.float32), grid())
    save_nifti(tmp_path / "ras.nii.gz", load_nifti(files["moving"])[0], np.diag([*SPACING, 1.0]))
    save_nifti(tmp_path / "fine.nii.gz", load_nifti(files["moving"])[0], grid(spacing=(1.0, 2.0, 2.5)))
    save_nifti(tmp_path / "nan.nii.gz", np.full(SIZE, np.nan, np.float32), grid())
    save_nifti(tmp_path / "float_labels.nii.gz", np.full(SIZE, 1.5, np.float32), grid(origin=(13.0, -20.0, 5.0)))
    save_nifti(tmp_path / "shifted_labels.nii.gz", np.ones(SIZE, np.int16), grid())
    (tmp_path / "junk.nii.gz").write_text("not an image")
    return {
        "wrong size": ({**files, "moving": small, "fixed": small}, "but the network was trained on (16, 16, 16)"),
        "moving/fixed shapes": ({**files, "moving": small}, "shape (12, 12, 12) differs from (16, 16, 16)"),
        "orientation": ({**files, "moving": tmp_path / "ras.nii.gz"}, "orientation RAS differs from LAS"),
        "voxel size": ({**files, "moving": tmp_path / "fine.nii.gz"}, "voxel size (1.0, 2.0, 2.5) mm differs"),
        "missing": ({**files, "fixed": tmp_path / "nothere.nii.gz"}, "image file not found"),
        "unreadable": ({**files, "moving": tmp_path / "junk.nii.gz"}, "cannot read as NIfTI"),
        "nan": ({**files, "moving": tmp_path / "nan.nii.gz"}, "NaN/Inf"),
        "float labels": ({**files, "labels": tmp_path / "float_labels.nii.gz"}, "non-integer values"),
        "label grid": ({**files, "labels": tmp_path / "shifted_labels.nii.gz"}, "label grid"),
        "overwrite": ({**files, "labels": tmp_path / "out" / "warped.nii.gz"}, "output would overwrite"),
    }


def test_bad_inputs_exit_2_naming_the_file_and_write_nothing(case, tmp_path, capsys):
    checkpoint, _, files = case
    (tmp_path / "out").mkdir()
    for name, (bad, text) in _bad_inputs(tmp_path, files).items():
        if name == "overwrite":
            save_nifti(tmp_path / "out" / "warped.nii.gz", np.ones(SIZE, np.int16), grid(origin=(13.0, -20.0, 5.0)))
        assert run(checkpoint, bad, tmp_path / "out") == 2, name
        err = capsys.readouterr().err
        assert err.startswith("ofg-register: error: ") and err.count("\n") == 1, name
        assert text in err, (name, err)
        culprit = next(str(path) for key, path in bad.items() if path != files.get(key))
        assert culprit in err, (name, err)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == (["warped.nii.gz"] if name == "overwrite"
                                                                         else []), name
    for checkpoint_path in (tmp_path / "none.pt", files["moving"]):
        assert run(checkpoint_path, files, tmp_path / "x") == 2
        assert str(checkpoint_path) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: labels in without labels out
        main(["--checkpoint", str(checkpoint), "--moving", str(files["moving"]), "--fixed", str(files["fixed"]),
              "--warped", "w.nii.gz", "--field", "f.nii.gz", "--moving-labels", str(files["labels"])])
    assert exit_info.value.code == 2 and "go together" in capsys.readouterr().err


def test_training_orientation_of_embedded_checkpoints_and_training_image(case, tmp_path, capsys):
    _, _, files = case
    embedded = make_checkpoint(tmp_path / "embedded.pt", dataset="embedded-brain")
    assert run(embedded, files, tmp_path / "a", labels=False) == 2
    assert "orientation LAS differs from RAS of the embedded-brain cohort" in capsys.readouterr().err
    reference = tmp_path / "atlas.nii.gz"
    save_nifti(reference, np.zeros(SIZE, np.float32), grid(spacing=(1.0, 1.0, 1.0)))
    checkpoint, _, _ = case
    assert run(checkpoint, files, tmp_path / "b", "--training-image", str(reference), labels=False) == 2
    assert f"differs from (1.0, 1.0, 1.0) mm of the training image {reference}" in capsys.readouterr().err
    assert run(checkpoint, files, tmp_path / "c", "--training-image", str(reference), "--resample",
               labels=False) == 0  # resampled: only the orientation must match


def test_python_m_runs_without_the_workflow_dependencies(case, tmp_path):
    """``python -m ofg.register`` with matplotlib, pandas, snakemake, papermill and ants unimportable."""
    checkpoint, _, files = case
    blocked = ("matplotlib", "seaborn", "pandas", "snakemake", "papermill", "ants")
    code = ("import runpy, sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "runpy.run_module('ofg.register', run_name='__main__', alter_sys=True)\n")
    argv = ["--checkpoint", str(checkpoint), "--moving", str(files["moving"]), "--fixed", str(files["fixed"]),
            "--warped", str(tmp_path / "w.nii.gz"), "--field", str(tmp_path / "f.nii.gz"), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ofg-register: wrote" in result.stdout and (tmp_path / "f.nii.gz").is_file()


def test_save_nifti_refuses_a_description_nifti_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="at most 80"):
        save_nifti(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.float32), descrip="x" * 81)
    assert not (tmp_path / "x.nii.gz").exists()


def test_readme_section_names_the_real_options():
    """The README's 'Register your own images' command uses this parser's options and choices."""
    import re

    from ofg.register import FIELD_UNITS, INTENSITY_MODES, _parser

    text = (SRC.parent / "README.md").read_text().split("## Register your own images")[1]
    command = text.split("```bash")[1].split("```")[0]
    options = {s for action in _parser()._actions for s in action.option_strings}
    assert set(re.findall(r"--[a-z-]+", command)) <= options
    assert "|".join(FIELD_UNITS) in command and "|".join(INTENSITY_MODES) in command
