//! The DataFusion backtest against the plain-loop oracle on the real 1-minute samples.
//!
//! The oracle reads its bars straight from the CSV files, so the Parquet import, the
//! DataFusion plan and the fill pass are all checked against code that shares none of them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bst_engine::oracle::{OracleBar, OracleConfig, OracleResult, sma_crossover};
use bst_engine::{BacktestReport, BacktestRequest, Engine, SeriesKey, StrategySpec, TimeRange};
use bst_ingest::{Category, Timeframe, csv_klines, samples, writer};
use datafusion::physical_plan::displayable;

const RELATIVE_TOLERANCE: f64 = 1e-9;

const PARAMETER_PAIRS: [(usize, usize); 6] =
    [(5, 20), (10, 30), (12, 26), (20, 50), (50, 200), (3, 7)];

/// Returns a data directory with the BTCUSDT and ETHUSDT 1-minute samples, shared by the
/// tests.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            let klines = csv_klines::read_kline_csv(&sample_file(symbol)).unwrap();
            writer::write_klines(
                dir.path(),
                Category::Linear,
                symbol,
                Timeframe::Minutes(1),
                &klines,
            )
            .unwrap();
        }
        dir
    })
    .path()
}

fn sample_file(symbol: &str) -> PathBuf {
    samples::require_datasets_dir().join(format!("bybit/klines/{symbol}_1m.csv.gz"))
}

fn oracle_bars(symbol: &str, range: &TimeRange) -> Vec<OracleBar> {
    csv_klines::read_kline_csv(&sample_file(symbol))
        .unwrap()
        .into_iter()
        .filter(|kline| {
            range
                .start_ms
                .is_none_or(|start| kline.open_time_ms >= start)
        })
        .filter(|kline| range.end_ms.is_none_or(|end| kline.open_time_ms < end))
        .map(|kline| OracleBar {
            open_time_ms: kline.open_time_ms,
            open: kline.open,
            high: kline.high,
            low: kline.low,
            close: kline.close,
        })
        .collect()
}

fn request(symbol: &str, fast: usize, slow: usize, range: TimeRange) -> BacktestRequest {
    let mut request = BacktestRequest::new(
        SeriesKey {
            category: Category::Linear,
            symbol: symbol.to_string(),
            timeframe: Timeframe::Minutes(1),
        },
        StrategySpec::SmaCrossover {
            fast_period: fast,
            slow_period: slow,
        },
    );
    request.range = range;
    request
}

fn assert_close(label: &str, got: f64, expected: f64) {
    let scale = expected.abs().max(1e-12);
    assert!(
        (got - expected).abs() / scale <= RELATIVE_TOLERANCE,
        "{label}: engine {got} vs oracle {expected}"
    );
}

fn assert_close_option(label: &str, got: Option<f64>, expected: Option<f64>) {
    match (got, expected) {
        (Some(got), Some(expected)) => assert_close(label, got, expected),
        (None, None) => {}
        _ => panic!("{label}: engine {got:?} vs oracle {expected:?}"),
    }
}

fn assert_same_backtest(label: &str, report: &BacktestReport, oracle: &OracleResult) {
    assert_eq!(
        report.trades.len(),
        oracle.trades.len(),
        "{label}: trade count"
    );
    for (index, (trade, expected)) in report.trades.iter().zip(&oracle.trades).enumerate() {
        let label = format!("{label} trade {index}");
        assert_eq!(
            trade.entry_time_ms, expected.entry_time_ms,
            "{label} entry time"
        );
        assert_eq!(
            trade.exit_time_ms, expected.exit_time_ms,
            "{label} exit time"
        );
        assert_eq!(
            trade.entry_price, expected.entry_price,
            "{label} entry price"
        );
        assert_eq!(trade.exit_price, expected.exit_price, "{label} exit price");
        assert_eq!(
            trade.exit_reason.as_str(),
            expected.exit_reason,
            "{label} exit reason"
        );
        assert_close(
            &format!("{label} quantity"),
            trade.quantity,
            expected.quantity,
        );
        assert_close(&format!("{label} pnl"), trade.pnl, expected.pnl);
        assert_close(
            &format!("{label} commission"),
            trade.commission,
            expected.commission,
        );
    }

    let metrics = &report.metrics;
    assert_close(
        &format!("{label} final capital"),
        metrics.final_capital,
        oracle.final_capital,
    );
    assert_eq!(metrics.total_trades, oracle.total_trades as u64, "{label}");
    assert_eq!(
        metrics.winning_trades, oracle.winning_trades as u64,
        "{label}"
    );
    assert_eq!(
        metrics.losing_trades, oracle.losing_trades as u64,
        "{label}"
    );
    assert_close_option(
        &format!("{label} win rate"),
        metrics.win_rate,
        oracle.win_rate,
    );
    assert_close_option(
        &format!("{label} max drawdown"),
        Some(metrics.max_drawdown),
        oracle.max_drawdown,
    );
    assert_close_option(
        &format!("{label} sharpe"),
        metrics.sharpe_ratio,
        oracle.sharpe_ratio,
    );
    assert_eq!(
        report.equity.len(),
        oracle.equity.len(),
        "{label}: curve length"
    );
}

