#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, so sweeps can be tried and tested for real.
#
#   slurm/local-cluster.sh up       start munge, MariaDB, slurmdbd, slurmctld, slurmd (idempotent)
#   slurm/local-cluster.sh status   which daemons run, the partition, accounting
#   slurm/local-cluster.sh down     stop them again, in reverse order
#
# Needs root and the Debian/Ubuntu packages slurmctld slurmd slurm-client slurmdbd munge mariadb-server
# (slurm/ci-prepare.sh installs them). Daemons are started by hand (no systemd). One partition, `debug`,
# holds this node. Accounting goes through slurmdbd and MariaDB: submitit polls `sacct`, and without
# accounting a job killed before writing its result leaves a sweep waiting forever.
#
# Settings for tests and workstations (environment variables):
#   METAMANIP_SLURM_CPUS    CPUs the node advertises (default: max(nproc, 4); oversubscribing is fine
#                           for tiny jobs, limits are bookkeeping only here)
#   METAMANIP_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it may start again (default 10;
#                           SLURM's own default is 120)
# Files: /etc/slurm/{slurm,slurmdbd}.conf (written only if absent or written by this script),
#        logs in /var/log/slurm, state in /var/spool/slurm{ctld,d}, pids in /run/slurm.
set -euo pipefail

MARK="# written by metamanip slurm/local-cluster.sh"
CONF_DIR=/etc/slurm
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
DBD_CONF_FILE=$CONF_DIR/slurmdbd.conf
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
DB_PASS=slurmdbpass   # local-only database on a test machine; never used for anything else
H=$(hostname -s 2>/dev/null || uname -n)
H=${H%%.*}
CONF_CHANGED=0

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

pid_alive() {  # pid_alive <pidfile>
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not come up within ${secs}s (logs: $LOG_DIR, /var/log/mysql)"
}

require_root_and_packages() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as the munge, mysql and slurm users)"
  local b
  for b in munged mariadbd slurmdbd slurmctld slurmd; do
    [ -x "/usr/sbin/$b" ] || die "/usr/sbin/$b is missing: run slurm/ci-prepare.sh (apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server)"
  done
  for b in sinfo sbatch sacct scontrol mariadb; do
    command -v "$b" >/dev/null || die "$b is missing: run slurm/ci-prepare.sh"
  done
}

ours_or_absent() {  # refuse to overwrite a configuration someone else wrote
  [ ! -e "$1" ] || head -n 1 "$1" | grep -qF "$MARK" \
    || die "$1 exists and was not written by this script; refusing to touch a real cluster's config"
}

