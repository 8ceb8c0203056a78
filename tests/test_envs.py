"""The lock (constraints.txt, requirements/*.txt), pyproject.toml and envs/ofg.yaml agree.

requirements/compile.sh writes them all from pyproject.toml; these tests catch a hand edit or a
pyproject change without a refresh.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: the install sets and their lock files; constraints.txt locks every extra at once
LOCKS = {"core": REPO / "requirements" / "core.txt", "workflow": REPO / "requirements" / "workflow.txt",
         "dev": REPO / "constraints.txt"}
WORKFLOW_ONLY = ("snakemake", "papermill", "antspyx", "matplotlib", "jupyterlab", "ipykernel", "tabulate")


def requirement_lines(lines: list[str]) -> list[Requirement]:
    kept = [line.split("#")[0].strip() for line in lines]
    return [Requirement(line) for line in kept if line and not line.startswith("-")]


def lock(path: Path) -> dict[tuple[str, str], str]:
    """(package, marker) -> exact version of a lock file; every entry must be an exact pin."""
    pins = {}
    for requirement in requirement_lines(path.read_text().splitlines()):
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        assert len(exact) == 1 and len(requirement.specifier) == 1, f"{path.name}: {requirement} is no exact pin"
        pins[canonicalize_name(requirement.name), str(requirement.marker or "")] = exact[0]
    return pins


def declared(extras: tuple[str, ...] | None) -> list[Requirement]:
    """pyproject.toml's requirements of the core and ``extras`` (None: every extra), self-references out."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    names = optional if extras is None else extras
    lines = PYPROJECT["project"]["dependencies"] + [r for name in names for r in optional[name]]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "ofg"]


def env_pip_requirements(path: Path) -> list[Requirement]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip, f"{path.name}: no pip section"
    return requirement_lines(pip[0])


@pytest.mark.parametrize(("name", "extras"), [("core", ()), ("workflow", ("workflow", "baselines")), ("dev", None)])
def test_each_lock_pins_every_declared_requirement_within_its_range(name, extras):
    pins = lock(LOCKS[name])
    for requirement in declared(extras):
        versions = [v for (package, _), v in pins.items() if package == canonicalize_name(requirement.name)]
        assert versions, f"{LOCKS[name].name}: {requirement.name} of pyproject.toml is not locked"
        assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"{LOCKS[name].name}: {requirement.name}=={versions} is outside pyproject's {requirement}")


def test_the_sets_agree_with_the_full_lock():
    full = lock(LOCKS["dev"])
    for name in ("core", "workflow"):
        for key, version in lock(LOCKS[name]).items():
            assert full.get(key) == version, f"{LOCKS[name].name}: {key[0]}=={version}, constraints.txt: {full.get(key)}"


def test_the_core_install_pulls_no_workflow_package():
    packages = {package for package, _ in lock(LOCKS["core"])}
    assert not packages & set(WORKFLOW_ONLY), sorted(packages & set(WORKFLOW_ONLY))
    assert {"torch", "numpy", "nibabel", "numba"} <= packages


def test_torch_is_the_pinned_cpu_tested_release():
    pins = requirement_lines((REPO / "requirements" / "pins.in").read_text().splitlines())
    for name in LOCKS:
        locked = lock(LOCKS[name])
        for pin in pins:
            assert locked[canonicalize_name(pin.name), ""] in pin.specifier


def test_there_is_an_env_and_every_rule_uses_one():
    assert ENV_FILES
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert rules.count("conda:") == len(re.findall(r"^rule ", rules, re.M))
    assert 'ENV = "../../envs/ofg.yaml"' in rules


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_are_the_workflow_lock(path):
    env = {(canonicalize_name(r.name), str(r.marker or "")): str(r.specifier) for r in env_pip_requirements(path)}
    locked = {key: f"=={version}" for key, version in lock(LOCKS["workflow"]).items()}
    assert env == locked, "envs/ofg.yaml differs from requirements/workflow.txt: run bash requirements/compile.sh"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_python_matches_requires_python(path):
    deps = yaml.safe_load(path.read_text())["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python[0].split("=")[-1])
