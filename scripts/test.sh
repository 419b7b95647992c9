#!/usr/bin/env bash
# Sets everything up and runs every test: formatting and lints, the Rust unit and integration
# tests, the Erlang end-to-end suites, the Ash end-to-end suite (and a subset of it over TLS
# distribution), and a smoke run of the benchmark. Exits non-zero on the first failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"

# The Elixir projects built here (the bridge, the end-to-end app, the demo, the bench app) all
# compile the same Ash and its dependencies; one build folder for all of them compiles those once
# instead of four times (Mix keeps each project's own app, and re-consolidates protocols when the
# project changes). Ash's own suite keeps its build (integration/ash_suite/run.sh): its
# compile-time configuration differs and would rebuild every dependency.
export MIX_BUILD_PATH="${MIX_BUILD_PATH:-$repo/_build/elixir}"

started=$SECONDS
section() { printf '\n==== %s ==== (%ss since start)\n' "$*" "$((SECONDS - started))"; }

section "rust: fmt, clippy"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The cluster suites' linearizability checker (its own small crate).
lincheck=(--manifest-path "$repo/integration/lincheck/Cargo.toml")
cargo fmt --check "${lincheck[@]}"
cargo clippy --all-targets --quiet "${lincheck[@]}" -- -D warnings
cargo test --release --quiet "${lincheck[@]}"

section "rust: unit and integration tests, docs, the embedded example"
epmd -daemon
cargo test --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo run --quiet --example embedded

section "erlang: end-to-end suites against the node"
# Ash's own suite compiles Ash once more, with its own configuration (~5 min of both cores): it
# builds meanwhile, the Erlang suites mostly waiting on nodes (elections, timeouts, the soak's
# clock). Its own session and process group, so that a failure here stops it too.
suite_build_log="$repo/integration/ash_suite/_work/build-ahead.log"
mkdir -p "$(dirname "$suite_build_log")"
setsid integration/ash_suite/run.sh --build-only >"$suite_build_log" 2>&1 &
suite_build=$!
trap 'kill -- -"$suite_build" 2>/dev/null || true' EXIT
integration/run_erl.sh

section "ash: Ash's own suite built beside the Erlang suites (integration/ash_suite)"
if ! wait "$suite_build"; then
  cat "$suite_build_log"
  echo "test: building Ash's own suite failed" >&2
  exit 1
fi
trap - EXIT
sed 's/^/  /' "$suite_build_log"

section "ash: data layer unit tests and end-to-end suite"
integration/run_ash.sh

section "ash: smoke subset over TLS distribution (inet_tls)"
integration/run_ash_tls.sh

section "ash: the data tests against a 3-node cluster (nodes: [...])"
integration/run_ash_cluster.sh

section "ash: the data tests against a 3-node cluster with its records in 4 shards"
ASH_APP_SHARDS=4 integration/run_ash_cluster.sh

section "demo app: formatting, compile, and a run against a node"
(cd examples/demo && mix deps.get >/dev/null && mix format --check-formatted && mix compile --warnings-as-errors >/dev/null)
scripts/demo.sh --ci

section "ash: Ash's own test suite on the data layer, compared with Ets (integration/ash_suite)"
integration/ash_suite/run.sh

section "benchmark: smoke run"
bench/run.sh --smoke

section "benchmark: cluster smoke run (3 members against a single node)"
bench/cluster.sh --smoke

section "all tests passed"
