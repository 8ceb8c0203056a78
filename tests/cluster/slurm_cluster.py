"""A one-node SLURM cluster for tests (tests/cluster/slurm_up.sh, slurm_down.sh) and the SLURM queries they need.

``Cluster.start(state_dir)`` brings the daemons up under ``state_dir``; ``stop()`` cancels every job
and stops every daemon it started, by PID. ``env`` is the environment in which sbatch, squeue,
scancel and Snakemake's slurm executor talk to that cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
#: what the cluster tests need on PATH (Debian: apt-get install slurmctld slurmd slurm-client munge)
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")


def missing_tools() -> list[str]:
    """The SLURM and munge programs that are not on PATH (empty when the cluster tests can run)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass
class Job:
    """One SLURM job as squeue reports it."""

    id: str
    state: str
    name: str
    comment: str


@dataclass
class Cluster:
    """A running one-node cluster whose files are all under ``state``."""

    state: Path
    env: dict[str, str]

    @classmethod
    def start(cls, state: Path, owner: int | None = None, timeout: float = 120) -> "Cluster":
        """Run slurm_up.sh (it tears down and this raises on failure); the cluster's watchdog stops it
        when process ``owner`` (default: this one) ends."""
        owner = os.getpid() if owner is None else owner
        try:
            result = subprocess.run([str(HERE / "slurm_up.sh"), str(state), str(owner)], capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run([str(HERE / "slurm_down.sh"), str(state)], timeout=120)
            raise
        if result.returncode != 0:
            raise RuntimeError(f"slurm_up.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        env = dict(os.environ)
        env["SLURM_CONF"] = str(state / "slurm.conf")
        # the cluster's srun wrapper, then this interpreter's scripts (snakemake, papermill), as in a venv
        env["PATH"] = os.pathsep.join([str(state / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
        return cls(state, env)

    def stop(self) -> str:
        """Run slurm_down.sh; raise if a daemon or job step survived. Returns its output."""
        result = subprocess.run([str(HERE / "slurm_down.sh"), str(self.state)], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"slurm_down.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def pids(self) -> dict[str, int]:
        """The processes slurm_up.sh started, by name (from STATE/pids or, once stopped, pids.stopped)."""
        path = self.state / "pids"
        lines = (path if path.exists() else self.state / "pids.stopped").read_text().split("\n")
        return {name: int(pid) for name, pid in (line.split() for line in lines if line.strip())}

    def run(self, *args: str, timeout: float = 60) -> str:
        """Run a SLURM client command against this cluster; return its stdout."""
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def jobs(self, name: str | None = None, states: str = "all") -> list[Job]:
        """Jobs known to slurmctld (finished ones for MinJobAge), optionally only those named ``name``."""
        args = ["squeue", "-h", f"--states={states}", "--format=%i|%T|%j|%k"]
        if name is not None:
            args.append(f"--name={name}")
        lines = self.run(*args).splitlines()
        return sorted((Job(*line.split("|", 3)) for line in lines if line.strip()), key=lambda job: int(job.id))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.25) -> None:
    """Poll ``condition`` until it is true; raise TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(poll)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
