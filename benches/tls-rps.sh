#!/usr/bin/env bash
# TLS on a `return 200` route: Wharf beside nginx (Debian's nginx-light), both serving
# the same ECDSA P-256 certificate, measured side by side in one run.
#
#   benches/tls-rps.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Two figures, each alternated between the servers for ROUNDS rounds (medians and the
# ratio Wharf / nginx printed at the end):
#
# - kept-alive requests/s: wrk -t2 -c64 over https (one handshake per connection, then
#   requests on it; nginx's keepalive_requests raised so that it does not reconnect).
# - new handshakes/s: `openssl s_time -new` (a full TLS 1.3 handshake per connection, no
#   resumption, no request; each connection closed after its handshake), two client
#   processes at once, their connections added up. The clients' own handshake work
#   runs on the same machine: the figure is what one machine does as client and server
#   together, the same for both servers, so the ratio is what compares them.
#
# Neither server caches sessions or issues tickets (Wharf's default; nginx configured
# so). WHARF=/path/to/wharf runs another build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
seconds=${2:-10}
cd "$repo"

if [[ -z ${WHARF:-} ]]; then benches/prepare.sh; fi
command -v openssl >/dev/null || { echo "openssl (the CLI) is required" >&2; exit 1; }

source benches/lib.sh
install_if_missing nginx nginx-light
wharf_port=$(free_port)
nginx_port=$(free_port)

# One self-signed ECDSA P-256 certificate for both.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/bundle.pem"

control="$work/control.sock"
"${WHARF:-target/release/wharf}" --control "unix:$control" --statedir "$work/state" \
    2>"$work/wharf.log" &
pids+=($!)
for _ in $(seq 300); do [[ -S $control ]] && break; sleep 0.1; done
api() { curl -fsS --unix-socket "$control" -X PUT "$@" >/dev/null; }
api --data-binary "@$work/bundle.pem" http://localhost/certificates/bench
api -d "{\"listeners\": {\"127.0.0.1:$wharf_port\": {\"pass\": \"routes\",
    \"tls\": {\"certificate\": \"bench\"}}}, \"routes\": [{\"action\": {\"return\": 200}}]}" \
    http://localhost/config

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    keepalive_requests 1000000000;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        location / { return 200; }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx-error.log" &
pids+=($!)

wait_https() { for _ in $(seq 300); do curl -kfs "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
wait_https "https://127.0.0.1:$wharf_port/"
wait_https "https://127.0.0.1:$nginx_port/"

echo "== kept-alive requests/s (wrk -t2 -c64, ${seconds}s)"
side_by_side "$rounds" nginx "https://127.0.0.1:$nginx_port/" wharf "https://127.0.0.1:$wharf_port/"

# handshakes PORT: full handshakes/s of two `openssl s_time -new` clients for $seconds.
handshakes() {
    local out=() i
    for i in 1 2; do
        openssl s_time -connect "127.0.0.1:$1" -new -time "$seconds" >"$work/s_time.$i" 2>&1 &
        out+=($!)
    done
    wait "${out[@]}"
    cat "$work"/s_time.[12] |
        awk '/connections in [0-9.]+ real seconds/ {n += $1; t = $4 > t ? $4 : t}
             END {if (t > 0) printf "%.0f\n", n / t; else print 0}'
}

echo "== new TLS handshakes/s (2 x openssl s_time -new, ${seconds}s)"
alternate handshakes handshakes/s "$rounds" nginx "$nginx_port" wharf "$wharf_port"
