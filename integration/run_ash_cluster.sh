#!/usr/bin/env bash
# The Ash end-to-end suite against a cluster of three Rust nodes instead of one: the test VM
# starts them (`--cluster`, the others `--join` the first; test/test_helper.exs with
# ASH_APP_CLUSTER=3) and names them in `config :ash_gen_server, nodes: [...]`, so every Ash
# action goes through the shim's member list with request ids and is answered by the cluster
# (writes committed by a majority, reads linearizable). ASH_APP_SHARDS=S starts the members
# with `--shards S` (the records split into S Raft groups, docs/OPERATIONS.md "Shards").
#
#   integration/run_ash_cluster.sh [mix test args...]   default: the files about data (below);
#                                                       not those about one node's own process
#                                                       (supervision, metrics, stats, SIGSTOP)
#
# Expects `cargo build --release` (or ASH_GEN_SERVER_BIN); runs after integration/run_ash.sh in
# scripts/test.sh, which has compiled the project (alone, `mix test` compiles what is missing).
# Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
app="$here/ash_app"

source "$here/ash_env.sh"
ash_env run_ash_cluster.sh

export MIX_ENV=test
cd "$app"
mix deps.get >/dev/null

if [[ $# -eq 0 ]]; then
  set -- test/crud_test.exs test/query_test.exs test/more_reads_test.exs \
    test/upsert_bulk_test.exs test/values_test.exs test/identities_test.exs \
    test/atomics_test.exs test/create_atomics_test.exs test/combinations_test.exs \
    test/lateral_join_test.exs test/loaded_aggregates_test.exs \
    test/unrelated_aggregates_test.exs test/tenancy_test.exs test/no_primary_key_test.exs \
    test/races_test.exs test/locking_hooks_test.exs test/lifetime_test.exs
fi

echo "== integration/ash_app against a 3-node cluster${ASH_APP_SHARDS:+ with --shards $ASH_APP_SHARDS}: $*"
ASH_APP_CLUSTER=3 elixir --name "ash_cluster_test_$$@127.0.0.1" \
  --cookie "ash_gen_server_cluster_$RANDOM$RANDOM" -S mix test "$@"
