//! Seeded property test: random windows of the real 1- and 5-minute samples, random
//! strategies and random order options, each run through the DataFusion engine and through
//! the plain-loop oracle, which must agree trade for trade and in every metric.
//!
//! Environment variables:
//! - `BST_PROPERTY_CASES`: number of cases (default 40);
//! - `BST_PROPERTY_WINDOW_BARS`: largest window, in bars (default 3000);
//! - `BST_PROPERTY_SEED`: seed of the case generator (default 20261204). A failure message
//!   names its case, and the same seed replays the same cases.

use std::collections::HashMap;
use std::path::PathBuf;

use bst_engine::backtest::BacktestReport;
use bst_engine::oracle::indicators::{average_true_range, relative_strength_index};
use bst_engine::oracle::{
    self, OracleBar, OracleConfig, OracleDirection, OracleOrders, OracleReport, OracleSignals,
    OracleStrategy, simple_moving_average,
};
use bst_engine::orders::strategy_and_orders;
use bst_engine::{BacktestRequest, Engine, SeriesKey, TimeRange};
use bst_ingest::{Category, Kline, Timeframe, csv_klines, samples, writer};
use serde_json::{Value, json};

const RELATIVE_TOLERANCE: f64 = 1e-9;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("invalid {name} {text:?}: expected a whole number")),
        Err(_) => default,
    }
}

/// SplitMix64: a small seeded generator, so a seed replays the same cases on every platform.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a whole number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// Returns a number in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1_u64 << 53) as f64;
        low + unit * (high - low)
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.uniform(0.0, 1.0) < probability
    }
}

/// One stored series: its key, its bars as the oracle reads them from the CSV file.
struct Series {
    key: SeriesKey,
    bars: Vec<OracleBar>,
}

fn load_series(data_dir: &std::path::Path) -> Vec<Series> {
    let mut all = Vec::new();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        for minutes in [1_u32, 5] {
            let path: PathBuf = samples::require_datasets_dir()
                .join(format!("bybit/klines/{symbol}_{minutes}m.csv.gz"));
            let klines: Vec<Kline> = csv_klines::read_kline_csv(&path).unwrap();
            let timeframe = Timeframe::Minutes(minutes);
            writer::write_klines(data_dir, Category::Linear, symbol, timeframe, &klines).unwrap();
            let bars = klines
                .iter()
                .map(|kline| OracleBar {
                    open_time_ms: kline.open_time_ms,
                    open: kline.open,
                    high: kline.high,
                    low: kline.low,
                    close: kline.close,
                })
                .collect();
            all.push(Series {
                key: SeriesKey {
                    category: Category::Linear,
                    symbol: symbol.to_string(),
                    timeframe,
                },
                bars,
            });
        }
    }
    all
}

/// Oracle signals of a window's bars.
type SignalFunction = Box<dyn Fn(&[OracleBar]) -> OracleSignals>;

/// A strategy for both sides: the engine's config and the oracle's signals over a window.
struct StrategyCase {
    strategy_type: &'static str,
    params: Value,
    /// Oracle signals for the window's bars, computed without the engine's plan.
    signals: SignalFunction,
}

fn closes(bars: &[OracleBar]) -> Vec<f64> {
    bars.iter().map(|bar| bar.close).collect()
}

/// `values[t - 1]`, or `None` on the first bar.
fn previous(values: &[Option<f64>]) -> Vec<Option<f64>> {
    std::iter::once(None)
        .chain(values[..values.len().saturating_sub(1)].iter().copied())
        .collect()
}

/// Max (or min) of the last `period` values, `None` during warm-up.
fn rolling_extreme(values: &[f64], period: usize, highest: bool) -> Vec<Option<f64>> {
    (0..values.len())
        .map(|t| {
            (t + 1 >= period).then(|| {
                let window = &values[t + 1 - period..=t];
                if highest {
                    window.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    window.iter().copied().fold(f64::INFINITY, f64::min)
                }
            })
        })
        .collect()
}

/// Applies `condition` where both operands are defined; false elsewhere.
fn compare(
    a: &[Option<f64>],
    b: &[Option<f64>],
    condition: impl Fn(f64, f64) -> bool,
) -> Vec<bool> {
    a.iter()
        .zip(b)
        .map(|(a, b)| matches!((a, b), (Some(a), Some(b)) if condition(*a, *b)))
        .collect()
}

