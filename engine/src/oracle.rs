//! Plain-loop reference backtesters that tests compare the DataFusion engine against.
//!
//! The module shares no code with the engine. It uses straight loops that step through the
//! bars in order, and its indicators are written from TA-Lib's definitions. It has two entry
//! points:
//!
//! - [`sma_crossover`] and [`long_only`]: long-only trading on edge signals, with commission,
//!   position size and leverage but without stops, slippage or funding.
//! - [`backtest`]: every rule of a `bst` backtest, for both signal kinds ([`OracleSignals`]),
//!   all three directions and every order option ([`OracleOrders`]), with the full metrics
//!   table ([`OracleMetrics`]).
//!
//! [`strategy_signals`] computes the signals of the built-in strategies from the plain-loop
//! indicators of [`indicators`], which follow TA-Lib's definitions.
//!
//! Rules shared by both:
//! - A decision at bar `t` uses data up to the close of `t`, and its order fills at the open of
//!   bar `t + 1`. A signal on the last bar therefore never trades.
//! - Commission is a fraction of notional, charged on the entry and on the exit.
//! - A position still open after the last bar is closed at that bar's close.
//!
//! # How [`backtest`] reads the rules where they leave room
//!
//! - The order within one bar is: funding, the fill of the order decided at the previous
//!   close, the level checks, the mark to market at the close, then the decision for the next
//!   bar. A position filled at a bar's open has its levels checked on that same bar, against
//!   the bar's open, low and high. With slippage the entry price lies beyond the open, so a
//!   tight stop or liquidation level can already be passed by that open, and the position then
//!   exits at the open of its fill bar.
//! - An adverse exit at the open is priced at the open, worsened by slippage when its reason
//!   is `stop_loss` and not when it is `liquidation`. An adverse exit inside the bar is priced
//!   at the level, again with slippage for a stop-loss only.
//! - Zero equity or less blocks an entry when the order fills, including the second leg of a
//!   `both` reversal, which then only closes the open position.
//! - For expression strategies with direction `both`, an entry "counts" when it is true and
//!   its own side's exit is false. When both entries count on a flat bar, neither enters.
//!   When only one counts, that side enters even if the other side's exit is true.
//! - Funding for each held bar is `count * funding_rate * quantity * open`, where `count` is
//!   the number of multiples of 8 hours in `(previous bar open time, this bar open time]`.
//!   A long adds each payment to the trade's `funding` and a short subtracts it, so
//!   `funding` is positive when paid.
//! - A bar on which a signal exit or a level closes the position, and no reversal opens a
//!   new one, does not count toward `exposure_pct`, because its close finds no position.
//! - `sharpe_ratio`, `sortino_ratio` and `calmar_ratio` are null when any equity value of
//!   the curve is zero or below, and also when their value is not finite (for example, an
//!   annualized return that overflows for a short series of small bars).
//! - `calmar_ratio` annualizes with `bars` = the number of bars in the curve (not the number
//!   of returns).
//! - A drawdown run starts at the last bar whose equity is at or above the running peak
//!   before the curve falls below it. It ends at the first later bar at or above that peak,
//!   or at the last bar if none recovers. Its length in bars is the difference of the two
//!   bar indexes, and in seconds the difference of their open times divided by 1000
//!   (integer division). A curve that only stays level or rises has no run, so both
//!   durations are 0.
//! - The drawdown curve divides by the running peak, which is at least the initial capital
//!   because no position is open at the close of the first bar.
//! - Sums over trades and over bars add plainly, in trade and bar order.
//! - [`backtest`] rejects an empty bar slice, because `buy_and_hold_return` needs a first open
//!   and a last close.

pub mod indicators;

/// Exit reason of a trade closed by the strategy's signal at a bar's open.
pub const EXIT_REASON_SIGNAL: &str = "signal";

/// Exit reason of a trade closed at the last bar's close because the data ended.
pub const EXIT_REASON_END_OF_DATA: &str = "end_of_data";

/// Exit reason of a trade closed at its stop-loss level or at an open beyond it.
pub const EXIT_REASON_STOP_LOSS: &str = "stop_loss";

/// Exit reason of a trade closed at its take-profit level or at an open beyond it.
pub const EXIT_REASON_TAKE_PROFIT: &str = "take_profit";

/// Exit reason of a leveraged trade closed at its liquidation price or at an open beyond it.
pub const EXIT_REASON_LIQUIDATION: &str = "liquidation";

/// Side of a trade that bought first and sold to close.
pub const SIDE_LONG: &str = "long";

/// Side of a trade that sold first and bought to close.
pub const SIDE_SHORT: &str = "short";

/// One OHLC bar of the backtest range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleBar {
    /// Bar open time in milliseconds since the Unix epoch.
    pub open_time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

/// Account and cost settings of an oracle backtest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleConfig {
    /// Cash equity before the first bar.
    pub initial_capital: f64,
    /// Fee per leg as a fraction of notional (0.00055 is 0.055 %).
    pub commission: f64,
    /// Fraction of the current equity committed as margin at each entry.
    pub position_size: f64,
    /// Notional divided by margin, so 1.0 means no leverage.
    pub leverage: f64,
    /// Number of bars in a year, used to annualize the Sharpe ratio (525600 for 1-minute bars).
    pub bars_per_year: f64,
}

impl Default for OracleConfig {
    fn default() -> Self {
        Self {
            initial_capital: 10_000.0,
            commission: 0.000_55,
            position_size: 1.0,
            leverage: 1.0,
            bars_per_year: 525_600.0,
        }
    }
}

/// One closed trade.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleTrade {
    /// [`SIDE_LONG`] or [`SIDE_SHORT`].
    pub side: &'static str,
    /// Open time of the bar whose open filled the entry.
    pub entry_time_ms: i64,
    /// Open time of the bar in which the exit filled, or of the last bar for an end-of-data
    /// exit.
    pub exit_time_ms: i64,
    /// Entry fill price, slippage included.
    pub entry_price: f64,
    /// Exit fill price, slippage included.
    pub exit_price: f64,
    pub quantity: f64,
    /// Gross profit minus the entry and exit fees and the funding paid.
    pub pnl: f64,
    /// Profit or loss as a percentage of the equity committed at entry
    /// (`equity * position_size`).
    pub pnl_pct: f64,
    /// Sum of the entry and exit fees.
    pub commission: f64,
    /// Funding paid while the position was open, negative when received. Always 0 in the
    /// results of [`long_only`] and [`sma_crossover`].
    pub funding: f64,
    /// One of the `EXIT_REASON_*` constants. [`long_only`] and [`sma_crossover`] use only
    /// [`EXIT_REASON_SIGNAL`] and [`EXIT_REASON_END_OF_DATA`].
    pub exit_reason: &'static str,
}

/// Trades, equity curve and summary metrics of one oracle backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleResult {
    pub trades: Vec<OracleTrade>,
    /// Equity at each bar's close, one value per input bar.
    pub equity: Vec<f64>,
    pub final_capital: f64,
    /// Total return in percent of the initial capital.
    pub total_return: f64,
    pub total_trades: usize,
    /// Number of trades with a pnl above zero.
    pub winning_trades: usize,
    /// Number of trades with a pnl below zero.
    pub losing_trades: usize,
    /// Winning trades in percent of all trades, `None` without trades.
    pub win_rate: Option<f64>,
    /// Maximum drawdown of the equity curve in percent, `None` without bars.
    pub max_drawdown: Option<f64>,
    /// Annualized Sharpe ratio of the per-bar returns, `None` with fewer than two returns or a
    /// zero standard deviation.
    pub sharpe_ratio: Option<f64>,
}

/// Runs the long-only SMA crossover backtest over `bars`.
///
/// The first bars serve as warm-up until both SMAs are defined. A `fast_period` greater than or
/// equal to `slow_period` is accepted.
///
/// # Panics
///
/// Panics if a period is 0, if the configuration is invalid (see [`validate_config`]), if the
/// bar open times are not strictly ascending, or if an open or close is not a positive finite
/// number.
pub fn sma_crossover(
    bars: &[OracleBar],
    fast_period: usize,
    slow_period: usize,
    config: &OracleConfig,
) -> OracleResult {
    assert!(fast_period > 0, "fast_period must be at least 1, got 0");
    assert!(slow_period > 0, "slow_period must be at least 1, got 0");
    validate_config(config);
    validate_bars(bars);

    let mut closes = Vec::with_capacity(bars.len());
    for bar in bars {
        closes.push(bar.close);
    }
    let fast = simple_moving_average(&closes, fast_period);
    let slow = simple_moving_average(&closes, slow_period);
    let long_signals = crosses_above(&fast, &slow);
    let short_signals = crosses_below(&fast, &slow);
    long_only(bars, &long_signals, &short_signals, config)
}

