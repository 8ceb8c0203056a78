"""The cluster path on a real scheduler: a one-node SLURM (Debian's slurmctld, slurmd, slurm-client,
munge) under a temporary folder runs the workflow through ``--workflow-profile profiles/slurm``.

The user's profile is used as it is; what differs on this test cluster is passed on the command line
(:func:`cluster_overrides`). Run with ``python -m pytest -m slurm``; skipped when SLURM is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from slurm_cluster import Cluster, alive, missing_tools, wait_for
from ofg import plan as ofg_plan
from ofg import stages as ofg_stages
from ofg.layout import Layout, RunFolder
from ofg.checkpoint import read_checkpoint
from ofg.report import output_paths

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "tiny.yaml"
MISSING = missing_tools()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"SLURM is not installed (not on PATH: {', '.join(MISSING)}; "
                                             "Debian: apt-get install slurmctld slurmd slurm-client munge)"),
]
#: the training that is cancelled and resumed, and its length (long enough to be caught mid-run)
FAULT_RUN = ofg_plan.Run("embedded-brain", "voxelmorph", "unsupervised", seed=0)
FAULT_EPOCHS = 6
#: the job of the tear-down test (a command line no other process has)
JOB_SLEEP = "sleep 7391"
#: the resume line of ofg.train ("resuming %s at epoch %d of %d")
RESUMED = "resuming {out} at epoch (\\d+) of {epochs}"


def cluster_overrides(work: Path) -> list[str]:
    """What this cluster needs beyond profiles/slurm, as command-line options."""
    return [
        "--slurm-status-command", "squeue",        # no accounting database: sacct cannot answer
        "--slurm-keep-successful-logs",            # keep every job's SLURM log, to count them
        "--slurm-logdir", str(work / "slurm_logs"),
        "--slurm-init-seconds-before-status-checks", "2",
        # the profile's memory is sized for paper-size models; this node has a few GB
        "--set-resources", *(f"{rule}:mem_mb=2000" for rule in
                             ("prepare_data", "train", "evaluate", "refinement", "tables_and_figures")),
    ]


def snakemake_command(work: Path, configfile: Path, *extra: str) -> list[str]:
    """snakemake with profiles/slurm, ``extra`` (targets, --config) and then the cluster's overrides."""
    return [sys.executable, "-m", "snakemake", *extra, "--snakefile", str(REPO / "Snakefile"),
            "--workflow-profile", str(REPO / "profiles" / "slurm"), "--configfile", str(configfile),
            *cluster_overrides(work)]


