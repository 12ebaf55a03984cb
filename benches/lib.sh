# Helpers shared by the benchmark scripts (sourced, after `seconds` is set):
# a temp work dir cleaned up at exit with the servers started (`pids`), free ports,
# waiting for a server, wrk's requests/s, medians, and two servers side by side.

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# install_if_missing COMMAND PACKAGE: installs Debian's PACKAGE unless COMMAND exists.
install_if_missing() {
    command -v "$1" >/dev/null && return 0
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL [SECONDS]: until it answers (up to SECONDS, default 30).
wait_for() { for _ in $(seq $((${2:-30} * 10))); do curl -fs "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

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

# alternate MEASURE UNIT ROUNDS NAME_A ARG_A NAME_B ARG_B: runs `MEASURE ARG` for A then
# B, ROUNDS times; prints each round, the medians and B / A.
alternate() {
    local measure=$1 unit=$2 rounds=$3 name_a=$4 arg_a=$5 name_b=$6 arg_b=$7 a=() b=() round ma mb
    for round in $(seq "$rounds"); do
        a+=("$("$measure" "$arg_a")")
        b+=("$("$measure" "$arg_b")")
        echo "round $round: $name_a ${a[-1]} $unit, $name_b ${b[-1]} $unit"
    done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
    echo "median: $name_a $ma $unit, $name_b $mb $unit, ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b/a}')"
}

# side_by_side ROUNDS NAME_A URL_A NAME_B URL_B: checks both answer the same body, then
# runs wrk against A then B (`alternate rps`).
side_by_side() {
    [[ $(curl -sk "$3") == "$(curl -sk "$5")" ]] ||
        { echo "the two servers answer different bodies" >&2; exit 1; }
    alternate rps req/s "$@"
}

# cpu_per_request_with BINARY PORT CONFIG: µs of the server's CPU (utime + stime from
# /proc/PID/stat) per request of `wrk -t2 -c64` for $seconds, after 3 s of warm-up, with
# BINARY serving CONFIG (a file; its directory gets the state dir and `wharf.log`).
cpu_per_request_with() {
    local dir pid t0 t1 out requests
    dir=$(dirname "$3")
    "$1" --statedir "$dir/state" --config "$3" 2>"$dir/wharf.log" &
    pid=$!
    wait_for "http://127.0.0.1:$2/"
    wrk -t2 -c64 -d3s "http://127.0.0.1:$2/" >/dev/null
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(wrk -t2 -c64 -d"${seconds}s" "http://127.0.0.1:$2/")
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v t0="$t0" -v t1="$t1" -v n="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.2f", (t1 - t0) / hz * 1e6 / n}'
}