/// Runs a long-only backtest from per-bar signals decided at each bar's close: a long signal
/// while flat enters at the next open, a short signal while long exits at the next open, and
/// a position still open after the last bar closes at its close.
///
/// # Panics
///
/// Panics if the signal slices are not as long as `bars`, and for the reasons of
/// [`sma_crossover`].
pub fn long_only(
    bars: &[OracleBar],
    long_signals: &[bool],
    short_signals: &[bool],
    config: &OracleConfig,
) -> OracleResult {
    assert_eq!(long_signals.len(), bars.len(), "one long signal per bar");
    assert_eq!(short_signals.len(), bars.len(), "one short signal per bar");
    validate_config(config);
    validate_bars(bars);

    // `cash` is the equity while flat. While long it stays at the equity at entry until the
    // exit adds the trade's pnl.
    let mut cash = config.initial_capital;
    let mut position: Option<OpenPosition> = None;
    let mut pending_order: Option<Order> = None;
    let mut trades = Vec::new();
    let mut equity = Vec::with_capacity(bars.len());

    for (t, bar) in bars.iter().enumerate() {
        // Fill the order decided at the previous bar's close at this bar's open.
        match pending_order.take() {
            Some(Order::Enter) => {
                position = Some(open_position(cash, bar, config));
            }
            Some(Order::Exit) => {
                let open = position
                    .take()
                    .expect("an exit order is only placed while a position is open");
                let trade = close_position(
                    &open,
                    bar.open_time_ms,
                    bar.open,
                    config,
                    EXIT_REASON_SIGNAL,
                );
                cash += trade.pnl;
                trades.push(trade);
            }
            None => {}
        }

        let value_at_close = match &position {
            None => cash,
            Some(open) => {
                open.equity_at_entry - open.entry_fee
                    + open.quantity * (bar.close - open.entry_price)
            }
        };
        equity.push(value_at_close);

        // A signal on the last bar has no next open to fill at.
        let is_last_bar = t + 1 == bars.len();
        if is_last_bar {
            break;
        }
        pending_order = match &position {
            None if long_signals[t] => Some(Order::Enter),
            Some(_) if short_signals[t] => Some(Order::Exit),
            _ => None,
        };
    }

    if let Some(open) = position.take() {
        let last_bar = bars
            .last()
            .expect("a position can only be open after at least one bar");
        let trade = close_position(
            &open,
            last_bar.open_time_ms,
            last_bar.close,
            config,
            EXIT_REASON_END_OF_DATA,
        );
        cash += trade.pnl;
        trades.push(trade);
        // The last value includes the exit fee, so it equals the final capital.
        let last_value = equity.last_mut().expect("the curve has one value per bar");
        *last_value = cash;
    }

    summarize(trades, equity, cash, config)
}

/// Computes the simple moving average of `closes` over `period` values.
///
/// The value at index `t` is `None` while `t < period - 1`. Otherwise it is TA-Lib's running
/// total divided by `period`: the total starts as the sum of the first `period - 1` closes,
/// and at each `t` it adds `closes[t]`, is read, then drops `closes[t + 1 - period]`.
///
/// # Panics
///
/// Panics if `period` is 0.
pub fn simple_moving_average(closes: &[f64], period: usize) -> Vec<Option<f64>> {
    assert!(period > 0, "SMA period must be at least 1, got 0");
    let mut averages = Vec::with_capacity(closes.len());
    let mut total = 0.0;
    for t in 0..closes.len() {
        if t + 1 < period {
            total += closes[t];
            averages.push(None);
            continue;
        }
        total += closes[t];
        averages.push(Some(total / period as f64));
        total -= closes[t + 1 - period];
    }
    averages
}

/// Computes the maximum drawdown of an equity curve in percent.
///
/// The drawdown at a bar is `(peak - value) / peak * 100`, where `peak` is the running maximum
/// of the curve up to and including that bar. Returns `Some(0.0)` for a curve that never falls
/// and `None` for an empty curve.
pub fn max_drawdown(equity: &[f64]) -> Option<f64> {
    let first = *equity.first()?;
    let mut peak = first;
    let mut max_drawdown = 0.0;
    for &value in equity {
        if value > peak {
            peak = value;
        }
        let drawdown = (peak - value) / peak * 100.0;
        if drawdown > max_drawdown {
            max_drawdown = drawdown;
        }
    }
    Some(max_drawdown)
}

/// Computes the annualized Sharpe ratio of an equity curve.
///
/// The per-bar simple returns are `equity[t] / equity[t - 1] - 1` for `t` in `1..len`. The ratio
/// is their mean divided by their sample standard deviation (denominator `n - 1`), times
/// `sqrt(bars_per_year)`, with a risk-free rate of zero. Returns `None` with fewer than two
/// returns or a standard deviation of exactly 0.
pub fn sharpe_ratio(equity: &[f64], bars_per_year: f64) -> Option<f64> {
    let mut returns = Vec::with_capacity(equity.len().saturating_sub(1));
    for pair in equity.windows(2) {
        returns.push(pair[1] / pair[0] - 1.0);
    }
    if returns.len() < 2 {
        return None;
    }

    let count = returns.len() as f64;
    let mut sum = 0.0;
    for value in &returns {
        sum += value;
    }
    let mean = sum / count;

    let mut squared_deviations = 0.0;
    for value in &returns {
        squared_deviations += (value - mean) * (value - mean);
    }
    let standard_deviation = (squared_deviations / (count - 1.0)).sqrt();
    if standard_deviation == 0.0 {
        return None;
    }
    Some(mean / standard_deviation * bars_per_year.sqrt())
}

/// Checks that every configuration value is finite and in range.
///
/// # Panics
///
/// Panics if `initial_capital`, `position_size`, `leverage` or `bars_per_year` is not above 0,
/// or if `commission` is negative. Each of them must also be finite.
pub fn validate_config(config: &OracleConfig) {
    let positive_fields = [
        ("initial_capital", config.initial_capital),
        ("position_size", config.position_size),
        ("leverage", config.leverage),
        ("bars_per_year", config.bars_per_year),
    ];
    for (name, value) in positive_fields {
        assert!(
            value.is_finite() && value > 0.0,
            "invalid {name} {value}: expected a finite number above 0"
        );
    }
    assert!(
        config.commission.is_finite() && config.commission >= 0.0,
        "invalid commission {}: expected a finite fraction of at least 0",
        config.commission
    );
}

fn validate_bars(bars: &[OracleBar]) {
    for (index, bar) in bars.iter().enumerate() {
        assert!(
            bar.open.is_finite() && bar.open > 0.0,
            "invalid open {} at bar {index}: expected a finite price above 0",
            bar.open
        );
        assert!(
            bar.close.is_finite() && bar.close > 0.0,
            "invalid close {} at bar {index}: expected a finite price above 0",
            bar.close
        );
    }
    for (index, pair) in bars.windows(2).enumerate() {
        assert!(
            pair[0].open_time_ms < pair[1].open_time_ms,
            "bars must be strictly ascending by open time, but bar {} at {} ms follows bar {index} at {} ms",
            index + 1,
            pair[1].open_time_ms,
            pair[0].open_time_ms
        );
    }
}

/// Order decided at a bar's close and filled at the next bar's open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Enter,
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OpenPosition {
    entry_time_ms: i64,
    entry_price: f64,
    quantity: f64,
    entry_fee: f64,
    equity_at_entry: f64,
}

