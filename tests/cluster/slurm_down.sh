#!/usr/bin/env bash
# Stop the daemons started by slurm_up.sh, by the PIDs it recorded (never by name), and put
# /etc/slurm back as slurm_up.sh found it: a slurm.conf left naming a stopped controller makes
# every snakemake start wait ~9 s (the SLURM executor plugin runs `scontrol show config` at
# import). The packages stay installed. Cancels this cluster's remaining jobs first.
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
for f in slurm.conf gres.conf; do
  [ -e "$STATE/$f.ours" ] || continue
  if [ -e "$STATE/$f.host" ]; then mv -f "$STATE/$f.host" "/etc/slurm/$f"; else rm -f "/etc/slurm/$f"; fi
  rm -f "$STATE/$f.ours"
  echo "slurm_down: /etc/slurm/$f as it was before slurm_up.sh"
done
exit 0