async fn compare(symbol: &str, fast: usize, slow: usize, range: TimeRange) -> BacktestReport {
    let engine = Engine::open(data_dir()).unwrap();
    let report = engine
        .run_backtest(&request(symbol, fast, slow, range))
        .await
        .unwrap();
    let config = OracleConfig::default();
    let oracle = sma_crossover(&oracle_bars(symbol, &range), fast, slow, &config);
    assert_same_backtest(&format!("{symbol} {fast}/{slow}"), &report, &oracle);
    report
}

#[tokio::test]
async fn btcusdt_matches_oracle() {
    for (fast, slow) in PARAMETER_PAIRS {
        let report = compare("BTCUSDT", fast, slow, TimeRange::default()).await;
        assert_eq!(report.bars, 43_200);
        assert!(
            report.metrics.total_trades > 10,
            "{fast}/{slow} traded too little"
        );
    }
}

#[tokio::test]
async fn ethusdt_matches_oracle() {
    for (fast, slow) in PARAMETER_PAIRS {
        let report = compare("ETHUSDT", fast, slow, TimeRange::default()).await;
        assert!(
            report.metrics.total_trades > 10,
            "{fast}/{slow} traded too little"
        );
    }
}

#[tokio::test]
async fn sub_range_matches_oracle() {
    // 2025-06-10T00:00:00Z to 2025-06-20T00:00:00Z: the range starts with its own warm-up.
    let range = TimeRange {
        start_ms: Some(1_749_513_600_000),
        end_ms: Some(1_750_377_600_000),
    };
    let report = compare("BTCUSDT", 10, 30, range).await;
    assert_eq!(report.bars, 10 * 1_440);
    assert_eq!(report.data_start_ms, 1_749_513_600_000);
    assert_eq!(report.data_end_ms, 1_750_377_600_000 - 60_000);
}

#[tokio::test]
async fn range_without_crossover_keeps_capital() {
    // Find, with the oracle, a 120-bar range in which 10/30 never trades.
    let bars = oracle_bars("BTCUSDT", &TimeRange::default());
    let config = OracleConfig::default();
    let quiet = (0..bars.len() - 120)
        .step_by(60)
        .find(|&first| {
            sma_crossover(&bars[first..first + 120], 10, 30, &config)
                .trades
                .is_empty()
        })
        .expect("a 120-bar range without a crossover");
    let range = TimeRange {
        start_ms: Some(bars[quiet].open_time_ms),
        end_ms: Some(bars[quiet + 120].open_time_ms),
    };

    let report = compare("BTCUSDT", 10, 30, range).await;
    assert!(report.trades.is_empty());
    assert_eq!(report.metrics.final_capital, 10_000.0);
    assert_eq!(report.metrics.total_return, 0.0);
    assert_eq!(report.metrics.win_rate, None);
    assert_eq!(report.metrics.max_drawdown, 0.0);
}

#[tokio::test]
async fn empty_range_is_no_data() {
    let engine = Engine::open(data_dir()).unwrap();
    let range = TimeRange {
        start_ms: Some(1_000_000_000_000),
        end_ms: Some(1_000_000_060_000),
    };
    let error = engine
        .run_backtest(&request("BTCUSDT", 10, 30, range))
        .await
        .unwrap_err();
    assert!(matches!(error, bst_engine::Error::NoData { .. }), "{error}");
}

#[tokio::test]
async fn signal_plan_uses_declared_sort_order() {
    let engine = Engine::open(data_dir()).unwrap();
    let plan = bst_engine::backtest::signal_plan(
        engine.session(),
        engine.data_dir(),
        &request("BTCUSDT", 10, 30, TimeRange::default()),
    )
    .await
    .unwrap()
    .create_physical_plan()
    .await
    .unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    assert!(
        text.contains("BoundedWindowAggExec") || text.contains("WindowAggExec"),
        "{text}"
    );
    assert!(
        !text.contains("SortExec"),
        "the plan re-sorts the series:\n{text}"
    );
}

