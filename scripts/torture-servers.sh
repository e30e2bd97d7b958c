#!/usr/bin/env bash
# Private PostgreSQL and MariaDB servers for a long torture run (scripts/torture.py), so that its
# database outages stop only these and not the servers the machine's tests and services use.
#
#   scripts/torture-servers.sh start    # PostgreSQL on 5433, MariaDB on 3307 (binlog ROW, FULL metadata)
#   eval "$(scripts/torture-servers.sh env)"
#   .venv/bin/python scripts/torture.py --duration 660 ...
#   scripts/torture-servers.sh stop     # stops both and removes their data
#
# Ports: WARP_TORTURE_PG_PORT (5433), WARP_TORTURE_MYSQL_PORT (3307); data under
# WARP_TORTURE_DIR (/var/lib/cartridge-warp-torture).  Needs root (pg_createcluster, a mysql-owned
# data directory).  The harness finds these servers as the tests find theirs: by port and pid file.
set -euo pipefail

pg_port=${WARP_TORTURE_PG_PORT:-5433}
my_port=${WARP_TORTURE_MYSQL_PORT:-3307}
base=${WARP_TORTURE_DIR:-/var/lib/cartridge-warp-torture}
cluster=torture$pg_port
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
my_dir=$base/mariadb-$my_port
my_sock=$my_dir/mysqld.sock
my_pid=$my_dir/mysqld.pid

say() { printf 'torture-servers: %s\n' "$*" >&2; }
wait_for() {  # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  say "gave up waiting for $what"; return 1
}
pg() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAt "$@"; }
my() { mariadb --no-defaults -uroot -h127.0.0.1 -P"$my_port" "$@"; }

start() {
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$pg_version $cluster"; then
    say "creating PostgreSQL $pg_version cluster $cluster on port $pg_port"
    pg_createcluster "$pg_version" "$cluster" -p "$pg_port" --start-conf=manual \
      -o wal_level=logical -o max_connections=200 -o fsync=off -- --auth=trust >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$cluster" start 2>/dev/null || true
  wait_for "PostgreSQL on $pg_port" pg -c 'select 1'
  pg <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'warp') THEN
    CREATE ROLE warp LOGIN PASSWORD 'warp' REPLICATION;
  END IF;
END $$;
SQL
  [ -n "$(pg -c "select 1 from pg_database where datname = 'warp_test'")" ] \
    || pg -c "CREATE DATABASE warp_test OWNER warp"

  if [ ! -d "$my_dir/mysql" ]; then
    say "creating a MariaDB data directory in $my_dir"
    mkdir -p "$my_dir" && chown mysql: "$my_dir"
    mariadb-install-db --no-defaults --user=mysql --datadir="$my_dir/data" \
      --auth-root-authentication-method=normal >/dev/null
    touch "$my_dir/mysql"
  fi
  if ! my -e 'select 1' >/dev/null 2>&1; then
    say "starting MariaDB on port $my_port"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$my_dir/data" --port="$my_port" \
      --bind-address=127.0.0.1 --socket="$my_sock" --pid-file="$my_pid" --log-bin="$my_dir/data/mariadb-bin" \
      --server-id=7 --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
      --innodb-flush-log-at-trx-commit=2 --max-connections=500 --log-error="$my_dir/error.log" \
      </dev/null >/dev/null 2>&1 &
    wait_for "MariaDB on $my_port" mariadb --no-defaults -uroot -S "$my_sock" -e 'select 1'
  fi
  mariadb --no-defaults -uroot -S "$my_sock" <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'warp'@'127.0.0.1' IDENTIFIED BY 'warp';
CREATE USER IF NOT EXISTS 'warp'@'localhost' IDENTIFIED BY 'warp';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'warp'@'127.0.0.1';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'warp'@'localhost';
CREATE DATABASE IF NOT EXISTS warp_test CHARACTER SET utf8mb4;
GRANT ALL ON `warp\_%`.* TO 'warp'@'127.0.0.1';
GRANT ALL ON `warp\_%`.* TO 'warp'@'localhost';
GRANT ALL ON `torture\_%`.* TO 'warp'@'127.0.0.1';
GRANT ALL ON `torture\_%`.* TO 'warp'@'localhost';
SQL
  say "ready: PostgreSQL 127.0.0.1:$pg_port, MariaDB 127.0.0.1:$my_port"
}

stop() {
  if [ -f "$my_pid" ] && kill -0 "$(cat "$my_pid")" 2>/dev/null; then
    local pid; pid=$(cat "$my_pid")
    mariadb --no-defaults -uroot -S "$my_sock" -e shutdown 2>/dev/null || kill "$pid"
    wait_for "MariaDB (pid $pid) to stop" bash -c "! kill -0 $pid"
  fi
  rm -rf "$my_dir"
  if pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$pg_version $cluster"; then
    pg_dropcluster --stop "$pg_version" "$cluster"
  fi
  say "stopped and removed"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env)
    echo "export WARP_TEST_MYSQL_PORT=$my_port"
    echo "export WARP_TEST_PG_DSN=postgresql://warp:warp@127.0.0.1:$pg_port/warp_test"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
