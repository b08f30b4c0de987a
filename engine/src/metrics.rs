//! Backtest metrics from the trades and the equity curve, with the contract's field names.
//!
//! `docs/backtesting.md` defines each metric, its unit and when it is null.

use serde::Serialize;

use crate::simulate::{ExitReason, Simulation, TradeRecord};

/// Summary metrics of one backtest. Percentages are in percent (12.5 means 12.5 %), money in
/// quote currency; a metric with no defined value is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Equity after the last trade closed.
    pub final_capital: f64,
    /// `(final_capital / initial_capital - 1) x 100`.
    pub total_return: f64,
    pub total_trades: u64,
    /// Trades with a net pnl above zero.
    pub winning_trades: u64,
    /// Trades with a net pnl below zero.
    pub losing_trades: u64,
    /// `winning_trades / total_trades x 100`; `None` without trades.
    pub win_rate: Option<f64>,
    /// Mean over sample standard deviation of per-bar returns, times the square root of bars
    /// per year; `None` with fewer than two returns, zero variance or a curve at or below 0.
    pub sharpe_ratio: Option<f64>,
    /// Mean of per-bar returns over their downside deviation, annualized like the Sharpe
    /// ratio. The downside deviation is the root mean square of min(return, 0) over all
    /// returns. `None` without a negative return.
    pub sortino_ratio: Option<f64>,
    /// Annualized return over the maximum drawdown, both as fractions; `None` when the curve
    /// never falls.
    pub calmar_ratio: Option<f64>,
    /// Largest peak-to-trough fall of the equity curve, in percent of the peak.
    pub max_drawdown: f64,
    /// Bars of the longest run from a peak to the first bar back at that peak (or the last
    /// bar).
    pub max_drawdown_duration_bars: u64,
    /// The same run in seconds of bar open time.
    pub max_drawdown_duration_seconds: i64,
    /// Gross profit over gross loss; `None` without a losing trade.
    pub profit_factor: Option<f64>,
    /// Mean pnl per trade; `None` without trades.
    pub expectancy: Option<f64>,
    /// Mean `pnl_pct` of the trades, in percent; `None` without trades.
    pub avg_trade_pct: Option<f64>,
    /// Largest positive pnl; `None` without a winning trade.
    pub largest_win: Option<f64>,
    /// Most negative pnl, a negative number; `None` without a losing trade.
    pub largest_loss: Option<f64>,
    /// Share of bars whose close found a position open, in percent.
    pub exposure_pct: f64,
    /// `(last close / first open - 1) x 100`.
    pub buy_and_hold_return: f64,
    /// Commission of every fill.
    pub total_commission: f64,
    /// Funding paid by all trades; negative when received.
    pub total_funding: f64,
    /// Trades closed by liquidation.
    pub liquidations: u64,
}

/// Price and time inputs of the metrics that do not come from the simulation.
#[derive(Debug, Clone, Copy)]
pub struct MetricInputs<'a> {
    pub initial_capital: f64,
    pub bars_per_year: f64,
    pub open_time_ms: &'a [i64],
    pub first_open: f64,
    pub last_close: f64,
}

