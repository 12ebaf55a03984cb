#!/usr/bin/env bash
# CPU time Wharf spends per request of the hello guest, for two builds alternated: a
# figure that moves far less from run to run than requests/s on a busy 2-core machine.
#
#   benches/cpu-per-request.sh OLD_WHARF [ROUNDS] [SECONDS]   (defaults: 4 rounds of 10 s)
#
# OLD_WHARF is another build's binary (a release build of an older commit); the other is
# this checkout's target/release/wharf. Each round starts each build in turn on the same
# config (`processes` set to the core count, as in hello-rps.sh), warms it up with 3 s of
# `wrk -t2 -c64`, then reads its utime + stime from /proc/PID/stat around SECONDS more and
# divides by the requests wrk completed. Prints every round and the medians.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: benches/cpu-per-request.sh OLD_WHARF [ROUNDS] [SECONDS]}
rounds=${2:-4}
seconds=${3:-10}
cd "$repo"

benches/prepare.sh

source benches/lib.sh

# cpu_per_request BINARY: µs of CPU per request, one run.
cpu_per_request() {
    local port state
    port=$(free_port)
    state=$(mktemp -d -p "$work")
    hello_config "$port" >"$state/config.json"
    cpu_per_request_with "$1" "$port" "$state/config.json"
}

a=() b=()
for round in $(seq "$rounds"); do
    a+=("$(cpu_per_request "$old")")
    b+=("$(cpu_per_request target/release/wharf)")
    echo "round $round: old ${a[-1]} µs/request, this ${b[-1]} µs/request"
done
echo "median: old $(median "${a[@]}") µs/request, this $(median "${b[@]}") µs/request"
