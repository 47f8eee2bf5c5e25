#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests/test_slurm.py and CI (.ci/run).
#
#   tests/local_slurm.sh install   apt-get install slurm-wlm + munge if missing (root)
#   tests/local_slurm.sh start     start munged, slurmctld and slurmd on localhost (root);
#                                  its last lines, SLURM_CONF=<file> and SBATCH_PARTITION=audiolstm,
#                                  are what sbatch/squeue/srun need: export them to use it
#   tests/local_slurm.sh stop      stop what `start` started
#   tests/local_slurm.sh status    exit 0 (and print those two lines) if it answers
#
# Everything it writes (slurm.conf, state, spool, logs, pid files) lives in one folder,
# $AUDIOLSTM_SLURM_DIR (default /tmp/audiolstm-slurm); /etc/slurm is never touched, the
# daemons listen on ports 6917/6918 (not SLURM's 6817/6818) and munged is started only
# when none answers (and then stopped again by `stop`), so it cannot clash with a real
# cluster's configuration on the same host. The node is this host (`slurmd -C`: its real
# name, CPUs and memory), one partition `audiolstm`, no cgroups (process tracking by
# /proc, no task binding), so it runs in a container. No accounting storage: `sacct`
# answers "Slurm accounting storage is disabled" (see README, "SLURM").
#
# Every wait is bounded; a failure prints one line `local_slurm: cannot <command>: <reason>`
# on stderr (plus the daemon's log tail) and exits 1. Idempotent: `start` on a running
# scheduler and `stop` on a stopped one do nothing.
set -euo pipefail

DIR=${AUDIOLSTM_SLURM_DIR:-/tmp/audiolstm-slurm}
CONF="$DIR/slurm.conf"
PARTITION=audiolstm
CTLD_PORT=6917
SLURMD_PORT=6918
WAIT_S=${AUDIOLSTM_SLURM_WAIT_S:-30}

ACTION=${1:-}
die() {
  echo "local_slurm: cannot $ACTION: $*" >&2
  exit 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (run it with sudo)"
}

have_binaries() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null
}

cmd_install() {
  have_binaries && return 0
  need_root
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get"
  (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
      apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null) \
    || die "apt-get install slurm-wlm munge failed (or took over 20 min)"
  have_binaries || die "slurm-wlm installed but slurmctld/slurmd/sbatch/munged are not on PATH"
}

# Waits up to WAIT_S seconds for "$@" to succeed.
wait_for() {
  local end=$((SECONDS + WAIT_S))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}

munge_ok() { timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

# The node answers and takes jobs (idle, mixed or allocated; not down/drained).
node_up() {
  local state
  state=$(SLURM_CONF="$CONF" timeout 5 sinfo -h -p "$PARTITION" -o %T 2>/dev/null) || return 1
  [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

# What a client needs, as shell assignments (sbatch reads SBATCH_PARTITION).
print_env() {
  echo "SLURM_CONF=$CONF"
  echo "SBATCH_PARTITION=$PARTITION"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

tail_log() {
  [ -s "$1" ] && { echo "--- last lines of $1:" >&2; tail -n 15 "$1" >&2; }
  return 0
}

start_munge() {
  munge_ok && return 0
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    (umask 077 && dd if=/dev/urandom of="$key" bs=1024 count=1 status=none)
    chown munge:munge "$key" && chmod 0400 "$key"
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  timeout 30 runuser -u munge -- munged >/dev/null 2>&1 || { tail_log /var/log/munge/munged.log; \
    die "munged did not start (see /var/log/munge/munged.log)"; }
  touch "$DIR/munged.ours"
  wait_for munge_ok || die "munged started but 'munge -n | unmunge' fails after ${WAIT_S}s"
}

write_conf() {
  local node
  node=$(timeout 30 slurmd -C | head -n 1)   # NodeName=<host> CPUs=... RealMemory=... (this machine)
  [[ "$node" == NodeName=* ]] || die "'slurmd -C' did not describe this node: $node"
  cat >"$CONF" <<EOF
# Written by tests/local_slurm.sh: a single-node test scheduler (no cgroups, no accounting).
ClusterName=audiolstm
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300            # finished jobs stay visible to scontrol for 5 min
MailProg=/bin/true
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# Says why the start failed (a daemon's fatal line, else what sinfo sees), stops the rest.
start_failed() {
  local fatal state
  tail_log "$DIR/slurmctld.log"
  tail_log "$DIR/slurmd.log"
  fatal=$(grep -h "fatal:" "$DIR/slurmctld.log" "$DIR/slurmd.log" 2>/dev/null | tail -n 1 \
          | sed 's/^\[[^]]*\] *//') || true
  state=$(SLURM_CONF="$CONF" timeout 5 sinfo -h -o "%T %E" 2>/dev/null | head -n 1) || true
  cmd_stop >/dev/null 2>&1 || true
  die "$1 (${fatal:-sinfo: ${state:-no answer}}); logs in $DIR"
}

cmd_start() {
  if node_up; then
    echo "local_slurm: already running"
    print_env
    return 0
  fi
  need_root
  have_binaries || die "slurm-wlm/munge not installed: run 'tests/local_slurm.sh install' (as root)"
  cmd_stop >/dev/null 2>&1 || true  # leftovers of a half-started or crashed one
  install -d -m 0755 "$DIR" "$DIR/state" "$DIR/spool"
  start_munge
  write_conf
  rm -f "$DIR"/slurmctld.log "$DIR"/slurmd.log  # so a fatal line below is from this start
  timeout 30 slurmctld -c -f "$CONF" || start_failed "slurmctld exited"
  timeout 30 slurmd -f "$CONF" || start_failed "slurmd exited"
  wait_for node_up || start_failed "node not up after ${WAIT_S}s"
  echo "local_slurm: running (partition $PARTITION, $(sed -n 's/^NodeName=\([^ ]*\) CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/node \1, \2 CPUs, \3 MB/p' "$CONF"))"
  print_env
}

# Stops a daemon by its pid file: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pidfile=$1 pid i
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

cmd_stop() {
  [ -d "$DIR" ] || return 0
  need_root
  if [ -f "$CONF" ] && pid_alive "$DIR/slurmctld.pid"; then  # end jobs, so no step is left
    SLURM_CONF="$CONF" timeout 10 scancel --partition="$PARTITION" >/dev/null 2>&1 || true
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  if [ -f "$DIR/munged.ours" ]; then
    timeout 10 runuser -u munge -- munged --stop >/dev/null 2>&1 || true
    rm -f "$DIR/munged.ours"
  fi
  echo "local_slurm: stopped"
}

cmd_status() {
  node_up || { echo "local_slurm: not running" >&2; return 1; }
  print_env
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
