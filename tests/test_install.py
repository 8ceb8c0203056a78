"""Installs as users make them, in virtual environments of their own (slow: built once per lock, cached).

- A host with Snakemake alone (a `--use-conda` run, a SLURM submit node) parses every config.
- `pip install ofg` without extras pulls no workflow package, and the README's "Use OFG in your own
  network" snippet and the core commands run there.

The environments live under ``$OFG_TEST_VENVS`` (default ``~/.cache/ofg/test-venvs``), one per hash of
the lock and pyproject.toml, so a CI run on the same machine reuses them; the package itself is
reinstalled from this checkout every time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ofg.data.fixtures import make_paper_roots

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_ONLY = ("snakemake", "papermill", "antspyx", "matplotlib", "jupyterlab")
pytestmark = pytest.mark.slow


def venv_with(name: str, *install: str) -> Path:
    """A virtual environment with ``pip install -c constraints.txt *install``, cached by the lock's hash."""
    digest = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in ("constraints.txt", "pyproject.toml")))
    root = Path(os.environ.get("OFG_TEST_VENVS", Path.home() / ".cache" / "ofg" / "test-venvs"))
    path = root / f"{name}-{digest.hexdigest()[:12]}"
    done = path / "installed.txt"  # written last: a killed build is built again
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)  # the scripts name the venv's folder: build where it stays
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        pip(path, "install", "--quiet", "-c", str(REPO / "constraints.txt"), *install)
        done.write_text(" ".join(install) + "\n")
    return path


def pip(venv: Path, *args: str) -> str:
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], capture_output=True, text=True,
                            env=clean_env(venv))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def clean_env(venv: Path) -> dict[str, str]:
    """An environment with only ``venv`` on PATH before the system's: no PYTHONPATH, nothing of ours."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR") or k.startswith("PIP_")}
    return {**keep, "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"}


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=clean_env(venv), capture_output=True, text=True, timeout=300)


def test_a_host_with_snakemake_alone_parses_every_config(tmp_path):
    venv = venv_with("snakemake-alone", "snakemake")
    assert run(venv, "python", "-c", "import torch", cwd=tmp_path).returncode != 0, "the venv is not Snakemake alone"
    snakefile = ["snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--cores", "4"]
    default = run(venv, *snakefile, cwd=tmp_path)
    assert default.returncode == 0, default.stderr[-3000:]
    tiny = run(venv, *snakefile, "--configfile", str(REPO / "config" / "tiny.yaml"), cwd=tmp_path)
    assert tiny.returncode == 0, tiny.stderr[-3000:]

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name, root in make_paper_roots(tmp_path / "data").items():
        config["datasets"][name]["root"] = str(root)
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    paper = run(venv, *snakefile, "--configfile", str(tmp_path / "paper.yaml"), cwd=tmp_path)
    assert paper.returncode == 0, paper.stderr[-3000:]
    assert "rule train" in paper.stdout or "train" in paper.stdout

    conda = run(venv, *snakefile, "--use-conda", cwd=tmp_path)
    if shutil.which("conda", path=clean_env(venv)["PATH"]):
        assert conda.returncode == 0, conda.stderr[-3000:]
    else:  # Snakemake asks conda for its version even in a dry run (README, "Conda environments")
        assert conda.returncode != 0
        assert "Is conda installed and accessible?" in conda.stdout + conda.stderr
        assert "ModuleNotFoundError" not in conda.stdout + conda.stderr


def test_the_core_install_pulls_no_workflow_package_and_runs_the_readme_snippet(tmp_path):
    venv = venv_with("core", str(REPO))
    pip(venv, "install", "--quiet", "--no-deps", "--force-reinstall", str(REPO))  # this checkout's code
    installed = {line.split("==")[0].lower() for line in pip(venv, "freeze").splitlines()}
    assert not installed & set(WORKFLOW_ONLY), sorted(installed & set(WORKFLOW_ONLY))

    text = (REPO / "README.md").read_text()
    snippet = text.split("## Use OFG in your own network")[1].split("```python")[1].split("```")[0]
    script = tmp_path / "snippet.py"
    script.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv3d(2, 3, 3, padding=1)\n"
        "    def forward(self, moving, fixed):\n"
        "        return self.conv(torch.cat([moving, fixed], dim=1))\n"
        "torch.manual_seed(0)\n"
        "net = Net()\n"
        "image = torch.rand(1, 1, 12, 12, 12)\n"
        "loader = [(image, torch.roll(image, 1, dims=2))]\n"
        + snippet +
        "assert warped.shape == image.shape\n"
        "import ofg, sys\n"
        "assert 'site-packages' in ofg.__file__, ofg.__file__\n"
        "print('snippet ran')\n")
    result = run(venv, "python", str(script), cwd=tmp_path)
    assert result.returncode == 0 and "snippet ran" in result.stdout, result.stderr[-3000:]
    for command in ("ofg-train", "ofg-evaluate", "ofg-register"):
        helped = run(venv, command, "--help", cwd=tmp_path)
        assert helped.returncode == 0, f"{command}: {helped.stderr[-2000:]}"
