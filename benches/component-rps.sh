#!/usr/bin/env bash
# Requests per second of the hello component (examples/components/hello-component)
# served by Wharf, next to `wasmtime serve -S cli` (the same wasmtime version, default
# settings) on the same component, measured side by side in one run so that the ratio
# is meaningful on a noisy machine.
#
#   benches/component-rps.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# wasmtime-cli 48.0.8 is used from target/wasmtime-cli, installed there on first use
# (`cargo install --locked`, a long build). Each round runs wrk (-t2 -c64) against
# wasmtime serve, then Wharf; the summary prints every round, the medians and the ratio
# Wharf / wasmtime serve.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
seconds=${2:-10}
cd "$repo"

wasmtime=$repo/target/wasmtime-cli/bin/wasmtime
[[ -x $wasmtime ]] && [[ $("$wasmtime" --version) == "wasmtime 48.0.8"* ]] ||
    cargo install --locked --quiet wasmtime-cli --version 48.0.8 --root "$repo/target/wasmtime-cli"
benches/prepare.sh
component=$repo/target/wasm/hello-component.wasm

source benches/lib.sh
wharf_port=$(free_port)
wasmtime_port=$(free_port)

cat >"$work/config.json" <<JSON
{
  "listeners": {"127.0.0.1:$wharf_port": {"pass": "applications/hello"}},
  "applications": {"hello": {"type": "wasm-wasi-component", "component": "$component"}}
}
JSON
target/release/wharf --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)
"$wasmtime" serve -S cli --addr "127.0.0.1:$wasmtime_port" "$component" 2>"$work/wasmtime.log" &
pids+=($!)

wait_for "http://127.0.0.1:$wharf_port/"
wait_for "http://127.0.0.1:$wasmtime_port/"
side_by_side "$rounds" "wasmtime serve" "http://127.0.0.1:$wasmtime_port/" wharf "http://127.0.0.1:$wharf_port/"
