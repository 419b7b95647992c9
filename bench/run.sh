#!/usr/bin/env bash
# The benchmark: the Rust node against a BEAM baseline that keeps records the way the original
# ash_gen_server library does. One command builds what it needs, starts EPMD, the nodes and a
# driver, runs every workload against both sides and writes bench/out/results-<timestamp>.{md,json,svg}.
#
#   bench/run.sh            full run (about 5-8 minutes on 2 cores)
#   bench/run.sh --smoke    tiny sizes, every workload end to end, then checks every row is there
#   bench/run.sh --help     the size flags (--records, --ops, --callers, --no-big, ...)
#
# Environment: ASH_GEN_SERVER_OFFLINE_DEPS (package sources instead of Hex; defaults to
# <repo>/../shared/hex when that exists), BENCH_OUT (output folder, default bench/out),
# BENCH_TIMEOUT (seconds the driver may run, default 1500, 300 with --smoke).
# Every process started here is stopped on exit; waits are bounded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
app="$here/bench_app"

smoke=false
run_big=true
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=true ;;
    --no-big) run_big=false ;;
    -h | --help) exec sed -n '/^  @usage """/,/^  """/{/"""/d;s/^  //;p}' "$app/lib/bench/driver.ex" ;;
  esac
done

for tool in cargo elixir mix epmd; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool not found (cargo from rustup; apt-get install erlang-nox erlang-dev elixir rebar3)" >&2
    exit 2
  }
done

if [[ -z "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" && -d "$repo/../shared/hex" ]]; then
  ASH_GEN_SERVER_OFFLINE_DEPS="$(cd "$repo/../shared/hex" && pwd)"
fi
if [[ -n "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" ]]; then
  export ASH_GEN_SERVER_OFFLINE_DEPS
  echo "bench: offline dependencies from $ASH_GEN_SERVER_OFFLINE_DEPS" >&2
fi

out="${BENCH_OUT:-$here/out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
timestamp="$(date -u +%Y%m%dT%H%M%SZ)"
logs="$out/logs-$timestamp"
mkdir -p "$logs"

# Processes to stop at exit. A pid is dropped once waited for (it could be reused after that).
pids=()
started_epmd=false

