#!/usr/bin/env bash
# End-to-end test of the Rust node from plain Erlang (Common Test, no Elixir, no Ash).
#
#   integration/run_erl.sh [ct_run args...]      e.g. -suite ash_protocol_SUITE -case query_sort
#
# Expects `cargo build --release` to have been run (or ASH_GEN_SERVER_BIN to name the binary).
# Runs the Common Test suites in integration/erl in a distributed VM (long name on 127.0.0.1,
# a fresh cookie); each suite starts the real node binary itself, under a unique name, and stops
# it at the end. Logs go to integration/erl/logs/ (or $ASH_ERL_LOGDIR). Exits non-zero when any
# test case fails or is skipped (the suites never skip on purpose: a skip means an init failed),
# when no test case ran, or when the run does not complete.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
suites="$here/erl"

export ASH_GEN_SERVER_BIN="${ASH_GEN_SERVER_BIN:-$repo/target/release/ash-gen-server}"
if [[ ! -x "$ASH_GEN_SERVER_BIN" ]]; then
  echo "run_erl.sh: the Rust node binary $ASH_GEN_SERVER_BIN is missing (or not executable)." >&2
  echo "            Build it first: (cd $repo && cargo build --release)," >&2
  echo "            or point ASH_GEN_SERVER_BIN at it." >&2
  exit 2
fi
ASH_GEN_SERVER_BIN="$(cd "$(dirname "$ASH_GEN_SERVER_BIN")" && pwd)/$(basename "$ASH_GEN_SERVER_BIN")"

for tool in erl ct_run epmd; do
  command -v "$tool" >/dev/null || {
    echo "run_erl.sh: $tool not found (apt-get install erlang-nox erlang-dev erlang-common-test)" >&2
    exit 2
  }
done

# Distribution needs EPMD, for the test VM, its peers and the Rust node alike.
epmd -daemon
for _ in $(seq 1 50); do
  epmd -names >/dev/null 2>&1 && break
  sleep 0.1
done
epmd -names >/dev/null 2>&1 || { echo "run_erl.sh: epmd does not answer" >&2; exit 2; }

# The cluster suites check their histories for linearizability with integration/lincheck.
if [[ -z "${ASH_LINCHECK_BIN:-}" ]]; then
  cargo build --release --quiet --manifest-path "$here/lincheck/Cargo.toml" || {
    echo "run_erl.sh: building the linearizability checker (integration/lincheck) failed" >&2
    exit 2
  }
  export ASH_LINCHECK_BIN="$here/lincheck/target/release/ash-lincheck"
fi

logdir="${ASH_ERL_LOGDIR:-$suites/logs}"
mkdir -p "$logdir"
logdir="$(cd "$logdir" && pwd)"

# Every Rust node a suite starts leaves its OS pid here; whatever is left when we exit (the VM
# crashed, or was interrupted) is killed — only those pids, nothing found by name.
piddir="$(mktemp -d "${TMPDIR:-/tmp}/ash_erl_pids.XXXXXX")"
export ASH_ERL_PIDDIR="$piddir"
# A node that exits with a status other than 0 after it was ready leaves a mark here.
exitdir="$(mktemp -d "${TMPDIR:-/tmp}/ash_erl_exits.XXXXXX")"
export ASH_ERL_EXITDIR="$exitdir"
out="$(mktemp "${TMPDIR:-/tmp}/ash_erl_out.XXXXXX")"
bindir="$(mktemp -d "${TMPDIR:-/tmp}/ash_erl_bin.XXXXXX")"
cleanup() {
  for f in "$piddir"/*; do
    [[ -e "$f" ]] || continue
    pid="$(basename "$f")"
    kill -TERM "$pid" 2>/dev/null || true
  done
  rm -rf "$piddir" "$exitdir" "$out" "$bindir"
}
trap cleanup EXIT

# Every suite runs the same bytes: a private copy of the binary, taken now, so a `cargo build`
# running meanwhile (or a by-name cleanup of other sessions' nodes) does not change or stop the
# nodes of this run half-way.
tested_bin="$ASH_GEN_SERVER_BIN"
cp "$ASH_GEN_SERVER_BIN" "$bindir/ash-gen-server-erl-e2e"
export ASH_GEN_SERVER_BIN="$bindir/ash-gen-server-erl-e2e"

unique="$$_${RANDOM}${RANDOM}"
cookie="ash_erl_${RANDOM}${RANDOM}${RANDOM}"

echo "== Common Test suites in $suites against $tested_bin"
echo "   (sha256 $(sha256sum "$ASH_GEN_SERVER_BIN" | cut -c1-16), built $(date -r "$tested_bin" '+%F %T'))"
echo "   logs: $logdir"
set +e
ct_run -noshell \
  -name "ct_${unique}@127.0.0.1" -setcookie "$cookie" \
  -dir "$suites" -logdir "$logdir" \
  "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e

summary="$(grep -E 'TEST COMPLETE' "$out" | tail -n 1 || true)"
if [[ -z "$summary" ]]; then
  echo "run_erl.sh: FAILED: the test run did not complete (ct_run exit status $status)" >&2
  exit 1
fi
total="$(sed -nE 's/.* of ([0-9]+) test cases.*/\1/p' <<<"$summary")"
if [[ "${total:-0}" == 0 ]]; then
  echo "run_erl.sh: FAILED: no test case ran (a suite failed to compile? see above)" >&2
  exit 1
fi
failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")"
skipped="$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$summary")"
failed="${failed:-0}"
skipped="${skipped:-0}"
bad_exits="$(cat "$exitdir"/*.log 2>/dev/null || true)"
echo
echo "run_erl.sh: $summary"
if [[ -n "$bad_exits" ]]; then
  echo "run_erl.sh: FAILED: nodes exited with a status other than 0:" >&2
  echo "$bad_exits" >&2
  for tail_file in "$exitdir"/*.tail; do
    [[ -e "$tail_file" ]] || continue
    echo "---- last 60 lines of $(basename "${tail_file%.tail}") ----" >&2
    tail -n 60 "$tail_file" >&2
  done
  exit 1
fi
echo "run_erl.sh: logs in $logdir (open index.html)"
if [[ "$failed" != 0 || "$skipped" != 0 || "$status" != 0 ]]; then
  echo "run_erl.sh: FAILED ($failed failed, $skipped skipped, ct_run exit status $status)" >&2
  exit 1
fi
echo "run_erl.sh: OK"
