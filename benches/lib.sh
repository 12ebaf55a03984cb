# Helpers shared by the benchmark scripts (sourced, after `seconds` is set):
# a temp work dir cleaned up at exit with the servers started (`pids`), free ports,
# waiting for a server, wrk's requests/s, medians, and two servers side by side.

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL: until it answers (up to 30 s).
wait_for() { for _ in $(seq 300); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# rps URL: requests/s of wrk -t2 -c64 for $seconds.
rps() { wrk -t2 -c64 -d"${seconds}s" "$1" | awk '/Requests\/sec/ {print $2}'; }

# hello_config PORT: the config of the hello guest on 127.0.0.1:PORT, with as many
# instances as cores (the benchmarks set `processes`; unset is one instance).
hello_config() {
    cat <<JSON
{
  "listeners": {"127.0.0.1:$1": {"pass": "applications/hello"}},
  "applications": {"hello": {
    "type": "wasm", "module": "$repo/target/wasm/hello.wasm",
    "request_handler": "luw_request_handler", "malloc_handler": "luw_malloc_handler",
    "free_handler": "luw_free_handler", "processes": $(nproc)}}
}
JSON
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# side_by_side ROUNDS NAME_A URL_A NAME_B URL_B: checks both answer the same body, then
# runs wrk against A then B for ROUNDS rounds; prints each round, the medians and B / A.
side_by_side() {
    local rounds=$1 name_a=$2 url_a=$3 name_b=$4 url_b=$5 a=() b=() round ma mb
    [[ $(curl -s "$url_a") == "$(curl -s "$url_b")" ]] ||
        { echo "the two servers answer different bodies" >&2; exit 1; }
    for round in $(seq "$rounds"); do
        a+=("$(rps "$url_a")")
        b+=("$(rps "$url_b")")
        echo "round $round: $name_a ${a[-1]} req/s, $name_b ${b[-1]} req/s"
    done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
    echo "median: $name_a $ma req/s, $name_b $mb req/s, ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b/a}')"
}
