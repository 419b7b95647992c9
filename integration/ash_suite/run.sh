#!/usr/bin/env bash
# Runs Ash's own test suite (../shared/ash-tests) on AshGenServer.DataLayer against a real node
# and compares it with the suite's results on Ash.DataLayer.Ets (baseline.txt).
#
#   integration/ash_suite/run.sh [--mode ours|ets|both] [--refresh-baseline] [--build-only]
#                                [-- MIX_TEST_ARGS...]
#
#   --mode ours           (default) the suite with every Ets resource on AshGenServer.DataLayer,
#                         against a node started for the run; compared with baseline.txt
#   --mode ets            the suite unchanged, on Ets; compared with baseline.txt (report only)
#   --mode both           ets, then ours
#   --refresh-baseline    run on Ets too and rewrite baseline.txt from that run (implies both,
#                         unless --mode ets)
#   --build-only          prepare and compile the mode's project, run nothing (scripts/test.sh
#                         builds it this way while other suites run; the run then finds it built)
#   -- ARGS               passed to `mix test` (e.g. a test file: the comparison then only
#                         covers the tests that ran)
#
# Environment: ASH_GEN_SERVER_BIN (default <repo>/target/release/ash-gen-server),
# ASH_SUITE_TESTS (default <repo>/../shared/ash-tests), ASH_GEN_SERVER_OFFLINE_DEPS (default
# <repo>/../shared/hex when it exists), ASH_SUITE_WORK (build folder, default _work here).
#
# Exits non-zero when a test that passes on Ets (baseline.txt) fails on ours and is not in
# allow_list.txt, when the node does not stop cleanly on SIGTERM, or when a run does not finish.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

mode=ours
mode_given=0
refresh=0
build_only=0
mix_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) mode="${2:?--mode needs ours, ets or both}"; mode_given=1; shift 2 ;;
    --mode=*) mode="${1#--mode=}"; mode_given=1; shift ;;
    --refresh-baseline) refresh=1; shift ;;
    --build-only) build_only=1; shift ;;
    --) shift; mix_args=("$@"); break ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$mode" in ours|ets|both) ;; *) echo "run.sh: --mode must be ours, ets or both" >&2; exit 2 ;; esac
if [[ $refresh == 1 && $mode_given == 0 ]]; then mode=both; fi
if [[ $refresh == 1 && $mode == ours ]]; then
  echo "run.sh: --refresh-baseline needs the ets run (--mode ets or both)" >&2; exit 2
