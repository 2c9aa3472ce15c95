#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for testing sieve's scale-out path under a
# real scheduler: Debian's slurm-wlm and munge, one node with this machine's cores and
# memory, one partition. Needs root (it installs packages and starts daemons); no systemd.
#
#   scripts/slurm-local.sh start    install if missing, write the config, start munged,
#                                   slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-local.sh status   print `sinfo`; exit 1 when the cluster is not up
#   scripts/slurm-local.sh stop     cancel every job, stop the daemons
#
# Idempotent: `start` on a running cluster only checks it. State and logs live in
# SIEVE_SLURM_DIR (default /var/lib/sieve-slurm); the config is /etc/slurm/slurm.conf.
set -euo pipefail
DIR=${SIEVE_SLURM_DIR:-/var/lib/sieve-slurm}
CONF=/etc/slurm/slurm.conf
log() { echo "[slurm-local] $*" >&2; }

# A node state with a suffix (`idle*`: not responding, `drain`…) is not up.
up() { sinfo -h -o '%T' 2>/dev/null | grep -qxE '(idle|mixed|allocated|completing)'; }

stop() {
  command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null || true
  for d in slurmd slurmctld; do
    if [ -f "$DIR/$d.pid" ]; then kill "$(cat "$DIR/$d.pid")" 2>/dev/null || true; rm -f "$DIR/$d.pid"; fi
  done
  # Only the munged this script started (a system one stays).
  if [ -f "$DIR/munged.started" ]; then pkill -x munged 2>/dev/null || true; rm -f "$DIR/munged.started"; fi
  log "stopped"
}

case "${1:-start}" in
  stop) stop; exit 0 ;;
  status) if up; then sinfo; exit 0; else echo "no Slurm cluster answers" >&2; exit 1; fi ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then echo "slurm-local: needs root (packages, daemons)" >&2; exit 1; fi
if up; then log "already up"; sinfo >&2; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

# munge: a key readable by the munge user only, its run and log directories.
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
mkdir -p "$DIR"
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
  touch "$DIR/munged.started"
fi
munge -n | unmunge >/dev/null || { echo "slurm-local: munge does not work" >&2; exit 1; }

# One node, this machine: its cores and most of its memory; no cgroups (containers
# seldom delegate them), so processes are tracked by their parent ids.
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$DIR/ctld" "$DIR/d" /etc/slurm
cat > "$CONF" <<EOF
# Written by sieve's scripts/slurm-local.sh: a one-node test cluster.
ClusterName=sieve-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
log "config: $CONF ($HOST, $CPUS CPUs, $MEM MiB)"
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if up; then log "up"; sinfo >&2; exit 0; fi
  state=$(sinfo -h -o '%T' 2>/dev/null || true)
  case "$state" in down*|drain*|unknown*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;; esac
  sleep 1
done
echo "slurm-local: the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
sinfo >&2 || true
exit 1
