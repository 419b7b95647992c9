#!/usr/bin/env bash
# The soak test alone, for as long as asked:
#
#   integration/soak.sh                 # 60 s, as in CI
#   integration/soak.sh --minutes 10
#
# 64 callers mix create/get/update/query/destroy with per-record sequence numbers while other
# records expire; it fails on any lost or reordered update, and when the node's RSS after every
# record is destroyed is more than 10 % above its level after warm-up. The figures are printed
# (and are in the Common Test log). Needs the release binary, as integration/run_erl.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) seconds=$(( $2 * 60 )); shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes N | --seconds N]" >&2; exit 2 ;;
  esac
done
export ASH_SOAK_SECONDS="$seconds"
exec "$here/run_erl.sh" -suite ash_soak_SUITE