/// Returns, for each bar t, whether `a` crosses above `b` there: `a[t] > b[t]` and
/// `a[t - 1] <= b[t - 1]`, all four defined.
pub fn crosses_above(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<bool> {
    crossings(a, b, |now_a, now_b, before_a, before_b| {
        now_a > now_b && before_a <= before_b
    })
}

/// Returns, for each bar t, whether `a` crosses below `b` there: `a[t] < b[t]` and
/// `a[t - 1] >= b[t - 1]`, all four defined.
pub fn crosses_below(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<bool> {
    crossings(a, b, |now_a, now_b, before_a, before_b| {
        now_a < now_b && before_a >= before_b
    })
}

/// A built-in strategy with its parameters, as [`strategy_signals`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OracleStrategy {
    /// `sma_crossover`: the fast SMA crosses the slow SMA.
    SmaCrossover {
        fast_period: usize,
        slow_period: usize,
    },
    /// `ema_crossover`: the fast EMA crosses the slow EMA.
    EmaCrossover {
        fast_period: usize,
        slow_period: usize,
    },
    /// `rsi`: the RSI crosses up through `oversold` (long) or down through `overbought`
    /// (short).
    Rsi {
        period: usize,
        oversold: f64,
        overbought: f64,
    },
    /// `macd`: the MACD line crosses its signal line.
    Macd {
        fast_period: usize,
        slow_period: usize,
        signal_period: usize,
    },
    /// `bollinger_bands`: the close crosses up through the lower band (long) or down through
    /// the upper band (short).
    BollingerBands { period: usize, std_dev: f64 },
}

/// Computes the long and short crossing signals of a built-in strategy over the closes of
/// `bars`, with the indicators of [`indicators`].
///
/// # Panics
///
/// Panics if a period is 0.
pub fn strategy_signals(bars: &[OracleBar], strategy: &OracleStrategy) -> OracleSignals {
    let mut closes = Vec::with_capacity(bars.len());
    for bar in bars {
        closes.push(bar.close);
    }
    let crossing_signals = |a: &[Option<f64>], b: &[Option<f64>]| OracleSignals::Crossings {
        long: crosses_above(a, b),
        short: crosses_below(a, b),
    };
    match *strategy {
        OracleStrategy::SmaCrossover {
            fast_period,
            slow_period,
        } => crossing_signals(
            &simple_moving_average(&closes, fast_period),
            &simple_moving_average(&closes, slow_period),
        ),
        OracleStrategy::EmaCrossover {
            fast_period,
            slow_period,
        } => crossing_signals(
            &indicators::exponential_moving_average(&closes, fast_period),
            &indicators::exponential_moving_average(&closes, slow_period),
        ),
        OracleStrategy::Rsi {
            period,
            oversold,
            overbought,
        } => {
            let rsi = indicators::relative_strength_index(&closes, period);
            OracleSignals::Crossings {
                long: crosses_above(&rsi, &vec![Some(oversold); bars.len()]),
                short: crosses_below(&rsi, &vec![Some(overbought); bars.len()]),
            }
        }
        OracleStrategy::Macd {
            fast_period,
            slow_period,
            signal_period,
        } => {
            let macd = indicators::macd(&closes, fast_period, slow_period, signal_period);
            crossing_signals(&macd.line, &macd.signal)
        }
        OracleStrategy::BollingerBands { period, std_dev } => {
            let bands = indicators::bollinger_bands(&closes, period, std_dev);
            let close: Vec<Option<f64>> = closes.iter().copied().map(Some).collect();
            OracleSignals::Crossings {
                long: crosses_above(&close, &bands.lower),
                short: crosses_below(&close, &bands.upper),
            }
        }
    }
}

fn crossings(
    a: &[Option<f64>],
    b: &[Option<f64>],
    test: fn(f64, f64, f64, f64) -> bool,
) -> Vec<bool> {
    let mut signals = vec![false; a.len()];
    for t in 1..a.len() {
        if let (Some(now_a), Some(now_b), Some(before_a), Some(before_b)) =
            (a[t], b[t], a[t - 1], b[t - 1])
        {
            signals[t] = test(now_a, now_b, before_a, before_b);
        }
    }
    signals
}

/// Opens a long position at `bar`'s open.
///
/// The quantity is sized so that the margin plus the entry fee use `position_size` of the
/// current equity: `equity * position_size / (price * (1 / leverage + commission))`.
fn open_position(equity: f64, bar: &OracleBar, config: &OracleConfig) -> OpenPosition {
    let entry_price = bar.open;
    let quantity =
        equity * config.position_size / (entry_price * (1.0 / config.leverage + config.commission));
    let entry_fee = quantity * entry_price * config.commission;
    OpenPosition {
        entry_time_ms: bar.open_time_ms,
        entry_price,
        quantity,
        entry_fee,
        equity_at_entry: equity,
    }
}

fn close_position(
    open: &OpenPosition,
    exit_time_ms: i64,
    exit_price: f64,
    config: &OracleConfig,
    exit_reason: &'static str,
) -> OracleTrade {
    let exit_fee = open.quantity * exit_price * config.commission;
    let pnl = open.quantity * (exit_price - open.entry_price) - open.entry_fee - exit_fee;
    let committed_margin = open.equity_at_entry * config.position_size;
    OracleTrade {
        side: SIDE_LONG,
        entry_time_ms: open.entry_time_ms,
        exit_time_ms,
        entry_price: open.entry_price,
        exit_price,
        quantity: open.quantity,
        pnl,
        pnl_pct: pnl / committed_margin * 100.0,
        commission: open.entry_fee + exit_fee,
        funding: 0.0,
        exit_reason,
    }
}

fn summarize(
    trades: Vec<OracleTrade>,
    equity: Vec<f64>,
    final_capital: f64,
    config: &OracleConfig,
) -> OracleResult {
    let total_trades = trades.len();
    let mut winning_trades = 0;
    let mut losing_trades = 0;
    for trade in &trades {
        if trade.pnl > 0.0 {
            winning_trades += 1;
        } else if trade.pnl < 0.0 {
            losing_trades += 1;
        }
    }
    let win_rate = if total_trades == 0 {
        None
    } else {
        Some(winning_trades as f64 / total_trades as f64 * 100.0)
    };

    OracleResult {
        total_return: (final_capital / config.initial_capital - 1.0) * 100.0,
        total_trades,
        winning_trades,
        losing_trades,
        win_rate,
        max_drawdown: max_drawdown(&equity),
        sharpe_ratio: sharpe_ratio(&equity, config.bars_per_year),
        final_capital,
        trades,
        equity,
    }
}

/// Funding instants are the multiples of 8 hours since the Unix epoch.
const FUNDING_INTERVAL_MS: i64 = 8 * 60 * 60 * 1000;

/// Positions a [`backtest`] may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OracleDirection {
    /// Long positions only.
    #[default]
    Long,
    /// Short positions only.
    Short,
    /// Long and short positions.
    Both,
}

impl OracleDirection {
    fn allows(self, side: Side) -> bool {
        match self {
            Self::Long => side == Side::Long,
            Self::Short => side == Side::Short,
            Self::Both => true,
        }
    }
}

/// Per-bar decisions of a strategy, each taken at the bar's close.
///
/// Every vector has one value per bar.
#[derive(Debug, Clone, PartialEq)]
pub enum OracleSignals {
    /// Edge-triggered `long` and `short` signals of a built-in strategy. A bar with both true
    /// counts as a bar with neither.
    Crossings { long: Vec<bool>, short: Vec<bool> },
    /// Level-triggered conditions of an expression strategy, false where the expression is
    /// absent or null.
    Levels {
        entry_long: Vec<bool>,
        exit_long: Vec<bool>,
        entry_short: Vec<bool>,
        exit_short: Vec<bool>,
    },
}

/// Order options of a [`backtest`] beyond the account settings of [`OracleConfig`].
///
/// Every fraction is a plain fraction, so 0.05 is 5 %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleOrders {
    pub direction: OracleDirection,
    /// Stop-loss distance as a fraction of the entry price, above 0 and below 1.
    pub stop_loss: Option<f64>,
    /// Take-profit distance as a fraction of the entry price, above 0 and up to 100.
    pub take_profit: Option<f64>,
    /// Fraction that worsens entries, signal exits, stop-loss exits and end-of-data exits,
    /// from 0 to below 0.1.
    pub slippage: f64,
    /// Funding per 8 hours as a fraction of notional, from -0.05 to 0.05.
    pub funding_rate: Option<f64>,
    /// Maintenance margin as a fraction of entry notional, from 0 to below `1 / leverage`.
    pub maintenance_margin_rate: f64,
}

impl Default for OracleOrders {
    fn default() -> Self {
        Self {
            direction: OracleDirection::Long,
            stop_loss: None,
            take_profit: None,
            slippage: 0.0,
            funding_rate: None,
            maintenance_margin_rate: 0.005,
        }
    }
}

/// Summary metrics of one [`backtest`], named as in the stored results.
///
/// Percentages are in percent (5.0 is 5 %) and money is in quote currency.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleMetrics {
    /// Cash after the last trade.
    pub final_capital: f64,
    /// `(final_capital / initial_capital - 1) * 100`.
    pub total_return: f64,
    pub total_trades: usize,
    /// Number of trades with a pnl above 0.
    pub winning_trades: usize,
    /// Number of trades with a pnl below 0.
    pub losing_trades: usize,
    /// Winning trades in percent of all trades, `None` without trades.
    pub win_rate: Option<f64>,
    /// Mean over sample standard deviation of the per-bar returns, times
    /// `sqrt(bars_per_year)`.
    pub sharpe_ratio: Option<f64>,
    /// Mean of the per-bar returns over their downside deviation, times `sqrt(bars_per_year)`.
    pub sortino_ratio: Option<f64>,
    /// Annualized return over `max_drawdown / 100`.
    pub calmar_ratio: Option<f64>,
    /// Largest value of the drawdown curve, in percent.
    pub max_drawdown: f64,
    /// Bars of the longest drawdown run.
    pub max_drawdown_duration_bars: usize,
    /// Seconds of open time of the longest drawdown run.
    pub max_drawdown_duration_seconds: i64,
    /// Sum of positive pnl over minus the sum of negative pnl, `None` without a losing trade.
    pub profit_factor: Option<f64>,
    /// Mean pnl per trade, `None` without trades.
    pub expectancy: Option<f64>,
    /// Mean `pnl_pct` per trade, `None` without trades.
    pub avg_trade_pct: Option<f64>,
    /// Largest positive pnl, `None` without a winning trade.
    pub largest_win: Option<f64>,
    /// Most negative pnl, `None` without a losing trade.
    pub largest_loss: Option<f64>,
    /// Bars whose close finds a position open, in percent of all bars.
    pub exposure_pct: f64,
    /// `(last close / first open - 1) * 100`.
    pub buy_and_hold_return: f64,
    /// Sum of trade commission.
    pub total_commission: f64,
    /// Sum of trade funding, positive when paid.
    pub total_funding: f64,
    /// Number of trades with exit reason [`EXIT_REASON_LIQUIDATION`].
    pub liquidations: usize,
}

