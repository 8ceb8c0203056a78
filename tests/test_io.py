import gzip
import os
import stat

import numpy as np
import pytest

from ofg.io import DataError, atomic_path, check_finite, load_nifti, load_pickle, save_nifti, write_json_atomic


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a.json", {"b": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_nifti_round_trip_is_byte_reproducible(tmp_path):
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    first = save_nifti(tmp_path / "a.nii.gz", array, affine).read_bytes()
    second = save_nifti(tmp_path / "b.nii.gz", array, affine).read_bytes()
    assert first == second
    assert gzip.decompress(first)  # a valid gzip stream
    loaded, loaded_affine = load_nifti(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(loaded, array)
    np.testing.assert_array_equal(loaded_affine, affine)


def test_readers_name_the_bad_file(tmp_path):
    with pytest.raises(DataError, match="not found: .*missing.nii.gz"):
        load_nifti(tmp_path / "missing.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="corrupt.nii.gz: cannot read"):
        load_nifti(corrupt)
    bad_pickle = tmp_path / "bad.pkl"
    bad_pickle.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="bad.pkl: cannot unpickle"):
        load_pickle(bad_pickle)
    with pytest.raises(DataError, match="img.nii.gz: image holds 1 NaN/Inf"):
        check_finite(np.array([0.0, np.nan]), "img.nii.gz")


def test_sha256_file_matches_hashlib_on_a_multi_block_file(tmp_path):
    import hashlib

    from ofg.io import sha256_file

    data = np.random.default_rng(1).bytes((1 << 20) + 123)  # more than one read block
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
