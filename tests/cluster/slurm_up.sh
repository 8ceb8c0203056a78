#!/usr/bin/env bash
# Bring up a one-node SLURM cluster (munged, slurmctld, slurmd from Debian's packages) on this host,
# with every file under STATE_DIR: its own slurm.conf, munge key and socket, spool, logs and PIDs.
#
#   tests/cluster/slurm_up.sh STATE_DIR [OWNER_PID]
#   . STATE_DIR/env.sh                           # SLURM_CONF=STATE_DIR/slurm.conf, STATE_DIR/bin on PATH
#   ... sbatch, squeue, snakemake --executor slurm ...
#   tests/cluster/slurm_down.sh STATE_DIR        # stops every daemon started here, by PID
#
# Only 127.0.0.1 is used, on two free ports. The node is this host (its name, CPUs and memory from
# `slurmd -C`), in one partition "debug"; SelectType=select/cons_tres, ProctrackType=
# proctrack/linuxproc, TaskPlugin=task/none, no accounting storage. The daemons run as the calling
# user (root in CI). STATE_DIR/pids lists "name pid" of everything started. With OWNER_PID, a
# watchdog tears the cluster down when that process ends (a killed test leaves no daemons behind).
# On any failure the script tears down what it started and exits non-zero, printing the daemon logs.
# STATE_DIR/bin/srun is srun with this cluster's SLURM_CONF: Snakemake's slurm-jobstep executor removes
# every SLURM_* variable, SLURM_CONF too, before it calls srun inside a job (a cluster whose slurm.conf
# is at the default path, /etc/slurm/slurm.conf, or served configless does not need this).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${1:?usage: slurm_up.sh STATE_DIR [OWNER_PID]}"
OWNER="${2:-}"
READY_SECONDS="${SLURM_UP_READY_SECONDS:-60}"

for tool in munged mungekey slurmctld slurmd sbatch srun sinfo scontrol python3; do
  command -v "$tool" >/dev/null || { echo "slurm_up: $tool not found on PATH" >&2; exit 2; }
done

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
if [ -e "$STATE/pids" ]; then
  echo "slurm_up: $STATE/pids exists: a cluster may be running there (slurm_down.sh it first)" >&2
  exit 2
fi
mkdir -p "$STATE"/{munge,ctld,spool,log,run,bin}
chmod 755 "$STATE" "$STATE/munge"   # munged: the socket's folder must be searchable by all
: > "$STATE/pids"

fail() {
  echo "slurm_up: $*" >&2
  for log in "$STATE"/log/*; do
    [ -s "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
  done
  "$HERE/slurm_down.sh" "$STATE" >&2 || true
  exit 1
}
trap 'fail "failed at line $LINENO"' ERR
trap 'fail "interrupted"' INT TERM

# Start "$@" in the background with its output in log/NAME.out; record its PID.
start() {
  local name="$1"; shift
  "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
  echo "$name $!" >> "$STATE/pids"
}

# Wait until "$@" succeeds, at most READY_SECONDS.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + READY_SECONDS))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what not ready after ${READY_SECONDS}s"
    sleep 0.5
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -n "$OWNER" ]; then
  # the watchdog, first: whatever starts below is torn down when the owner is gone
  kill -0 "$OWNER" || fail "owner process $OWNER does not exist"
  start watchdog bash -c "while kill -0 $OWNER 2>/dev/null; do sleep 2; done; exec '$HERE/slurm_down.sh' '$STATE'"
fi

# --- munge: its own key and socket ----------------------------------------------------------------
mungekey --create --keyfile="$STATE/munge/munge.key" --force
chmod 600 "$STATE/munge/munge.key"
SOCKET="$STATE/munge/munge.socket"
start munged munged --foreground --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" \
  --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged-daemon.log" \
  --seed-file="$STATE/munge/munged.seed"
wait_for "munged" bash -c "munge --socket='$SOCKET' -n | unmunge --socket='$SOCKET'"

# --- slurm.conf ------------------------------------------------------------------------------------
NODE_LINE="$(slurmd -C | head -n 1)"          # NodeName=<host> CPUs=... RealMemory=...
NODE="$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")"
CTLD_PORT="$(free_port)"
SLURMD_PORT="$(free_port)"
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT="$(free_port)"; done
USER_NAME="$(id -un)"
cat > "$STATE/slurm.conf" <<EOF
# One-node test cluster written by tests/cluster/slurm_up.sh; state in $STATE
ClusterName=ofgtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
ReturnToService=2
# finished jobs stay visible to squeue this long (Snakemake's squeue status check needs them)
MinJobAge=600
DefMemPerCPU=1000
KillWait=5
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$STATE/slurm.conf"
printf '#!/bin/sh\nexport SLURM_CONF=%q\nexec %q "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$STATE/bin/srun"
chmod 755 "$STATE/bin/srun"
printf 'export SLURM_CONF=%q\nexport PATH=%q:"$PATH"\n' "$SLURM_CONF" "$STATE/bin" > "$STATE/env.sh"

# --- daemons ---------------------------------------------------------------------------------------
start slurmctld slurmctld -D -c -f "$SLURM_CONF"
wait_for "slurmctld" scontrol ping
start slurmd slurmd -D -f "$SLURM_CONF" -N "$NODE"
idle() { sinfo -h -n "$NODE" -o %T | grep -qx idle; }
wait_for "node $NODE" idle
trap - ERR INT TERM
echo "slurm_up: node $NODE up ($(sinfo -h -o '%c CPUs, %m MB' -n "$NODE")); SLURM_CONF=$SLURM_CONF"