write_configs() {
  ours_or_absent "$SLURM_CONF_FILE"
  ours_or_absent "$DBD_CONF_FILE"
  local cpus mem delay
  cpus=${METAMANIP_SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  mem=$(( $(awk '/^MemTotal:/{print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  [ "$mem" -gt 1024 ] || mem=1024
  delay=${METAMANIP_SLURM_REQUEUE_DELAY:-10}
  mkdir -p "$CONF_DIR"
  cat > "$DBD_CONF_FILE.tmp" <<EOF
$MARK
AuthType=auth/munge
DbdHost=$H
DbdAddr=127.0.0.1
SlurmUser=slurm
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chown slurm: "$DBD_CONF_FILE.tmp"; chmod 600 "$DBD_CONF_FILE.tmp"
  mv -f "$DBD_CONF_FILE.tmp" "$DBD_CONF_FILE"
  cat > "$SLURM_CONF_FILE.tmp" <<EOF
$MARK
ClusterName=localcluster
SlurmctldHost=$H(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job is held before it may start again
AuthInfo=cred_expire=$delay
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=5
InactiveLimit=0
MinJobAge=300
JobRequeue=1
SchedulerType=sched/backfill
# start pending jobs (e.g. requeued ones) within seconds, not the default minute
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$H NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  if [ -e "$SLURM_CONF_FILE" ] && ! cmp -s "$SLURM_CONF_FILE.tmp" "$SLURM_CONF_FILE"; then
    CONF_CHANGED=1
  fi
  mv -f "$SLURM_CONF_FILE.tmp" "$SLURM_CONF_FILE"
}

prepare_dirs() {
  mkdir -p /run/munge "$RUN_DIR" /run/mysqld /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /var/log/mysql
  chown munge: /run/munge
  chown slurm: "$RUN_DIR" /var/spool/slurmctld "$LOG_DIR"
  chown mysql: /run/mysqld /var/log/mysql
}

start_munge() {
  if pid_alive /run/munge/munged.pid; then return; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge: /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 15 munged sh -c 'munge -n | unmunge'
  say "munged up"
}

start_mariadb() {
  if ! mariadb-admin ping >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    setsid nohup /usr/sbin/mariadbd --user=mysql --skip-networking=0 --bind-address=127.0.0.1 \
      >/var/log/mysql/local-cluster.log 2>&1 </dev/null &
    wait_for 60 mariadbd mariadb-admin ping
    say "mariadbd up"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurm() {
  if [ "$CONF_CHANGED" = 1 ]; then  # node changes need a restart of slurmctld and slurmd, not a reconfigure
    stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
    stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
    say "slurm.conf changed: restarting slurmctld and slurmd"
  fi
  if ! pid_alive "$RUN_DIR/slurmdbd.pid"; then
    /usr/sbin/slurmdbd
    wait_for 60 slurmdbd sacctmgr -n -i show cluster
    say "slurmdbd up"
  fi
  if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
    /usr/sbin/slurmctld
    wait_for 60 slurmctld scontrol ping
    say "slurmctld up"
  fi
  if ! pid_alive "$RUN_DIR/slurmd.pid"; then
    /usr/sbin/slurmd -N "$H"
    say "slurmd up"
  fi
  # A node left down/drained by an earlier run comes back here.
  local state
  for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$H" -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|mix|alloc) break ;;
      down*|drain*|drng*) scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case "$state" in idle|mix|alloc) ;; *) die "node $H is '$state', not idle (see $LOG_DIR/slurmd.log)";; esac
  # slurmctld registers the cluster with slurmdbd on start; wait until sacct answers.
  wait_for 30 "accounting (sacct)" sacct -n -X -S now-1minutes
}

stop_pidfile() {  # stop_pidfile <name> <pidfile>
  local pid
  [ -s "$2" ] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid" 2>/dev/null || true; }
    say "$1 stopped"
  fi
  rm -f "$2"
}

cmd_up() {
  require_root_and_packages
  prepare_dirs
  write_configs
  start_munge
  start_mariadb
  start_slurm
  say "up: partition debug on $H ($(sinfo -h -o '%c CPUs, %m MB' | head -n1)); accounting via slurmdbd"
}

cmd_down() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
  stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
  stop_pidfile slurmdbd "$RUN_DIR/slurmdbd.pid"
  stop_pidfile mariadbd /run/mysqld/mysqld.pid
  stop_pidfile munged /run/munge/munged.pid
  say "down"
}

cmd_status() {
  local ok=0 d f
  for d in munged:/run/munge/munged.pid mariadbd:/run/mysqld/mysqld.pid slurmdbd:$RUN_DIR/slurmdbd.pid \
           slurmctld:$RUN_DIR/slurmctld.pid slurmd:$RUN_DIR/slurmd.pid; do
    f=${d#*:}
    if pid_alive "$f"; then echo "${d%%:*}: running (pid $(cat "$f"))"; else echo "${d%%:*}: stopped"; ok=1; fi
  done
  if [ $ok -eq 0 ]; then
    sinfo 2>&1 || ok=1
    sacct -n -X -S now-1minutes >/dev/null 2>&1 && echo "accounting: ok" || { echo "accounting: not answering"; ok=1; }
  fi
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