/// Trades, per-bar curves and metrics of one [`backtest`].
#[derive(Debug, Clone, PartialEq)]
pub struct OracleReport {
    pub trades: Vec<OracleTrade>,
    /// Equity at each bar's close. The last value is the final capital.
    pub equity: Vec<f64>,
    /// `(peak - equity) / peak * 100` at each bar, with `peak` the largest equity so far.
    pub drawdown: Vec<f64>,
    pub metrics: OracleMetrics,
}

/// Runs a backtest of per-bar `signals` over `bars` with every rule of a `bst` backtest:
/// direction, sizing, slippage, commission, stop-loss, take-profit, liquidation, funding,
/// the end-of-data exit and the full metrics table.
///
/// The module documentation lists how this function reads the rules where they leave room.
///
/// # Panics
///
/// Panics if any of these holds:
/// - `bars` is empty, or a signal vector is not as long as `bars`;
/// - an account or order option is outside its documented range (see [`validate_orders`]);
/// - the bar open times are not strictly ascending;
/// - a price is not a positive finite number.
pub fn backtest(
    bars: &[OracleBar],
    signals: &OracleSignals,
    config: &OracleConfig,
    orders: &OracleOrders,
) -> OracleReport {
    assert!(!bars.is_empty(), "a backtest needs at least one bar, got 0");
    validate_signals(signals, bars.len());
    validate_config(config);
    validate_orders(config, orders);
    validate_bars(bars);
    validate_highs_and_lows(bars);

    // `cash` is the equity after every closed trade. It does not change while a position is
    // open, so it is also the equity the open position was sized from.
    let mut cash = config.initial_capital;
    let mut position: Option<Position> = None;
    let mut pending_order: Option<PendingOrder> = None;
    let mut trades = Vec::new();
    let mut equity = Vec::with_capacity(bars.len());
    let mut bars_with_position = 0_usize;

    for (t, bar) in bars.iter().enumerate() {
        // 1. Funding, settled at the open before any fill of this bar.
        if let (Some(rate), Some(open_position), Some(previous_bar)) = (
            orders.funding_rate,
            position.as_mut(),
            t.checked_sub(1).map(|index| &bars[index]),
        ) {
            let instants = funding_instants(previous_bar.open_time_ms, bar.open_time_ms);
            let payment = instants as f64 * rate * open_position.quantity * bar.open;
            match open_position.side {
                Side::Long => open_position.funding += payment,
                Side::Short => open_position.funding -= payment,
            }
        }

        // 2. The order decided at the previous close fills at this open.
        match pending_order.take() {
            Some(PendingOrder::Enter(side)) => {
                position = enter_position(side, cash, bar, config, orders);
            }
            Some(PendingOrder::Exit) => {
                let open_position = position
                    .take()
                    .expect("an exit order is only placed while a position is open");
                let price = market_exit_price(open_position.side, bar.open, orders.slippage);
                let trade = close_trade(
                    &open_position,
                    bar.open_time_ms,
                    price,
                    EXIT_REASON_SIGNAL,
                    config,
                );
                cash += trade.pnl;
                trades.push(trade);
            }
            Some(PendingOrder::Reverse(side)) => {
                let open_position = position
                    .take()
                    .expect("a reversal is only placed while a position is open");
                let price = market_exit_price(open_position.side, bar.open, orders.slippage);
                let trade = close_trade(
                    &open_position,
                    bar.open_time_ms,
                    price,
                    EXIT_REASON_SIGNAL,
                    config,
                );
                cash += trade.pnl;
                trades.push(trade);
                position = enter_position(side, cash, bar, config, orders);
            }
            None => {}
        }

        // 3. Stop-loss, take-profit and liquidation, from the fill bar on.
        if let Some(open_position) = &position
            && let Some((price, reason)) = check_levels(open_position, bar, orders.slippage)
        {
            let trade = close_trade(open_position, bar.open_time_ms, price, reason, config);
            cash += trade.pnl;
            trades.push(trade);
            position = None;
        }

        // 4. Mark to market at the close.
        let value_at_close = match &position {
            None => cash,
            Some(open_position) => {
                bars_with_position += 1;
                let gross = gross_pnl(
                    open_position.side,
                    open_position.quantity,
                    open_position.entry_price,
                    bar.close,
                );
                open_position.cash_at_entry + gross
                    - open_position.entry_commission
                    - open_position.funding
            }
        };
        equity.push(value_at_close);

        // 5. The decision for the next bar. One on the last bar would never fill.
        if t + 1 < bars.len() {
            let held_side = position.as_ref().map(|open_position| open_position.side);
            pending_order = decide(signals, t, held_side, orders.direction);
        }
    }

    if let Some(open_position) = position.take() {
        let last_bar = bars.last().expect("bars were checked to be non-empty");
        let price = market_exit_price(open_position.side, last_bar.close, orders.slippage);
        let trade = close_trade(
            &open_position,
            last_bar.open_time_ms,
            price,
            EXIT_REASON_END_OF_DATA,
            config,
        );
        cash += trade.pnl;
        trades.push(trade);
        // The exit fee is booked when the position closes, so the last value is the final
        // capital.
        let last_value = equity.last_mut().expect("the curve has one value per bar");
        *last_value = cash;
    }

    let drawdown = drawdown_curve(&equity);
    let metrics = compute_metrics(
        bars,
        &trades,
        &equity,
        &drawdown,
        cash,
        bars_with_position,
        config,
    );
    OracleReport {
        trades,
        equity,
        drawdown,
        metrics,
    }
}

/// Checks the order options of a [`backtest`] against their documented ranges.
///
/// # Panics
///
/// Panics unless `commission` is in `[0, 0.1)`, `leverage` in `[1, 100]`, `position_size` in
/// `(0, 1]`, `stop_loss` in `(0, 1)`, `take_profit` in `(0, 100]`, `slippage` in `[0, 0.1)`,
/// `funding_rate` in `[-0.05, 0.05]` and `maintenance_margin_rate` in `[0, 1 / leverage)`.
pub fn validate_orders(config: &OracleConfig, orders: &OracleOrders) {
    assert!(
        (0.0..0.1).contains(&config.commission),
        "invalid commission {}: expected a fraction from 0 to below 0.1",
        config.commission
    );
    assert!(
        (1.0..=100.0).contains(&config.leverage),
        "invalid leverage {}: expected a value from 1 to 100",
        config.leverage
    );
    assert!(
        config.position_size > 0.0 && config.position_size <= 1.0,
        "invalid position_size {}: expected a fraction above 0 and up to 1",
        config.position_size
    );
    if let Some(stop_loss) = orders.stop_loss {
        assert!(
            stop_loss > 0.0 && stop_loss < 1.0,
            "invalid stop_loss {stop_loss}: expected a fraction above 0 and below 1"
        );
    }
    if let Some(take_profit) = orders.take_profit {
        assert!(
            take_profit > 0.0 && take_profit <= 100.0,
            "invalid take_profit {take_profit}: expected a fraction above 0 and up to 100"
        );
    }
    assert!(
        (0.0..0.1).contains(&orders.slippage),
        "invalid slippage {}: expected a fraction from 0 to below 0.1",
        orders.slippage
    );
    if let Some(funding_rate) = orders.funding_rate {
        assert!(
            (-0.05..=0.05).contains(&funding_rate),
            "invalid funding_rate {funding_rate}: expected a fraction from -0.05 to 0.05"
        );
    }
    assert!(
        (0.0..1.0 / config.leverage).contains(&orders.maintenance_margin_rate),
        "invalid maintenance_margin_rate {}: expected a fraction from 0 to below 1 / leverage ({})",
        orders.maintenance_margin_rate,
        1.0 / config.leverage
    );
}

