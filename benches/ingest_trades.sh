#!/usr/bin/env bash
# Times `bst ingest trades` beside DuckDB converting the same trade dumps to Parquet.
#
# What is timed: importing N daily dumps (the real BTCUSD dump replayed over N shifted days,
# 30 by default, about 2.8 million trades) from csv.gz into the tick dataset, including the
# derived 1-minute bars; and DuckDB's COPY of the same files to one ZSTD Parquet file with
# the same columns. Not timed: building the release binary, installing DuckDB's Python
# package, generating the shifted dumps.
#
# Usage: BST_DATASETS_DIR=/path/to/datasets benches/ingest_trades.sh
# Optional: BST_BENCH_DAYS (default 30), BST_RELEASE_TARGET_DIR (default
# ~/.cache/bst-release), BST_BIN (a prebuilt binary to time instead of building the release
# one; only release figures belong in BENCHMARKS.md). The figures are printed as a Markdown
# table row.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v bc >/dev/null || { echo "bc is missing: apt-get install -y bc" >&2; exit 1; }
days=${BST_BENCH_DAYS:-30}
datasets=${BST_DATASETS_DIR:?set BST_DATASETS_DIR to the folder of the sample data}
source_dump="$datasets/bybit/trading/BTCUSD2019-10-01.csv.gz"
target_dir=${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bst=${BST_BIN:-}
if [ -z "$bst" ]; then
    CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet
    bst="$target_dir/release/bst"
fi

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet duckdb

# Each copy shifts every timestamp by whole days and suffixes the trade ids, so the days
# are distinct trades in distinct daily partitions.
mkdir -p "$work/dumps"
"$work/venv/bin/python" - "$source_dump" "$work/dumps" "$days" <<'PY'
import datetime, gzip, sys

source, out_dir, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
with gzip.open(source, "rt") as handle:
    header = handle.readline()
    rows = [line.rstrip("\n").split(",") for line in handle]
first_day = datetime.date(2019, 10, 1)
for day in range(days):
    date = first_day + datetime.timedelta(days=day)
    shift = day * 86_400
    with gzip.open(f"{out_dir}/BTCUSD{date.isoformat()}.csv.gz", "wt", compresslevel=6) as out:
        out.write(header)
        for row in rows:
            seconds, _, fraction = row[0].partition(".")
            shifted = list(row)
            shifted[0] = f"{int(seconds) + shift}.{fraction}" if fraction else str(int(seconds) + shift)
            shifted[6] = f"{row[6]}-{day}"
            out.write(",".join(shifted) + "\n")
PY
rows=$(( $(zcat "$source_dump" | wc -l) - 1 ))
total_rows=$(( rows * days ))

start=$(date +%s.%N)
"$bst" ingest trades --data-dir "$work/data" "$work/dumps"/*.csv.gz > "$work/bst.out"
bst_seconds=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
"$work/venv/bin/python" - "$work/dumps" "$work/duckdb.parquet" <<'PY'
import sys
import duckdb

dumps, target = sys.argv[1], sys.argv[2]
duckdb.sql(f"""
    COPY (
        SELECT make_timestamp(CAST(round(timestamp * 1000000) AS BIGINT)) AS ts,
               price, size, foreignNotional AS notional, lower(side) AS side,
               trdMatchID AS trade_id, tickDirection AS tick_direction
        FROM read_csv('{dumps}/*.csv.gz', header = true)
    ) TO '{target}' (FORMAT parquet, COMPRESSION zstd)
""")
PY
duckdb_seconds=$(echo "$(date +%s.%N) - $start" | bc)

bst_rate=$(echo "$total_rows / $bst_seconds" | bc)
duckdb_rate=$(echo "$total_rows / $duckdb_seconds" | bc)
ratio=$(echo "scale=2; $bst_rate / $duckdb_rate" | bc)
grep -q "ticks written $total_rows" "$work/bst.out" || {
    echo "bst did not report $total_rows ticks written:" >&2
    cat "$work/bst.out" >&2
    exit 1
}

echo "| date | machine | days | rows | bst rows/s | DuckDB rows/s | bst / DuckDB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| $(date -u +%F) | $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | $days | $total_rows | $bst_rate | $duckdb_rate | $ratio |"
