#!/usr/bin/env bash
# CPU time Wharf spends per hello request with settings.telemetry off, on with
# sampling_ratio 0 (every request gets its trace context, none is recorded) and on with
# sampling_ratio 1 (every request's span is exported to an OTLP/HTTP sink on loopback,
# a small Python server that takes each batch and answers 200).
#
#   benches/telemetry-cost.sh [ROUNDS] [SECONDS]   (defaults: 4 rounds of 10 s)
#
# Each round starts this checkout's target/release/wharf once per setting and measures
# it as benches/cpu-per-request.sh does (`cpu_per_request_with` in benches/lib.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-4}
seconds=${2:-10}
cd "$repo"

benches/prepare.sh

source benches/lib.sh

sink_port=$(free_port)
python3 - "$sink_port" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
pids+=($!)

# config PORT RATIO: the hello config, with telemetry at RATIO unless it is "off".
config() {
    if [[ $2 == off ]]; then
        hello_config "$1"
        return
    fi
    hello_config "$1" | python3 -c '
import json, sys
tree = json.load(sys.stdin)
tree["settings"] = {"telemetry": {"endpoint": "http://127.0.0.1:'"$sink_port"'/v1/traces",
                                  "protocol": "http", "sampling_ratio": float(sys.argv[1])}}
print(json.dumps(tree))' "$2"
}

# cpu_per_request RATIO: µs of CPU per request, one run.
cpu_per_request() {
    local port state
    port=$(free_port)
    state=$(mktemp -d -p "$work")
    config "$port" "$1" >"$state/config.json"
    cpu_per_request_with target/release/wharf "$port" "$state/config.json"
    if grep -q "not exported" "$state/wharf.log"; then
        echo "exports failed with ratio $1" >&2
    fi
}

off=() none=() all=()
for round in $(seq "$rounds"); do
    off+=("$(cpu_per_request off)")
    none+=("$(cpu_per_request 0)")
    all+=("$(cpu_per_request 1)")
    echo "round $round: off ${off[-1]}, ratio 0 ${none[-1]}, ratio 1 ${all[-1]} µs/request"
done
echo "median: off $(median "${off[@]}"), ratio 0 $(median "${none[@]}"), ratio 1 $(median "${all[@]}") µs/request"
