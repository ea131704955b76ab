#!/usr/bin/env bash
# Start a local Slurm cluster on this machine (as root) to try `vislab submit` and to run the `slurm` tests.
# Debian/Ubuntu packages (slurmctld, slurmd, slurm-client, munge), no systemd and no cgroups needed.
# Idempotent: installs packages only if missing, starts only daemons that are not running (PID files),
# restarts them when the rendered config changed, and waits until every node is idle.
#
# Usage: slurm/local_cluster_up.sh [--nodes N] [--with-dbd]
#   --nodes 1 (default): one node named after this host, on 127.0.0.1.
#   --nodes N (N >= 2) : N nodes vnode1..vnodeN, each slurmd in its own network + UTS namespace joined to a
#                        bridge (10.213.0.0/24) by a veth pair, so the nodes are separate hosts on a network
#                        (own hostname, own address, own loopback) sharing this machine's disk like NFS.
#                        Multi-node jobs (gloo / NCCL across hosts) can then be tested on one machine.
#   --with-dbd         : also MariaDB + slurmdbd, so plain `sacct` works (without it: `sacct -c`).
# Stop with slurm/local_cluster_down.sh. Logs: /var/log/slurm/.
set -euo pipefail
NODES=1
WITH_DBD=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes) NODES=$2; shift 2 ;;
    --with-dbd) WITH_DBD=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "local_cluster_up.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $NODES =~ ^[1-9][0-9]*$ ]] || { echo "--nodes must be a positive integer, got '$NODES'" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF=/etc/slurm/slurm.conf
CTLD_PID=/run/slurm/slurmctld.pid
MUNGE_PID=/run/munge/munged.pid
NET=10.213.0          # bridge network of the multi-node mode
BRIDGE=vislabbr0
WAIT_S="${SLURM_UP_WAIT_S:-60}"

log() { echo "[local_cluster_up] $*"; }
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
[[ $EUID -eq 0 ]] || { echo "local_cluster_up.sh must run as root (it starts munged, slurmctld, slurmd)" >&2; exit 1; }

# 1. packages --------------------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
if [[ $WITH_DBD == 1 ]] && { ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; }; then
  log "installing slurmdbd mariadb-server"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmdbd mariadb-server >/dev/null
fi

# 2. munge (authentication between all daemons and commands) ----------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating munge key"
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! alive "$MUNGE_PID"; then
  rm -f "$MUNGE_PID" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do alive "$MUNGE_PID" && [[ -S /run/munge/munge.socket.2 ]] && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { echo "munge self-test failed (see /var/log/munge/munged.log)" >&2; exit 1; }

# 2b. MariaDB + slurmdbd (optional) -----------------------------------------------------------------------
install -d -m 0755 /etc/slurm /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [[ $WITH_DBD == 1 ]]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! alive /run/mysqld/mysqld.pid; then
    log "starting mariadbd"
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    nohup /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 >>/var/log/slurm/mariadbd.log 2>&1 &
    for _ in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  install -m 0600 "$HERE/local_slurmdbd.conf" /etc/slurm/slurmdbd.conf   # slurmdbd refuses a world-readable file
  if ! alive /run/slurm/slurmdbd.pid; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done
  fi
fi

# 3. network of the multi-node mode: bridge in this namespace, one namespace + veth per node -------------
HOST="$(hostname -s)"
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
RESOURCES="$(slurmd -C | head -n1 | sed 's/^NodeName=[^ ]* //')"   # CPUs=.. Boards=.. ... RealMemory=..
node_names=()
if [[ $NODES == 1 ]]; then
  node_names=("$HOST")
  CTLD="$HOST(127.0.0.1)"
  NODELINES="NodeName=$HOST NodeAddr=127.0.0.1 $RESOURCES State=UNKNOWN"
