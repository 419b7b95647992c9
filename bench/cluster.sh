#!/usr/bin/env bash
# The cluster's cost: a 3-member cluster against a single node, ratios in one run (see the
# header of cluster.escript). Prints a table; asserts nothing.
#
#   bench/cluster.sh [--ops N] [--records N] [--smoke]   (needs `cargo build --release`)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ASH_GEN_SERVER_BIN="${ASH_GEN_SERVER_BIN:-$here/../target/release/ash-gen-server}"
[[ -x "$ASH_GEN_SERVER_BIN" ]] || { echo "cluster bench: build the node first (cargo build --release)" >&2; exit 2; }
epmd -daemon
exec escript "$here/cluster.escript" "$@"
