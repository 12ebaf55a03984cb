#!/usr/bin/env bash
# Requests per second of the hello guest served by Wharf, next to a native actix-web
# handler returning the same bytes, measured side by side in one run so that the ratio
# is meaningful on a noisy machine.
#
#   benches/hello-rps.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Each round runs wrk (-t2 -c64) against native, then Wharf; the summary prints every
# round, the medians and the ratio Wharf / native.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
seconds=${2:-10}
cd "$repo"

benches/prepare.sh --example native_hello

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wharf_port=$(free_port)
native_port=$(free_port)

cat >"$work/config.json" <<JSON
{
  "listeners": {"127.0.0.1:$wharf_port": {"pass": "applications/hello"}},
  "applications": {"hello": {
    "type": "wasm", "module": "$repo/target/wasm/hello.wasm",
    "request_handler": "luw_request_handler", "malloc_handler": "luw_malloc_handler",
    "free_handler": "luw_free_handler"}}
}
JSON
target/release/wharf --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)
target/release/examples/native_hello "127.0.0.1:$native_port" 2>"$work/native.log" &
pids+=($!)

wait_for() { for _ in $(seq 100); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
wait_for "http://127.0.0.1:$wharf_port/"
wait_for "http://127.0.0.1:$native_port/"
[[ $(curl -s "http://127.0.0.1:$wharf_port/") == "$(curl -s "http://127.0.0.1:$native_port/")" ]] ||
    { echo "the two servers answer different bodies" >&2; exit 1; }

rps() { wrk -t2 -c64 -d"${seconds}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
native=(); wharf=()
for round in $(seq "$rounds"); do
    native+=("$(rps "http://127.0.0.1:$native_port/")")
    wharf+=("$(rps "http://127.0.0.1:$wharf_port/")")
    echo "round $round: native ${native[-1]} req/s, wharf ${wharf[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=$(median "${native[@]}"); w=$(median "${wharf[@]}")
echo "median: native $n req/s, wharf $w req/s, ratio $(awk -v w="$w" -v n="$n" 'BEGIN {printf "%.2f", w/n}')"
