#!/usr/bin/env bash
# Times `bst sweep` over an SMA crossover grid beside vectorbt running the same grid, and
# checks that both give the same trade count and final value for every combination.
#
# What is timed: bst by the sweep's own `seconds` field (plan and evaluation) and by the wall
# time of its process. vectorbt is timed over one run of the whole grid (SMAs, signals,
# Portfolio.from_signals, final values and trade counts), after an untimed run of the same
# grid that compiles its Numba functions. Not timed: building the release binary, installing
# the Python packages, importing the CSV file.
#
# Both sides use bst's semantics (docs/backtesting.md). A strategy decides at bar t's close
# and fills at bar t+1's open, with commission on entry and exit and all-in long-only sizing.
# A position still open after the last bar is closed at the last close with the exit
# commission. The check fails when a trade count differs or a final value differs by more
# than 1e-6 relative.
#
# vectorbt's side computes each SMA from TA-Lib's running total, as bst's SMA does. Where
# the fast and slow SMAs are equal in decimal, their rounding decides whether a crossing
# happens, so pandas' rolling mean (BST_SWEEP_SMA=pandas) makes some pairs differ from
# `bst backtest` on the sample BTCUSDT file. The message for a failing pair counts its bars
# with such a tie.
#
# With BST_SWEEP_SCALE=1 it times bst alone over a seeded random walk of synthetic 1-minute
# bars (525,600 by default, one year) and 2,000 combinations, and reports the peak RSS.
#
# Usage: BST_DATASETS_DIR=/path/to/datasets benches/sweep_vs_vectorbt.sh
#        BST_SWEEP_SCALE=1 benches/sweep_vs_vectorbt.sh
# Optional: BST_SWEEP_FAST and BST_SWEEP_SLOW, the fast and slow periods as low:high:step
# with high included or as a comma-separated list (default 5:50:5 and 20:200:10, and pairs
# with fast >= slow are skipped); BST_SWEEP_SMA (running-total, the default, or pandas); in
# scale mode BST_SWEEP_SCALE_FAST and BST_SWEEP_SCALE_SLOW (default 5:100:5 and
# 110:1100:10) and BST_SWEEP_SCALE_BARS (default 525600); BST_RELEASE_TARGET_DIR (default
# ~/.cache/bst-release); BST_BIN (a prebuilt binary to time instead of building the release
# one; only release figures belong in BENCHMARKS.md). The figures are printed as a Markdown
# table row.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v bc >/dev/null || { echo "bc is missing: apt-get install -y bc" >&2; exit 1; }
scale_mode=${BST_SWEEP_SCALE:-0}
target_dir=${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}
helper=benches/sweep_vectorbt.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bst=${BST_BIN:-}
if [ -z "$bst" ]; then
    CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet
    bst="$target_dir/release/bst"
fi

# These versions install together on Python 3.11 (checked on 3.11.7).
python3 -m venv "$work/venv"
python="$work/venv/bin/python"
"$work/venv/bin/pip" install --quiet numpy==2.4.6 pandas==3.1.1
if [ "$scale_mode" != 1 ]; then
    "$work/venv/bin/pip" install --quiet vectorbt==1.2.0 numba==0.68.1