else
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($NET.254/24)"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.254/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  # A Docker host sets the FORWARD policy to DROP and loads br_netfilter, which then drops the traffic between
  # the node namespaces on this bridge: let the bridge's own traffic through (idempotent).
  if command -v iptables >/dev/null 2>&1 && ! iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; then
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null || log "warning: could not add an iptables FORWARD rule for $BRIDGE"
  fi
  NODELINES=""
  for i in $(seq "$NODES"); do
    name="vnode$i" ns="vislab-vnode$i"
    node_names+=("$name")
    if ! ip netns list | grep -qw "$ns"; then
      log "creating network namespace $ns ($NET.$i)"
      ip netns add "$ns"
      ip link add "vlv$i" type veth peer name "vlv${i}p"
      ip link set "vlv${i}p" netns "$ns"
      ip -n "$ns" link set "vlv${i}p" name eth0
      ip -n "$ns" addr add "$NET.$i/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
      ip link set "vlv$i" master "$BRIDGE"
      ip link set "vlv$i" up
    fi
    grep -qE "^$NET\.$i[[:space:]]+$name\b" /etc/hosts || echo "$NET.$i $name" >> /etc/hosts
    NODELINES+="NodeName=$name NodeAddr=$NET.$i $RESOURCES State=UNKNOWN"$'\n'
  done
  CTLD="$HOST($NET.254)"
fi

# 4. slurm.conf ------------------------------------------------------------------------------------------
tmp="$(mktemp)"
awk -v ctld="$CTLD" -v nodes="$NODELINES" '{ gsub("@CTLD@", ctld); if ($0 == "@NODELINES@") printf "%s", nodes "\n"; else print }' \
  "$HERE/local_slurm.conf.in" | sed '/^$/d' > "$tmp"
if [[ $WITH_DBD == 1 ]]; then
  sed -i 's|^AccountingStorageType=accounting_storage/none|AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819|' "$tmp"
fi
changed=0
if ! cmp -s "$tmp" "$CONF" 2>/dev/null; then install -m 0644 "$tmp" "$CONF"; changed=1; log "wrote $CONF"; fi
rm -f "$tmp"

stop() {  # pidfile
  alive "$1" || return 0
  kill -TERM "$(cat "$1")"
  for _ in $(seq 100); do alive "$1" || break; sleep 0.1; done
}

# 5. daemons: a changed config (node list, accounting) needs a restart, not a reconfigure -----------------
if [[ $changed == 1 ]]; then
  for pf in /run/slurm/slurmd-*.pid; do [[ -e $pf ]] && stop "$pf"; done
  stop "$CTLD_PID"
fi
if ! alive "$CTLD_PID"; then
  log "starting slurmctld"
  rm -f "$CTLD_PID"
  /usr/sbin/slurmctld
  for _ in $(seq 100); do alive "$CTLD_PID" && scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
for name in "${node_names[@]}"; do
  pf="/run/slurm/slurmd-$name.pid"
  alive "$pf" && continue
  install -d -m 0755 "/var/spool/slurmd/$name"
  log "starting slurmd $name"
  if [[ $NODES == 1 ]]; then
    /usr/sbin/slurmd -N "$name"
  else
    # own network namespace (address, loopback) and own hostname: to the job, a separate host.
    # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, and slurmd then refuses to start
    nsenter --net="/run/netns/vislab-$name" unshare --uts sh -c "hostname $name && exec /usr/sbin/slurmd -N $name"
  fi
done

# 6. wait for every node ---------------------------------------------------------------------------------
for name in "${node_names[@]}"; do
  state=""
  for _ in $(seq $((WAIT_S * 2))); do
    state="$(sinfo -h -n "$name" -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
      idle|mixed|allocated|completing) break ;;
      down*|drain*) scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle|mixed|allocated|completing) log "node $name: $state" ;;
    *) echo "node $name not ready: '${state:-unknown}' (see /var/log/slurm/slurmd-$name.log)" >&2; exit 1 ;;
  esac
done
sinfo
