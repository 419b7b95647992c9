#!/usr/bin/env bash
# Sets everything up, starts the Rust node, and runs a short Ash demo against it; then leaves
# the node running in the foreground so you can talk to it (Ctrl-C stops it).
#
#   scripts/demo.sh                 # node rust@127.0.0.1, cookie "ash-demo"
#   DEMO_NODE=me@127.0.0.1 DEMO_COOKIE=secret scripts/demo.sh
#   scripts/demo.sh --ci            # as the test suite runs it: a unique node name and cookie,
#                                   # and afterwards SIGTERM to the node, which must exit 0
set -euo pipefail

ci=false
[[ "${1:-}" == "--ci" ]] && ci=true

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"

if $ci; then
  export DEMO_NODE="${DEMO_NODE:-demo_rust_$$@127.0.0.1}"
  cookie="${DEMO_COOKIE:-ash-demo-$$-$RANDOM}"
else
  export DEMO_NODE="${DEMO_NODE:-rust@127.0.0.1}"
  cookie="${DEMO_COOKIE:-ash-demo}"
fi
bin="$repo/target/release/ash-gen-server"

epmd -daemon
log="$(mktemp "${TMPDIR:-/tmp}/ash-gen-server-demo.XXXXXX.log")"
"$bin" start --name "$DEMO_NODE" --cookie "$cookie" >"$log" 2>&1 &
node_pid=$!
trap 'kill $node_pid 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q '^ready ' "$log" && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$log" >&2; echo "demo: the node did not start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready ' "$log" || { cat "$log" >&2; echo "demo: the node did not start" >&2; exit 1; }
echo "demo: node $DEMO_NODE is up (log: $log)"

echo "demo: compiling the demo app (Ash and the AshGenServer data layer; the first time takes a couple of minutes)"
cd "$repo/examples/demo"
build_log="$(mktemp "${TMPDIR:-/tmp}/ash-gen-server-demo-build.XXXXXX.log")"
if ! { mix deps.get && mix compile; } >"$build_log" 2>&1; then
  cat "$build_log" >&2
  echo "demo: building the demo app failed (log above)" >&2
  exit 1
fi
elixir --name "demo_$$@127.0.0.1" --cookie "$cookie" -S mix run demo.exs

if $ci; then
  kill -TERM "$node_pid"
  for _ in $(seq 1 150); do
    kill -0 "$node_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$node_pid" 2>/dev/null; then
    kill -KILL "$node_pid" 2>/dev/null || true
    cat "$log" >&2
    echo "demo: the node did not stop within 15 s of SIGTERM" >&2
    exit 1
  fi
  status=0
  wait "$node_pid" || status=$?
  trap - EXIT INT TERM
  if [[ "$status" != 0 ]]; then
    cat "$log" >&2
    echo "demo: the node exited with status $status after SIGTERM" >&2
    exit 1
  fi
  echo "demo: ran end to end; the node stopped cleanly"
  exit 0
fi

cat <<MSG

The node is still running; talk to it from any Erlang or Elixir node (cookie "$cookie"), or:

  $bin call --node $DEMO_NODE --cookie $cookie '{define, user, #{primary_key => [id]}}'
  $bin call --node $DEMO_NODE --cookie $cookie '{create, user, #{id => 1, name => <<"ann">>}}'
  $bin call --node $DEMO_NODE --cookie $cookie '{query, user, #{filter => {eq, name, <<"ann">>}}}'
  $bin call --node $DEMO_NODE --cookie $cookie stats

Node log: $log.  Ctrl-C stops the node.
MSG
wait "$node_pid"
