#!/usr/bin/env bash
# Latency of the node's events — the speed figures the test suites no longer assert (they
# assert the events, with generous waits): expiry lateness, noproc answers, removal after a
# handler dies, 100,000 expiries, nodedown after SIGTERM. Prints a table; asserts nothing.
#
#   bench/latency.sh [--rounds N]       (needs `cargo build --release`, or ASH_GEN_SERVER_BIN)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ASH_GEN_SERVER_BIN="${ASH_GEN_SERVER_BIN:-$here/../target/release/ash-gen-server}"
[[ -x "$ASH_GEN_SERVER_BIN" ]] || { echo "latency: build the node first (cargo build --release)" >&2; exit 2; }
epmd -daemon
exec escript "$here/latency.escript" "$@"
