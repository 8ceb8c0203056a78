"""The Snakemake profiles: what profiles/slurm asks of a cluster, checked by dry runs with stub SLURM tools.

The real scheduler runs in tests/cluster/test_slurm.py (marked ``slurm``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, snakemake

from ofg import plan as ofg_plan

SLURM_PROFILE = REPO / "profiles" / "slurm"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
  "conda info --json") echo '{{"conda_prefix": "{prefix}", "platform": "linux-64", "conda_version": "25.1.0"}}';;
  "conda --version") echo "conda 25.1.0";;
  "conda config --get channel_priority --json") echo '{{"get": {{"channel_priority": "strict"}}}}';;
  "sbatch"*) echo "Submitted batch job 1";;
esac
exit 0
"""


def stub_tools(bin_dir: Path, names: tuple[str, ...]) -> Path:
    """Write stub executables ``names`` into ``bin_dir``; return the log file they append their calls to."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "calls.log"
    for name in names:
        stub = bin_dir / name
        stub.write_text(STUB.format(log=log, prefix=bin_dir / "conda-prefix"))
        stub.chmod(0o755)
    return log


def parsed_profile(path: Path = SLURM_PROFILE) -> dict:
    """The profile as Snakemake reads it (YTE rendered, keys as command-line options)."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(path / "config.yaml") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def rule_blocks(stdout: str, rule: str) -> list[str]:
    return [b for b in stdout.split("\n\n") if f"rule {rule}:" in b]


def test_slurm_profile_dry_run_takes_threads_and_gpus_from_the_config(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    log = stub_tools(tmp_path / "bin", ("sbatch", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "conda"))
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    profile = ("-n", "--workflow-profile", str(SLURM_PROFILE), "--config", f"results={tmp_path / 'results'}")
    result = snakemake(*profile, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    train = rule_blocks(result.stdout, "train")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert len(train) == len(ofg_plan.training_runs(config)) == 39  # 3 seeds x (7 + 2 brain, 2 + 2 CT runs)
    assert config["threads"]["train"] == 1 and config["gpus_per_training"] == 0
    for block in train:  # (a dry run prints no threads line for one thread)
        assert re.search(r"resources: .*mem_mb=64000.*runtime=2880.*gpu=0", block), block
        assert "threads:" not in block
    evaluate = rule_blocks(result.stdout, "evaluate")
    # (a dry run prints no threads line for one thread)
    assert evaluate and all(re.search(r"runtime=240.*gpu=0", b) and "threads:" not in b for b in evaluate)

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(gpus_per_training=2, results=str(tmp_path / "results"))
    config["threads"].update(train=3, evaluate=2)
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(config))
    gpu = snakemake(*profile[:3], "--configfile", str(tmp_path / "gpu.yaml"), env=env)
    assert gpu.returncode == 0, gpu.stderr[-3000:]
    assert all("gpu=2" in b and "threads: 3" in b for b in rule_blocks(gpu.stdout, "train"))
    assert all("gpu=2" in b and "threads: 2" in b for b in rule_blocks(gpu.stdout, "evaluate"))
    assert all("threads:" not in b and "gpu=" not in b for b in rule_blocks(gpu.stdout, "prepare_data"))
    assert "sbatch" not in log.read_text()  # a dry run submits nothing


def test_slurm_profile_sets_no_threads_gpus_or_placeholder_account():
    profile = parsed_profile()
    assert "set-threads" not in profile
    assert not any("gpu" in item for item in profile["set-resources"] + profile["default-resources"])
    assert not any("slurm_account" in item or "slurm_partition" in item
                   for item in profile["set-resources"] + profile["default-resources"])
    assert profile["retries"] == "1"


def test_slurm_profile_uses_conda_where_conda_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("OFG_USE_CONDA", raising=False)
    if any((Path(d) / c).exists() for d in ("/usr/bin", "/bin") for c in ("conda", "mamba")):
        pytest.skip("conda is installed system-wide here")
    assert "software-deployment-method" not in parsed_profile()
    stub_tools(tmp_path / "bin", ("conda",))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    assert parsed_profile()["software-deployment-method"] == "conda"
    monkeypatch.setenv("OFG_USE_CONDA", "0")
    assert "software-deployment-method" not in parsed_profile()


@pytest.mark.parametrize("name", ["default", "conda"])
def test_local_profiles_pool_the_machines_cores(name):
    profile = parsed_profile(REPO / "profiles" / name)
    assert f"machine_cores={len(os.sched_getaffinity(0))}" in profile["resources"]
    assert "gpu=1" in profile["resources"] and profile["cores"] == "4"


def test_every_job_claims_its_threads_from_the_machine_pool_capped_at_the_cores(tmp_path):
    """So `--cores 4` on a 2-core machine runs two 1-thread trainings, or one of more threads, at a time."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(results=str(tmp_path / "results"))
    config["threads"].update(train=64, evaluate=1)
    (tmp_path / "threads.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "threads.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    jobs = [b for b in result.stdout.split("\n\n") if re.search(r"^rule \w+:", b.strip(), re.M)
            and "rule all:" not in b]
    assert jobs and all("machine_cores=" in b for b in jobs)
    assert all(f"machine_cores={cores}," in b for b in rule_blocks(result.stdout, "train"))
    assert all("machine_cores=1," in b for b in rule_blocks(result.stdout, "evaluate"))
