//! The deflated Sharpe ratio of a sweep's best combination (Bailey and Lopez de Prado, 2014),
//! recomputed for tests without the engine's code. The normal distribution comes from a plain
//! series, and the best combination's per-bar returns from the plain-loop oracle.
//!
//! The inputs follow the sweep's definition. The number of trials N counts every evaluated
//! combination, also those whose Sharpe ratio is null. The variance V is the sample variance
//! (denominator n - 1) of the per-bar Sharpe ratios that are not null. Then
//! `SR0 = sqrt(V) ((1 - g) Z(1 - 1/N) + g Z(1 - 1/(N e)))`, with g the Euler-Mascheroni
//! constant, and `DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))`
//! with T returns and their population skewness and (non-excess) kurtosis.
//!
//! Include it with `#[path = "support/deflated_sharpe.rs"] mod deflated_sharpe;`.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use bst_engine::oracle::{self, OracleBar, OracleConfig, OracleOrders, OracleStrategy};
use bst_ingest::{csv_klines, samples};

/// Bars per year of 1-minute bars.
pub const MINUTE_BARS_PER_YEAR: f64 = 525_600.0;

/// Reads the bars of a sample file (such as `BTCUSDT_1m.csv.gz`) whose open time is in
/// `[start_ms, end_ms)`.
pub fn sample_bars(file: &str, start_ms: i64, end_ms: i64) -> Vec<OracleBar> {
    let path: PathBuf = samples::require_datasets_dir()
        .join("bybit/klines")
        .join(file);
    csv_klines::read_kline_csv(&path)
        .unwrap()
        .into_iter()
        .filter(|kline| (start_ms..end_ms).contains(&kline.open_time_ms))
        .map(|kline| OracleBar {
            open_time_ms: kline.open_time_ms,
            open: kline.open,
            high: kline.high,
            low: kline.low,
            close: kline.close,
        })
        .collect()
}

/// Returns the per-bar returns and the annualized Sharpe ratio of the oracle's backtest of
/// `strategy` with the default account (10,000 of capital, all of the equity per entry, no
/// leverage, long only) and `commission` per leg.
pub fn oracle_returns(
    bars: &[OracleBar],
    strategy: &OracleStrategy,
    commission: f64,
    bars_per_year: f64,
) -> (Vec<f64>, Option<f64>) {
    let config = OracleConfig {
        initial_capital: 10_000.0,
        commission,
        position_size: 1.0,
        leverage: 1.0,
        bars_per_year,
    };
    let signals = oracle::strategy_signals(bars, strategy);
    let report = oracle::backtest(bars, &signals, &config, &OracleOrders::default());
    let returns = report
        .equity
        .windows(2)
        .map(|pair| pair[1] / pair[0] - 1.0)
        .collect();
    (returns, report.metrics.sharpe_ratio)
}

/// Standard normal cumulative distribution from the series
/// `Phi(x) = 1/2 + phi(x) (x + x^3/3 + x^5/(3 5) + ...)`. Its terms all have the sign of x, so
/// the sum keeps full precision. Over [-10, 10] it is within 1e-15 (absolute) of
/// `erfc(-x / sqrt(2)) / 2` from Python 3's `math.erfc`.
pub fn normal_cdf(x: f64) -> f64 {
    if x.abs() > 10.0 {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let mut term = x;
    let mut sum = x;
    let mut denominator = 1.0;
    loop {
        denominator += 2.0;
        term *= x * x / denominator;
        if sum + term == sum {
            break;
        }
        sum += term;
    }
    let density = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    // Far in the left tail the sum cancels 0.5 to a rounding error that can fall below 0.
    (0.5 + sum * density).clamp(0.0, 1.0)
}

/// Standard normal quantile of `p` in (0, 1), by bisection of [`normal_cdf`].
pub fn normal_quantile(p: f64) -> f64 {
    assert!(p > 0.0, "quantile of {p}: expected p above 0");
    assert!(p < 1.0, "quantile of {p}: expected p below 1");
    let (mut low, mut high) = (-10.0_f64, 10.0_f64);
    for _ in 0..200 {
        let middle = (low + high) / 2.0;
        if normal_cdf(middle) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    (low + high) / 2.0
}

/// Computes the deflated Sharpe ratio of the best combination.
///
/// `sharpe_ratios` has one annualized Sharpe ratio per evaluated combination, `None` where
/// it is null, `best_sharpe` is the best one and `returns` its per-bar returns.
pub fn deflated_sharpe(
    sharpe_ratios: &[Option<f64>],
    best_sharpe: f64,
    returns: &[f64],
    bars_per_year: f64,
) -> f64 {
    let trials = sharpe_ratios.len() as f64;
    let scale = bars_per_year.sqrt();
    let per_bar: Vec<f64> = sharpe_ratios
        .iter()
        .flatten()
        .map(|sharpe| sharpe / scale)
        .collect();
    let count = per_bar.len() as f64;
    let mean = per_bar.iter().sum::<f64>() / count;
    let variance = if per_bar.len() > 1 {
        per_bar
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f64>()
            / (count - 1.0)
    } else {
        0.0
    };
    let euler_gamma = 0.577_215_664_901_532_9;
    let threshold = if trials < 2.0 {
        0.0
    } else {
        variance.sqrt()
            * ((1.0 - euler_gamma) * normal_quantile(1.0 - 1.0 / trials)
                + euler_gamma * normal_quantile(1.0 - 1.0 / (trials * std::f64::consts::E)))
    };

    let length = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / length;
    let moment = |power: i32| {
        returns
            .iter()
            .map(|value| (value - mean).powi(power))
            .sum::<f64>()
            / length
    };
    let skewness = moment(3) / moment(2).powf(1.5);
    let kurtosis = moment(4) / moment(2).powi(2);

    let sharpe = best_sharpe / scale;
    let spread = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe;
    normal_cdf((sharpe - threshold) * (length - 1.0).sqrt() / spread.sqrt())
}

/// Recomputes the deflated Sharpe ratio of an `sma_crossover` sweep over BTCUSDT 1-minute
/// bars in `[start_ms, end_ms)` with `commission` per leg, after checking that the oracle's
/// Sharpe ratio of the best combination equals the reported one to 1e-9 relative.
pub fn sma_crossover_deflated_sharpe(
    sharpe_ratios: &[Option<f64>],
    best_sharpe: f64,
    (fast_period, slow_period): (usize, usize),
    (start_ms, end_ms): (i64, i64),
    commission: f64,
) -> f64 {
    let bars = sample_bars("BTCUSDT_1m.csv.gz", start_ms, end_ms);
    let strategy = OracleStrategy::SmaCrossover {
        fast_period,
        slow_period,
    };
    let (returns, oracle_sharpe) =
        oracle_returns(&bars, &strategy, commission, MINUTE_BARS_PER_YEAR);
    let oracle_sharpe = oracle_sharpe.expect("the best combination has a Sharpe ratio");
    assert!(
        (oracle_sharpe - best_sharpe).abs() <= 1e-9 * best_sharpe.abs(),
        "Sharpe ratio of the best combination: oracle {oracle_sharpe} vs reported {best_sharpe}"
    );
    deflated_sharpe(sharpe_ratios, best_sharpe, &returns, MINUTE_BARS_PER_YEAR)
}
