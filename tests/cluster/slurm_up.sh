#!/usr/bin/env bash
# Bring up a single-node SLURM "cluster" (munged + slurmctld + slurmd on localhost) for the
# cluster test (tests/cluster/test_slurm.py) and CI. Debian/Ubuntu, as root, no systemd needed.
#
#   STATE=/tmp/locedit-slurm FAKE_GPUS=1 tests/cluster/slurm_up.sh    # then: sinfo, sbatch, ...
#   STATE=/tmp/locedit-slurm tests/cluster/slurm_down.sh   # daemons stopped, /etc/slurm as it was
#
# NODE_CPUS / NODE_MEM_MB (optional) make the node advertise more CPUs / memory than it has
# (SlurmdParameters=config_overrides), so that a profile sized for real GPU nodes
# (profiles/slurm: cpus_per_gpu, tens of GB) is accepted as is; the test jobs use little.
#
# Partitions "cpu" (default) and "gpu" holding this machine; FAKE_GPUS fake GPUs as gres (a /dev/null-like char
# device each) so jobs asking for --gpus=1 are scheduled. No slurmdbd: no sacct, so the Snakemake
# SLURM executor must poll with squeue (profiles/slurm sets it). Daemons' PIDs go to $STATE/*.pid.
# Exit status: 0 up; 2 cannot run here (not root, no apt, install failed); 1 daemons failed.
set -uo pipefail
STATE=${STATE:-/tmp/locedit-slurm}
FAKE_GPUS=${FAKE_GPUS:-1}
NODE_CPUS=${NODE_CPUS:-}
NODE_MEM_MB=${NODE_MEM_MB:-}
mkdir -p "$STATE"
T0=$(date +%s.%N)
cannot() { echo "slurm_up: cannot bring up SLURM here: $*" >&2; exit 2; }
fail() { echo "slurm_up: $*" >&2; for f in "$STATE"/*.log; do echo "--- $f" >&2; tail -5 "$f" >&2; done; exit 1; }

[ "$(id -u)" -eq 0 ] || cannot "needs root (apt-get, daemons, /etc/slurm)"

# Already up (e.g. CI brought it up, or a previous test in this session)?
if command -v sinfo >/dev/null && [ -s "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null \
   && sinfo -h -o %T 2>/dev/null | grep -q -E "^(idle|mixed|allocated)"; then
  echo "slurm_up: already up"; exit 0
fi

# 1. packages (about 10 s; munge's postinst creates /etc/munge/munge.key)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || cannot "slurm is not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$STATE/apt.log" 2>&1 || cannot "apt-get update failed (see $STATE/apt.log)"
  apt-get install -y -q --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge \
    >>"$STATE/apt.log" 2>&1 || cannot "apt-get install slurm-wlm munge failed (see $STATE/apt.log)"
fi
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi

# 2. munge: must run as user munge; /run/munge is not created without systemd
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --foreground >"$STATE/munged.log" 2>&1 &
  for i in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged did not start"
  cp /run/munge/munged.pid "$STATE/munged.pid"   # munged's own pid, not runuser's
fi

# 3. slurm.conf: node line from `slurmd -C`, RealMemory at 90 % of what it reports
HOST=$(hostname -s)
NODELINE=$(slurmd -C | head -1)
MEM=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$NODELINE")
NODELINE=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM * 90 / 100))/" <<<"$NODELINE")
OVERRIDES=""
if [ -n "$NODE_CPUS" ] || [ -n "$NODE_MEM_MB" ]; then
  OVERRIDES="SlurmdParameters=config_overrides"
  # A plain CPUs=N line (no sockets/cores/threads split) so that N may exceed the hardware.
  [ -n "$NODE_CPUS" ] && NODELINE="$(sed -E 's/ (CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g' <<<"$NODELINE") CPUs=$NODE_CPUS"
  [ -n "$NODE_MEM_MB" ] && NODELINE=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$NODE_MEM_MB/" <<<"$NODELINE")
fi
GRES_NODE=""; GRES_TYPES=""
mkdir -p /etc/slurm /var/lib/slurm/slurmd /var/lib/slurm/slurmctld /var/log/slurm
# The host's own configuration is kept for slurm_down.sh to put back: a slurm.conf naming a
# controller that is down makes every `scontrol` wait ~9 s, and Snakemake's SLURM executor plugin
# runs `scontrol show config` whenever snakemake starts, on any executor.
for f in slurm.conf gres.conf; do
  if [ -e "/etc/slurm/$f" ] && [ ! -e "$STATE/$f.ours" ] && [ ! -e "$STATE/$f.host" ]; then
    cp -p "/etc/slurm/$f" "$STATE/$f.host"
  fi
done
chown -R slurm:slurm /var/lib/slurm /var/log/slurm 2>/dev/null || true
if [ "$FAKE_GPUS" -gt 0 ]; then
  GRES_TYPES="GresTypes=gpu"; GRES_NODE="Gres=gpu:$FAKE_GPUS"
  : > /etc/slurm/gres.conf
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    # gres/gpu drops file-less GPUs: give each a dummy char device (major/minor of /dev/null)
    [ -e /dev/fakegpu$i ] || mknod /dev/fakegpu$i c 1 3 || cannot "mknod /dev/fakegpu$i failed"
    echo "NodeName=$HOST Name=gpu File=/dev/fakegpu$i" >> /etc/slurm/gres.conf
  done
fi
touch "$STATE/slurm.conf.ours"
[ "$FAKE_GPUS" -gt 0 ] && touch "$STATE/gres.conf.ours"
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=locedit-ci
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd, so no sacct: Snakemake polls with squeue, which needs finished jobs to stay
# visible for a while (MinJobAge >= 120 s).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
# Without a default, a job that names no --mem takes the whole node and jobs run one at a time.
DefMemPerCPU=1000
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$OVERRIDES
$GRES_TYPES
$NODELINE $GRES_NODE State=UNKNOWN
# The partitions profiles/slurm names: "cpu" (default) and "gpu", both on this node.
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF

# 4. daemons in the foreground (-D), backgrounded here so that their PIDs are ours to stop
/usr/sbin/slurmctld -D -c -i >"$STATE/slurmctld.log" 2>&1 &
echo $! > "$STATE/slurmctld.pid"
for i in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld did not come up"
/usr/sbin/slurmd -D >"$STATE/slurmd.log" 2>&1 &
echo $! > "$STATE/slurmd.pid"
for i in $(seq 150); do sinfo -h -o %T 2>/dev/null | grep -q -E "^idle" && break; sleep 0.2; done
sinfo -h -o %T 2>/dev/null | grep -q -E "^idle" || fail "node did not become idle: $(sinfo -N -h -o '%T %E')"
sinfo -N -o "%N %c %m %G %T"
echo "slurm_up: up in $(python3 -c "import time; print(round(time.time() - $T0, 1))") s"
