#!/usr/bin/env bash
# Stop the daemons started by slurm_up.sh, by the PIDs it recorded (never by name).
# Cancels this cluster's remaining jobs first so nothing keeps running.
STATE=${STATE:-/tmp/locedit-slurm}
command -v scancel >/dev/null && [ -s "$STATE/slurmctld.pid" ] && scancel --user "$(id -un)" 2>/dev/null
for d in slurmd slurmctld munged; do
  f="$STATE/$d.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && echo "slurm_down: sent TERM to $d ($pid)"
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; echo "slurm_down: killed -9 $d ($pid)"; }
  rm -f "$f"
done
exit 0
