//! Fill simulation: one pass over the signal columns of a backtest plan's output.
//!
//! The plan decides at each bar's close. This pass turns those decisions into fills at the
//! next bar's open, checks stop-loss, take-profit and liquidation levels against each bar's
//! range, settles funding, books commission on both legs, and marks equity at every close.
//! It is sequential because each entry is sized from the equity that earlier trades left.
//! The rules are those of `docs/backtesting.md`.

use serde::Serialize;

/// Funding instants are the multiples of this many milliseconds since the Unix epoch.
pub const FUNDING_INTERVAL_MS: i64 = 8 * 3_600_000;

/// Sides of the positions a strategy takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Long,
    Short,
    Both,
}

impl Direction {
    /// Parses `long`, `short` or `both`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "long" => Some(Self::Long),
            "short" => Some(Self::Short),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Returns `long`, `short` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Long => "long",
            Self::Short => "short",
            Self::Both => "both",
        }
    }
}

/// Sizing, cost and risk settings of a simulation. Fractions are plain fractions (0.01 is
/// 1 %).
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
    /// Maintenance margin as a fraction of the entry notional; sets the liquidation price
    /// when leverage is above 1.
    pub maintenance_margin_rate: f64,
    pub direction: Direction,
    /// Stop-loss distance as a fraction of the entry price.
    pub stop_loss: Option<f64>,
    /// Take-profit distance as a fraction of the entry price.
    pub take_profit: Option<f64>,
    /// Fraction by which market fills are worse than the reference price.
    pub slippage: f64,
    /// Funding per 8 hours as a fraction of notional; longs pay a positive rate.
    pub funding_rate: Option<f64>,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            initial_capital: 10_000.0,
            commission: 0.00055,
            position_size: 1.0,
            leverage: 1.0,
            maintenance_margin_rate: 0.005,
            direction: Direction::Long,
            stop_loss: None,
            take_profit: None,
            slippage: 0.0,
            funding_rate: None,
        }
    }
}

/// Side of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Long,
    Short,
}

impl Side {
    /// Returns `long` or `short`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Long => "long",
            Side::Short => "short",
        }
    }

    /// +1 for a long, -1 for a short: the sign of pnl per unit of price rise.
    fn sign(self) -> f64 {
        match self {
            Side::Long => 1.0,
            Side::Short => -1.0,
        }
    }
}

/// Reason a position was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The strategy's exit signal, filled at the next bar's open.
    Signal,
    StopLoss,
    TakeProfit,
    Liquidation,
    /// The range ended with the position open; filled at the last close.
    EndOfData,
}

impl ExitReason {
    /// Returns the snake_case name stored with each trade.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::StopLoss => "stop_loss",
            ExitReason::TakeProfit => "take_profit",
            ExitReason::Liquidation => "liquidation",
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
    /// Entry fill price, slippage included.
    pub entry_price: f64,
    /// Exit fill price, slippage included.
    pub exit_price: f64,
    pub quantity: f64,
    /// Net of the commission of both legs and of funding.
    pub pnl: f64,
    /// `pnl` as a percentage of the equity committed at entry.
    pub pnl_pct: f64,
    /// Commission of both legs.
    pub commission: f64,
    /// Funding paid while the position was open; negative when received.
    pub funding: f64,
    pub exit_reason: ExitReason,
}

/// Trigger rule of the signal columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalMode {
    /// Built-in strategies: `entry_long` contains the long signal and `entry_short` the short
    /// signal, each an edge (a crossing). The opposite signal exits, and with direction
    /// `both` it reverses the position in one fill.
    Crossings,
    /// Expression strategies: four level-triggered conditions; an exit wins over an entry on
    /// the same bar and a position never reverses in one fill.
    Levels,
}

/// Input columns of a simulation, one entry per bar, ascending by open time.
#[derive(Debug, Clone, Copy)]
pub struct SignalColumns<'a> {
    pub open_time_ms: &'a [i64],
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub mode: SignalMode,
    pub entry_long: &'a [bool],
    /// Unused with [`SignalMode::Crossings`].
    pub exit_long: &'a [bool],
    pub entry_short: &'a [bool],
    /// Unused with [`SignalMode::Crossings`].
    pub exit_short: &'a [bool],
}