/// Builds the case of a built-in strategy from the engine's parameters and the oracle's
/// strategy.
fn built_in(strategy_type: &'static str, params: Value, strategy: OracleStrategy) -> StrategyCase {
    StrategyCase {
        strategy_type,
        params,
        signals: Box::new(move |bars| oracle::strategy_signals(bars, &strategy)),
    }
}

fn random_strategy(random: &mut Random) -> StrategyCase {
    match random.between(0, 9) {
        0 => {
            let fast = random.between(2, 20) as usize;
            let slow = random.between(fast as u64 + 1, 60) as usize;
            built_in(
                "sma_crossover",
                json!({"fast_period": fast, "slow_period": slow}),
                OracleStrategy::SmaCrossover {
                    fast_period: fast,
                    slow_period: slow,
                },
            )
        }
        1 => {
            let fast = random.between(2, 20) as usize;
            let slow = random.between(fast as u64 + 1, 60) as usize;
            built_in(
                "ema_crossover",
                json!({"fast_period": fast, "slow_period": slow}),
                OracleStrategy::EmaCrossover {
                    fast_period: fast,
                    slow_period: slow,
                },
            )
        }
        2 => {
            let period = random.between(2, 20) as usize;
            let oversold = random.between(15, 45) as f64;
            let overbought = random.between(55, 85) as f64;
            built_in(
                "rsi",
                json!({"period": period, "oversold": oversold, "overbought": overbought}),
                OracleStrategy::Rsi {
                    period,
                    oversold,
                    overbought,
                },
            )
        }
        3 => {
            let fast = random.between(3, 12) as usize;
            let slow = random.between(fast as u64 + 1, 30) as usize;
            let signal = random.between(2, 10) as usize;
            built_in(
                "macd",
                json!({"fast_period": fast, "slow_period": slow, "signal_period": signal}),
                OracleStrategy::Macd {
                    fast_period: fast,
                    slow_period: slow,
                    signal_period: signal,
                },
            )
        }
        4 => {
            let period = random.between(5, 30) as usize;
            let std_dev = (random.uniform(1.0, 2.5) * 100.0).round() / 100.0;
            built_in(
                "bollinger_bands",
                json!({"period": period, "std_dev": std_dev}),
                OracleStrategy::BollingerBands { period, std_dev },
            )
        }
        5 => {
            let period = random.between(3, 40) as usize;
            StrategyCase {
                strategy_type: "expression",
                params: json!({
                    "entry_long": format!("close > sma(close, {period})"),
                    "exit_long": format!("close < sma(close, {period})"),
                    "entry_short": format!("close < sma(close, {period})"),
                    "exit_short": format!("close > sma(close, {period})"),
                }),
                signals: Box::new(move |bars| {
                    let closes = closes(bars);
                    let close: Vec<Option<f64>> = closes.iter().copied().map(Some).collect();
                    let sma = simple_moving_average(&closes, period);
                    let above = compare(&close, &sma, |a, b| a > b);
                    let below = compare(&close, &sma, |a, b| a < b);
                    OracleSignals::Levels {
                        entry_long: above.clone(),
                        exit_long: below.clone(),
                        entry_short: below,
                        exit_short: above,
                    }
                }),
            }
        }
        6 => {
            // Momentum: a close more than `threshold` above the previous one.
            let threshold = 1.0 + random.between(1, 20) as f64 / 10_000.0;
            StrategyCase {
                strategy_type: "expression",
                params: json!({
                    "entry_long": format!("close > {threshold} * lag(close, 1)"),
                    "exit_long": "close < lag(close, 1)",
                    "entry_short": format!("close * {threshold} < lag(close, 1)"),
                    "exit_short": "close > lag(close, 1)",
                }),
                signals: Box::new(move |bars| {
                    let close: Vec<Option<f64>> = bars.iter().map(|bar| Some(bar.close)).collect();
                    let before = previous(&close);
                    OracleSignals::Levels {
                        entry_long: compare(&close, &before, |now, then| now > threshold * then),
                        exit_long: compare(&close, &before, |now, then| now < then),
                        entry_short: compare(&close, &before, |now, then| now * threshold < then),
                        exit_short: compare(&close, &before, |now, then| now > then),
                    }
                }),
            }
        }
        7 => {
            let period = random.between(3, 30) as usize;
            let low = random.between(20, 45) as f64;
            let high = random.between(55, 80) as f64;
            StrategyCase {
                strategy_type: "expression",
                params: json!({
                    "entry_long": format!("rsi(close, {period}) < {low}"),
                    "exit_long": format!("rsi(close, {period}) > {high}"),
                    "entry_short": format!("rsi(close, {period}) > {high}"),
                    "exit_short": format!("rsi(close, {period}) < {low}"),
                }),
                signals: Box::new(move |bars| {
                    let rsi = relative_strength_index(&closes(bars), period);
                    let level = |value: f64| vec![Some(value); bars.len()];
                    let oversold = compare(&rsi, &level(low), |a, b| a < b);
                    let overbought = compare(&rsi, &level(high), |a, b| a > b);
                    OracleSignals::Levels {
                        entry_long: oversold.clone(),
                        exit_long: overbought.clone(),
                        entry_short: overbought,
                        exit_short: oversold,
                    }
                }),
            }
        }
        8 => {
            // Volatility breakout: a bar body larger than a multiple of the ATR.
            let period = random.between(2, 30) as usize;
            let multiple = random.between(2, 8) as f64 / 4.0;
            let threshold = format!("{multiple} * atr(high, low, close, {period})");
            StrategyCase {
                strategy_type: "expression",
                params: json!({
                    "entry_long": format!("close - open > {threshold}"),
                    "exit_long": format!("open - close > {threshold}"),
                    "entry_short": format!("open - close > {threshold}"),
                    "exit_short": format!("close - open > {threshold}"),
                }),
                signals: Box::new(move |bars| {
                    let highs: Vec<f64> = bars.iter().map(|bar| bar.high).collect();
                    let lows: Vec<f64> = bars.iter().map(|bar| bar.low).collect();
                    let atr = average_true_range(&highs, &lows, &closes(bars), period);
                    let rising: Vec<Option<f64>> =
                        bars.iter().map(|bar| Some(bar.close - bar.open)).collect();
                    let falling: Vec<Option<f64>> =
                        bars.iter().map(|bar| Some(bar.open - bar.close)).collect();
                    let up = compare(&rising, &atr, |body, range| body > multiple * range);
                    let down = compare(&falling, &atr, |body, range| body > multiple * range);
                    OracleSignals::Levels {
                        entry_long: up.clone(),
                        exit_long: down.clone(),
                        entry_short: down,
                        exit_short: up,
                    }
                }),
            }
        }
        _ => {
            // Channel breakout with nested window calls.
            let period = random.between(5, 40) as usize;
            StrategyCase {
                strategy_type: "expression",
                params: json!({
                    "entry_long": format!("close > lag(highest(high, {period}), 1)"),
                    "exit_long": format!("close < lag(lowest(low, {period}), 1)"),
                    "entry_short": format!("close < lag(lowest(low, {period}), 1)"),
                    "exit_short": format!("close > lag(highest(high, {period}), 1)"),
                }),
                signals: Box::new(move |bars| {
                    let close: Vec<Option<f64>> = bars.iter().map(|bar| Some(bar.close)).collect();
                    let highs: Vec<f64> = bars.iter().map(|bar| bar.high).collect();
                    let lows: Vec<f64> = bars.iter().map(|bar| bar.low).collect();
                    let upper = previous(&rolling_extreme(&highs, period, true));
                    let lower = previous(&rolling_extreme(&lows, period, false));
                    let breaks_up = compare(&close, &upper, |a, b| a > b);
                    let breaks_down = compare(&close, &lower, |a, b| a < b);
                    OracleSignals::Levels {
                        entry_long: breaks_up.clone(),
                        exit_long: breaks_down.clone(),
                        entry_short: breaks_down,
                        exit_short: breaks_up,
                    }
                }),
            }
        }
    }
}

