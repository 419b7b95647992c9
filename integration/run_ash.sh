#!/usr/bin/env bash
# End-to-end test of the Elixir bridge against the real Rust node.
#
#   integration/run_ash.sh [mix test args...]
#
# Expects `cargo build --release` to have been run (or ASH_GEN_SERVER_BIN to name the binary).
# Builds the two mix projects (offline against <repo>/../shared/hex when that folder exists and
# ASH_GEN_SERVER_OFFLINE_DEPS is unset), checks formatting, runs the bridge's unit tests, then
# the end-to-end suite in integration/ash_app in a distributed VM. The suite starts the node
# itself, under a unique name, and kills it at exit. Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bridge="$repo/elixir_bridge"
app="$here/ash_app"

source "$here/ash_env.sh"
ash_env run_ash.sh

export MIX_ENV=test

echo "== elixir_bridge: deps, format, compile, unit tests"
(
  cd "$bridge"
  mix deps.get
  mix format --check-formatted
  mix compile --warnings-as-errors
  mix test
)

echo "== integration/ash_app: deps, format, end-to-end suite against $ASH_GEN_SERVER_BIN"
cd "$app"
mix deps.get
mix format --check-formatted
mix compile --warnings-as-errors
cookie="ash_gen_server_$RANDOM$RANDOM"
exec elixir --name "ash_test_$$@127.0.0.1" --cookie "$cookie" -S mix test "$@"
