# Sourced by integration/run_ash.sh, run_ash_tls.sh and run_ash_cluster.sh: what every run of the
# Ash end-to-end suite needs before `mix`. Call `ash_env <script name> [more tools...]` with
# `repo` set: exports ASH_GEN_SERVER_BIN (default <repo>/target/release/ash-gen-server, which
# must exist) and ASH_GEN_SERVER_OFFLINE_DEPS (<repo>/../shared/hex when that folder exists and
# it is unset), checks that elixir, mix, epmd and the named tools are installed, starts EPMD.
# Exits 2 with the reason when something is missing.

ash_env() {
  local me="$1"
  shift
  export ASH_GEN_SERVER_BIN="${ASH_GEN_SERVER_BIN:-$repo/target/release/ash-gen-server}"
  if [[ ! -x "$ASH_GEN_SERVER_BIN" ]]; then
    echo "$me: the Rust node binary $ASH_GEN_SERVER_BIN is missing." >&2
    echo "$me: build it first: (cd $repo && cargo build --release)" >&2
    exit 2
  fi
  if [[ -z "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" && -d "$repo/../shared/hex" ]]; then
    ASH_GEN_SERVER_OFFLINE_DEPS="$(cd "$repo/../shared/hex" && pwd)"
    export ASH_GEN_SERVER_OFFLINE_DEPS
  fi
  if [[ -n "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" ]]; then
    echo "$me: offline dependencies from $ASH_GEN_SERVER_OFFLINE_DEPS"
  fi
  local tool
  for tool in elixir mix epmd "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$me: $tool not found (scripts/setup.sh installs it: erlang-nox erlang-dev elixir rebar3)" >&2
      exit 2
    }
  done
  # Distribution needs EPMD, for the test VM and the Rust node alike.
  epmd -daemon
}