/// Computes the metrics of a finished simulation.
pub fn compute_metrics(inputs: &MetricInputs<'_>, simulation: &Simulation) -> Metrics {
    let trades = &simulation.trades;
    let equity = &simulation.equity;
    let initial_capital = inputs.initial_capital;
    let final_capital = equity.last().copied().unwrap_or(initial_capital);
    let total_trades = trades.len() as u64;
    let winning_trades = trades.iter().filter(|trade| trade.pnl > 0.0).count() as u64;
    let losing_trades = trades.iter().filter(|trade| trade.pnl < 0.0).count() as u64;
    let win_rate = (total_trades > 0).then(|| winning_trades as f64 / total_trades as f64 * 100.0);
    let solvent = equity.iter().all(|&value| value > 0.0);
    let max_drawdown = max_drawdown_pct(equity).unwrap_or(0.0);
    let (duration_bars, duration_seconds) = max_drawdown_duration(equity, inputs.open_time_ms);
    let bars = equity.len() as f64;

    let calmar_ratio = (solvent && max_drawdown > 0.0)
        .then(|| {
            let annualized =
                (final_capital / initial_capital).powf(inputs.bars_per_year / bars) - 1.0;
            annualized / (max_drawdown / 100.0)
        })
        .filter(|ratio| ratio.is_finite());
    let gross_profit: f64 = trades.iter().map(|trade| trade.pnl.max(0.0)).sum();
    let gross_loss: f64 = trades.iter().map(|trade| (-trade.pnl).max(0.0)).sum();
    let mean_of = |value: fn(&TradeRecord) -> f64| {
        (total_trades > 0).then(|| trades.iter().map(value).sum::<f64>() / total_trades as f64)
    };

    Metrics {
        final_capital,
        total_return: (final_capital / initial_capital - 1.0) * 100.0,
        total_trades,
        winning_trades,
        losing_trades,
        win_rate,
        sharpe_ratio: sharpe_ratio(equity, inputs.bars_per_year)
            .filter(|ratio| solvent && ratio.is_finite()),
        sortino_ratio: sortino_ratio(equity, inputs.bars_per_year)
            .filter(|ratio| solvent && ratio.is_finite()),
        calmar_ratio,
        max_drawdown,
        max_drawdown_duration_bars: duration_bars,
        max_drawdown_duration_seconds: duration_seconds,
        profit_factor: (losing_trades > 0).then(|| gross_profit / gross_loss),
        expectancy: mean_of(|trade| trade.pnl),
        avg_trade_pct: mean_of(|trade| trade.pnl_pct),
        largest_win: trades
            .iter()
            .map(|trade| trade.pnl)
            .filter(|&pnl| pnl > 0.0)
            .reduce(f64::max),
        largest_loss: trades
            .iter()
            .map(|trade| trade.pnl)
            .filter(|&pnl| pnl < 0.0)
            .reduce(f64::min),
        exposure_pct: if equity.is_empty() {
            0.0
        } else {
            simulation.exposed_bars as f64 / bars * 100.0
        },
        buy_and_hold_return: (inputs.last_close / inputs.first_open - 1.0) * 100.0,
        total_commission: trades.iter().map(|trade| trade.commission).sum(),
        total_funding: trades.iter().map(|trade| trade.funding).sum(),
        liquidations: trades
            .iter()
            .filter(|trade| trade.exit_reason == ExitReason::Liquidation)
            .count() as u64,
    }
}

/// Returns the drawdown at every bar: the fall below the running peak, in percent of it.
pub fn drawdown_curve(equity: &[f64]) -> Vec<f64> {
    let mut peak = f64::NEG_INFINITY;
    equity
        .iter()
        .map(|&value| {
            peak = peak.max(value);
            (peak - value) / peak * 100.0
        })
        .collect()
}

/// Returns the largest fall from a running peak, in percent of that peak: the maximum of
/// [`drawdown_curve`], computed without storing the curve.
pub fn max_drawdown_pct(equity: &[f64]) -> Option<f64> {
    let mut peak = f64::NEG_INFINITY;
    equity
        .iter()
        .map(|&value| {
            peak = peak.max(value);
            (peak - value) / peak * 100.0
        })
        .reduce(f64::max)
}

/// Returns the bars and seconds of the longest run from a peak bar to the first later bar at
/// or above that peak, or to the last bar when equity never gets back.
pub fn max_drawdown_duration(equity: &[f64], open_time_ms: &[i64]) -> (u64, i64) {
    let mut longest = (0_usize, 0_usize);
    let mut peak_index = 0;
    for (index, &value) in equity.iter().enumerate() {
        if value >= equity[peak_index] {
            // A next bar at or above the peak ends no drawdown.
            let fell = index - peak_index >= 2;
            if fell && index - peak_index > longest.1 - longest.0 {
                longest = (peak_index, index);
            }
            peak_index = index;
        }
    }
    if let Some(last) = equity.len().checked_sub(1)
        && last - peak_index > longest.1 - longest.0
    {
        longest = (peak_index, last);
    }
    let (start, end) = longest;
    let seconds = if end > start {
        (open_time_ms[end] - open_time_ms[start]) / 1_000
    } else {
        0
    };
    ((end - start) as u64, seconds)
}

/// Returns the per-bar simple returns of an equity curve, computed as they are read so that
/// a year of 1-minute bars needs no extra buffer.
fn per_bar_returns(equity: &[f64]) -> impl Iterator<Item = f64> + '_ {
    equity.windows(2).map(|pair| pair[1] / pair[0] - 1.0)
}

