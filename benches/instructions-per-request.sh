#!/usr/bin/env bash
# User-space instructions Wharf executes per request of the hello guest, for two builds:
# a count, not a time, so it is the same from run to run whatever else the machine does
# (valgrind's callgrind counts every instruction it runs, the guest's compiled code
# included; the kernel's work is not in it).
#
#   benches/instructions-per-request.sh OLD_WHARF [REQUESTS] [ROUNDS]   (defaults: 2000, 2)
#
# OLD_WHARF is another build's binary (a release build of an older commit); the other is
# this checkout's target/release/wharf. Each run starts the build under callgrind with
# counting off, serves 200 requests to warm it up, then counts REQUESTS requests sent one
# after another on one kept-alive connection, and prints the count divided by REQUESTS.
# Counting is switched with vgdb, not callgrind_control: Wharf sets Unit's process title,
# so callgrind_control does not recognise the process.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: benches/instructions-per-request.sh OLD_WHARF [REQUESTS] [ROUNDS]}
requests=${2:-2000}
rounds=${3:-2}
cd "$repo"

benches/prepare.sh
seconds=0
source benches/lib.sh

# send PORT COUNT: COUNT GETs of / on one kept-alive connection, each answer read whole.
send() {
    python3 - "$1" "$2" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for _ in range(count):
    conn.request("GET", "/")
    response = conn.getresponse()
    if response.status != 200 or response.read() != b"Hello, World!\n":
        sys.exit(f"unexpected answer: {response.status}")
PY
}

# instructions_per_request BINARY: instructions per request, one run.
instructions_per_request() {
    local port dir pid total
    port=$(free_port)
    dir=$(mktemp -d -p "$work")
    hello_config "$port" >"$dir/config.json"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
        "$1" --statedir "$dir/state" --config "$dir/config.json" 2>"$dir/wharf.log" &
    pid=$!
    # Under valgrind the module's compilation takes many times longer.
    wait_for "http://127.0.0.1:$port/" 300
    send "$port" 200
    vgdb --pid="$pid" instrumentation on >/dev/null 2>&1
    send "$port" "$requests"
    vgdb --pid="$pid" dump >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    total=$(awk '/^summary:/ {print $2; exit}' "$dir/callgrind.out".*)
    awk -v t="$total" -v n="$requests" 'BEGIN {printf "%.0f", t / n}'
}

install_if_missing valgrind valgrind
alternate instructions_per_request instructions/request "$rounds" \
    old "$old" this target/release/wharf
