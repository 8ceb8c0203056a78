"""envs/*.yaml agree with pyproject.toml's runtime dependencies and constraints.txt."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {canonicalize_name(r.name): r for r in map(Requirement, data["project"]["dependencies"])}


def constraints() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    return {canonicalize_name(r.name): r for r in map(Requirement, filter(None, lines))}


def env_pip_requirements(path: Path) -> dict[str, Requirement]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip, f"{path.name}: no pip section"
    return {canonicalize_name(r.name): r for r in map(Requirement, pip[0])}


def allowed_versions(requirement: Requirement) -> list[str]:
    """The versions an exact pin allows, or [] when the specifier is a range."""
    return [s.version for s in requirement.specifier if s.operator == "=="]


def test_there_is_an_env_and_every_rule_uses_one():
    assert ENV_FILES
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert rules.count("conda:") == len(re.findall(r"^rule ", rules, re.M))
    assert 'ENV = "../../envs/ofg.yaml"' in rules


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_are_compatible_with_pyproject_and_constraints(path):
    env = env_pip_requirements(path)
    pinned = constraints()
    for name, requirement in pyproject_requirements().items():
        assert name in env, f"{path.name}: runtime dependency {name} of pyproject.toml is missing"
        exact = allowed_versions(env[name])
        if exact:  # an exact pin must satisfy pyproject's range
            assert all(requirement.specifier.contains(v, prereleases=True) for v in exact), (
                f"{path.name}: {env[name]} is outside pyproject's {requirement}")
        else:  # otherwise the very same range
            assert env[name].specifier == requirement.specifier, f"{path.name}: {env[name]} != {requirement}"
        if name in pinned:
            assert str(env[name].specifier) == str(pinned[name].specifier), (
                f"{path.name}: {env[name]} differs from constraints.txt's {pinned[name]}")
    extra = set(env) - set(pyproject_requirements())
    assert not extra, f"{path.name}: packages not in pyproject.toml: {sorted(extra)}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_python_matches_requires_python(path):
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = yaml.safe_load(path.read_text())["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    version = python[0].split("=")[-1]
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(data["project"]["requires-python"]).contains(version)