/// Trades, the equity marked at every bar's close, and the bars that closed in a position.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub trades: Vec<TradeRecord>,
    pub equity: Vec<f64>,
    /// Bars whose close found a position open, the end-of-data exit included.
    pub exposed_bars: usize,
}

#[derive(Debug, Clone, Copy)]
struct OpenPosition {
    side: Side,
    entry_index: usize,
    entry_price: f64,
    quantity: f64,
    entry_fee: f64,
    funding: f64,
    /// Equity committed at entry, the base of `pnl_pct`.
    committed: f64,
    stop_loss: Option<f64>,
    take_profit: Option<f64>,
    liquidation: Option<f64>,
}

/// An order decided at a bar's close, filled at the next bar's open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Enter(Side),
    Exit,
    /// Closes the open position and opens the given side in one fill.
    Reverse(Side),
}

/// Runs the simulation of `columns` under `config`.
pub fn simulate(columns: SignalColumns<'_>, config: &SimulationConfig) -> Simulation {
    let bar_count = columns.open_time_ms.len();
    let mut account = Account {
        cash: config.initial_capital,
        position: None,
        trades: Vec::new(),
        config,
        columns,
    };
    let mut equity = Vec::with_capacity(bar_count);
    let mut exposed_bars = 0;
    let mut pending: Option<Order> = None;

    for bar in 0..bar_count {
        if bar > 0 {
            account.settle_funding(bar);
        }
        if let Some(order) = pending.take() {
            account.fill(order, bar);
        }
        account.check_levels(bar);

        let marked = match &account.position {
            Some(open) => {
                exposed_bars += 1;
                account.cash - open.entry_fee - open.funding
                    + open.side.sign() * open.quantity * (columns.close[bar] - open.entry_price)
            }
            None => account.cash,
        };
        equity.push(marked);

        if bar + 1 < bar_count {
            pending = account.decide(bar);
        }
    }

    if let (Some(open), Some(last)) = (account.position.take(), bar_count.checked_sub(1)) {
        let price = worsen(
            open.side,
            FillKind::Exit,
            columns.close[last],
            config.slippage,
        );
        account.close(open, last, price, ExitReason::EndOfData);
        equity[last] = account.cash;
    }

    Simulation {
        trades: account.trades,
        equity,
        exposed_bars,
    }
}

/// Kind of a fill: opening or closing a position, which sets the direction of slippage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillKind {
    Entry,
    Exit,
}

/// Returns `price` moved against the trader by `slippage`: a buy fills higher, a sell lower.
fn worsen(side: Side, fill: FillKind, price: f64, slippage: f64) -> f64 {
    let buys = matches!(
        (side, fill),
        (Side::Long, FillKind::Entry) | (Side::Short, FillKind::Exit)
    );
    if buys {
        price * (1.0 + slippage)
    } else {
        price * (1.0 - slippage)
    }
}

/// Cash, the open position and the closed trades while the simulation runs.
struct Account<'a> {
    /// Equity with no position open: the initial capital plus the pnl of closed trades.
    cash: f64,
    position: Option<OpenPosition>,
    trades: Vec<TradeRecord>,
    config: &'a SimulationConfig,
    columns: SignalColumns<'a>,
}

