//! Expression strategies end to end: SQL conditions over a stored series, planned by
//! DataFusion and filled by the simulation, plus the errors a bad condition gets.

use bst_engine::orders::strategy_and_orders;
use bst_engine::simulate::{ExitReason, Side};
use bst_engine::{BacktestRequest, Engine, Error, SeriesKey};
use bst_ingest::{Category, Kline, Timeframe, writer};
use serde_json::json;

const MINUTE_MS: i64 = 60_000;
/// 2025-06-01T00:00:00Z.
const START_MS: i64 = 1_748_736_000_000;

fn series() -> SeriesKey {
    SeriesKey {
        category: Category::Linear,
        symbol: "EXPRUSDT".to_string(),
        timeframe: Timeframe::Minutes(1),
    }
}

/// Writes bars `(open, high, low, close)` one minute apart and opens an engine over them.
fn engine_with(bars: &[(f64, f64, f64, f64)]) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let klines: Vec<Kline> = bars
        .iter()
        .enumerate()
        .map(|(index, &(open, high, low, close))| Kline {
            open_time_ms: START_MS + index as i64 * MINUTE_MS,
            open,
            high,
            low,
            close,
            volume: 1.0,
            turnover: None,
        })
        .collect();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "EXPRUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    (dir, engine)
}

fn request(config: serde_json::Value) -> BacktestRequest {
    let (strategy, orders) = strategy_and_orders("expression", &config).unwrap();
    let mut request = BacktestRequest::new(series(), strategy);
    request.orders = orders;
    request
}

const FIVE_BARS: [(f64, f64, f64, f64); 5] = [
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 106.0, 100.0, 105.0),
    (108.0, 110.0, 107.0, 109.0),
    (109.0, 109.0, 103.0, 104.0),
    (103.0, 104.0, 101.0, 102.0),
];

#[tokio::test]
async fn lagged_close_conditions_trade_once() {
    let (_dir, engine) = engine_with(&FIVE_BARS);
    let report = engine
        .run_backtest(&request(json!({
            "entry_long": "close > 1.04 * lag(close, 1)",
            "exit_long": "close < lag(close, 1)",
        })))
        .await
        .unwrap();
    assert_eq!(report.trades.len(), 1);
    let trade = &report.trades[0];
    assert_eq!(trade.side, Side::Long);
    assert_eq!(trade.entry_price, 108.0);
    assert_eq!(trade.exit_price, 103.0);
    assert_eq!(trade.entry_time_ms, START_MS + 2 * MINUTE_MS);
    assert_eq!(trade.exit_time_ms, START_MS + 4 * MINUTE_MS);
    assert_eq!(trade.exit_reason, ExitReason::Signal);
}

#[tokio::test]
async fn short_side_mirrors_conditions() {
    let (_dir, engine) = engine_with(&FIVE_BARS);
    let report = engine
        .run_backtest(&request(json!({
            "entry_short": "close < lag(close, 1)",
            "direction": "short",
        })))
        .await
        .unwrap();
    // Bar 3 closes below bar 2: short at bar 4's open (103), closed at its close (102).
    assert_eq!(report.trades.len(), 1);
    let trade = &report.trades[0];
    assert_eq!(trade.side, Side::Short);
    assert_eq!(trade.entry_price, 103.0);
    assert_eq!(trade.exit_price, 102.0);
    assert_eq!(trade.exit_reason, ExitReason::EndOfData);
    assert!(trade.pnl > 0.0, "{}", trade.pnl);
}

#[tokio::test]
async fn nested_window_calls_plan() {
    // Closes rise by one per bar, so the SMA(2) rises too: sma(close, 2) > lag(sma(close, 2),
    // 1) is first true on bar 2 (bar 1 has the first SMA, bar 2 the first lag of it).
    let bars: Vec<(f64, f64, f64, f64)> = (0..6)
        .map(|index| {
            let price = 100.0 + f64::from(index);
            (price, price, price, price)
        })
        .collect();
    let (_dir, engine) = engine_with(&bars);
    let report = engine
        .run_backtest(&request(json!({
            "entry_long": "sma(close, 2) > lag(sma(close, 2), 1)",
        })))
        .await
        .unwrap();
    assert_eq!(report.trades.len(), 1);
    assert_eq!(report.trades[0].entry_time_ms, START_MS + 3 * MINUTE_MS);
    assert_eq!(report.trades[0].entry_price, 103.0);
}

#[tokio::test]
async fn invalid_conditions_are_named() {
    let (_dir, engine) = engine_with(&FIVE_BARS);
    let cases = [
        ("close > nonexistent_column", "entry_long"),
        ("close +", "entry_long"),
        ("close + 1", "entry_long"),
        ("close > lead(close, 1)", "entry_long"),
        ("close > lag(close, -1)", "entry_long"),
        ("close > avg(close) OVER (ORDER BY open_time)", "entry_long"),
        ("close > (SELECT max(close) FROM klines)", "entry_long"),
        ("close > sum(close)", "entry_long"),
        ("", "entry_long"),
    ];
    for (text, expected_name) in cases {
        let request = request(json!({ "entry_long": text }));
        let error = engine.run_backtest(&request).await.unwrap_err();
        let check = engine.check_strategy(&request.strategy).unwrap_err();
        for error in [&error, &check] {
            match error {
                Error::InvalidParameter { name, message } => {
                    assert_eq!(name, expected_name, "{text}: {message}");
                    assert!(message.contains(&format!("{text:?}")), "{message}");
                }
                other => panic!("expected InvalidParameter for {text:?}, got {other}"),
            }
        }
    }
}

#[tokio::test]
async fn look_ahead_names_the_reason() {
    let (_dir, engine) = engine_with(&FIVE_BARS);
    let request = request(json!({ "entry_long": "close > lead(close, 1)" }));
    let error = engine.check_strategy(&request.strategy).unwrap_err();
    assert!(error.to_string().contains("reads later bars"), "{error}");
}

#[tokio::test]
async fn direction_needs_its_entry() {
    let error = request(json!({ "entry_long": "close > 0", "direction": "short" }))
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("entry_short"), "{error}");
    let error = request(json!({ "entry_short": "close > 0", "direction": "both" }))
        .validate()
        .unwrap_err();
    assert!(error.to_string().contains("entry_long"), "{error}");
}