fi

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# Prints one field of a JSON file, such as `bars` or `seconds`.
json_field() {
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# Runs `bst sweep` on the SMA crossover grid given as JSON, writing its output to $work/bst.json
# and the wall time of the process to $bst_wall_seconds. Extra arguments go before the command,
# such as `/usr/bin/time -v -o FILE`.
run_sweep() {
    local symbol=$1 grid=$2
    shift 2
    local start
    start=$(date +%s.%N)
    "$@" "$bst" sweep --symbol "$symbol" --interval 1 --strategy sma_crossover \
        --grid "$grid" --metric sharpe_ratio --top 0 --json \
        --data-dir "$work/data" > "$work/bst.json"
    bst_wall_seconds=$(echo "$(date +%s.%N) - $start" | bc)
}

if [ "$scale_mode" = 1 ]; then
    command -v /usr/bin/time >/dev/null || {
        echo "/usr/bin/time is missing: apt-get install -y time" >&2
        exit 1
    }
    fast=${BST_SWEEP_SCALE_FAST:-5:100:5}
    slow=${BST_SWEEP_SCALE_SLOW:-110:1100:10}
    bars=${BST_SWEEP_SCALE_BARS:-525600}
    "$python" "$helper" synthetic --bars "$bars" --output "$work/SYNTHUSDT_1m.csv.gz"
    "$bst" ingest klines --data-dir "$work/data" "$work/SYNTHUSDT_1m.csv.gz" > /dev/null
    grid=$("$python" "$helper" bst-grid --fast "$fast" --slow "$slow")

    run_sweep SYNTHUSDT "$grid" /usr/bin/time -v -o "$work/time.txt"
    swept_bars=$(json_field "$work/bst.json" bars)
    sweep_seconds=$(json_field "$work/bst.json" seconds)
    combinations=$("$python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["results"]))' "$work/bst.json")
    [ "$swept_bars" = "$bars" ] || { echo "bst swept $swept_bars bars, expected $bars" >&2; exit 1; }
    peak_kib=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
    rate=$(echo "$bars * $combinations / $sweep_seconds" | bc)

    echo "| date | machine | bars | combinations | sweep s | process s | bar-combinations/s | peak RSS MiB |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    echo "| $(date -u +%F) | $machine | $bars | $combinations | $(printf '%.2f' "$sweep_seconds") | $(printf '%.2f' "$bst_wall_seconds") | $rate | $((peak_kib / 1024)) |"
    exit 0
fi

datasets=${BST_DATASETS_DIR:?set BST_DATASETS_DIR to the folder of the sample data}
csv="$datasets/bybit/klines/BTCUSDT_1m.csv.gz"
fast=${BST_SWEEP_FAST:-5:50:5}
slow=${BST_SWEEP_SLOW:-20:200:10}
sma=${BST_SWEEP_SMA:-running-total}

"$bst" ingest klines --data-dir "$work/data" "$csv" > /dev/null
grid=$("$python" "$helper" bst-grid --fast "$fast" --slow "$slow")
run_sweep BTCUSDT "$grid"
"$python" "$helper" grid --csv "$csv" --fast "$fast" --slow "$slow" --sma "$sma" \
    --output "$work/vectorbt.json"
"$python" "$helper" compare --vectorbt "$work/vectorbt.json" --bst "$work/bst.json" --csv "$csv"

bars=$(json_field "$work/bst.json" bars)
combinations=$(json_field "$work/vectorbt.json" combinations)
sweep_seconds=$(json_field "$work/bst.json" seconds)
vectorbt_seconds=$(json_field "$work/vectorbt.json" seconds)
vectorbt_version=$(json_field "$work/vectorbt.json" vectorbt_version)
bst_rate=$(echo "$bars * $combinations / $sweep_seconds" | bc)
bst_process_rate=$(echo "$bars * $combinations / $bst_wall_seconds" | bc)
vectorbt_rate=$(echo "$bars * $combinations / $vectorbt_seconds" | bc)
ratio=$(printf '%.2f' "$(echo "scale=4; $bst_rate / $vectorbt_rate" | bc)")
process_ratio=$(printf '%.2f' "$(echo "scale=4; $bst_process_rate / $vectorbt_rate" | bc)")

echo "| date | machine | bars | combinations | bst sweep s | bst process s | vectorbt $vectorbt_version s | bst bar-combinations/s | vectorbt bar-combinations/s | bst / vectorbt | bst process / vectorbt |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
echo "| $(date -u +%F) | $machine | $bars | $combinations | $(printf '%.3f' "$sweep_seconds") | $(printf '%.3f' "$bst_wall_seconds") | $(printf '%.3f' "$vectorbt_seconds") | $bst_rate | $vectorbt_rate | $ratio | $process_ratio |"