/// Random account settings and order options, as config keys and as the oracle's structs.
fn random_orders(random: &mut Random) -> (HashMap<&'static str, Value>, f64, f64, OracleOrders) {
    let mut keys = HashMap::new();
    let mut orders = OracleOrders::default();
    let direction = ["long", "short", "both"][random.between(0, 2) as usize];
    keys.insert("direction", json!(direction));
    orders.direction = match direction {
        "long" => OracleDirection::Long,
        "short" => OracleDirection::Short,
        _ => OracleDirection::Both,
    };
    let position_size = if random.chance(0.5) {
        1.0
    } else {
        random.uniform(0.1, 1.0)
    };
    keys.insert("position_size", json!(position_size));
    // Leverage up to 100 makes liquidations likely on minute bars.
    let leverage = match random.between(0, 3) {
        0 => 1.0,
        1 => random.uniform(1.0, 10.0),
        _ => random.uniform(10.0, 100.0),
    };
    if random.chance(0.5) {
        orders.maintenance_margin_rate = random.uniform(0.0, 0.5 / leverage);
        keys.insert(
            "maintenance_margin_rate",
            json!(orders.maintenance_margin_rate),
        );
    }
    if random.chance(0.5) {
        orders.stop_loss = Some(random.uniform(0.0005, 0.02));
        keys.insert("stop_loss", json!(orders.stop_loss));
    }
    if random.chance(0.5) {
        orders.take_profit = Some(random.uniform(0.0005, 0.03));
        keys.insert("take_profit", json!(orders.take_profit));
    }
    if random.chance(0.5) {
        orders.slippage = random.uniform(0.0, 0.001);
        keys.insert("slippage", json!(orders.slippage));
    }
    if random.chance(0.5) {
        orders.funding_rate = Some(random.uniform(-0.001, 0.001));
        keys.insert("funding_rate", json!(orders.funding_rate));
    }
    (keys, position_size, leverage, orders)
}

