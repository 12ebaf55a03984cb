#!/usr/bin/env bash
# What the bytes and guest-time metrics add to one hello request, in nanoseconds,
# measured alone (examples/metrics_cost.rs): two counter bumps and one timed guest poll.
# Side-by-side CPU per request (benches/cpu-per-request.sh) cannot resolve a cost this
# small on a 2-core machine; this bounds it.
#
#   benches/metrics-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example metrics_cost
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), clock source $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
target/release/examples/metrics_cost
