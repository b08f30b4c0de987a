//! Backtest metrics from the trades and the equity curve, with the contract's field names.

use serde::Serialize;

use crate::simulate::TradeRecord;

/// Summary metrics of one backtest. Percentages are in percent (12.5 means 12.5 %); a metric
/// with no defined value is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Equity after the last trade closed, in quote currency.
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
    /// per year; `None` with fewer than two returns or zero variance.
    pub sharpe_ratio: Option<f64>,
    /// Largest peak-to-trough fall of the equity curve, in percent of the peak; `None` without
    /// bars.
    pub max_drawdown: Option<f64>,
}

/// Computes the metrics of a finished simulation.
pub fn compute_metrics(
    initial_capital: f64,
    trades: &[TradeRecord],
    equity: &[f64],
    bars_per_year: f64,
) -> Metrics {
    let final_capital = equity.last().copied().unwrap_or(initial_capital);
    let total_trades = trades.len() as u64;
    let winning_trades = trades.iter().filter(|trade| trade.pnl > 0.0).count() as u64;
    let losing_trades = trades.iter().filter(|trade| trade.pnl < 0.0).count() as u64;
    let win_rate = (total_trades > 0).then(|| winning_trades as f64 / total_trades as f64 * 100.0);

    Metrics {
        final_capital,
        total_return: (final_capital / initial_capital - 1.0) * 100.0,
        total_trades,
        winning_trades,
        losing_trades,
        win_rate,
        sharpe_ratio: sharpe_ratio(equity, bars_per_year),
        max_drawdown: max_drawdown_pct(equity),
    }
}

/// Returns the largest fall from a running peak, in percent of that peak.
pub fn max_drawdown_pct(equity: &[f64]) -> Option<f64> {
    let first = *equity.first()?;
    let mut peak = first;
    let mut worst = 0.0_f64;
    for &value in equity {
        peak = peak.max(value);
        worst = worst.max((peak - value) / peak * 100.0);
    }
    Some(worst)
}

/// Returns the annualized Sharpe ratio of per-bar simple returns with a zero risk-free rate.
pub fn sharpe_ratio(equity: &[f64], bars_per_year: f64) -> Option<f64> {
    let returns: Vec<f64> = equity
        .windows(2)
        .map(|pair| pair[1] / pair[0] - 1.0)
        .collect();
    if returns.len() < 2 {
        return None;
    }
    let count = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / count;
    let variance = returns
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0);
    let std_dev = variance.sqrt();
    (std_dev > 0.0 && std_dev.is_finite()).then(|| mean / std_dev * bars_per_year.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn sharpe_undefined_cases() {
        assert_eq!(sharpe_ratio(&[100.0, 100.0, 100.0], 365.0), None);
        assert_eq!(sharpe_ratio(&[100.0, 101.0], 365.0), None);
    }
}
