#!/usr/bin/env bash
# Configure the local MariaDB and PostgreSQL for cartridge-warp's demo and
# tests, idempotently: MariaDB's binlog in ROW format with full row metadata
# (the binlog library needs column names), PostgreSQL's wal_level=logical,
# and a replication user plus test databases; then the local BigQuery emulator
# (scripts/setup-bigquery-emulator.sh).  Safe to run any number of times.
#
# Environment: WARP_MYSQL_ROOT (default "mariadb -uroot"), WARP_PG_SUPERUSER
# (default postgres).  Needs root to write /etc/mysql and restart services.
set -euo pipefail

say() { printf 'setup-databases: %s\n' "$*"; }
mysql_cmd=${WARP_MYSQL_ROOT:-"mariadb -uroot -h127.0.0.1"}
pg_user=${WARP_PG_SUPERUSER:-postgres}

wait_for() {  # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  say "gave up waiting for $what"; return 1
}

mariadb_up() { $mysql_cmd -e 'select 1'; }
# The server is known by its pid file, never by process name: another MariaDB instance on the
# machine (another port) must neither be taken for this one nor keep this one from starting.
mariadb_pid_file=${WARP_MARIADB_PID_FILE:-/run/mysqld/mysqld.pid}

start_mariadb() {
  if ! mariadb_up >/dev/null 2>&1; then
    say "starting MariaDB"
    mkdir -p "$(dirname "$mariadb_pid_file")"
    chown mysql: "$(dirname "$mariadb_pid_file")" 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --pidfile "$mariadb_pid_file" --exec /usr/sbin/mariadbd
    wait_for MariaDB mariadb_up
  fi
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# --- MariaDB: binlog -------------------------------------------------------
start_mariadb
log_bin=$($mysql_cmd -N -e "select @@log_bin")
metadata=$($mysql_cmd -N -e "select @@binlog_row_metadata")
if [ "$log_bin" != "1" ] || [ "$metadata" != "FULL" ]; then
  conf_dir=/etc/mysql/conf.d
  mkdir -p "$conf_dir"
  cat > "$conf_dir/cartridge-warp.cnf" <<'CNF'
# Written by cartridge-warp scripts/setup-databases.sh
[mysqld]
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
expire_logs_days = 2
CNF
  if ! grep -q '^!includedir /etc/mysql/conf.d' /etc/mysql/my.cnf; then
    printf '\n!includedir /etc/mysql/conf.d/\n' >> /etc/mysql/my.cnf
  fi
  say "enabling the binlog (ROW, FULL row metadata); restarting MariaDB"
  mariadb_pid_file=$($mysql_cmd -N -e "select @@pid_file")
  pid=$(cat "$mariadb_pid_file" 2>/dev/null || true)
  $mysql_cmd -e "shutdown" || true
  if [ -n "$pid" ]; then wait_for "MariaDB (pid $pid) to stop" pid_gone "$pid"; fi
  start_mariadb
fi
$mysql_cmd <<'SQL'
CREATE USER IF NOT EXISTS 'warp'@'%' IDENTIFIED BY 'warp';
CREATE USER IF NOT EXISTS 'warp'@'localhost' IDENTIFIED BY 'warp';
CREATE USER IF NOT EXISTS 'warp'@'127.0.0.1' IDENTIFIED BY 'warp';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'warp'@'%';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'warp'@'localhost';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'warp'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS warp_test CHARACTER SET utf8mb4;
GRANT ALL ON `warp\_%`.* TO 'warp'@'%';
GRANT ALL ON `warp\_%`.* TO 'warp'@'localhost';
GRANT ALL ON `warp\_%`.* TO 'warp'@'127.0.0.1';
SQL
say "MariaDB: $($mysql_cmd -N -e "select concat('log_bin=', @@log_bin, ' binlog_format=', @@binlog_format, ' binlog_row_metadata=', @@binlog_row_metadata)")"

# --- PostgreSQL: wal_level=logical ------------------------------------------
pg_up() { psql -h 127.0.0.1 -U "$pg_user" -d postgres -Atc 'select 1'; }
cluster=$(ls /etc/postgresql 2>/dev/null | head -n1)
if ! pg_up >/dev/null 2>&1 && [ -n "$cluster" ]; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
  wait_for PostgreSQL pg_up
fi
if [ "$(psql -h 127.0.0.1 -U "$pg_user" -d postgres -Atc 'show wal_level')" != "logical" ]; then
  say "setting wal_level=logical; restarting PostgreSQL"
  psql -h 127.0.0.1 -U "$pg_user" -d postgres -qc "ALTER SYSTEM SET wal_level = logical"
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main restart
  wait_for PostgreSQL pg_up
fi
psql -h 127.0.0.1 -U "$pg_user" -d postgres -qAt <<'SQL'
SELECT 'role exists' WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'warp');
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'warp') THEN
    CREATE ROLE warp LOGIN PASSWORD 'warp' REPLICATION;
  END IF;
END $$;
SQL
for db in warp_test warp_demo; do
  if [ -z "$(psql -h 127.0.0.1 -U "$pg_user" -d postgres -Atc "select 1 from pg_database where datname='$db'")" ]; then
    psql -h 127.0.0.1 -U "$pg_user" -d postgres -qc "CREATE DATABASE $db OWNER warp"
  fi
done
say "PostgreSQL: wal_level=$(psql -h 127.0.0.1 -U "$pg_user" -d postgres -Atc 'show wal_level')"

# --- BigQuery: the local emulator -------------------------------------------
# installs (once) and starts it on 127.0.0.1:${WARP_BQ_EMULATOR_PORT:-9050} for the BigQuery tests
bash "$(dirname "${BASH_SOURCE[0]}")/setup-bigquery-emulator.sh"
say "ready"
