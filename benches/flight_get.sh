#!/usr/bin/env bash
# Times DoGet of a kline series over loopback Arrow Flight beside pyarrow.parquet reading the
# same Parquet files directly.
#
# What is timed: reading 10 million seeded synthetic 1-minute bars (about 19 years, one
# ZSTD file per month) into one pyarrow Table. The script reads them once with
# pyarrow.flight's do_get from `bst serve` on loopback and once with pyarrow.parquet from the
# files, and keeps the fastest of three runs each. Not timed: building the release binary,
# writing the bars, starting the server.
#
# Usage: benches/flight_get.sh
# Optional: BST_BENCH_ROWS (default 10000000), BST_PYTHON (a Python with the packages of
# tests/python-requirements.txt; default ~/.cache/bst-venv/bin/python),
# BST_RELEASE_TARGET_DIR (default ~/.cache/bst-release), BST_BIN (a prebuilt binary to time
# instead of building the release one; only release figures belong in BENCHMARKS.md). The
# figures are printed as a Markdown table row.
set -euo pipefail

cd "$(dirname "$0")/.."
rows=${BST_BENCH_ROWS:-10000000}
python=${BST_PYTHON:-$HOME/.cache/bst-venv/bin/python}
target_dir=${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}
"$python" -c 'import pyarrow.flight' 2>/dev/null || {
    echo "$python lacks pyarrow: install tests/python-requirements.txt into it" >&2
    exit 1
}
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

bst=${BST_BIN:-}
if [ -z "$bst" ]; then
    CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet
    bst="$target_dir/release/bst"
fi

"$python" benches/flight_get.py write "$work/data" "$rows"

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rest_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bst" serve --data-dir "$work/data" --workers 0 \
    --addr "127.0.0.1:$rest_port" --flight-addr "127.0.0.1:$port" &
server_pid=$!
for _ in $(seq 1 600); do
    if "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

figures=$("$python" benches/flight_get.py time "$work/data" "$port")
read -r total_rows bytes flight_gbps parquet_gbps ratio < <("$python" -c "
import json, sys
f = json.loads(sys.argv[1])
ratio = f['flight_gbps'] / f['parquet_gbps']
print(f['rows'], f['bytes'], '%.3f' % f['flight_gbps'], '%.3f' % f['parquet_gbps'], '%.2f' % ratio)
" "$figures")

echo "| date | machine | rows | Arrow bytes | Flight GB/s | Parquet GB/s | Flight / Parquet |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| $(date -u +%F) | $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | $total_rows | $bytes | $flight_gbps | $parquet_gbps | $ratio |"