/// Writes a seeded random walk whose opens gap away from the previous close, so that a fill
/// at the wrong price or bar shows up as a mismatch. Real 1-minute bars open at the previous
/// close, which hides such faults.
fn gapped_series_dir() -> tempfile::TempDir {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next_unit = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1_u64 << 53) as f64
    };
    let start_ms = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let mut close = 100.0_f64;
    let klines: Vec<bst_ingest::Kline> = (0..5_000)
        .map(|index| {
            let open = close * (1.0 + (next_unit() - 0.5) * 0.004);
            close = open * (1.0 + (next_unit() - 0.5) * 0.01);
            bst_ingest::Kline {
                open_time_ms: start_ms + index * 60_000,
                open,
                high: open.max(close) * 1.001,
                low: open.min(close) * 0.999,
                close,
                volume: 1.0,
                turnover: None,
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "GAPUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn gapped_series_matches_oracle() {
    let dir = gapped_series_dir();
    let engine = Engine::open(dir.path()).unwrap();
    let stored = writer::read_series(
        dir.path(),
        Category::Linear,
        "GAPUSDT",
        Timeframe::Minutes(1),
    )
    .unwrap();
    let bars: Vec<OracleBar> = stored
        .iter()
        .map(|kline| OracleBar {
            open_time_ms: kline.open_time_ms,
            open: kline.open,
            high: kline.high,
            low: kline.low,
            close: kline.close,
        })
        .collect();
    for (fast, slow) in PARAMETER_PAIRS {
        let report = engine
            .run_backtest(&request("GAPUSDT", fast, slow, TimeRange::default()))
            .await
            .unwrap();
        let oracle = sma_crossover(&bars, fast, slow, &OracleConfig::default());
        assert_same_backtest(&format!("GAPUSDT {fast}/{slow}"), &report, &oracle);
        assert!(report.metrics.total_trades > 10);
    }
}

/// Oracle signals of a strategy, from the oracle's own indicator loops and crossings.
fn oracle_signals(strategy: &StrategySpec, bars: &[OracleBar]) -> (Vec<bool>, Vec<bool>) {
    use bst_engine::oracle::{OracleSignals, OracleStrategy, strategy_signals};

    let oracle_strategy = match *strategy {
        StrategySpec::SmaCrossover {
            fast_period,
            slow_period,
        } => OracleStrategy::SmaCrossover {
            fast_period,
            slow_period,
        },
        StrategySpec::EmaCrossover {
            fast_period,
            slow_period,
        } => OracleStrategy::EmaCrossover {
            fast_period,
            slow_period,
        },
        StrategySpec::Rsi {
            period,
            oversold,
            overbought,
        } => OracleStrategy::Rsi {
            period,
            oversold,
            overbought,
        },
        StrategySpec::Macd {
            fast_period,
            slow_period,
            signal_period,
        } => OracleStrategy::Macd {
            fast_period,
            slow_period,
            signal_period,
        },
        StrategySpec::BollingerBands { period, std_dev } => {
            OracleStrategy::BollingerBands { period, std_dev }
        }
        StrategySpec::Expression(_) => unreachable!("expression strategies have their own tests"),
    };
    match strategy_signals(bars, &oracle_strategy) {
        OracleSignals::Crossings { long, short } => (long, short),
        OracleSignals::Levels { .. } => unreachable!("built-in strategies emit crossings"),
    }
}

#[tokio::test]
async fn every_strategy_matches_oracle() {
    let strategies = [
        ("ema_crossover", serde_json::json!({})),
        (
            "ema_crossover",
            serde_json::json!({"fast_period": 5, "slow_period": 40}),
        ),
        ("rsi", serde_json::json!({})),
        (
            "rsi",
            serde_json::json!({"period": 7, "oversold": 25, "overbought": 75}),
        ),
        ("macd", serde_json::json!({})),
        ("bollinger_bands", serde_json::json!({})),
        (
            "bollinger_bands",
            serde_json::json!({"period": 30, "std_dev": 1.5}),
        ),
    ];
    let engine = Engine::open(data_dir()).unwrap();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let bars = oracle_bars(symbol, &TimeRange::default());
        for (strategy_type, params) in &strategies {
            let strategy = StrategySpec::from_params(strategy_type, params).unwrap();
            let mut request = request(symbol, 1, 2, TimeRange::default());
            request.strategy = strategy.clone();
            let report = engine.run_backtest(&request).await.unwrap();

            let (long_signals, short_signals) = oracle_signals(&strategy, &bars);
            let oracle = bst_engine::oracle::long_only(
                &bars,
                &long_signals,
                &short_signals,
                &OracleConfig::default(),
            );
            let label = format!("{symbol} {strategy_type} {params}");
            assert_same_backtest(&label, &report, &oracle);
            assert!(report.metrics.total_trades > 5, "{label} traded too little");
        }
    }
}
