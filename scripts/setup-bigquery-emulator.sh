#!/usr/bin/env bash
# Install and start the local BigQuery emulator (PyPI local-bigquery, run through
# scripts/bigquery_emulator.py) for the tests and CI, idempotently and offline: PyPI is the only
# source, and nothing is downloaded once the server runs.  Safe to run any number of times.
#
#   bash scripts/setup-bigquery-emulator.sh         install if needed, start if nothing answers
#   bash scripts/setup-bigquery-emulator.sh stop    stop the instance started here (by its pid file)
#
# The emulator gets its own venv (it needs Python >= 3.13), outside the work tree so that a fresh
# clone reuses it; it is rebuilt only when scripts/bigquery-emulator-requirements.txt changes
# (a hash stamp in the venv).
#
# Environment:
#   WARP_BQ_EMULATOR_HOME       venv, data, pid and log files (default /var/lib/cartridge-warp-bq-emulator
#                               as root, else ~/.cache/cartridge-warp-bq-emulator)
#   WARP_BQ_EMULATOR_PORT       REST port (default 9050); WARP_BQ_EMULATOR_GRPC_PORT gRPC port (default
#                               the REST port + 10: 9060)
#   WARP_PYTHON313              the Python 3.13 to build the venv with (else python3.13 on PATH, else
#                               /root/.pyenv/versions/3.13.0/bin/python)
set -euo pipefail

say() { printf 'setup-bigquery-emulator: %s\n' "$*"; }
fail() { say "$*" >&2; exit 1; }

scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=$scripts/bigquery-emulator-requirements.txt
wrapper=$scripts/bigquery_emulator.py

if [ "$(id -u)" = 0 ]; then default_home=/var/lib/cartridge-warp-bq-emulator
else default_home=${XDG_CACHE_HOME:-$HOME/.cache}/cartridge-warp-bq-emulator; fi
home=${WARP_BQ_EMULATOR_HOME:-$default_home}
host=127.0.0.1
port=${WARP_BQ_EMULATOR_PORT:-9050}
# gRPC (the storage read API) next to it: port + 10 unless set, so that two instances never share one
# (gRPC sets SO_REUSEPORT: a second server on a taken port would not even fail)
grpc_port=${WARP_BQ_EMULATOR_GRPC_PORT:-$((port + 10))}
for p in "$port" "$grpc_port"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || fail "not a TCP port: $p"
done
venv=$home/venv
stamp=$venv/.warp-requirements.sha256
# one data dir, pid file and log per port: instances on other ports live side by side
data_dir=$home/data-$port
pid_file=$home/emulator-$port.pid
log_file=$home/emulator-$port.log
url=http://$host:$port/bigquery/v2/projects/warp/datasets

# --- stop ----------------------------------------------------------------------------------------
# Only the process named by our pid file, and only if it is still this emulator on this port.
our_server() {  # our_server PID: is PID the emulator started here on $port?
  local args
  args=$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ "$args" == *bigquery_emulator.py*" --port $port "* ]]
}

stop() {
  local pid
  pid=$(cat "$pid_file" 2>/dev/null || true)
  if [ -z "$pid" ] || ! our_server "$pid"; then
    say "no emulator started here runs on port $port (pid file $pid_file)"
    rm -f "$pid_file"
    return 0
  fi
  say "stopping the emulator on port $port (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop within 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  say "stopped"
}

case "${1:-start}" in
  start) ;;
  stop) stop; exit 0 ;;
  *) fail "usage: $0 [start|stop]" ;;
esac

# --- the venv ------------------------------------------------------------------------------------
is_python313() { "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] < (3, 13))' >/dev/null 2>&1; }
find_python313() {
  local candidate
  if [ -n "${WARP_PYTHON313:-}" ]; then  # asked for: that one or an error, never a silent fallback
    is_python313 "$WARP_PYTHON313" || fail "WARP_PYTHON313=$WARP_PYTHON313 is not a Python >= 3.13 with venv"
    printf '%s\n' "$WARP_PYTHON313"; return 0
  fi
  for candidate in "$(command -v python3.13 2>/dev/null || true)" /root/.pyenv/versions/3.13.0/bin/python; do
    if [ -n "$candidate" ] && is_python313 "$candidate"; then
      printf '%s\n' "$candidate"; return 0
    fi
  done
  fail "no Python >= 3.13 found (the emulator needs it): set WARP_PYTHON313, put python3.13 on PATH, or install /root/.pyenv/versions/3.13.0"
}

mkdir -p "$home" || fail "cannot create $home; set WARP_BQ_EMULATOR_HOME to a writable directory"
# the stamp covers the requirements and the interpreter the venv was built from
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ]; then
  want="$want $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo broken)"