forget_pid() {
  local keep=() pid
  for pid in "${pids[@]}"; do [[ "$pid" == "$1" ]] || keep+=("$pid"); done
  pids=("${keep[@]}")
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Stop EPMD only if this run started it and no other node uses it now.
  if $started_epmd && [[ -z "$(epmd -names 2>/dev/null | grep '^name ' || true)" ]]; then
    epmd -kill >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step LOG COMMAND...: runs a build step in the background (so a signal stops the run at once
# and cleanup stops the step), its output in LOG, shown when it fails.
step() {
  local log="$1"
  shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local status=0
  wait "$pid" || status=$?
  forget_pid "$pid"
  if [[ $status -ne 0 ]]; then
    echo "bench: failed: $* (output in $log):" >&2
    tail -40 "$log" >&2
    exit 1
  fi
}

echo "bench: building the node, the loopback example and the load generator (release)" >&2
step "$logs/cargo.log" cargo build --release --manifest-path "$repo/Cargo.toml" \
  --bin ash-gen-server --example loopback_rtt --example loadgen
node_bin="$repo/target/release/ash-gen-server"
loopback_bin="$repo/target/release/examples/loopback_rtt"
loadgen_bin="$repo/target/release/examples/loadgen"

echo "bench: compiling the bench app (MIX_ENV=prod)" >&2
export MIX_ENV=prod
cd "$app"
step "$logs/mix-deps.log" mix deps.get
step "$logs/mix-compile.log" mix compile
# (MIX_BUILD_PATH: a build folder shared with other projects, as scripts/test.sh sets)
ebin="${MIX_BUILD_PATH:-$app/_build/prod}/lib/ash_gen_server_bench/ebin"

suffix="$$_$RANDOM"
cookie="bench_${RANDOM}${RANDOM}${RANDOM}"
rust_node="bench_rust_$suffix@127.0.0.1"
big_node="bench_big_$suffix@127.0.0.1"
baseline_node="bench_base_$suffix@127.0.0.1"
driver_node="bench_drv_$suffix@127.0.0.1"
tls_rust_node="bench_tls_rust_$suffix@127.0.0.1"
tls_baseline_node="bench_tls_base_$suffix@127.0.0.1"

if ! epmd -names >/dev/null 2>&1; then
  epmd -daemon
  started_epmd=true
  for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
fi

# wait_ready LOG PID NAME: until LOG has a line starting "ready " (60 s at most).
wait_ready() {
  local log="$1" pid="$2" name="$3"
  for _ in $(seq 600); do
    grep -q '^ready ' "$log" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench: $name exited before it was ready; its log ($log):" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "bench: $name not ready after 60 s; its log ($log):" >&2
  tail -20 "$log" >&2
  exit 1
}

# Workload 8 (TLS distribution): throwaway certificates and one option file for the TLS nodes
# and the driver's TLS client node.
tls_dir="$logs/tls"
step "$logs/tls-certs.log" "$repo/integration/tls_certs.sh" "$tls_dir"
tls_optfile="$tls_dir/ssl_dist.conf"

echo "bench: starting the nodes" >&2
"$node_bin" start --name "$rust_node" --cookie "$cookie" --epmd external >"$logs/rust.log" 2>&1 &
rust_pid=$!
pids+=("$rust_pid")
big_pid=""
if $run_big; then
  "$node_bin" start --name "$big_node" --cookie "$cookie" --epmd external >"$logs/big.log" 2>&1 &
  big_pid=$!
  pids+=("$big_pid")
fi
elixir --name "$baseline_node" --cookie "$cookie" -pa "$ebin" \
  -e 'Bench.Baseline.main()' >"$logs/baseline.log" 2>&1 </dev/null &
baseline_pid=$!
pids+=("$baseline_pid")

# The same pair once more, with TLS distribution (workload 8).
"$node_bin" start --name "$tls_rust_node" --cookie "$cookie" --epmd external \
  --proto-dist inet_tls --ssl-dist-optfile "$tls_optfile" >"$logs/tls-rust.log" 2>&1 &
tls_rust_pid=$!
pids+=("$tls_rust_pid")
elixir --name "$tls_baseline_node" --cookie "$cookie" -pa "$ebin" \
  --erl "-proto_dist inet_tls -ssl_dist_optfile $tls_optfile" \
  -e 'Bench.Baseline.main()' >"$logs/tls-baseline.log" 2>&1 </dev/null &
tls_baseline_pid=$!
pids+=("$tls_baseline_pid")

wait_ready "$logs/rust.log" "$rust_pid" "Rust node $rust_node"
[[ -n "$big_pid" ]] && wait_ready "$logs/big.log" "$big_pid" "Rust node $big_node"
wait_ready "$logs/baseline.log" "$baseline_pid" "baseline node $baseline_node"
wait_ready "$logs/tls-rust.log" "$tls_rust_pid" "Rust node $tls_rust_node (TLS)"
wait_ready "$logs/tls-baseline.log" "$tls_baseline_pid" "baseline node $tls_baseline_node (TLS)"

if $smoke; then timeout_s="${BENCH_TIMEOUT:-300}"; else timeout_s="${BENCH_TIMEOUT:-1500}"; fi
echo "bench: driver $driver_node (at most ${timeout_s} s)" >&2

export BENCH_RUST_NODE="$rust_node" BENCH_BIG_NODE="$big_node" BENCH_BASELINE_NODE="$baseline_node"
export BENCH_RUST_OS_PID="$rust_pid" BENCH_BIG_OS_PID="$big_pid" BENCH_BASELINE_OS_PID="$baseline_pid"
export BENCH_TLS_RUST_NODE="$tls_rust_node" BENCH_TLS_BASELINE_NODE="$tls_baseline_node"
export BENCH_TLS_OPTFILE="$tls_optfile"
export BENCH_TLS_RUST_OS_PID="$tls_rust_pid" BENCH_TLS_BASELINE_OS_PID="$tls_baseline_pid"
export BENCH_LOOPBACK_BIN="$loopback_bin" BENCH_LOADGEN_BIN="$loadgen_bin" BENCH_OUT="$out" BENCH_TIMESTAMP="$timestamp"

set +e
(
  exec timeout --kill-after=10 "$timeout_s" elixir --name "$driver_node" --cookie "$cookie" \
    -S mix run --no-compile --no-deps-check -e 'Bench.Driver.main(System.argv())' -- "$@"
) </dev/null &
driver_pid=$!
pids+=("$driver_pid")
wait "$driver_pid"
driver_status=$?
forget_pid "$driver_pid"
set -e

result="$out/results-$timestamp"
if [[ $driver_status -eq 124 ]]; then
  echo "bench: the driver did not finish within ${timeout_s} s" >&2
  exit 1
fi

if $smoke; then
  echo "bench: checking that $result.md has every row" >&2
  mix run --no-compile --no-deps-check --no-start \
    -e 'Bench.Report.check_main(System.argv())' -- "$result.json"
fi

if [[ $driver_status -ne 0 ]]; then
  echo "bench: the driver failed (exit $driver_status); logs in $logs" >&2
  exit "$driver_status"
fi
echo "bench: done: $result.md (.json, .svg)" >&2
