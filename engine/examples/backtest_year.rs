//! Benchmark: backtests over one year of seeded synthetic 1-minute bars (525,600 rows).
//!
//! Writes the bars to a temporary dataset (not timed), then times each strategy's backtest
//! from the DataFusion plan to the metrics, and prints the peak resident memory of the
//! process (VmHWM, Linux only). Run it with a release build:
//!
//! ```sh
//! cargo run --release --example backtest_year
//! ```
//!
//! `BST_BENCH_BARS` changes the number of bars (default 525,600).

use std::time::Instant;

use bst_engine::orders::strategy_and_orders;
use bst_engine::{BacktestRequest, Engine, SeriesKey};
use bst_ingest::{Category, Kline, Timeframe, writer};
use serde_json::json;

/// 2025-01-01T00:00:00Z.
const START_MS: i64 = 1_735_689_600_000;

/// Returns a seeded random walk of 1-minute bars around 60,000 with 0.05 % steps.
fn synthetic_bars(count: usize) -> Vec<Kline> {
    let mut state: u64 = 0x5EED_2025;
    let mut next_unit = move || {
        // SplitMix64 mapped to [0, 1).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1_u64 << 53) as f64
    };
    let mut close = 60_000.0_f64;
    (0..count)
        .map(|index| {
            let open = close;
            close = open * (1.0 + (next_unit() - 0.5) * 0.001);
            let high = open.max(close) * (1.0 + next_unit() * 0.0003);
            let low = open.min(close) * (1.0 - next_unit() * 0.0003);
            Kline {
                open_time_ms: START_MS + index as i64 * 60_000,
                open,
                high,
                low,
                close,
                volume: 1.0 + next_unit() * 10.0,
                turnover: None,
            }
        })
        .collect()
}

fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = match std::env::var("BST_BENCH_BARS") {
        Ok(text) => text.parse()?,
        Err(_) => 525_600,
    };
    let dir = tempfile::tempdir()?;
    let bars = synthetic_bars(count);
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "SYNTHUSDT",
        Timeframe::Minutes(1),
        &bars,
    )?;
    drop(bars);
    let engine = Engine::open(dir.path())?;
    let series = SeriesKey {
        category: Category::Linear,
        symbol: "SYNTHUSDT".to_string(),
        timeframe: Timeframe::Minutes(1),
    };

    let cases = [
        (
            "sma_crossover",
            json!({"fast_period": 10, "slow_period": 30}),
        ),
        (
            "sma_crossover",
            json!({
                "fast_period": 10, "slow_period": 30, "direction": "both",
                "stop_loss": 0.01, "take_profit": 0.02, "slippage": 0.0002,
                "funding_rate": 0.0001
            }),
        ),
        ("macd", json!({})),
        (
            "expression",
            json!({
                "entry_long": "close > sma(close, 50) AND rsi(close, 14) < 70",
                "exit_long": "close < lag(lowest(low, 20), 1)"
            }),
        ),
    ];
    println!("bars: {count}");
    for (strategy_type, config) in cases {
        let (strategy, orders) = strategy_and_orders(strategy_type, &config)?;
        let mut request = BacktestRequest::new(series.clone(), strategy);
        request.orders = orders;
        if config.get("direction").is_some() {
            request.leverage = 2.0;
        }
        let started = Instant::now();
        let report = engine.run_backtest(&request).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{strategy_type} {config}: {seconds:.3} s, {:.1} M bars/s, {} trades, final capital \
             {:.2}",
            report.bars as f64 / seconds / 1e6,
            report.metrics.total_trades,
            report.metrics.final_capital
        );
    }
    match peak_resident_mib() {
        Some(mib) => println!("peak resident memory: {mib:.0} MiB"),
        None => println!("peak resident memory: not available on this platform"),
    }
    Ok(())
}
