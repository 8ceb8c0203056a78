#!/usr/bin/env bash
# Stop the one-node SLURM cluster that tests/cluster/slurm_up.sh started under STATE_DIR:
# cancel its jobs, then stop every process listed in STATE_DIR/pids, by PID (TERM, then KILL),
# newest first, and any job step daemon (slurmstepd) of that cluster that is still alive.
#
#   tests/cluster/slurm_down.sh STATE_DIR
#
# Safe to call twice, or on a half-started cluster. Exits non-zero if a process survived.
set -uo pipefail

STATE="${1:?usage: slurm_down.sh STATE_DIR}"
PIDS="$STATE/pids"
[ -f "$PIDS" ] || exit 0
export SLURM_CONF="$STATE/slurm.conf"

alive() { kill -0 "$1" 2>/dev/null; }

# The PID still runs the program it was started as (guards against a reused PID).
runs() {
  local pid="$1" name="$2"
  [ "$name" = watchdog ] && name=bash
  alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# PIDs of slurmstepd processes that belong to this cluster (their environment names its slurm.conf).
steps_of_this_cluster() {
  local pid
  for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" && echo "$pid"
  done
}

stop() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 40); do alive "$pid" || return 0; sleep 0.25; done
  echo "slurm_down: PID $pid ignored TERM for 10 s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null
  sleep 0.5
}

ctld_pid="$(awk '$1 == "slurmctld" {print $2}' "$PIDS")"
if [ -n "$ctld_pid" ] && runs "$ctld_pid" slurmctld && [ -f "$SLURM_CONF" ]; then
  scancel --user="$(id -un)" 2>/dev/null
  for _ in $(seq 1 60); do
    [ -z "$(squeue -h -t pending,running,completing,suspended 2>/dev/null)" ] && break
    sleep 0.5
  done
fi

# newest first: watchdog, slurmd, slurmctld, munged
tac "$PIDS" | while read -r name pid; do
  [ "$pid" = "$$" ] && continue   # the watchdog runs this script as itself
  runs "$pid" "$name" && stop "$pid"
done
for pid in $(steps_of_this_cluster); do stop "$pid"; done

survivors=""
while read -r name pid; do
  [ "$pid" != "$$" ] && runs "$pid" "$name" && survivors="$survivors $name($pid)"
done < "$PIDS"
for pid in $(steps_of_this_cluster); do survivors="$survivors slurmstepd($pid)"; done
mv "$PIDS" "$PIDS.stopped"
if [ -n "$survivors" ]; then
  echo "slurm_down: still running:$survivors" >&2
  exit 1
fi
echo "slurm_down: stopped the cluster of $STATE"