fn validate_signals(signals: &OracleSignals, bar_count: usize) {
    let named_vectors: Vec<(&str, &Vec<bool>)> = match signals {
        OracleSignals::Crossings { long, short } => vec![("long", long), ("short", short)],
        OracleSignals::Levels {
            entry_long,
            exit_long,
            entry_short,
            exit_short,
        } => vec![
            ("entry_long", entry_long),
            ("exit_long", exit_long),
            ("entry_short", entry_short),
            ("exit_short", exit_short),
        ],
    };
    for (name, values) in named_vectors {
        assert_eq!(
            values.len(),
            bar_count,
            "signal {name} has {} values, expected one per bar ({bar_count})",
            values.len()
        );
    }
}

fn validate_highs_and_lows(bars: &[OracleBar]) {
    for (index, bar) in bars.iter().enumerate() {
        assert!(
            bar.high.is_finite() && bar.high > 0.0,
            "invalid high {} at bar {index}: expected a finite price above 0",
            bar.high
        );
        assert!(
            bar.low.is_finite() && bar.low > 0.0,
            "invalid low {} at bar {index}: expected a finite price above 0",
            bar.low
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Long,
    Short,
}

impl Side {
    fn opposite(self) -> Self {
        match self {
            Self::Long => Self::Short,
            Self::Short => Self::Long,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Long => SIDE_LONG,
            Self::Short => SIDE_SHORT,
        }
    }
}

/// Order decided at a bar's close for the next bar's open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingOrder {
    Enter(Side),
    Exit,
    /// Closes the open position and opens the given side in the same fill.
    Reverse(Side),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    side: Side,
    entry_time_ms: i64,
    entry_price: f64,
    quantity: f64,
    entry_commission: f64,
    /// Funding paid so far, negative when received.
    funding: f64,
    cash_at_entry: f64,
    stop_loss_price: Option<f64>,
    take_profit_price: Option<f64>,
    liquidation_price: Option<f64>,
}

/// Opens a position at `bar`'s open, or returns `None` when `cash` is zero or below.
fn enter_position(
    side: Side,
    cash: f64,
    bar: &OracleBar,
    config: &OracleConfig,
    orders: &OracleOrders,
) -> Option<Position> {
    if cash <= 0.0 {
        return None;
    }
    let entry_price = match side {
        Side::Long => bar.open * (1.0 + orders.slippage),
        Side::Short => bar.open * (1.0 - orders.slippage),
    };
    let quantity =
        cash * config.position_size / (entry_price * (1.0 / config.leverage + config.commission));
    let entry_commission = quantity * entry_price * config.commission;

    let stop_loss_price = orders.stop_loss.map(|stop_loss| match side {
        Side::Long => entry_price * (1.0 - stop_loss),
        Side::Short => entry_price * (1.0 + stop_loss),
    });
    let take_profit_price = orders.take_profit.map(|take_profit| match side {
        Side::Long => entry_price * (1.0 + take_profit),
        Side::Short => entry_price * (1.0 - take_profit),
    });
    let leverage = config.leverage;
    let margin_rate = orders.maintenance_margin_rate;
    let liquidation_price = if leverage > 1.0 {
        Some(match side {
            Side::Long => entry_price * (1.0 - 1.0 / leverage + margin_rate),
            Side::Short => entry_price * (1.0 + 1.0 / leverage - margin_rate),
        })
    } else {
        None
    };

    Some(Position {
        side,
        entry_time_ms: bar.open_time_ms,
        entry_price,
        quantity,
        entry_commission,
        funding: 0.0,
        cash_at_entry: cash,
        stop_loss_price,
        take_profit_price,
        liquidation_price,
    })
}

/// Returns the fill price of a market exit at `price`, worsened by `slippage`.
fn market_exit_price(side: Side, price: f64, slippage: f64) -> f64 {
    match side {
        Side::Long => price * (1.0 - slippage),
        Side::Short => price * (1.0 + slippage),
    }
}

fn gross_pnl(side: Side, quantity: f64, entry_price: f64, exit_price: f64) -> f64 {
    match side {
        Side::Long => quantity * (exit_price - entry_price),
        Side::Short => quantity * (entry_price - exit_price),
    }
}

/// Closes `position` at `exit_price`, booking the exit fee and the funding paid.
fn close_trade(
    position: &Position,
    exit_time_ms: i64,
    exit_price: f64,
    exit_reason: &'static str,
    config: &OracleConfig,
) -> OracleTrade {
    let exit_commission = position.quantity * exit_price * config.commission;
    let commission = position.entry_commission + exit_commission;
    let gross = gross_pnl(
        position.side,
        position.quantity,
        position.entry_price,
        exit_price,
    );
    let pnl = gross - commission - position.funding;
    let committed_equity = position.cash_at_entry * config.position_size;
    OracleTrade {
        side: position.side.name(),
        entry_time_ms: position.entry_time_ms,
        exit_time_ms,
        entry_price: position.entry_price,
        exit_price,
        quantity: position.quantity,
        pnl,
        pnl_pct: pnl / committed_equity * 100.0,
        commission,
        funding: position.funding,
        exit_reason,
    }
}

/// Returns the exit price and reason when `bar` reaches one of the position's levels.
///
/// The checks run in this order, and the first that matches exits:
/// 1. the open at or beyond an adverse level (stop-loss or liquidation);
/// 2. the open at or beyond the take-profit level;
/// 3. the low (high for a short) reaching an adverse level;
/// 4. the high (low for a short) reaching the take-profit level.
fn check_levels(
    position: &Position,
    bar: &OracleBar,
    slippage: f64,
) -> Option<(f64, &'static str)> {
    let side = position.side;
    let is_adverse = |price: f64, level: f64| match side {
        Side::Long => price <= level,
        Side::Short => price >= level,
    };
    let is_favourable = |price: f64, level: f64| match side {
        Side::Long => price >= level,
        Side::Short => price <= level,
    };
    // The extreme of the bar on the losing side, then on the winning side.
    let (adverse_extreme, favourable_extreme) = match side {
        Side::Long => (bar.low, bar.high),
        Side::Short => (bar.high, bar.low),
    };

    // 1. An open at or beyond an adverse level exits at the open.
    if let Some((_, reason)) = nearer_adverse_level(position, |level| is_adverse(bar.open, level)) {
        return Some((adverse_exit_price(side, bar.open, reason, slippage), reason));
    }

    // 2. An open at or beyond the take-profit level exits at the open, without slippage.
    if let Some(level) = position.take_profit_price
        && is_favourable(bar.open, level)
    {
        return Some((bar.open, EXIT_REASON_TAKE_PROFIT));
    }

    // 3. A bar reaching an adverse level exits at that level.
    if let Some((level, reason)) =
        nearer_adverse_level(position, |level| is_adverse(adverse_extreme, level))
    {
        return Some((adverse_exit_price(side, level, reason, slippage), reason));
    }

    // 4. A bar reaching the take-profit level exits there, without slippage.
    if let Some(level) = position.take_profit_price
        && is_favourable(favourable_extreme, level)
    {
        return Some((level, EXIT_REASON_TAKE_PROFIT));
    }

    None
}

/// Returns the adverse level that `is_reached` accepts and that lies nearer the entry, with
/// its exit reason. The stop-loss wins a tie with the liquidation price.
fn nearer_adverse_level(
    position: &Position,
    is_reached: impl Fn(f64) -> bool,
) -> Option<(f64, &'static str)> {
    let stop_loss = position.stop_loss_price.filter(|&level| is_reached(level));
    let liquidation = position
        .liquidation_price
        .filter(|&level| is_reached(level));
    match (stop_loss, liquidation) {
        (Some(stop_level), Some(liquidation_level)) => {
            let stop_is_nearer = match position.side {
                Side::Long => stop_level >= liquidation_level,
                Side::Short => stop_level <= liquidation_level,
            };
            if stop_is_nearer {
                Some((stop_level, EXIT_REASON_STOP_LOSS))
            } else {
                Some((liquidation_level, EXIT_REASON_LIQUIDATION))
            }
        }
        (Some(stop_level), None) => Some((stop_level, EXIT_REASON_STOP_LOSS)),
        (None, Some(liquidation_level)) => Some((liquidation_level, EXIT_REASON_LIQUIDATION)),
        (None, None) => None,
    }
}

/// Returns the fill price of an adverse exit at `price`: a stop-loss is a market fill with
/// slippage, a liquidation fills at `price` itself.
fn adverse_exit_price(side: Side, price: f64, reason: &'static str, slippage: f64) -> f64 {
    if reason == EXIT_REASON_STOP_LOSS {
        market_exit_price(side, price, slippage)
    } else {
        price
    }
}

/// Counts the funding instants (multiples of 8 hours since the epoch) in
/// `(previous_open_ms, open_ms]`.
fn funding_instants(previous_open_ms: i64, open_ms: i64) -> i64 {
    open_ms.div_euclid(FUNDING_INTERVAL_MS) - previous_open_ms.div_euclid(FUNDING_INTERVAL_MS)
}

/// Returns the order that bar `t`'s signals place for the next open, given the side held
/// after bar `t`'s level checks.
fn decide(
    signals: &OracleSignals,
    t: usize,
    held_side: Option<Side>,
    direction: OracleDirection,
) -> Option<PendingOrder> {
    match signals {
        OracleSignals::Crossings { long, short } => {
            // A bar with both signals counts as a bar with neither.
            let signal = match (long[t], short[t]) {
                (true, false) => Some(Side::Long),
                (false, true) => Some(Side::Short),
                _ => None,
            };
            let signal_side = signal?;
            match held_side {
                None if direction.allows(signal_side) => Some(PendingOrder::Enter(signal_side)),
                None => None,
                Some(held) if held == signal_side.opposite() => {
                    if direction == OracleDirection::Both {
                        Some(PendingOrder::Reverse(signal_side))
                    } else {
                        Some(PendingOrder::Exit)
                    }
                }
                Some(_) => None,
            }
        }
        OracleSignals::Levels {
            entry_long,
            exit_long,
            entry_short,
            exit_short,
        } => match held_side {
            None => {
                // An entry counts unless its own side's exit is also true on the bar.
                let long_counts = direction.allows(Side::Long) && entry_long[t] && !exit_long[t];
                let short_counts =
                    direction.allows(Side::Short) && entry_short[t] && !exit_short[t];
                match (long_counts, short_counts) {
                    (true, false) => Some(PendingOrder::Enter(Side::Long)),
                    (false, true) => Some(PendingOrder::Enter(Side::Short)),
                    _ => None,
                }
            }
            // An entry of the other side waits, so an expression strategy never reverses in
            // one fill.
            Some(Side::Long) if exit_long[t] => Some(PendingOrder::Exit),
            Some(Side::Short) if exit_short[t] => Some(PendingOrder::Exit),
            Some(_) => None,
        },
    }
}

/// Computes `(peak - equity) / peak * 100` at each bar, with `peak` the largest equity up
/// to and including that bar.
fn drawdown_curve(equity: &[f64]) -> Vec<f64> {
    let mut drawdown = Vec::with_capacity(equity.len());
    let mut peak = f64::NEG_INFINITY;
    for &value in equity {
        if value > peak {
            peak = value;
        }
        drawdown.push((peak - value) / peak * 100.0);
    }
    drawdown
}

/// Longest drawdown run of a curve, as start and end bar indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrawdownRun {
    start: usize,
    end: usize,
}

