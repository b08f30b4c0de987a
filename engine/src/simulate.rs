//! Fill simulation: one pass over the signal columns of a backtest plan's output.
//!
//! The plan decides at each bar's close. This pass turns those decisions into fills at the
//! next bar's open, books commission on both legs, and marks equity at every close. It is
//! sequential because each entry is sized from the equity that earlier trades left.

use serde::Serialize;

/// Sizing and cost settings of a simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulationConfig {
    /// Starting equity in quote currency.
    pub initial_capital: f64,
    /// Commission as a fraction of notional, charged on entry and on exit.
    pub commission: f64,
    /// Fraction of equity committed (margin plus entry commission) at each entry.
    pub position_size: f64,
    /// Leverage; the margin of a position is its notional divided by this.
    pub leverage: f64,
}

/// Side of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Long,
}

impl Side {
    /// Returns `long` or `short`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Long => "long",
        }
    }
}

/// Reason a position was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The strategy's exit signal, filled at the next bar's open.
    Signal,
    /// The range ended with the position open; filled at the last close.
    EndOfData,
}

impl ExitReason {
    /// Returns the snake_case name stored with each trade.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::EndOfData => "end_of_data",
        }
    }
}

/// One closed trade. Times are bar open times in epoch milliseconds; money is in quote
/// currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradeRecord {
    pub side: Side,
    pub entry_time_ms: i64,
    pub exit_time_ms: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub quantity: f64,
    /// Net of the commission of both legs.
    pub pnl: f64,
    /// `pnl` as a percentage of the equity committed at entry.
    pub pnl_pct: f64,
    /// Commission of both legs.
    pub commission: f64,
    pub exit_reason: ExitReason,
}

/// Input columns of a simulation, one entry per bar, ascending by open time.
#[derive(Debug, Clone, Copy)]
pub struct SignalColumns<'a> {
    pub open_time_ms: &'a [i64],
    pub open: &'a [f64],
    pub close: &'a [f64],
    /// True where the bar's close produced the long (entry) signal.
    pub long_signal: &'a [bool],
    /// True where the bar's close produced the short (exit) signal.
    pub short_signal: &'a [bool],
}

/// Trades and the equity marked at every bar's close.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub trades: Vec<TradeRecord>,
    pub equity: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
struct OpenPosition {
    entry_index: usize,
    entry_price: f64,
    quantity: f64,
    entry_fee: f64,
    /// Equity committed at entry, the base of `pnl_pct`.
    committed: f64,
}

/// Runs a long-only simulation: a long signal while flat enters at the next open, a short
/// signal while long exits at the next open, and an open position is closed at the last
/// close.
pub fn simulate_long_only(columns: SignalColumns<'_>, config: &SimulationConfig) -> Simulation {
    let bar_count = columns.open_time_ms.len();
    let mut cash = config.initial_capital;
    let mut position: Option<OpenPosition> = None;
    let mut trades = Vec::new();
    let mut equity = Vec::with_capacity(bar_count);

    for bar in 0..bar_count {
        // Orders decided at the previous close fill at this bar's open.
        if bar > 0 {
            let decided = bar - 1;
            match position {
                Some(open) if columns.short_signal[decided] => {
                    let trade = close_position(&open, &columns, bar, columns.open[bar], config);
                    cash += trade.pnl;
                    trades.push(trade);
                    position = None;
                }
                None if columns.long_signal[decided] => {
                    position = Some(open_position(cash, bar, columns.open[bar], config));
                }
                _ => {}
            }
        }

        let marked = match &position {
            Some(open) => {
                cash - open.entry_fee + open.quantity * (columns.close[bar] - open.entry_price)
            }
            None => cash,
        };
        equity.push(marked);
    }

    if let (Some(open), Some(last)) = (position, bar_count.checked_sub(1)) {
        let mut trade = close_position(&open, &columns, last, columns.close[last], config);
        trade.exit_reason = ExitReason::EndOfData;
        cash += trade.pnl;
        trades.push(trade);
        equity[last] = cash;
    }

    Simulation { trades, equity }
}

fn open_position(
    equity: f64,
    bar: usize,
    fill_price: f64,
    config: &SimulationConfig,
) -> OpenPosition {
    let committed = equity * config.position_size;
    let quantity = committed / (fill_price * (1.0 / config.leverage + config.commission));
    OpenPosition {
        entry_index: bar,
        entry_price: fill_price,
        quantity,
        entry_fee: quantity * fill_price * config.commission,
        committed,
    }
}

fn close_position(
    open: &OpenPosition,
    columns: &SignalColumns<'_>,
    exit_index: usize,
    fill_price: f64,
    config: &SimulationConfig,
) -> TradeRecord {
    let exit_fee = open.quantity * fill_price * config.commission;
    let gross = open.quantity * (fill_price - open.entry_price);
    let pnl = gross - open.entry_fee - exit_fee;
    TradeRecord {
        side: Side::Long,
        entry_time_ms: columns.open_time_ms[open.entry_index],
        exit_time_ms: columns.open_time_ms[exit_index],
        entry_price: open.entry_price,
        exit_price: fill_price,
        quantity: open.quantity,
        pnl,
        pnl_pct: pnl / open.committed * 100.0,
        commission: open.entry_fee + exit_fee,
        exit_reason: ExitReason::Signal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buys 1,500 units at 0.2166 and sells them at 0.2183 with `commission` per fill.
    fn round_trip(commission: f64) -> TradeRecord {
        let open_time_ms = [0, 60_000, 120_000, 180_000];
        let open = [0.2160, 0.2166, 0.2170, 0.2183];
        let close = [0.2165, 0.2171, 0.2180, 0.2185];
        let long_signal = [true, false, false, false];
        let short_signal = [false, false, true, false];
        // Equity that sizes the entry at exactly 1,500 units.
        let initial_capital = 1_500.0 * 0.2166 * (1.0 + commission);
        let config = SimulationConfig {
            initial_capital,
            commission,
            position_size: 1.0,
            leverage: 1.0,
        };
        let columns = SignalColumns {
            open_time_ms: &open_time_ms,
            open: &open,
            close: &close,
            long_signal: &long_signal,
            short_signal: &short_signal,
        };
        let simulation = simulate_long_only(columns, &config);
        assert_eq!(simulation.trades.len(), 1);
        simulation.trades[0].clone()
    }

    #[test]
    fn fees_charged_on_both_fills() {
        let trade = round_trip(0.004);
        assert!(
            (trade.quantity - 1_500.0).abs() < 1e-9,
            "{}",
            trade.quantity
        );
        assert_eq!(trade.entry_time_ms, 60_000);
        assert_eq!(trade.exit_time_ms, 180_000);
        assert_eq!(trade.entry_price, 0.2166);
        assert_eq!(trade.exit_price, 0.2183);
        // Fees 1.2996 on entry and 1.3098 on exit.
        assert!(
            (trade.commission - (1.2996 + 1.3098)).abs() < 1e-9,
            "{}",
            trade.commission
        );
        assert!((trade.pnl - -0.0594).abs() < 1e-9, "{}", trade.pnl);
        assert_eq!(trade.exit_reason, ExitReason::Signal);
    }

    #[test]
    fn taker_fees_leave_a_profit() {
        let trade = round_trip(0.00055);
        assert!((trade.pnl - 2.191_207_5).abs() < 1e-9, "{}", trade.pnl);
    }
}