impl Account<'_> {
    /// Charges the open position for each funding instant since the previous bar's open.
    fn settle_funding(&mut self, bar: usize) {
        let (Some(rate), Some(open)) = (self.config.funding_rate, self.position.as_mut()) else {
            return;
        };
        let previous = self.columns.open_time_ms[bar - 1].div_euclid(FUNDING_INTERVAL_MS);
        let current = self.columns.open_time_ms[bar].div_euclid(FUNDING_INTERVAL_MS);
        let count = (current - previous) as f64;
        if count > 0.0 {
            let payment = count * rate * open.quantity * self.columns.open[bar];
            open.funding += open.side.sign() * payment;
        }
    }

    fn fill(&mut self, order: Order, bar: usize) {
        let open_price = self.columns.open[bar];
        match order {
            Order::Enter(side) => self.enter(side, bar),
            Order::Exit | Order::Reverse(_) => {
                let Some(open) = self.position.take() else {
                    return;
                };
                let price = worsen(open.side, FillKind::Exit, open_price, self.config.slippage);
                self.close(open, bar, price, ExitReason::Signal);
                if let Order::Reverse(side) = order {
                    self.enter(side, bar);
                }
            }
        }
    }

    fn enter(&mut self, side: Side, bar: usize) {
        if self.cash <= 0.0 {
            return;
        }
        let config = self.config;
        let entry_price = worsen(
            side,
            FillKind::Entry,
            self.columns.open[bar],
            config.slippage,
        );
        let committed = self.cash * config.position_size;
        let quantity = committed / (entry_price * (1.0 / config.leverage + config.commission));
        let (stop_loss, take_profit, liquidation) = match side {
            Side::Long => (
                config
                    .stop_loss
                    .map(|fraction| entry_price * (1.0 - fraction)),
                config
                    .take_profit
                    .map(|fraction| entry_price * (1.0 + fraction)),
                (config.leverage > 1.0).then(|| {
                    entry_price * (1.0 - 1.0 / config.leverage + config.maintenance_margin_rate)
                }),
            ),
            Side::Short => (
                config
                    .stop_loss
                    .map(|fraction| entry_price * (1.0 + fraction)),
                config
                    .take_profit
                    .map(|fraction| entry_price * (1.0 - fraction)),
                (config.leverage > 1.0).then(|| {
                    entry_price * (1.0 + 1.0 / config.leverage - config.maintenance_margin_rate)
                }),
            ),
        };
        self.position = Some(OpenPosition {
            side,
            entry_index: bar,
            entry_price,
            quantity,
            entry_fee: quantity * entry_price * config.commission,
            funding: 0.0,
            committed,
            stop_loss,
            take_profit,
            liquidation,
        });
    }

    /// Exits the open position when the bar reaches one of its levels; see the level rules
    /// in `docs/backtesting.md`.
    fn check_levels(&mut self, bar: usize) {
        let Some(open) = self.position else {
            return;
        };
        if open.stop_loss.is_none() && open.take_profit.is_none() && open.liquidation.is_none() {
            return;
        }
        let sign = open.side.sign();
        // `beyond(price, level)`: the price is at or past the level in the position's adverse
        // direction (at or below it for a long).
        let beyond = |price: f64, level: f64| sign * (price - level) <= 0.0;
        let reaches_profit = |price: f64, level: f64| sign * (price - level) >= 0.0;
        let adverse_price = if open.side == Side::Long {
            self.columns.low[bar]
        } else {
            self.columns.high[bar]
        };
        let favourable_price = if open.side == Side::Long {
            self.columns.high[bar]
        } else {
            self.columns.low[bar]
        };
        let open_price = self.columns.open[bar];

        let adverse_hit = |price: f64| -> Option<(f64, ExitReason)> {
            let stop = open
                .stop_loss
                .filter(|&level| beyond(price, level))
                .map(|level| (level, ExitReason::StopLoss));
            let liquidation = open
                .liquidation
                .filter(|&level| beyond(price, level))
                .map(|level| (level, ExitReason::Liquidation));
            match (stop, liquidation) {
                // The level nearer the entry is passed first; the stop wins a tie.
                (Some(stop), Some(liquidation)) => {
                    let stop_distance = (open.entry_price - stop.0).abs();
                    let liquidation_distance = (open.entry_price - liquidation.0).abs();
                    Some(if liquidation_distance < stop_distance {
                        liquidation
                    } else {
                        stop
                    })
                }
                (stop, liquidation) => stop.or(liquidation),
            }
        };

        let exit = if let Some((_, reason)) = adverse_hit(open_price) {
            Some((open_price, reason))
        } else if open
            .take_profit
            .is_some_and(|level| reaches_profit(open_price, level))
        {
            Some((open_price, ExitReason::TakeProfit))
        } else if let Some(hit) = adverse_hit(adverse_price) {
            Some(hit)
        } else {
            open.take_profit
                .filter(|&level| reaches_profit(favourable_price, level))
                .map(|level| (level, ExitReason::TakeProfit))
        };

        if let Some((price, reason)) = exit {
            let price = if reason == ExitReason::StopLoss {
                worsen(open.side, FillKind::Exit, price, self.config.slippage)
            } else {
                price
            };
            self.position = None;
            self.close(open, bar, price, reason);
        }
    }

    /// Books the trade of `open` exiting at `price` on `bar`.
    fn close(&mut self, open: OpenPosition, bar: usize, price: f64, reason: ExitReason) {
        let exit_fee = open.quantity * price * self.config.commission;
        let gross = open.side.sign() * open.quantity * (price - open.entry_price);
        let pnl = gross - open.entry_fee - exit_fee - open.funding;
        self.cash += pnl;
        self.trades.push(TradeRecord {
            side: open.side,
            entry_time_ms: self.columns.open_time_ms[open.entry_index],
            exit_time_ms: self.columns.open_time_ms[bar],
            entry_price: open.entry_price,
            exit_price: price,
            quantity: open.quantity,
            pnl,
            pnl_pct: pnl / open.committed * 100.0,
            commission: open.entry_fee + exit_fee,
            funding: open.funding,
            exit_reason: reason,
        });
    }

    /// Returns the order that the signals at `bar`'s close place for the next open.
    fn decide(&self, bar: usize) -> Option<Order> {
        let columns = &self.columns;
        let direction = self.config.direction;
        let takes_long = direction != Direction::Short;
        let takes_short = direction != Direction::Long;
        let held = self.position.map(|open| open.side);
        match columns.mode {
            SignalMode::Crossings => {
                let long = columns.entry_long[bar] && !columns.entry_short[bar];
                let short = columns.entry_short[bar] && !columns.entry_long[bar];
                match held {
                    None if long && takes_long => Some(Order::Enter(Side::Long)),
                    None if short && takes_short => Some(Order::Enter(Side::Short)),
                    Some(Side::Long) if short => Some(if takes_short {
                        Order::Reverse(Side::Short)
                    } else {
                        Order::Exit
                    }),
                    Some(Side::Short) if long => Some(if takes_long {
                        Order::Reverse(Side::Long)
                    } else {
                        Order::Exit
                    }),
                    _ => None,
                }
            }
            SignalMode::Levels => {
                let exit_long = columns.exit_long[bar];
                let exit_short = columns.exit_short[bar];
                match held {
                    Some(Side::Long) => exit_long.then_some(Order::Exit),
                    Some(Side::Short) => exit_short.then_some(Order::Exit),
                    None => {
                        let long = takes_long && columns.entry_long[bar] && !exit_long;
                        let short = takes_short && columns.entry_short[bar] && !exit_short;
                        match (long, short) {
                            (true, false) => Some(Order::Enter(Side::Long)),
                            (false, true) => Some(Order::Enter(Side::Short)),
                            _ => None,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned columns for hand-made bars `(open, high, low, close)`, one minute apart.
    struct Bars {
        open_time_ms: Vec<i64>,
        open: Vec<f64>,
        high: Vec<f64>,
        low: Vec<f64>,
        close: Vec<f64>,
        entry_long: Vec<bool>,
        exit_long: Vec<bool>,
        entry_short: Vec<bool>,
        exit_short: Vec<bool>,
    }

    impl Bars {
        fn new(ohlc: &[(f64, f64, f64, f64)]) -> Self {
            let count = ohlc.len();
            Self {
                open_time_ms: (0..count as i64).map(|index| index * 60_000).collect(),
                open: ohlc.iter().map(|bar| bar.0).collect(),
                high: ohlc.iter().map(|bar| bar.1).collect(),
                low: ohlc.iter().map(|bar| bar.2).collect(),
                close: ohlc.iter().map(|bar| bar.3).collect(),
                entry_long: vec![false; count],
                exit_long: vec![false; count],
                entry_short: vec![false; count],
                exit_short: vec![false; count],
            }
        }

        fn columns(&self, mode: SignalMode) -> SignalColumns<'_> {
            SignalColumns {
                open_time_ms: &self.open_time_ms,
                open: &self.open,
                high: &self.high,
                low: &self.low,
                close: &self.close,
                mode,
                entry_long: &self.entry_long,
                exit_long: &self.exit_long,
                entry_short: &self.entry_short,
                exit_short: &self.exit_short,
            }
        }
    }

    /// Buys 1,500 units at 0.2166 and sells them at 0.2183 with `commission` per fill.
    fn round_trip(commission: f64) -> TradeRecord {
        let mut bars = Bars::new(&[
            (0.2160, 0.2170, 0.2150, 0.2165),
            (0.2166, 0.2175, 0.2160, 0.2171),
            (0.2170, 0.2185, 0.2165, 0.2180),
            (0.2183, 0.2190, 0.2180, 0.2185),
        ]);
        bars.entry_long[0] = true;
        bars.entry_short[2] = true;
        // Equity that sizes the entry at exactly 1,500 units.
        let config = SimulationConfig {
            initial_capital: 1_500.0 * 0.2166 * (1.0 + commission),
            commission,
            ..SimulationConfig::default()
        };
        let simulation = simulate(bars.columns(SignalMode::Crossings), &config);
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

    /// A long entered at exactly 100 on bar 1 with 5 % stop-loss and take-profit, then
    /// `next` as bar 2; returns the exit price and reason.
    fn stop_and_target_exit(next: (f64, f64, f64, f64)) -> (f64, ExitReason) {
        let mut bars = Bars::new(&[
            (99.0, 100.0, 98.0, 100.0),
            (100.0, 100.5, 99.5, 100.0),
            next,
        ]);
        bars.entry_long[0] = true;
        let config = SimulationConfig {
            commission: 0.0,
            stop_loss: Some(0.05),
            take_profit: Some(0.05),
            ..SimulationConfig::default()
        };
        let simulation = simulate(bars.columns(SignalMode::Crossings), &config);
        assert_eq!(simulation.trades.len(), 1);
        let trade = &simulation.trades[0];
        assert_eq!(trade.entry_price, 100.0);
        assert_eq!(trade.exit_time_ms, 120_000);
        (trade.exit_price, trade.exit_reason)
    }

    #[test]
    fn stop_wins_when_bar_reaches_both_levels() {
        let (price, reason) = stop_and_target_exit((100.0, 106.0, 94.0, 101.0));
        assert_eq!(reason, ExitReason::StopLoss);
        assert!((price - 95.0).abs() < 1e-12, "{price}");
    }

    #[test]
    fn stop_fills_at_open_after_gap() {
        let (price, reason) = stop_and_target_exit((93.0, 106.0, 92.0, 104.0));
        assert_eq!(reason, ExitReason::StopLoss);
        assert_eq!(price, 93.0);
    }

    #[test]
    fn take_profit_fills_at_its_level() {
        let (price, reason) = stop_and_target_exit((100.0, 106.0, 99.0, 104.0));
        assert_eq!(reason, ExitReason::TakeProfit);
        assert!((price - 105.0).abs() < 1e-12, "{price}");
    }

    #[test]
    fn funding_charged_at_each_instant() {
        // Bars at 23:58, 23:59, 00:00 and 00:01 UTC; a long enters at 23:59.
        let day_ms = 86_400_000;
        let mut bars = Bars::new(&[
            (100.0, 100.0, 100.0, 100.0),
            (100.0, 100.0, 100.0, 100.0),
            (110.0, 110.0, 110.0, 110.0),
            (110.0, 110.0, 110.0, 110.0),
        ]);
        bars.open_time_ms = vec![day_ms - 120_000, day_ms - 60_000, day_ms, day_ms + 60_000];
        bars.entry_long[0] = true;
        let config = SimulationConfig {
            commission: 0.0,
            funding_rate: Some(0.0001),
            ..SimulationConfig::default()
        };
        let simulation = simulate(bars.columns(SignalMode::Crossings), &config);
        let trade = &simulation.trades[0];
        // 100 units pay 0.01 % of their notional at the 00:00 open of 110.
        assert!((trade.quantity - 100.0).abs() < 1e-9);
        assert!((trade.funding - 1.1).abs() < 1e-9, "{}", trade.funding);
        assert!((trade.pnl - (1_000.0 - 1.1)).abs() < 1e-9, "{}", trade.pnl);
    }

    #[test]
    fn levels_mode_lets_exit_win() {
        let mut bars = Bars::new(&[(100.0, 100.0, 100.0, 100.0); 5]);
        // Entry and exit both true: no entry. Entry alone on bar 1: enter at bar 2.
        bars.entry_long[0] = true;
        bars.exit_long[0] = true;
        bars.entry_long[1] = true;
        // Exit long and entry short on bar 3 with direction both: exit only.
        bars.exit_long[3] = true;
        bars.entry_short[3] = true;
        let config = SimulationConfig {
            direction: Direction::Both,
            ..SimulationConfig::default()
        };
        let simulation = simulate(bars.columns(SignalMode::Levels), &config);
        assert_eq!(simulation.trades.len(), 1);
        assert_eq!(simulation.trades[0].entry_time_ms, 120_000);
        assert_eq!(simulation.trades[0].exit_time_ms, 240_000);
    }
}
