"""ofg.resume: the one policy for an existing run folder (finished, resume, fresh, stale)."""

from __future__ import annotations

import os

import pytest

from ofg.config import RunConfig
from ofg.layout import RunFolder, cohort_manifest
from ofg.resume import prepare_run_folder, stale_reasons


def config(tmp_path, **changes) -> RunConfig:
    data = {"dataset": {"name": "embedded-brain", "root": str(tmp_path / "cohort")}, "method": "unsupervised",
            "epochs": 2, **changes}
    return RunConfig.from_dict(data)


def test_fresh_then_resume_then_finished(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert prepare_run_folder(folder, config(tmp_path)) == "fresh" and folder.config.is_file()
    folder.checkpoints.mkdir()
    folder.last.write_bytes(b"x")
    assert prepare_run_folder(folder, config(tmp_path)) == "resume"
    folder.summary.write_text("{}")
    assert prepare_run_folder(folder, config(tmp_path)) == "finished"
    # a runtime-only key never makes a run stale; the guidance gap adds history columns, never changes weights
    assert prepare_run_folder(folder, config(tmp_path, num_workers=2)) == "finished"
    assert prepare_run_folder(folder, config(tmp_path, guidance_gap=False)) == "finished"


def test_changed_config_is_refused_or_restarted(tmp_path):
    folder = RunFolder(tmp_path / "run")
    prepare_run_folder(folder, config(tmp_path))
    folder.summary.write_text("{}")
    with pytest.raises(ValueError, match=r"different config.*epochs: 2 -> 3.*--restart"):
        prepare_run_folder(folder, config(tmp_path, epochs=3))
    assert prepare_run_folder(folder, config(tmp_path, epochs=3), if_stale="restart") == "fresh"
    assert not folder.summary.exists() and RunConfig.load(folder.config).epochs == 3
    with pytest.raises(ValueError, match="if_stale"):
        prepare_run_folder(folder, config(tmp_path), if_stale="ignore")


def test_newer_cohort_makes_the_run_stale(tmp_path):
    folder = RunFolder(tmp_path / "run")
    manifest = cohort_manifest(tmp_path / "cohort")
    manifest.parent.mkdir()
    manifest.write_text("{}")
    prepare_run_folder(folder, config(tmp_path))
    assert stale_reasons(folder, config(tmp_path)) == []
    later = folder.config.stat().st_mtime + 10
    os.utime(manifest, (later, later))
    assert stale_reasons(folder, config(tmp_path)) == [f"cohort {manifest} is newer than the run"]


def test_restart_discards_everything_but_the_folder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    prepare_run_folder(folder, config(tmp_path))
    folder.teacher_fields.mkdir()
    folder.history.write_text("epoch\n0\n")
    assert prepare_run_folder(folder, config(tmp_path), restart=True) == "fresh"
    assert not folder.teacher_fields.exists() and not folder.history.exists() and folder.config.is_file()