fi
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  python313=$(find_python313) || exit 1
  if [ -e "$venv" ]; then
    stale=$(cat "$pid_file" 2>/dev/null || true)
    if [ -n "$stale" ] && our_server "$stale"; then
      say "requirements changed: stopping the running emulator before rebuilding its venv"
      stop
    fi
    say "requirements changed: rebuilding $venv"
    rm -rf "$venv"
  fi
  say "creating $venv with $python313 ($("$python313" -c 'import sys; print(sys.version.split()[0])'))"
  "$python313" -m venv "$venv"
  # --no-deps: every package is pinned in the file; local-bigquery 0.4.0 asks for duckdb>=2.0 but runs
  # (offline) only on the pinned duckdb 1.5.5, see scripts/bigquery_emulator.py
  # pip's output goes to a log: this machine's pip configuration makes it warn once per package
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps --only-binary :all: \
      -r "$requirements" > "$home/pip-install.log" 2>&1; then
    tail -n 30 "$home/pip-install.log" >&2
    fail "pip could not install $requirements (log: $home/pip-install.log)"
  fi
  "$venv/bin/python" -c 'import duckdb, local_bigquery' || fail "the emulator venv does not import"
  printf '%s %s\n' "$(sha256sum "$requirements" | cut -d' ' -f1)" \
      "$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')" > "$stamp"
  say "installed $(grep -c '==' "$requirements") pinned packages"
else
  say "venv $venv is up to date"
fi

# --- the server ----------------------------------------------------------------------------------
# probe: 0 = the URL answers with JSON (a BigQuery emulator), 2 = something else answers, 1 = no answer
probe() {
  "$venv/bin/python" - "$url" <<'PY'
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        body = response.read()
except urllib.error.HTTPError:
    sys.exit(2)
except urllib.error.URLError as exc:  # nothing listening (yet), or no answer in time: 1; else 2
    sys.exit(1 if isinstance(exc.reason, (ConnectionRefusedError, TimeoutError)) else 2)
except (ConnectionRefusedError, TimeoutError):
    sys.exit(1)
except Exception:  # answered, but not HTTP (another server's protocol)
    sys.exit(2)
try:
    json.loads(body)
except ValueError:
    sys.exit(2)
PY
}

state=0; probe || state=$?
if [ "$state" = 0 ]; then
  say "a BigQuery emulator already answers on $host:$port; leaving it running"
  exit 0
elif [ "$state" = 2 ]; then
  fail "something answers on $host:$port but it is not a BigQuery emulator ($url); choose another WARP_BQ_EMULATOR_PORT"
fi

pid=$(cat "$pid_file" 2>/dev/null || true)
if [ -n "$pid" ] && our_server "$pid"; then
  say "the emulator (pid $pid) is running but not answering yet; waiting for it"
else
  mkdir -p "$data_dir"
  say "starting the emulator on $host:$port (gRPC $grpc_port), data in $data_dir, log $log_file"
  printf '\n--- %s: starting\n' "$(date -Is)" >> "$log_file"
  # setsid: the server outlives this script and a Ctrl-C in the terminal that ran it
  setsid "$venv/bin/python" "$wrapper" serve --host "$host" --port "$port" --grpc-port "$grpc_port" \
      --data-dir "$data_dir" >> "$log_file" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pid_file"
fi

for _ in $(seq 1 120); do
  state=0; probe || state=$?
  if [ "$state" = 0 ]; then
    say "ready: $url (pid $pid)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
kill -0 "$pid" 2>/dev/null || rm -f "$pid_file"
say "the emulator did not answer on $url; last lines of $log_file:" >&2
tail -n 30 "$log_file" >&2 || true
exit 1
