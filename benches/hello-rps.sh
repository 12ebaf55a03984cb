#!/usr/bin/env bash
# Requests per second of the hello guest served by Wharf, next to a native actix-web
# handler returning the same bytes, measured side by side in one run so that the ratio
# is meaningful on a noisy machine.
#
#   benches/hello-rps.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# WHARF=/path/to/wharf runs another build of Wharf (an older commit's, to compare) in
# place of this checkout's target/release/wharf.
#
# Each round runs wrk (-t2 -c64) against native, then Wharf; the summary prints every
# round, the medians and the ratio Wharf / native.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-5}
seconds=${2:-10}
cd "$repo"

benches/prepare.sh --example native_hello

source benches/lib.sh
wharf_port=$(free_port)
native_port=$(free_port)

hello_config "$wharf_port" >"$work/config.json"
"${WHARF:-target/release/wharf}" --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)
target/release/examples/native_hello "127.0.0.1:$native_port" 2>"$work/native.log" &
pids+=($!)

wait_for "http://127.0.0.1:$wharf_port/"
wait_for "http://127.0.0.1:$native_port/"
side_by_side "$rounds" native "http://127.0.0.1:$native_port/" wharf "http://127.0.0.1:$wharf_port/"
