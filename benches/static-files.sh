#!/usr/bin/env bash
# Static files: Wharf's `share` next to nginx (Debian's nginx-light, 1.22) serving the
# same directory, side by side in one run so that the ratios mean something on a noisy
# machine: small-file requests/s (wrk -t2 -c64 on a 1 KiB file) and the throughput of
# one 1 GiB file (curl, one download at a time, from the page cache).
#
#   benches/static-files.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# WHARF=/path/to/wharf runs that build instead of this checkout's target/release/wharf
# (and skips building it). Both servers run one worker per core, with sendfile and no
# access log.
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

www="$work/www"
mkdir -p "$www" "$work/nginx"
chmod 755 "$work" # nginx's workers run as another user
head -c 768 /dev/urandom | base64 -w 64 >"$www/small.html" # 1 KiB of text
dd if=/dev/zero of="$www/big.bin" bs=1M count=1024 status=none

cat >"$work/config.json" <<JSON
{
  "listeners": {"127.0.0.1:$wharf_port": {"pass": "routes"}},
  "routes": [{"action": {"share": "$www\$uri"}}]
}
JSON
"${WHARF:-target/release/wharf}" --statedir "$work/state" --config "$work/config.json" 2>"$work/wharf.log" &
pids+=($!)

cat >"$work/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { text/html html; application/octet-stream bin; }
    server { listen 127.0.0.1:$nginx_port; root $www; }
}
CONF
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
pids+=($!)

wait_for "http://127.0.0.1:$wharf_port/small.html"
wait_for "http://127.0.0.1:$nginx_port/small.html"

echo "small file (1 KiB), requests/s:"
side_by_side "$rounds" nginx "http://127.0.0.1:$nginx_port/small.html" \
    wharf "http://127.0.0.1:$wharf_port/small.html"

# mib_s URL: MiB/s of one download of the big file.
mib_s() { curl -s -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.0f", $1 / 1048576}'; }
echo "1 GiB file, MiB/s:"
a=() b=()
mib_s "http://127.0.0.1:$nginx_port/big.bin" >/dev/null # into the page cache
for round in $(seq "$rounds"); do
    a+=("$(mib_s "http://127.0.0.1:$nginx_port/big.bin")")
    b+=("$(mib_s "http://127.0.0.1:$wharf_port/big.bin")")
    echo "round $round: nginx ${a[-1]} MiB/s, wharf ${b[-1]} MiB/s"
done
ma=$(median "${a[@]}")
mb=$(median "${b[@]}")
echo "median: nginx $ma MiB/s, wharf $mb MiB/s, ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b/a}')"
