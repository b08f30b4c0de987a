#!/usr/bin/env bash
# Measures the /live fan-out: deliveries per second (summed over clients) and the latency
# from a Redis PUBLISH to receipt by WebSocket clients, for 1, 10 and 100 clients.
#
# What is timed: BST_BENCH_MESSAGES messages (default 5000, about 150 bytes each) published
# on bybit:ticks at BST_BENCH_RATE messages per second (default 2000) by one redis-py
# client, relayed by `bst serve` to N Python `websockets` clients on the same machine. Not
# timed: starting redis-server and the server, installing the Python packages.
#
# Usage: benches/live_fanout.sh
# Optional: BST_BIN (the binary to run; default the release binary in
# ${BST_RELEASE_TARGET_DIR:-~/.cache/bst-release}/release/bst, which this script does not
# build), BST_BENCH_CLIENTS (default "1 10 100"), BST_BENCH_MESSAGES, BST_BENCH_RATE. Only
# figures of the release binary belong in BENCHMARKS.md. Prints Markdown table rows.
set -euo pipefail

cd "$(dirname "$0")/.."
bst=${BST_BIN:-${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}/release/bst}
if [ ! -x "$bst" ]; then
    echo "no bst binary at $bst: build the release binary or set BST_BIN" >&2
    exit 1
fi
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }
messages=${BST_BENCH_MESSAGES:-5000}
rate=${BST_BENCH_RATE:-2000}
clients_list=${BST_BENCH_CLIENTS:-1 10 100}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local what=$1
    shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "$what did not start" >&2
    exit 1
}

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet websockets redis

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for redis-server redis-cli -p "$redis_port" ping

api_port=$(free_port)
redis_url="redis://127.0.0.1:$redis_port/0"
REDIS_URL=$redis_url BST_LIVE_CLIENT_BUFFER=65536 RUST_LOG=warn \
    "$bst" serve --addr "127.0.0.1:$api_port" --workers 0 --data-dir "$work/data" \
    >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "bst serve" curl -sf "http://127.0.0.1:$api_port/healthz"

echo "| clients | messages | deliveries/s | p50 latency (ms) | p99 latency (ms) |"
echo "| --- | --- | --- | --- | --- |"
for clients in $clients_list; do
    "$work/venv/bin/python" benches/live_fanout.py \
        --live-url "ws://127.0.0.1:$api_port/api/v1/live?channel=bybit:ticks" \
        --redis-url "$redis_url" --clients "$clients" --messages "$messages" --rate "$rate"
done
