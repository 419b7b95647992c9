#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine: Erlang/OTP, Elixir, rebar3 and openssl (the TLS tests
# make their certificates with it) from the distribution's packages (if missing), then a release build of the node. Safe to run again; it only does what
# is missing. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
for tool in erl erlc ct_run epmd elixir mix rebar3 openssl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "setup: installing Erlang/OTP, Elixir, rebar3 and openssl (missing: ${missing[*]})"
  sudo=""
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to install packages" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq erlang-nox erlang-dev elixir rebar3 erlang-common-test openssl >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
}

# Hex is not reachable on the project's build machines: use the package sources in
# ../shared/hex when they are there (mix.exs files switch on this variable), else Hex.
if [[ -z "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" && -f "$repo/../shared/hex/offline_deps.exs" ]]; then
  export ASH_GEN_SERVER_OFFLINE_DEPS="$(cd "$repo/../shared/hex" && pwd)"
fi
if [[ -z "${ASH_GEN_SERVER_OFFLINE_DEPS:-}" ]]; then
  mix local.hex --force --if-missing >/dev/null
  mix local.rebar --force --if-missing >/dev/null
fi

echo "setup: building the node (cargo build --release)"
(cd "$repo" && cargo build --release --quiet)
