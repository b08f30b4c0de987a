#!/usr/bin/env bash
# Times single backtests over one year of seeded synthetic 1-minute bars (525,600 rows) and
# prints each run's time and the peak resident memory of the process.
#
# What is timed: each backtest from the DataFusion plan to the metrics, with the bars already
# in a Parquet dataset. Not timed: building the release example, generating and writing the
# bars.
#
# Usage: benches/backtest_year.sh
# Optional: BST_BENCH_BARS (default 525600), BST_RELEASE_TARGET_DIR (default
# ~/.cache/bst-release).
set -euo pipefail

cd "$(dirname "$0")/.."
target_dir=${BST_RELEASE_TARGET_DIR:-$HOME/.cache/bst-release}
# Building the whole workspace keeps one feature set, so the release dependencies build once.
CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet --workspace --bins --examples
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$target_dir/release/examples/backtest_year"
