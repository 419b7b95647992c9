#!/usr/bin/env bash
# The network fuzz run (tests/net_fuzz.rs) against the release build, for as many cases as asked:
#
#   scripts/fuzz.sh                      # 100,000 cases, as in CI (where it runs in debug)
#   scripts/fuzz.sh --cases 1000000 [--seed S]
#
# And the decoders' property tests with more cases: scripts/fuzz.sh --props 100000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cases=100000
props=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    --seed) export ASH_FUZZ_SEED="$2"; shift 2 ;;
    --props) props="$2"; shift 2 ;;
    *) echo "usage: $0 [--cases N] [--seed S] [--props N]" >&2; exit 2 ;;
  esac
done
if [[ -n "$props" ]]; then
  PROPTEST_CASES="$props" cargo test --release --test decoders_prop -- --nocapture
fi
ASH_FUZZ_CASES="$cases" cargo test --release --test net_fuzz -- --nocapture