/// Finds the longest drawdown run, the first one on a tie in bars.
///
/// A run starts at the last bar at or above the running peak before the curve falls below
/// it. It ends at the first later bar at or above that peak, or at the last bar.
fn longest_drawdown_run(equity: &[f64]) -> Option<DrawdownRun> {
    let mut longest: Option<DrawdownRun> = None;
    let mut record = |run: DrawdownRun| {
        let is_longer = match longest {
            None => true,
            Some(current) => run.end - run.start > current.end - current.start,
        };
        if is_longer {
            longest = Some(run);
        }
    };

    let mut peak = f64::NEG_INFINITY;
    let mut peak_index = 0;
    let mut below_peak = false;
    for (index, &value) in equity.iter().enumerate() {
        if value >= peak {
            if below_peak {
                record(DrawdownRun {
                    start: peak_index,
                    end: index,
                });
                below_peak = false;
            }
            peak = value;
            peak_index = index;
        } else {
            below_peak = true;
        }
    }
    if below_peak {
        record(DrawdownRun {
            start: peak_index,
            end: equity.len() - 1,
        });
    }
    longest
}

fn per_bar_returns(equity: &[f64]) -> Vec<f64> {
    let mut returns = Vec::with_capacity(equity.len().saturating_sub(1));
    for pair in equity.windows(2) {
        returns.push(pair[1] / pair[0] - 1.0);
    }
    returns
}

/// Computes the annualized Sortino ratio: the mean per-bar return over
/// `sqrt(sum of min(r, 0)^2 / count of r)`, times `sqrt(bars_per_year)`. Returns `None` with
/// fewer than two returns or without a negative return.
fn sortino_ratio(equity: &[f64], bars_per_year: f64) -> Option<f64> {
    let returns = per_bar_returns(equity);
    if returns.len() < 2 {
        return None;
    }
    let count = returns.len() as f64;
    let mut sum = 0.0;
    let mut downside_sum_of_squares = 0.0;
    let mut has_negative_return = false;
    for &value in &returns {
        sum += value;
        if value < 0.0 {
            downside_sum_of_squares += value * value;
            has_negative_return = true;
        }
    }
    if !has_negative_return {
        return None;
    }
    let mean = sum / count;
    let downside_deviation = (downside_sum_of_squares / count).sqrt();
    Some(mean / downside_deviation * bars_per_year.sqrt())
}

/// Computes the Calmar ratio: `(final / initial)^(bars_per_year / bars) - 1` over
/// `max_drawdown / 100`. Returns `None` when `max_drawdown` is 0.
fn calmar_ratio(
    final_capital: f64,
    initial_capital: f64,
    bar_count: usize,
    max_drawdown: f64,
    bars_per_year: f64,
) -> Option<f64> {
    if max_drawdown == 0.0 {
        return None;
    }
    let annualized_return =
        (final_capital / initial_capital).powf(bars_per_year / bar_count as f64) - 1.0;
    Some(annualized_return / (max_drawdown / 100.0))
}

