#!/usr/bin/env bash
# NOT YET WHAT make test RUNS: an opt-in, two-phase run of the whole suite, kept to measure and fix
# what breaks under parallelism (DEVELOPMENT.md, "Running the suite in parallel").  A first
# measurement on a shared 2-core machine ended with 58 timeouts, nearly all in tests against the one
# BigQuery emulator, so make test and CI stay serial until a parallel run is reliably green.
#   1. every test not marked `exclusive`, in parallel: pytest-xdist with WARP_TEST_WORKERS workers
#      (default 4; most tests wait on cartridge-warp processes and the databases, not on the CPU);
#   2. the tests marked `exclusive` (they stop or restart the databases, or change their global
#      settings), alone and one after another.
# Arguments go to both phases.  Both phases always run; the script fails when either fails, and
# also when either collects no tests (pytest's exit code 5): both phases of the suite have tests, so
# an empty one means a broken selection.  To run a subset, call .venv/bin/pytest directly.
set -uo pipefail
cd "$(dirname "$0")/.."

pytest=${PYTEST:-.venv/bin/pytest}
workers=${WARP_TEST_WORKERS:-4}

phase() {  # phase NAME PYTEST-ARGS...
  local name=$1; shift
  printf '\n=== run-tests: %s phase: pytest %s\n' "$name" "$*"
  local started=$SECONDS
  "$pytest" "$@"
  local rc=$?
  printf '=== run-tests: %s phase: exit %d after %ds\n' "$name" "$rc" "$((SECONDS - started))"
  [ "$rc" -eq 5 ] && printf '=== run-tests: the %s phase collected no tests; that is a failure\n' "$name"
  return "$rc"
}

phase parallel -n "$workers" -m "not exclusive" "$@"
parallel_rc=$?
phase exclusive -p no:xdist -m exclusive "$@"
exclusive_rc=$?

if [ "$parallel_rc" -ne 0 ]; then exit "$parallel_rc"; fi
exit "$exclusive_rc"
