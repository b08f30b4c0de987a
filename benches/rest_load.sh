#!/usr/bin/env bash
# Load benchmark of the REST API beside an axum hello-world, both release builds on loopback.
#
# It starts `bst serve --workers 0` on a fresh data folder (the real sample klines are imported
# at start-up from BST_DATASETS_DIR), stores one strategy and BST_BENCH_BACKTESTS queued
# backtests (default 10,000) through the API, then runs wrk against GET /api/v1/backtests/{id}
# with a random stored id per request, the list route GET /api/v1/backtests?limit=50 and the
# hello-world's GET /, one after another with the same connections and duration. A warm-up
# run of each route, BST_BENCH_WARMUP seconds long (default 30) and not measured, fills the
# server's read cache first. The two routes then run twice: on a quiet store, where the cache
# serves the reads, and beside a client that updates a random backtest BST_BENCH_WRITES times
# per second (default 50). Each update drops that backtest and every list page from the
# cache. It prints requests per second, p50 and p99 latency, and each rate as a fraction of
# the hello-world's. wrk shares the machine's cores with the server it loads.
#
# Usage: BST_DATASETS_DIR=/path/to/datasets benches/rest_load.sh
# Optional: BST_BENCH_BACKTESTS (10000), BST_BENCH_CONNECTIONS (64), BST_BENCH_SECONDS (10),
# BST_BENCH_WARMUP (seconds of unmeasured load per route before the runs, 30; 0 skips it),
# BST_BENCH_WRITES (updates per second beside the second pair of runs, 50),
# BST_BENCH_THREADS (wrk threads, 2), BST_RELEASE_TARGET_DIR (~/.cache/bst-release),
# BST_BIN (a bst binary to use instead of the release build), BST_HELLO_BIN (a hello_axum
# binary to use instead of the release build). When both are set, nothing is built.
set -euo pipefail

cd "$(dirname "$0")/.."
: "${BST_DATASETS_DIR:?set BST_DATASETS_DIR to the folder of the real Bybit data}"
if ! command -v wrk >/dev/null; then
    echo "wrk is missing; install it with: apt-get install -y wrk" >&2
    exit 1
fi
target_dir=${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}
if [ -z "${BST_BIN:-}" ] || [ -z "${BST_HELLO_BIN:-}" ]; then
    # Building the whole workspace keeps one feature set, so the release dependencies build
    # once.
    CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet --workspace --bins --examples
fi
bin=${BST_BIN:-$target_dir/release/bst}
hello=${BST_HELLO_BIN:-$target_dir/release/examples/hello_axum}
backtests=${BST_BENCH_BACKTESTS:-10000}
connections=${BST_BENCH_CONNECTIONS:-64}
seconds=${BST_BENCH_SECONDS:-10}
threads=${BST_BENCH_THREADS:-2}
writes=${BST_BENCH_WRITES:-50}
warmup=${BST_BENCH_WARMUP:-30}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() {
    local url=$1
    for _ in $(seq 1 600); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "$url did not respond within 300 s" >&2
    return 1
}

port=$(free_port)
flight_port=$(free_port)
hello_port=$(free_port)
RUST_LOG=warn "$bin" serve --addr "127.0.0.1:$port" --flight-addr "127.0.0.1:$flight_port" \
    --workers 0 --data-dir "$work/data" >"$work/serve.log" 2>&1 &
pids+=($!)
"$hello" "127.0.0.1:$hello_port" &
pids+=($!)
wait_ready "http://127.0.0.1:$port/healthz"
wait_ready "http://127.0.0.1:$hello_port/"

api="http://127.0.0.1:$port/api/v1"
read -r first_id last_id < <(python3 benches/rest_load_fill.py "$api" "$backtests")
export BST_BENCH_FIRST_ID=$first_id BST_BENCH_LAST_ID=$last_id

# Prints "requests/s p50_ms p99_ms" for one wrk run against a URL; further arguments go to wrk.
measure() {
    local url=$1
    shift
    wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$@" "$url" | awk '
        function ms(text) {
            if (text ~ /us$/) return substr(text, 1, length(text) - 2) / 1000
            if (text ~ /ms$/) return substr(text, 1, length(text) - 2)
            if (text ~ /s$/) return substr(text, 1, length(text) - 1) * 1000
            return text
        }
        $1 == "Requests/sec:" { rate = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $0 ~ /Non-2xx or 3xx responses/ { print "wrk got error responses: " $0 > "/dev/stderr"; failed = 1 }
        END { if (failed) exit 1; printf "%s %s %s\n", rate, p50, p99 }'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "wrk: $threads threads, $connections connections, $seconds s per route; $backtests backtests stored"
if [ "$warmup" -gt 0 ]; then
    echo "warm-up: ${warmup} s per route, not measured"
    wrk -t"$threads" -c"$connections" -d"${warmup}s" -s benches/rest_load_ids.lua \
        "$api/backtests" >/dev/null
    wrk -t"$threads" -c"$connections" -d"${warmup}s" "$api/backtests?limit=50" >/dev/null
fi
read -r hello_rate hello_p50 hello_p99 < <(measure "http://127.0.0.1:$hello_port/")
read -r get_rate get_p50 get_p99 < <(measure "$api/backtests" -s benches/rest_load_ids.lua)
read -r list_rate list_p50 list_p99 < <(measure "$api/backtests?limit=50")

python3 benches/rest_load_writer.py "$api" "$first_id" "$last_id" "$writes" &
writer=$!
pids+=("$writer")
read -r get_w_rate get_w_p50 get_w_p99 < <(measure "$api/backtests" -s benches/rest_load_ids.lua)
read -r list_w_rate list_w_p50 list_w_p99 < <(measure "$api/backtests?limit=50")
if ! kill -0 "$writer" 2>/dev/null; then
    echo "the writer beside the second runs stopped early" >&2
    exit 1
fi

echo "| target | requests/s | p50 ms | p99 ms | share of hello-world |"
echo "| --- | --- | --- | --- | --- |"
for row in "axum hello-world|$hello_rate|$hello_p50|$hello_p99" \
    "GET /api/v1/backtests/{id}|$get_rate|$get_p50|$get_p99" \
    "GET /api/v1/backtests?limit=50|$list_rate|$list_p50|$list_p99" \
    "GET /api/v1/backtests/{id}, $writes writes/s|$get_w_rate|$get_w_p50|$get_w_p99" \
    "GET /api/v1/backtests?limit=50, $writes writes/s|$list_w_rate|$list_w_p50|$list_w_p99"; do
    IFS='|' read -r name rate p50 p99 <<<"$row"
    share=$(awk -v rate="$rate" -v base="$hello_rate" 'BEGIN { printf "%.2f", rate / base }')
    echo "| $name | $rate | $p50 | $p99 | $share |"
done
