#!/usr/bin/env bash
# What every benchmark needs first: wrk (from Debian, if missing), the test set-up, the
# example guests, and a release build of wharf plus any extra cargo targets given
# (e.g. `--example native_hello`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || {
    sudo=(); ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
./scripts/setup
./scripts/build-examples >/dev/null
cargo build --release --quiet --bin wharf "$@"