/// Returns the annualized Sharpe ratio of per-bar simple returns with a zero risk-free rate.
pub fn sharpe_ratio(equity: &[f64], bars_per_year: f64) -> Option<f64> {
    let returns = equity.len().saturating_sub(1);
    if returns < 2 {
        return None;
    }
    let count = returns as f64;
    let mean = per_bar_returns(equity).sum::<f64>() / count;
    let variance = per_bar_returns(equity)
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0);
    let std_dev = variance.sqrt();
    (std_dev > 0.0 && std_dev.is_finite()).then(|| mean / std_dev * bars_per_year.sqrt())
}

/// Returns the annualized Sortino ratio of per-bar simple returns with a zero target.
pub fn sortino_ratio(equity: &[f64], bars_per_year: f64) -> Option<f64> {
    let returns = equity.len().saturating_sub(1);
    if returns < 2 {
        return None;
    }
    let count = returns as f64;
    let mean = per_bar_returns(equity).sum::<f64>() / count;
    let downside = per_bar_returns(equity)
        .map(|value| value.min(0.0).powi(2))
        .sum::<f64>()
        / count;
    let deviation = downside.sqrt();
    (deviation > 0.0 && deviation.is_finite()).then(|| mean / deviation * bars_per_year.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::simulate::Side;

    fn trade(pnl: f64, pnl_pct: f64, reason: ExitReason) -> TradeRecord {
        TradeRecord {
            side: Side::Long,
            entry_time_ms: 0,
            exit_time_ms: 0,
            entry_price: 1.0,
            exit_price: 1.0,
            quantity: 1.0,
            pnl,
            pnl_pct,
            commission: 0.5,
            funding: 0.25,
            exit_reason: reason,
        }
    }

    #[test]
    fn trade_metrics_of_known_trades() {
        let simulation = Simulation {
            trades: vec![
                trade(30.0, 3.0, ExitReason::Signal),
                trade(-10.0, -1.0, ExitReason::StopLoss),
                trade(-5.0, -0.5, ExitReason::Liquidation),
                trade(10.0, 1.0, ExitReason::TakeProfit),
            ],
            // Peak 100 at bar 1, under water until bar 4 (back at 100): 3 bars.
            equity: vec![90.0, 100.0, 95.0, 80.0, 100.0, 125.0],
            exposed_bars: 3,
        };
        let open_time_ms: Vec<i64> = (0..6).map(|index| index * 3_600_000).collect();
        let inputs = MetricInputs {
            initial_capital: 100.0,
            bars_per_year: 8_760.0,
            open_time_ms: &open_time_ms,
            first_open: 50.0,
            last_close: 60.0,
        };
        let metrics = compute_metrics(&inputs, &simulation);
        assert_eq!(metrics.total_trades, 4);
        assert_eq!(metrics.winning_trades, 2);
        assert_eq!(metrics.losing_trades, 2);
        assert_eq!(metrics.win_rate, Some(50.0));
        assert_eq!(metrics.profit_factor, Some(40.0 / 15.0));
        assert_eq!(metrics.expectancy, Some(25.0 / 4.0));
        assert_eq!(metrics.avg_trade_pct, Some(2.5 / 4.0));
        assert_eq!(metrics.largest_win, Some(30.0));
        assert_eq!(metrics.largest_loss, Some(-10.0));
        assert_eq!(metrics.liquidations, 1);
        assert_eq!(metrics.total_commission, 2.0);
        assert_eq!(metrics.total_funding, 1.0);
        assert_eq!(metrics.exposure_pct, 50.0);
        assert!((metrics.buy_and_hold_return - 20.0).abs() < 1e-12);
        assert_eq!(metrics.max_drawdown, 20.0);
        assert_eq!(metrics.max_drawdown_duration_bars, 3);
        assert_eq!(metrics.max_drawdown_duration_seconds, 3 * 3_600);
        assert!((metrics.total_return - 25.0).abs() < 1e-12);
        // 6 bars of an 8,760-bar year: (1.25)^(8760 / 6) - 1 over 0.2.
        let calmar = (1.25_f64.powf(8_760.0 / 6.0) - 1.0) / 0.2;
        let got = metrics.calmar_ratio.unwrap();
        assert!((got / calmar - 1.0).abs() < 1e-12, "{got} vs {calmar}");
    }

    #[test]
    fn trade_metrics_without_trades_are_null() {
        let simulation = Simulation {
            trades: vec![],
            equity: vec![100.0, 100.0, 100.0],
            exposed_bars: 0,
        };
        let inputs = MetricInputs {
            initial_capital: 100.0,
            bars_per_year: 365.0,
            open_time_ms: &[0, 1, 2],
            first_open: 1.0,
            last_close: 1.0,
        };
        let metrics = compute_metrics(&inputs, &simulation);
        assert_eq!(metrics.win_rate, None);
        assert_eq!(metrics.profit_factor, None);
        assert_eq!(metrics.expectancy, None);
        assert_eq!(metrics.avg_trade_pct, None);
        assert_eq!(metrics.largest_win, None);
        assert_eq!(metrics.largest_loss, None);
        assert_eq!(metrics.sharpe_ratio, None);
        assert_eq!(metrics.sortino_ratio, None);
        assert_eq!(metrics.calmar_ratio, None);
        assert_eq!(metrics.max_drawdown, 0.0);
        assert_eq!(metrics.max_drawdown_duration_bars, 0);
    }

    #[test]
    fn sortino_of_known_returns() {
        // Returns 0.1, -0.1, 0.2: mean 0.2 / 3, downside sqrt(0.01 / 3).
        let curve = [100.0, 110.0, 99.0, 118.8];
        let expected = (0.2 / 3.0) / (0.01_f64 / 3.0).sqrt() * 365.0_f64.sqrt();
        let got = sortino_ratio(&curve, 365.0).unwrap();
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        assert_eq!(sortino_ratio(&[100.0, 110.0, 121.0], 365.0), None);
    }

    #[test]
    fn drawdown_of_known_curve() {
        // Peak 120, trough 90: a 25 % fall; the later fall from 130 to 117 is 10 %.
        let curve = [100.0, 120.0, 90.0, 130.0, 117.0];
        assert_eq!(max_drawdown_pct(&curve), Some(25.0));
    }

    #[test]
    fn drawdown_of_rising_curve_is_zero() {
        assert_eq!(max_drawdown_pct(&[1.0, 2.0, 3.0]), Some(0.0));
        assert_eq!(max_drawdown_pct(&[]), None);
    }

    #[test]
    fn sharpe_of_known_returns() {
        // Returns +10 % and -10 %: mean 0 up to rounding, so the ratio is about 0.
        let flat_mean = [100.0, 110.0, 99.0];
        let near_zero = sharpe_ratio(&flat_mean, 365.0).unwrap();
        assert!(near_zero.abs() < 1e-12, "{near_zero}");

        // Returns 0.1 and 0.2: mean 0.15, sample std sqrt(0.005).
        let curve = [100.0, 110.0, 132.0];
        let expected = 0.15 / 0.005_f64.sqrt() * 12.0_f64.sqrt();
        let got = sharpe_ratio(&curve, 12.0).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn sharpe_of_daily_returns_uses_sqrt_365() {
        let returns = [0.02, -0.01, 0.015, -0.005, 0.01, 0.0, -0.02, 0.025];
        let mut curve = vec![100.0];
        for value in returns {
            let last = curve[curve.len() - 1];
            curve.push(last * (1.0 + value));
        }
        let sharpe = sharpe_ratio(&curve, 365.0).unwrap();
        assert!((sharpe - 5.3293).abs() < 5e-5, "{sharpe}");

        // The same returns as hourly bars annualize with sqrt(8760).
        let hourly_bars_per_year = bst_ingest::Timeframe::Minutes(60).bars_per_year();
        let hourly = sharpe_ratio(&curve, hourly_bars_per_year).unwrap();
        let expected = sharpe / 365.0_f64.sqrt() * 8_760.0_f64.sqrt();
        assert!((hourly - expected).abs() < 1e-9, "{hourly} vs {expected}");
        assert!((hourly - 26.1083).abs() < 5e-4, "{hourly}");
    }

    #[test]
    fn sharpe_undefined_cases() {
        assert_eq!(sharpe_ratio(&[100.0, 100.0, 100.0], 365.0), None);
        assert_eq!(sharpe_ratio(&[100.0, 101.0], 365.0), None);
    }
}
