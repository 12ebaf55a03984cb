#!/usr/bin/env bash
# Hot-swap figures with 20 apps: start-up with a cold against a warm compiled-module
# cache, time from PUT to acknowledgement, and p99 latency during a swap storm against
# steady state (see benches/hot_swap.py for what each step does).
#
#   benches/hot-swap.sh [ROUNDS] [SECONDS] [PAUSE_MS]
#       (defaults: 3 rounds, 10 s of wrk, 10 ms between two storm operations)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

benches/prepare.sh

work=$(mktemp -d)
# The process title names the state dir as `--state DIR` (docs/operations.md).
trap 'pkill -f -- "--state $work/state" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 benches/hot_swap.py target/release/wharf target/wasm/hello.wasm "$work" "$@"
