#!/usr/bin/env bash
# Proxy overhead: requests/s of a local upstream (Debian's nginx-light answering
# `return 200`) reached directly, and through Wharf's `proxy` action, side by side in one
# run so that the ratio means something on a noisy machine (wrk -t2 -c64, kept-alive on
# both legs: Wharf reuses its upstream connections). Then, for reference, the same
# upstream through a second nginx as the proxy (`proxy_pass` with `keepalive 64`, one
# worker), next to Wharf's proxy.
#
#   benches/proxy.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# WHARF=/path/to/wharf runs that build instead of this checkout's target/release/wharf
# (and skips building it). Each nginx runs one worker; Wharf its default threads.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-5}
seconds=${2:-10}
cd "$repo"

if [[ -z ${WHARF:-} ]]; then benches/prepare.sh; fi
source benches/lib.sh
install_if_missing wrk wrk
install_if_missing nginx nginx-light
wharf_port=$(free_port)
nginx_port=$(free_port)
nginx_proxy_port=$(free_port)
mkdir -p "$work/nginx" "$work/nginx-proxy"

cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$nginx_port; location / { return 200 "hello from the upstream\n"; } }
}
CONF
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
pids+=($!)

cat >"$work/nginx-proxy/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx-proxy/nginx.pid;
error_log $work/nginx-proxy/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream back { server 127.0.0.1:$nginx_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_proxy_port;
        location / {
            proxy_pass http://back;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -p "$work/nginx-proxy" -e "$work/nginx-proxy/error.log" -c "$work/nginx-proxy/nginx.conf" &
pids+=($!)

cat >"$work/config.json" <<JSON
{
  "listeners": {"127.0.0.1:$wharf_port": {"pass": "routes"}},
  "routes": [{"action": {"proxy": "http://127.0.0.1:$nginx_port"}}]
}
JSON
"${WHARF:-target/release/wharf}" --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)

wait_for "http://127.0.0.1:$nginx_port/"
wait_for "http://127.0.0.1:$nginx_proxy_port/"
wait_for "http://127.0.0.1:$wharf_port/"

echo "requests/s, upstream direct vs. through Wharf's proxy:"
side_by_side "$rounds" direct "http://127.0.0.1:$nginx_port/" \
    wharf-proxy "http://127.0.0.1:$wharf_port/"

echo "requests/s, nginx as the proxy vs. Wharf's proxy:"
side_by_side "$rounds" nginx-proxy "http://127.0.0.1:$nginx_proxy_port/" \
    wharf-proxy "http://127.0.0.1:$wharf_port/"