fn compute_metrics(
    bars: &[OracleBar],
    trades: &[OracleTrade],
    equity: &[f64],
    drawdown: &[f64],
    final_capital: f64,
    bars_with_position: usize,
    config: &OracleConfig,
) -> OracleMetrics {
    let total_trades = trades.len();
    let mut winning_trades = 0;
    let mut losing_trades = 0;
    let mut liquidations = 0;
    let mut pnl_sum = 0.0;
    let mut pnl_pct_sum = 0.0;
    let mut gross_profit = 0.0;
    let mut gross_loss = 0.0;
    let mut largest_win: Option<f64> = None;
    let mut largest_loss: Option<f64> = None;
    let mut total_commission = 0.0;
    let mut total_funding = 0.0;
    for trade in trades {
        pnl_sum += trade.pnl;
        pnl_pct_sum += trade.pnl_pct;
        total_commission += trade.commission;
        total_funding += trade.funding;
        if trade.pnl > 0.0 {
            winning_trades += 1;
            gross_profit += trade.pnl;
            if largest_win.is_none_or(|largest| trade.pnl > largest) {
                largest_win = Some(trade.pnl);
            }
        } else if trade.pnl < 0.0 {
            losing_trades += 1;
            gross_loss += trade.pnl;
            if largest_loss.is_none_or(|largest| trade.pnl < largest) {
                largest_loss = Some(trade.pnl);
            }
        }
        if trade.exit_reason == EXIT_REASON_LIQUIDATION {
            liquidations += 1;
        }
    }
    let win_rate = if total_trades == 0 {
        None
    } else {
        Some(winning_trades as f64 / total_trades as f64 * 100.0)
    };
    let per_trade_mean = |sum: f64| {
        if total_trades == 0 {
            None
        } else {
            Some(sum / total_trades as f64)
        }
    };

    let mut max_drawdown = 0.0;
    for &value in drawdown {
        if value > max_drawdown {
            max_drawdown = value;
        }
    }
    let (max_drawdown_duration_bars, max_drawdown_duration_seconds) =
        match longest_drawdown_run(equity) {
            None => (0, 0),
            Some(run) => (
                run.end - run.start,
                (bars[run.end].open_time_ms - bars[run.start].open_time_ms) / 1000,
            ),
        };

    // The ratios built on returns are null once the curve reaches zero or below, and any
    // value that is not finite is reported as null.
    let curve_stays_positive = equity.iter().all(|&value| value > 0.0);
    let finite_ratio =
        |ratio: Option<f64>| ratio.filter(|value| curve_stays_positive && value.is_finite());
    let sharpe = finite_ratio(sharpe_ratio(equity, config.bars_per_year));
    let sortino = finite_ratio(sortino_ratio(equity, config.bars_per_year));
    let calmar = finite_ratio(calmar_ratio(
        final_capital,
        config.initial_capital,
        equity.len(),
        max_drawdown,
        config.bars_per_year,
    ));

    let first_open = bars
        .first()
        .expect("bars were checked to be non-empty")
        .open;
    let last_close = bars
        .last()
        .expect("bars were checked to be non-empty")
        .close;

    OracleMetrics {
        final_capital,
        total_return: (final_capital / config.initial_capital - 1.0) * 100.0,
        total_trades,
        winning_trades,
        losing_trades,
        win_rate,
        sharpe_ratio: sharpe,
        sortino_ratio: sortino,
        calmar_ratio: calmar,
        max_drawdown,
        max_drawdown_duration_bars,
        max_drawdown_duration_seconds,
        profit_factor: if losing_trades == 0 {
            None
        } else {
            Some(gross_profit / -gross_loss)
        },
        expectancy: per_trade_mean(pnl_sum),
        avg_trade_pct: per_trade_mean(pnl_pct_sum),
        largest_win,
        largest_loss,
        exposure_pct: bars_with_position as f64 / bars.len() as f64 * 100.0,
        buy_and_hold_return: (last_close / first_open - 1.0) * 100.0,
        total_commission,
        total_funding,
        liquidations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_MS: i64 = 60_000;

    /// Builds 1-minute bars starting at time 0, with high and low spanning the open and close.
    fn bars_from(opens: &[f64], closes: &[f64]) -> Vec<OracleBar> {
        assert_eq!(opens.len(), closes.len(), "test series lengths differ");
        let mut bars = Vec::with_capacity(opens.len());
        for index in 0..opens.len() {
            let open = opens[index];
            let close = closes[index];
            bars.push(OracleBar {
                open_time_ms: index as i64 * MINUTE_MS,
                open,
                high: open.max(close),
                low: open.min(close),
                close,
            });
        }
        bars
    }

    fn test_config() -> OracleConfig {
        OracleConfig {
            initial_capital: 1000.0,
            commission: 0.001,
            position_size: 1.0,
            leverage: 1.0,
            bars_per_year: 525_600.0,
        }
    }

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, label: &str) {
        let tolerance = 1e-9 * expected.abs().max(1.0);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{label}: expected {expected}, got {actual}"
        );
    }

    #[track_caller]
    fn assert_curve(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "equity curve length");
        for (index, (&value, &want)) in actual.iter().zip(expected).enumerate() {
            assert_close(value, want, &format!("equity at bar {index}"));
        }
    }

    #[test]
    fn sma_is_plain_window_mean() {
        let averages = simple_moving_average(&[1.0, 2.0, 3.0, 4.0], 3);
        assert_eq!(averages, vec![None, None, Some(2.0), Some(3.0)]);
    }

    #[test]
    fn sma_period_one_is_close() {
        let averages = simple_moving_average(&[5.0, 7.0], 1);
        assert_eq!(averages, vec![Some(5.0), Some(7.0)]);
    }

    #[test]
    fn two_signal_trades_by_hand() {
        // SMA(2) and SMA(3) of these closes, bar by bar:
        //   t:     0   1    2     3      4    5     6      7    8     9     10    11
        //   fast:  -  10   10    11     13  13.5   12     10   9.5   10     9     8
        //   slow:  -   -   10  10.667   12   13  12.667   11   10   9.667 9.333 8.667
        // Cross above at t=3 (10 <= 10, then 11 > 10.667) enters at open[4] = 12.5.
        // Cross below at t=6 (13.5 >= 13, then 12 < 12.667) exits at open[7] = 10.
        // Cross above at t=9 (9.5 <= 10, then 10 > 9.667) enters at open[10] = 10.
        // Cross below at t=10 (10 >= 9.667, then 9 < 9.333) exits at open[11] = 8.5.
        let closes = [
            10.0, 10.0, 10.0, 12.0, 14.0, 13.0, 11.0, 9.0, 10.0, 10.0, 8.0, 8.0,
        ];
        let opens = [
            10.0, 10.0, 10.0, 11.0, 12.5, 14.0, 13.0, 10.0, 9.0, 10.0, 10.0, 8.5,
        ];
        let bars = bars_from(&opens, &closes);
        let config = test_config();

        let result = sma_crossover(&bars, 2, 3, &config);

        // First trade: 1000 / (12.5 * 1.001) = 79.92007992...
        let quantity_1 = 1000.0 / (12.5 * 1.001);
        let entry_fee_1 = quantity_1 * 12.5 * 0.001;
        let exit_fee_1 = quantity_1 * 10.0 * 0.001;
        let pnl_1 = quantity_1 * (10.0 - 12.5) - entry_fee_1 - exit_fee_1;
        assert_close(quantity_1, 79.920_079_920_08, "hand value of quantity 1");
        assert_close(pnl_1, -201.598_401_598_40, "hand value of pnl 1");
        let equity_after_1 = 1000.0 + pnl_1;

        // Second trade is sized from the equity after the first one.
        let quantity_2 = equity_after_1 / (10.0 * 1.001);
        let entry_fee_2 = quantity_2 * 10.0 * 0.001;
        let exit_fee_2 = quantity_2 * 8.5 * 0.001;
        let pnl_2 = quantity_2 * (8.5 - 10.0) - entry_fee_2 - exit_fee_2;
        let final_capital = equity_after_1 + pnl_2;
        assert_close(
            final_capital,
            677.285_431_850_87,
            "hand value of final capital",
        );

        assert_eq!(result.trades.len(), 2);
        let first = &result.trades[0];
        assert_eq!(first.entry_time_ms, 4 * MINUTE_MS);
        assert_eq!(first.exit_time_ms, 7 * MINUTE_MS);
        assert_close(first.entry_price, 12.5, "entry price 1");
        assert_close(first.exit_price, 10.0, "exit price 1");
        assert_close(first.quantity, quantity_1, "quantity 1");
        assert_close(first.pnl, pnl_1, "pnl 1");
        assert_close(first.pnl_pct, pnl_1 / 1000.0 * 100.0, "pnl_pct 1");
        assert_close(first.commission, entry_fee_1 + exit_fee_1, "commission 1");
        assert_eq!(first.exit_reason, EXIT_REASON_SIGNAL);

        let second = &result.trades[1];
        assert_eq!(second.entry_time_ms, 10 * MINUTE_MS);
        assert_eq!(second.exit_time_ms, 11 * MINUTE_MS);
        assert_close(second.entry_price, 10.0, "entry price 2");
        assert_close(second.exit_price, 8.5, "exit price 2");
        assert_close(second.quantity, quantity_2, "quantity 2");
        assert_close(second.pnl, pnl_2, "pnl 2");
        assert_close(second.pnl_pct, pnl_2 / equity_after_1 * 100.0, "pnl_pct 2");
        assert_close(second.commission, entry_fee_2 + exit_fee_2, "commission 2");
        assert_eq!(second.exit_reason, EXIT_REASON_SIGNAL);

        let expected_equity = [
            1000.0,
            1000.0,
            1000.0,
            1000.0,
            1000.0 - entry_fee_1 + quantity_1 * (14.0 - 12.5),
            1000.0 - entry_fee_1 + quantity_1 * (13.0 - 12.5),
            1000.0 - entry_fee_1 + quantity_1 * (11.0 - 12.5),
            equity_after_1,
            equity_after_1,
            equity_after_1,
            equity_after_1 - entry_fee_2 + quantity_2 * (8.0 - 10.0),
            final_capital,
        ];
        assert_curve(&result.equity, &expected_equity);

        assert_close(result.final_capital, final_capital, "final capital");
        assert_close(
            result.total_return,
            (final_capital / 1000.0 - 1.0) * 100.0,
            "total return",
        );
        assert_eq!(result.total_trades, 2);
        assert_eq!(result.winning_trades, 0);
        assert_eq!(result.losing_trades, 2);
        assert_eq!(result.win_rate, Some(0.0));

        // The peak is bar 4 and the lowest later value is bar 10.
        let peak = expected_equity[4];
        let expected_drawdown = (peak - expected_equity[10]) / peak * 100.0;
        let drawdown = result
            .max_drawdown
            .expect("a non-empty curve has a drawdown");
        assert_close(drawdown, expected_drawdown, "max drawdown");
        let sharpe = result
            .sharpe_ratio
            .expect("a curve with varying returns has a Sharpe ratio");
        assert!(sharpe < 0.0, "Sharpe ratio of a losing curve: got {sharpe}");
    }

    #[test]
    fn no_crossover_keeps_capital() {
        // Rising closes keep SMA(2) above SMA(3) from the first bar where both exist, and a
        // cross needs both defined on the previous bar too.
        let closes = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0];
        let bars = bars_from(&closes, &closes);
        let config = test_config();

        let result = sma_crossover(&bars, 2, 3, &config);

        assert!(result.trades.is_empty(), "trades: {:?}", result.trades);
        assert_curve(&result.equity, &[1000.0; 8]);
        assert_eq!(result.final_capital, 1000.0);
        assert_eq!(result.total_return, 0.0);
        assert_eq!(result.total_trades, 0);
        assert_eq!(result.winning_trades, 0);
        assert_eq!(result.losing_trades, 0);
        assert_eq!(result.win_rate, None);
        assert_eq!(result.max_drawdown, Some(0.0));
        assert_eq!(result.sharpe_ratio, None);
    }

    #[test]
    fn open_position_closes_at_end() {
        // Cross above at t=3 (fast 10 <= slow 10, then 10.5 > 10.333) enters at open[4] = 11.5,
        // and no cross below follows.
        let closes = [10.0, 10.0, 10.0, 11.0, 12.0, 13.0];
        let opens = [10.0, 10.0, 10.0, 10.5, 11.5, 12.5];
        let bars = bars_from(&opens, &closes);
        let config = test_config();

        let result = sma_crossover(&bars, 2, 3, &config);

        // 1000 / (11.5 * 1.001) = 86.86965208...
        let quantity = 1000.0 / (11.5 * 1.001);
        let entry_fee = quantity * 11.5 * 0.001;
        let exit_fee = quantity * 13.0 * 0.001;
        let pnl = quantity * (13.0 - 11.5) - entry_fee - exit_fee;
        assert_close(pnl, 128.176_171_654_43, "hand value of pnl");

        assert_eq!(result.trades.len(), 1);
        let trade = &result.trades[0];
        assert_eq!(trade.entry_time_ms, 4 * MINUTE_MS);
        assert_eq!(trade.exit_time_ms, 5 * MINUTE_MS);
        assert_close(trade.entry_price, 11.5, "entry price");
        assert_close(trade.exit_price, 13.0, "exit price");
        assert_close(trade.quantity, quantity, "quantity");
        assert_close(trade.pnl, pnl, "pnl");
        assert_close(trade.pnl_pct, pnl / 1000.0 * 100.0, "pnl_pct");
        assert_close(trade.commission, entry_fee + exit_fee, "commission");
        assert_eq!(trade.exit_reason, EXIT_REASON_END_OF_DATA);

        // The last value is the final capital, which includes the exit fee.
        let expected_equity = [
            1000.0,
            1000.0,
            1000.0,
            1000.0,
            1000.0 - entry_fee + quantity * (12.0 - 11.5),
            1000.0 + pnl,
        ];
        assert_curve(&result.equity, &expected_equity);
        assert_close(result.final_capital, 1000.0 + pnl, "final capital");
        assert_eq!(result.total_trades, 1);
        assert_eq!(result.winning_trades, 1);
        assert_eq!(result.losing_trades, 0);
        assert_eq!(result.win_rate, Some(100.0));
    }

    #[test]
    fn sizing_uses_position_size_and_leverage() {
        let closes = [10.0, 10.0, 10.0, 11.0, 12.0, 13.0];
        let opens = [10.0, 10.0, 10.0, 10.5, 11.5, 12.5];
        let bars = bars_from(&opens, &closes);
        let config = OracleConfig {
            position_size: 0.5,
            leverage: 2.0,
            ..test_config()
        };

        let result = sma_crossover(&bars, 2, 3, &config);

        // 1000 * 0.5 / (11.5 * (1 / 2 + 0.001)) = 86.78295582...
        let quantity = 1000.0 * 0.5 / (11.5 * (0.5 + 0.001));
        let entry_fee = quantity * 11.5 * 0.001;
        let exit_fee = quantity * 13.0 * 0.001;
        let pnl = quantity * (13.0 - 11.5) - entry_fee - exit_fee;

        assert_eq!(result.trades.len(), 1);
        let trade = &result.trades[0];
        assert_close(trade.quantity, quantity, "quantity");
        assert_close(trade.pnl, pnl, "pnl");
        assert_close(trade.pnl_pct, pnl / (1000.0 * 0.5) * 100.0, "pnl_pct");
        assert_close(
            result.equity[4],
            1000.0 - entry_fee + quantity * (12.0 - 11.5),
            "equity while long",
        );
        assert_close(result.final_capital, 1000.0 + pnl, "final capital");
    }

    #[test]
    fn last_bar_signal_does_not_trade() {
        // Cross above at t=3, which is the last bar, so no next open exists to fill at.
        let closes = [10.0, 10.0, 10.0, 12.0];
        let bars = bars_from(&closes, &closes);
        let config = test_config();

        let result = sma_crossover(&bars, 2, 3, &config);

        assert!(result.trades.is_empty(), "trades: {:?}", result.trades);
        assert_curve(&result.equity, &[1000.0; 4]);
        assert_eq!(result.final_capital, 1000.0);
        assert_eq!(result.win_rate, None);
    }

    #[test]
    fn short_signal_while_flat_is_ignored() {
        // Cross below at t=3 (fast 10 >= slow 10, then 9 < 9.333) while flat, then cross above
        // at t=5 (9.5 <= 9.667, then 11 > 10) enters at open[6] = 11.
        let closes = [10.0, 10.0, 10.0, 8.0, 11.0, 11.0, 12.0];
        let opens = [10.0, 10.0, 10.0, 10.0, 8.0, 11.0, 11.0];
        let bars = bars_from(&opens, &closes);
        let config = test_config();

        let result = sma_crossover(&bars, 2, 3, &config);

        assert_eq!(result.trades.len(), 1);
        let trade = &result.trades[0];
        assert_eq!(trade.entry_time_ms, 6 * MINUTE_MS);
        assert_close(trade.entry_price, 11.0, "entry price");
        assert_eq!(trade.exit_reason, EXIT_REASON_END_OF_DATA);
    }

    #[test]
    fn empty_bars_keep_capital() {
        let result = sma_crossover(&[], 2, 3, &test_config());

        assert!(result.trades.is_empty());
        assert!(result.equity.is_empty());
        assert_eq!(result.final_capital, 1000.0);
        assert_eq!(result.total_return, 0.0);
        assert_eq!(result.max_drawdown, None);
        assert_eq!(result.sharpe_ratio, None);
    }

    #[test]
    fn drawdown_of_tiny_curve() {
        // Peak 110 falls to 99 (10 %), then peak 120 falls to 90 (25 %).
        let curve = [100.0, 110.0, 99.0, 120.0, 90.0];
        let expected = (120.0 - 90.0) / 120.0 * 100.0;
        assert_close(expected, 25.0, "hand value of drawdown");

        let drawdown = max_drawdown(&curve).expect("a non-empty curve has a drawdown");
        assert_close(drawdown, expected, "max drawdown");
    }

    #[test]
    fn drawdown_of_rising_curve_is_zero() {
        assert_eq!(max_drawdown(&[100.0, 100.0, 101.0]), Some(0.0));
    }

    #[test]
    fn drawdown_of_empty_curve_is_none() {
        assert_eq!(max_drawdown(&[]), None);
    }

    #[test]
    fn sharpe_of_tiny_curve() {
        let curve = [100.0, 110.0, 99.0, 120.0, 90.0];
        let returns: [f64; 4] = [
            110.0 / 100.0 - 1.0,
            99.0 / 110.0 - 1.0,
            120.0 / 99.0 - 1.0,
            90.0 / 120.0 - 1.0,
        ];
        let mean = (returns[0] + returns[1] + returns[2] + returns[3]) / 4.0;
        let variance = ((returns[0] - mean).powi(2)
            + (returns[1] - mean).powi(2)
            + (returns[2] - mean).powi(2)
            + (returns[3] - mean).powi(2))
            / 3.0;
        // With 4 bars per year the annualization factor is sqrt(4) = 2.
        let expected = mean / variance.sqrt() * 2.0;
        assert_close(
            expected,
            -0.092_000_719_522_04,
            "hand value of Sharpe ratio",
        );

        let sharpe =
            sharpe_ratio(&curve, 4.0).expect("a curve with varying returns has a Sharpe ratio");
        assert_close(sharpe, expected, "Sharpe ratio");
    }

    #[test]
    fn sharpe_needs_two_returns() {
        assert_eq!(sharpe_ratio(&[100.0, 110.0], 4.0), None);
    }

    #[test]
    fn sharpe_of_flat_curve_is_none() {
        assert_eq!(sharpe_ratio(&[100.0, 100.0, 100.0], 4.0), None);
    }

    #[test]
    #[should_panic(expected = "fast_period must be at least 1")]
    fn zero_fast_period_panics() {
        let closes = [10.0, 11.0];
        sma_crossover(&bars_from(&closes, &closes), 0, 3, &test_config());
    }

    #[test]
    #[should_panic(expected = "slow_period must be at least 1")]
    fn zero_slow_period_panics() {
        let closes = [10.0, 11.0];
        sma_crossover(&bars_from(&closes, &closes), 2, 0, &test_config());
    }

    #[test]
    #[should_panic(expected = "strictly ascending")]
    fn unordered_bars_panic() {
        let closes = [10.0, 11.0];
        let mut bars = bars_from(&closes, &closes);
        bars[1].open_time_ms = bars[0].open_time_ms;
        sma_crossover(&bars, 2, 3, &test_config());
    }
}