fi
if [[ $refresh == 1 && ${#mix_args[@]} -gt 0 ]]; then
  echo "run.sh: --refresh-baseline runs the whole suite (no mix test arguments)" >&2; exit 2
fi

tests_dir="${ASH_SUITE_TESTS:-$repo/../shared/ash-tests}"
if [[ ! -d "$tests_dir/test" || ! -d "$tests_dir/config" ]]; then
  echo "run.sh: Ash's test suite is not in $tests_dir (set ASH_SUITE_TESTS)" >&2
  exit 2
fi
tests_dir="$(cd "$tests_dir" && pwd)"

if [[ -z "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" && -d "$repo/../shared/hex" ]]; then
  ASH_GEN_SERVER_OFFLINE_DEPS="$(cd "$repo/../shared/hex" && pwd)"
fi
export ASH_GEN_SERVER_OFFLINE_DEPS="${ASH_GEN_SERVER_OFFLINE_DEPS:-}"
[[ -n "$ASH_GEN_SERVER_OFFLINE_DEPS" ]] || unset ASH_GEN_SERVER_OFFLINE_DEPS

export ASH_GEN_SERVER_BIN="${ASH_GEN_SERVER_BIN:-$repo/target/release/ash-gen-server}"
if [[ $mode != ets && ! -x "$ASH_GEN_SERVER_BIN" ]]; then
  echo "run.sh: the node binary $ASH_GEN_SERVER_BIN is missing (cargo build --release)" >&2
  exit 2
fi

for tool in elixir mix epmd; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 2; }
done

# The harness's own Elixir files are formatted (mix format works without a project here).
(cd "$here" && mix format --check-formatted) || { echo "run.sh: run mix format in $here" >&2; exit 1; }

# The suite's compile-time configuration of Ash differs from the other projects': sharing their
# build folder (scripts/test.sh sets one) would rebuild every dependency twice. Its own _build.
unset MIX_BUILD_PATH MIX_BUILD_ROOT

work="${ASH_SUITE_WORK:-$here/_work}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
export MIX_ENV=test

# How many VMs share the ours run (the test files split between them by split.exs, by the
# seconds each took in a run, file_weights.txt; each VM with its own node). On 2 cores two VMs
# take about 60 % of one's time; the Ets run stays one VM (its tests already run concurrently).
# With mix test arguments (part of the suite) the VMs use ExUnit's --partitions instead.
partitions="${ASH_SUITE_PARTITIONS:-2}"
[[ "$partitions" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: ASH_SUITE_PARTITIONS must be a positive number" >&2; exit 2; }

# suffixes MODE: the suffix of each VM's files in that mode's run ("" for a single VM).
suffixes() {
  local parts=1 p
  [[ $1 == ours ]] && parts=$partitions
  if ((parts == 1)); then echo ""; else for ((p = 1; p <= parts; p++)); do echo ".$p"; done; fi
}

# Prepares the mode's mix project in $work/$1 and compiles it (a no-op when nothing changed).
build_mode() {
  local m="$1" dir="$work/$1" start now
  start=$(date +%s)
  echo "== ash_suite ($m): preparing $dir from $tests_dir"
  elixir "$here/prepare.exs" --mode "$m" --src "$tests_dir" --dest "$dir"

  echo "== ash_suite ($m): deps and compile (log: $dir/build.log)"
  if ! (cd "$dir" && mix deps.get && mix compile) >"$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log"
    echo "run.sh: the $m build failed (see $dir/build.log)" >&2
    return 1
  fi
  now=$(date +%s)
  echo "   built in $((now - start)) s"
}

# Builds the mode's mix project and runs the suite in it; results in $work/$1/results[.P].jsonl.
run_mode() {
  local m="$1" dir="$work/$1" start now sfxs
  mapfile -t sfxs < <(suffixes "$m")
  local parts=${#sfxs[@]}
  start=$(date +%s)
  build_mode "$m"

  rm -f "$dir"/results*.jsonl "$dir"/node_status*.txt "$dir"/metrics_status*.txt \
    "$dir"/rust_node*.log "$dir"/mix_status*.txt "$dir"/test*.log "$dir"/time*.txt
  rm -rf "$dir"/Mnesia.* # what the Mnesia tests left in the last run

  # Ash's tests are not about speed: a compile-heavy one (attributes_test's reserved names)
  # outlived ExUnit's 60 s default on a loaded 2-core machine, so each test gets 5 minutes.
  local test_args=(--seed 0 --timeout 300000 --formatter AshSuite.Formatter --formatter ExUnit.CLIFormatter)
  # One test at a time in a VM: every test of the VM shares its node, emptied before each test.
  if [[ $m == ours ]]; then test_args+=(--max-cases 1); fi
  # The VMs' shares of the files: split.exs's (one line per VM) for the whole suite, ExUnit's
  # --partitions for part of it.
  local shares=()
  if ((parts > 1)) && ((${#mix_args[@]} == 0)); then
    mapfile -t shares < <(elixir "$here/split.exs" --dir "$dir" --parts "$parts" \
      --weights "$here/file_weights.txt")
    ((${#shares[@]} == parts)) || { echo "run.sh: split.exs did not split the files" >&2; return 1; }
  elif ((parts > 1)); then
    test_args+=(--partitions "$parts")
  fi

  # Each VM (one per partition; suffix .P when there are several) in the background: its
  # results, test log, node and node log, exit status and times (bash's `time`: wall and CPU of
  # the VM and its node together) in files of its own.
  local p sfx pids=() logs=()
  # An ours VM is distributed on 127.0.0.1 with a cookie of its own; its node shares it.
  if [[ $m == ours ]]; then epmd -daemon; fi
  for ((p = 1; p <= parts; p++)); do
    sfx="${sfxs[p - 1]}"
    logs+=("$dir/test$sfx.log")
    local vm=(elixir)
    if [[ $m == ours ]]; then
      vm=(elixir --name "ash_suite_$$_${p}_$RANDOM@127.0.0.1" --cookie "ash_suite_$RANDOM$RANDOM$RANDOM")
    fi
    (
      set +e
      export ASH_SUITE_RESULTS="$dir/results$sfx.jsonl"
      export ASH_SUITE_NODE_STATUS="$dir/node_status$sfx.txt"
      export ASH_SUITE_METRICS_STATUS="$dir/metrics_status$sfx.txt"
      export ASH_SUITE_NODE_LOG="$dir/rust_node$sfx.log"
      local files=()
      if ((${#shares[@]} > 0)); then
        read -r -a files <<<"${shares[p - 1]}"
      elif ((parts > 1)); then
        export MIX_TEST_PARTITION="$p"
      fi
      TIMEFORMAT='%R %U %S'
      time (cd "$dir" && "${vm[@]}" -S mix test "${test_args[@]}" "${mix_args[@]}" "${files[@]}" >"$dir/test$sfx.log" 2>&1)
      echo $? >"$dir/mix_status$sfx.txt"
    ) 2>"$dir/time$sfx.txt" &
    pids+=($!)
  done
  echo "== ash_suite ($m): mix test in $parts VM(s) (log: ${logs[*]})"

  local ticks=0 pid running
  while :; do
    running=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
    ((running)) || break
    sleep 1
    ticks=$((ticks + 1))
    if ((ticks % 60 == 0)); then
      echo "   $((ticks / 60)) min: $(cat "$dir"/results*.jsonl 2>/dev/null | grep -c '"id"' || true) tests done"
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  now=$(date +%s)
  local wall user sys status
  for ((p = 1; p <= parts; p++)); do
    sfx="${sfxs[p - 1]}"
    status="$(cat "$dir/mix_status$sfx.txt" 2>/dev/null || echo '?')"
    read -r wall user sys <"$dir/time$sfx.txt" || true
    echo "   VM $p/$parts: mix test exited with $status (failing tests are expected): ${wall:-?} s wall, CPU ${user:-?} s user + ${sys:-?} s system"
  done
  echo "   $m: $((now - start)) s in all"
  for log in "${logs[@]}"; do
    grep '^ash_suite: \|^  :' "$log" | sed 's/^/   /' || true
  done
}

if [[ $build_only == 1 ]]; then
  if [[ $mode == ets || $mode == both ]]; then build_mode ets; fi
  if [[ $mode == ours || $mode == both ]]; then build_mode ours; fi
  exit 0
fi

report=(elixir "$here/report.exs" --baseline "$here/baseline.txt" --allow-list "$here/allow_list.txt")
# With mix test arguments only part of the suite runs: compare the tests that ran.
if [[ ${#mix_args[@]} -gt 0 ]]; then report+=(--partial); fi

if [[ $mode == ets || $mode == both ]]; then
  run_mode ets
  if [[ $refresh == 1 ]]; then
    "${report[@]}" --mode ets --results "$work/ets/results.jsonl" --write-baseline
  else
    "${report[@]}" --mode ets --results "$work/ets/results.jsonl"
  fi
fi

if [[ $mode == ours || $mode == both ]]; then
  run_mode ours
  files=()
  while IFS= read -r sfx; do
    files+=(--results "$work/ours/results$sfx.jsonl" --node-status "$work/ours/node_status$sfx.txt"
      --metrics-status "$work/ours/metrics_status$sfx.txt")
  done < <(suffixes ours)
  "${report[@]}" --mode ours "${files[@]}" \
    --full-report "$work/ours/report.txt"
fi
