#!/usr/bin/env bash
# A smoke subset of the Ash end-to-end suite over TLS distribution: the test VM runs
# `-proto_dist inet_tls -ssl_dist_optfile F` and the Rust node `--proto-dist inet_tls
# --ssl-dist-optfile F`, with the same option file and throwaway certificates
# (integration/tls_certs.sh).
#
#   integration/run_ash_tls.sh [mix test args...]   default: crud, query, upsert/bulk, values,
#                                                   lifetime (expiry through Ash over TLS)
#
# Expects `cargo build --release` (or ASH_GEN_SERVER_BIN); runs after integration/run_ash.sh in
# scripts/test.sh, which has compiled the project (alone, `mix test` compiles what is missing).
# Exits non-zero on any failure, or when the node's log does not show a TLS connection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
app="$here/ash_app"

source "$here/ash_env.sh"
ash_env run_ash_tls.sh openssl

certs="$(mktemp -d "${TMPDIR:-/tmp}/ash_tls_certs.XXXXXX")"
trap 'rm -rf "$certs"' EXIT
"$here/tls_certs.sh" "$certs"
optfile="$certs/ssl_dist.conf"

export MIX_ENV=test
cd "$app"
mix deps.get >/dev/null

if [[ $# -eq 0 ]]; then
  set -- test/crud_test.exs test/query_test.exs test/upsert_bulk_test.exs \
    test/values_test.exs test/lifetime_test.exs
fi

log="$app/rust_node.log"
touch "$log"
before="$(wc -c <"$log")"
cookie="ash_gen_server_tls_$RANDOM$RANDOM"
echo "== integration/ash_app over TLS distribution: $*"
ASH_GEN_SERVER_SSL_DIST_OPTFILE="$optfile" \
  elixir --name "ash_tls_test_$$@127.0.0.1" --cookie "$cookie" \
  --erl "-proto_dist inet_tls -ssl_dist_optfile $optfile" \
  -S mix test "$@"

# The suite passed; make sure it was over TLS (the node logs the negotiated version).
if ! tail -c +"$((before + 1))" "$log" | grep -q 'peer connected.*tls=TLS'; then
  echo "run_ash_tls.sh: FAILED: the node's log ($log) shows no TLS connection" >&2
  exit 1
fi
echo "run_ash_tls.sh: OK (over TLS: $(tail -c +"$((before + 1))" "$log" | grep -o 'tls=TLS[^ ]* [A-Z0-9_]*' | head -1))"
