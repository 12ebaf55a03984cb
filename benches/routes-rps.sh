#!/usr/bin/env bash
# The per-request cost of routing: requests per second of the hello guest reached
# through a route of 100 steps (the request matches the last one), next to a route of
# one step and to a listener that passes straight to the app, measured side by side in
# one run of one server so that the ratios are meaningful on a noisy machine.
#
#   benches/routes-rps.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Each round runs wrk (-t2 -c64) against the direct listener, the one-step route and
# the 100-step route in turn; the summary prints every round, the medians and the
# ratios against the one-step route.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
seconds=${2:-10}
cd "$repo"

benches/prepare.sh

source benches/lib.sh
direct=$(free_port)
one=$(free_port)
many=$(free_port)

# 99 steps that do not match /hello, each testing what real configs test (an exact or
# prefix URI, a method, a header, a query argument, a regex), then the one that does.
python3 - "$repo" "$direct" "$one" "$many" >"$work/config.json" <<'PY'
import json, os, sys
repo, direct, one, many = sys.argv[1:]
kinds = [
    lambda i: {"uri": f"/api/v{i}/*"},
    lambda i: {"uri": f"/static-{i}", "method": ["GET", "HEAD"]},
    lambda i: {"headers": {"X-Tenant": f"t{i}"}},
    lambda i: {"arguments": {"page": str(i)}},
    lambda i: {"uri": f"~^/re{i}/[a-z]+$"},
]
steps = [{"match": kinds[i % len(kinds)](i), "action": {"return": 404}} for i in range(99)]
steps.append({"match": {"uri": "/hello*"}, "action": {"pass": "applications/hello"}})
print(json.dumps({
    "listeners": {
        f"127.0.0.1:{direct}": {"pass": "applications/hello"},
        f"127.0.0.1:{one}": {"pass": "routes/one"},
        f"127.0.0.1:{many}": {"pass": "routes/many"},
    },
    "routes": {
        "one": [{"match": {"uri": "/hello*"}, "action": {"pass": "applications/hello"}}],
        "many": steps,
    },
    "applications": {"hello": {
        "type": "wasm", "module": f"{repo}/target/wasm/hello.wasm",
        "request_handler": "luw_request_handler", "malloc_handler": "luw_malloc_handler",
        "free_handler": "luw_free_handler", "processes": os.cpu_count()}},
}))
PY
target/release/wharf --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)

for port in "$direct" "$one" "$many"; do wait_for "http://127.0.0.1:$port/hello"; done
body=$(curl -s "http://127.0.0.1:$direct/hello")
for port in "$one" "$many"; do
    [[ $(curl -s "http://127.0.0.1:$port/hello") == "$body" ]] ||
        { echo "the listeners answer different bodies" >&2; exit 1; }
done

d=(); o=(); m=()
for round in $(seq "$rounds"); do
    d+=("$(rps "http://127.0.0.1:$direct/hello")")
    o+=("$(rps "http://127.0.0.1:$one/hello")")
    m+=("$(rps "http://127.0.0.1:$many/hello")")
    echo "round $round: direct ${d[-1]}, 1 step ${o[-1]}, 100 steps ${m[-1]} req/s"
done
dm=$(median "${d[@]}"); om=$(median "${o[@]}"); mm=$(median "${m[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "median: direct $dm, 1 step $om, 100 steps $mm req/s;" \
    "100 steps / 1 step $(ratio "$mm" "$om"), 1 step / direct $(ratio "$om" "$dm")"
