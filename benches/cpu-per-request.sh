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
    local port state pid t0 t1 out requests
    port=$(free_port)
    state=$(mktemp -d -p "$work")
    hello_config "$port" >"$state/config.json"
    "$1" --statedir "$state/state" --config "$state/config.json" 2>"$state/wharf.log" &
    pid=$!
    wait_for "http://127.0.0.1:$port/"
    wrk -t2 -c64 -d3s "http://127.0.0.1:$port/" >/dev/null
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(wrk -t2 -c64 -d"${seconds}s" "http://127.0.0.1:$port/")
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v t0="$t0" -v t1="$t1" -v n="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.2f", (t1 - t0) / hz * 1e6 / n}'
}

a=() b=()
for round in $(seq "$rounds"); do
    a+=("$(cpu_per_request "$old")")
    b+=("$(cpu_per_request target/release/wharf)")
    echo "round $round: old ${a[-1]} µs/request, this ${b[-1]} µs/request"
done
echo "median: old $(median "${a[@]}") µs/request, this $(median "${b[@]}") µs/request"