def workflow_env(cluster: Cluster) -> dict[str, str]:
    """The cluster's environment, without conda (the profile's documented switch), as in CI."""
    return {**cluster.env, "OFG_USE_CONDA": "0"}


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: jobs per rule, without the target rule ``all`` and the total."""
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    return {rule: n for rule, n in counts.items() if rule not in ("all", "total")}


def validated(config: dict) -> dict:
    """A workflow config with the schema's defaults filled in, as the Snakefile sees it."""
    from snakemake.utils import validate

    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def slurm_run_id(log: str) -> str:
    """The executor's run id: the SLURM job name of every job it submitted."""
    return re.search(r"SLURM run ID: (\S+)", log).group(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster for this module; every daemon is stopped, by PID, whatever the tests did."""
    started = Cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield started
    finally:
        started.stop()
        survivors = {name: pid for name, pid in started.pids().items() if alive(pid)}
        assert not survivors, f"still running after slurm_down.sh: {survivors}"


def test_cluster_stops_with_its_owner_and_leaves_no_process(tmp_path):
    """slurm_down.sh ends a running job and every daemon; the watchdog does it when the owner dies."""
    owner = subprocess.Popen(["sleep", "600"])
    cluster = Cluster.start(tmp_path / "state", owner=owner.pid)
    try:
        job = cluster.run("sbatch", "--parsable", "-o", str(tmp_path / "job.log"), "--wrap", JOB_SLEEP).strip()
        wait_for(lambda: [j.state for j in cluster.jobs() if j.id == job] == ["RUNNING"], 60, "test job running")
        pids = cluster.pids()
        assert set(pids) == {"munged", "slurmctld", "slurmd", "watchdog"}
        owner.kill()
        owner.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), 60, "watchdog tear-down")
        assert (tmp_path / "state" / "pids.stopped").is_file()
    finally:
        owner.kill()
        cluster.stop()  # a no-op when the watchdog already stopped it
    assert not any(alive(pid) for pid in cluster.pids().values())
    assert subprocess.run(["pgrep", "-f", f"^{JOB_SLEEP}$"], capture_output=True).returncode == 1, "the job survived"


@pytest.mark.timeout(900)
def test_tiny_workflow_runs_every_job_through_sbatch(cluster, tmp_path):
    results = tmp_path / "results"
    start = time.perf_counter()
    done = subprocess.run(snakemake_command(tmp_path, TINY, "--config", f"results={results}"), cwd=tmp_path,
                          env=workflow_env(cluster), capture_output=True, text=True, timeout=850)
    elapsed = time.perf_counter() - start
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]

    counts = job_stats(log)
    jobs = cluster.jobs(name=slurm_run_id(log))
    print(f"tiny workflow on SLURM: {len(jobs)} sbatch jobs, {elapsed:.0f} s")
    config = validated(yaml.safe_load(TINY.read_text()) | {"results": str(results)})
    planned = (len(config["datasets"]) + 2 * len(ofg_plan.training_runs(config)) + len(config["refinement"]["datasets"])
               + len(config["baselines"]["datasets"]) + len(ofg_stages.timing_pairs(config)) + 1)
    assert len(jobs) == sum(counts.values()) == planned == 15  # prepare, train + evaluate, refinement, baselines, timing, report
    assert {job.state for job in jobs} == {"COMPLETED"}
    assert sorted(re.findall(r"submitted with SLURM jobid (\d+)", log), key=int) == [job.id for job in jobs]
    logs = sorted((tmp_path / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(job.id for job in jobs)
    assert Counter(p.relative_to(tmp_path / "slurm_logs").parts[0] for p in logs) == {
        f"rule_{rule}": n for rule, n in counts.items()}

    for run in ofg_plan.training_runs(config):
        assert Layout(results).run(run.key).summary.is_file(), run
    for output in output_paths(ofg_stages.report_plan(config)):
        assert output.is_file() and output.stat().st_size > 0, output


def fault_config(tmp_path: Path) -> Path:
    """config/tiny.yaml with its results under tmp_path and a training long enough to be caught mid-run."""
    config = yaml.safe_load(TINY.read_text())
    config["results"] = str(tmp_path / "results")
    config["training"].update(epochs=FAULT_EPOCHS, iterations_per_epoch=6)
    path = tmp_path / "fault.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cancel_after_first_checkpoint(cluster: Cluster, run_dir: Path, workflow: subprocess.Popen,
                                  comment: str) -> str:
    """Wait for the training's first checkpoint, scancel its SLURM job; return the job id."""
    last = RunFolder(run_dir).last
    wait_for(lambda: last.is_file() or workflow.poll() is not None, 600, "the training's first checkpoint")
    assert workflow.poll() is None, "the workflow ended before the training's first checkpoint"
    running = [job for job in cluster.jobs(states="running") if job.comment == comment]
    assert len(running) == 1, running
    cluster.run("scancel", running[0].id)
    return running[0].id


def run_cancelling_the_training(cluster: Cluster, work: Path, configfile: Path, run_dir: Path,
                                comment: str) -> tuple[str, str]:
    """Run the workflow up to the training of ``run_dir``, scancel that training after its first checkpoint
    and meanwhile train the same run without interruption into ``work/reference`` (one torch thread, as
    the job). Return Snakemake's log and the cancelled job's id."""
    out = work / "snakemake.log"
    command = snakemake_command(work, configfile, str(RunFolder(run_dir).summary))
    with open(out, "w") as stream:
        workflow = subprocess.Popen(command, cwd=work, env=workflow_env(cluster), stdout=stream,
                                    stderr=subprocess.STDOUT)
        reference = None
        try:
            cancelled = cancel_after_first_checkpoint(cluster, run_dir, workflow, comment)
            reference = subprocess.Popen(
                [sys.executable, "-m", "ofg.train", str(RunFolder(run_dir).config), "--out", str(work / "reference"),
                 "--no-progress"], env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            workflow.wait(timeout=800)
            assert reference.wait(timeout=300) == 0, "the uninterrupted reference training failed"
        finally:
            for process in (workflow, reference):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    log = out.read_text()
    assert workflow.returncode == 0, log[-6000:]
    return log, cancelled


@pytest.mark.timeout(900)
def test_cancelled_training_is_resubmitted_and_resumes_to_the_same_weights(cluster, tmp_path):
    configfile = fault_config(tmp_path)
    run_dir = Layout(validated(yaml.safe_load(configfile.read_text()))["results"]).run(FAULT_RUN.key).path
    comment = "rule_train_wildcards_" + "_".join(FAULT_RUN.key)
    start = time.perf_counter()
    log, cancelled = run_cancelling_the_training(cluster, tmp_path, configfile, run_dir, comment)
    jobs = cluster.jobs(name=slurm_run_id(log))
    print(f"cancelled and resumed training on SLURM: {len(jobs)} sbatch jobs, {time.perf_counter() - start:.0f} s")
    train_jobs = [job for job in jobs if job.comment == comment]
    assert [job.state for job in train_jobs] == ["CANCELLED", "COMPLETED"] and train_jobs[0].id == cancelled
    assert "Trying to restart job" in log  # Snakemake's retry (profile: retries 1)
    assert len(list((tmp_path / "slurm_logs" / "rule_train").rglob("*.log"))) == 2

    train_log = RunFolder(run_dir).log.read_text()
    resumed = re.findall(RESUMED.format(out=re.escape(str(run_dir)), epochs=FAULT_EPOCHS), train_log)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < FAULT_EPOCHS, train_log
    assert train_log.count("starting ") == 1, train_log
    reference = tmp_path / "reference"
    assert "resuming" not in RunFolder(reference).log.read_text()
    resumed_weights = read_checkpoint(RunFolder(run_dir).last)["model"]
    reference_weights = read_checkpoint(RunFolder(reference).last)["model"]
    assert resumed_weights.keys() == reference_weights.keys()
    assert all(torch.equal(resumed_weights[k], reference_weights[k]) for k in reference_weights)
