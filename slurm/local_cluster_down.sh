#!/usr/bin/env bash
# Stop the local Slurm cluster started by local_cluster_up.sh: cancel its jobs, stop the daemons by PID file
# (slurmd, slurmctld, slurmdbd, mariadbd, munged) and remove the multi-node network namespaces and bridge.
# Config, saved state and logs stay; --purge also deletes saved state (queued jobs) and logs.
set -uo pipefail
[[ $EUID -eq 0 ]] || { echo "local_cluster_down.sh must run as root" >&2; exit 1; }

stop_pidfile() {  # name pidfile
  local name=$1 pf=$2 pid
  [[ -s $pf ]] || return 0
  pid=$(cat "$pf")
  if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pf"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "[local_cluster_down] $name still alive after 10 s: SIGKILL $pid"; kill -KILL "$pid"; fi
  rm -f "$pf"
  echo "[local_cluster_down] stopped $name (pid $pid)"
}

# cancel jobs first, so that no slurmstepd or job process outlives its slurmd
if [[ -s /run/slurm/slurmctld.pid ]] && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// } ]]; then
    echo "[local_cluster_down] scancel $jobs"
    # shellcheck disable=SC2086
    scancel $jobs
    for _ in $(seq 60); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.5; done
  fi
fi

for pf in /run/slurm/slurmd-*.pid; do [[ -e $pf ]] && stop_pidfile "slurmd $(basename "$pf" .pid | sed 's/^slurmd-//')" "$pf"; done
stop_pidfile slurmctld /run/slurm/slurmctld.pid
stop_pidfile slurmdbd /run/slurm/slurmdbd.pid
stop_pidfile mariadbd /run/mysqld/mysqld.pid
stop_pidfile munged /run/munge/munged.pid

for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^vislab-vnode' || true); do
  ip netns del "$ns" && echo "[local_cluster_down] removed network namespace $ns"   # also removes its veth pair
done
ip link show vislabbr0 >/dev/null 2>&1 && ip link del vislabbr0 && echo "[local_cluster_down] removed bridge vislabbr0"

if [[ ${1:-} == --purge ]]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
  echo "[local_cluster_down] purged saved state and logs"
fi