fn assert_close(label: &str, got: f64, expected: f64) {
    let scale = expected.abs().max(1e-9);
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

fn assert_same(label: &str, report: &BacktestReport, oracle: &OracleReport) {
    assert_eq!(
        report.trades.len(),
        oracle.trades.len(),
        "{label}: trade count"
    );
    for (index, (trade, expected)) in report.trades.iter().zip(&oracle.trades).enumerate() {
        let label = format!("{label} trade {index}");
        assert_eq!(trade.side.as_str(), expected.side, "{label} side");
        assert_eq!(trade.entry_time_ms, expected.entry_time_ms, "{label} entry");
        assert_eq!(trade.exit_time_ms, expected.exit_time_ms, "{label} exit");
        assert_eq!(
            trade.exit_reason.as_str(),
            expected.exit_reason,
            "{label} exit reason"
        );
        let pairs = [
            ("entry price", trade.entry_price, expected.entry_price),
            ("exit price", trade.exit_price, expected.exit_price),
            ("quantity", trade.quantity, expected.quantity),
            ("pnl", trade.pnl, expected.pnl),
            ("pnl_pct", trade.pnl_pct, expected.pnl_pct),
            ("commission", trade.commission, expected.commission),
            ("funding", trade.funding, expected.funding),
        ];
        for (name, got, want) in pairs {
            assert_close(&format!("{label} {name}"), got, want);
        }
    }

    assert_eq!(report.equity.len(), oracle.equity.len(), "{label}: bars");
    for (index, (point, (equity, drawdown))) in report
        .equity
        .iter()
        .zip(oracle.equity.iter().zip(&oracle.drawdown))
        .enumerate()
    {
        assert_close(
            &format!("{label} equity at bar {index}"),
            point.equity,
            *equity,
        );
        assert!(
            (point.drawdown - drawdown).abs() <= 1e-7,
            "{label} drawdown at bar {index}: engine {} vs oracle {drawdown}",
            point.drawdown
        );
    }

    let got = &report.metrics;
    let want = &oracle.metrics;
    let label = |name: &str| format!("{label} {name}");
    assert_close(
        &label("final_capital"),
        got.final_capital,
        want.final_capital,
    );
    assert_close(&label("total_return"), got.total_return, want.total_return);
    assert_eq!(
        got.total_trades as usize,
        want.total_trades,
        "{}",
        label("total_trades")
    );
    assert_eq!(
        got.winning_trades as usize,
        want.winning_trades,
        "{}",
        label("winning")
    );
    assert_eq!(
        got.losing_trades as usize,
        want.losing_trades,
        "{}",
        label("losing")
    );
    assert_close_option(&label("win_rate"), got.win_rate, want.win_rate);
    assert_close_option(&label("sharpe_ratio"), got.sharpe_ratio, want.sharpe_ratio);
    assert_close_option(
        &label("sortino_ratio"),
        got.sortino_ratio,
        want.sortino_ratio,
    );
    assert_close_option(&label("calmar_ratio"), got.calmar_ratio, want.calmar_ratio);
    assert!(
        (got.max_drawdown - want.max_drawdown).abs() <= 1e-7,
        "{}: engine {} vs oracle {}",
        label("max_drawdown"),
        got.max_drawdown,
        want.max_drawdown
    );
    assert_eq!(
        got.max_drawdown_duration_bars as usize,
        want.max_drawdown_duration_bars,
        "{}",
        label("max_drawdown_duration_bars")
    );
    assert_eq!(
        got.max_drawdown_duration_seconds,
        want.max_drawdown_duration_seconds,
        "{}",
        label("max_drawdown_duration_seconds")
    );
    assert_close_option(
        &label("profit_factor"),
        got.profit_factor,
        want.profit_factor,
    );
    assert_close_option(&label("expectancy"), got.expectancy, want.expectancy);
    assert_close_option(
        &label("avg_trade_pct"),
        got.avg_trade_pct,
        want.avg_trade_pct,
    );
    assert_close_option(&label("largest_win"), got.largest_win, want.largest_win);
    assert_close_option(&label("largest_loss"), got.largest_loss, want.largest_loss);
    assert_close(&label("exposure_pct"), got.exposure_pct, want.exposure_pct);
    assert_close(
        &label("buy_and_hold_return"),
        got.buy_and_hold_return,
        want.buy_and_hold_return,
    );
    assert_close(
        &label("total_commission"),
        got.total_commission,
        want.total_commission,
    );
    assert!(
        (got.total_funding - want.total_funding).abs() <= 1e-9 * want.total_commission.max(1.0),
        "{}: engine {} vs oracle {}",
        label("total_funding"),
        got.total_funding,
        want.total_funding
    );
    assert_eq!(
        got.liquidations as usize,
        want.liquidations,
        "{}",
        label("liquidations")
    );
}

#[tokio::test]
async fn random_cases_match_oracle() {
    let cases = env_number("BST_PROPERTY_CASES", 40);
    let max_window = env_number("BST_PROPERTY_WINDOW_BARS", 3_000).max(50) as usize;
    let seed = env_number("BST_PROPERTY_SEED", 20_261_204);

    let dir = tempfile::tempdir().unwrap();
    let all_series = load_series(dir.path());
    let engine = Engine::open(dir.path()).unwrap();
    let mut random = Random(seed);
    let mut totals = HashMap::<&str, usize>::new();

    for case in 0..cases {
        let series = &all_series[random.between(0, all_series.len() as u64 - 1) as usize];
        let length = random.between(50, max_window.min(series.bars.len()) as u64) as usize;
        let start = random.between(0, (series.bars.len() - length) as u64) as usize;
        let window = &series.bars[start..start + length];
        let strategy = random_strategy(&mut random);
        let (order_keys, position_size, leverage, orders) = random_orders(&mut random);
        let commission = if random.chance(0.2) {
            0.0
        } else {
            random.uniform(0.0, 0.001)
        };

        let mut config = strategy.params.clone();
        let object = config.as_object_mut().unwrap();
        for (key, value) in &order_keys {
            object.insert((*key).to_string(), value.clone());
        }
        let label = format!(
            "case {case} (seed {seed}): {} {} bars {start}..{} {} {config} leverage {leverage} \
             commission {commission}",
            series.key.symbol,
            series.key.timeframe,
            start + length,
            strategy.strategy_type,
        );

        let (spec, engine_orders) = strategy_and_orders(strategy.strategy_type, &config)
            .unwrap_or_else(|error| panic!("{label}: {error}"));
        let mut request = BacktestRequest::new(series.key.clone(), spec);
        request.range = TimeRange {
            start_ms: Some(window[0].open_time_ms),
            end_ms: Some(window[length - 1].open_time_ms + 1),
        };
        request.orders = engine_orders;
        request.leverage = leverage;
        request.commission = commission;
        let report = engine
            .run_backtest(&request)
            .await
            .unwrap_or_else(|error| panic!("{label}: {error}"));

        let oracle_config = OracleConfig {
            initial_capital: request.initial_capital,
            commission,
            position_size,
            leverage,
            bars_per_year: series.key.timeframe.bars_per_year(),
        };
        let signals = (strategy.signals)(window);
        let expected = oracle::backtest(window, &signals, &oracle_config, &orders);
        assert_same(&label, &report, &expected);

        *totals.entry("trades").or_default() += report.trades.len();
        for trade in &report.trades {
            *totals.entry(trade.exit_reason.as_str()).or_default() += 1;
            *totals.entry(trade.side.as_str()).or_default() += 1;
        }
    }

    eprintln!("{cases} cases, totals {totals:?}");
    // The defaults must exercise every exit and both sides, or the test proves little.
    if cases >= 40 {
        for key in [
            "signal",
            "stop_loss",
            "take_profit",
            "liquidation",
            "end_of_data",
            "long",
            "short",
        ] {
            assert!(
                totals.get(key).copied().unwrap_or(0) > 0,
                "no {key} trade in {cases} cases: {totals:?}"
            );
        }
    }
}
