#!/usr/bin/env bash
# Resident memory of Wharf: idle with the empty config, then with 1, 10 and 100 hello
# apps (`processes: 1`) after each has served requests.
#
#   benches/footprint.sh [APPS...]      (default: 1 10 100)
#
# WHARF=/path/to/wharf measures another build in place of target/release/wharf (an older
# commit's, to compare); the environment is passed through to it, so mimalloc's
# MIMALLOC_* options can be tried on a build that still allows huge pages.
#
# Prints one line per step: the app count, VmRSS, and the anonymous part of it that is
# in transparent huge pages (AnonHugePages of /proc/PID/smaps_rollup).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
(($# > 0)) || set -- 1 10 100

[[ -n ${WHARF:-} ]] || benches/prepare.sh
seconds=1
source benches/lib.sh

control=$work/control.sock
"${WHARF:-target/release/wharf}" --statedir "$work/state" --control "unix:$control" 2>"$work/wharf.log" &
pid=$!
pids+=("$pid")
for _ in $(seq 300); do [[ -S $control ]] && break; sleep 0.1; done
[[ -S $control ]] || { echo "Wharf did not start" >&2; cat "$work/wharf.log" >&2; exit 1; }

# report APPS: one line for the server as it is now.
report() {
    local rss thp
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    thp=$(awk '/^AnonHugePages/ {print $2}' "/proc/$pid/smaps_rollup")
    awk -v n="$1" -v r="$rss" -v t="$thp" \
        'BEGIN {printf "apps %4d: RSS %6.1f MiB (in huge pages %5.1f MiB)\n", n, r/1024, t/1024}'
}

sleep 2
report 0
port=$(free_port)
for apps in "$@"; do
    python3 - "$apps" "$port" "$repo" >"$work/config.json" <<'PY'
import json, sys
n, port, repo = int(sys.argv[1]), sys.argv[2], sys.argv[3]
app = {"type": "wasm", "module": f"{repo}/target/wasm/hello.wasm",
       "request_handler": "luw_request_handler", "malloc_handler": "luw_malloc_handler",
       "free_handler": "luw_free_handler", "processes": 1}
routes = [{"match": {"uri": f"/a{i}"}, "action": {"pass": f"applications/a{i}"}} for i in range(n)]
print(json.dumps({"listeners": {f"127.0.0.1:{port}": {"pass": "routes"}}, "routes": routes,
                  "applications": {f"a{i}": app for i in range(n)}}))
PY
    curl -fs --unix-socket "$control" -X PUT --data-binary @"$work/config.json" \
        http://localhost/config >/dev/null
    for i in $(seq 0 $((apps - 1))); do
        curl -fs -o /dev/null "http://127.0.0.1:$port/a$i"
    done
    sleep 1
    report "$apps"
done
