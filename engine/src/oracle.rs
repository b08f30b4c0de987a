//! Plain-loop reference backtester for the long-only SMA crossover strategy.
//!
//! Tests compare the DataFusion engine against this module, so it shares no code with the
//! engine. It uses straight loops that step through the bars in order, and every moving average
//! is the plain mean of its window.
//!
//! Rules:
//! - A decision at bar `t` uses data up to the close of `t`, and its order fills at the open of
//!   bar `t + 1`. A signal on the last bar therefore never trades.
//! - While flat, a cross of the fast SMA above the slow SMA enters long. While long, a cross
//!   below exits. After an exit the strategy waits for the next cross above.
//! - Commission is a fraction of notional, charged on the entry and on the exit.
//! - A position still open after the last bar is closed at that bar's close.

/// Exit reason of a trade closed by a cross of the fast SMA below the slow SMA.
pub const EXIT_REASON_SIGNAL: &str = "signal";

/// Exit reason of a trade closed at the last bar's close because the data ended.
pub const EXIT_REASON_END_OF_DATA: &str = "end_of_data";

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

/// One closed long trade.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleTrade {
    /// Open time of the bar whose open filled the entry.
    pub entry_time_ms: i64,
    /// Open time of the bar whose open filled the exit, or of the last bar for an end-of-data
    /// exit.
    pub exit_time_ms: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub quantity: f64,
    /// Price difference times quantity, minus the entry and exit fees.
    pub pnl: f64,
    /// Profit or loss as a percentage of the margin committed at entry.
    pub pnl_pct: f64,
    /// Sum of the entry and exit fees.
    pub commission: f64,
    /// [`EXIT_REASON_SIGNAL`] or [`EXIT_REASON_END_OF_DATA`].
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
/// The value at index `t` is `None` while `t < period - 1`, and otherwise the sum of
/// `closes[t + 1 - period..=t]`, added oldest to newest, divided by `period`.
///
/// # Panics
///
/// Panics if `period` is 0.
pub fn simple_moving_average(closes: &[f64], period: usize) -> Vec<Option<f64>> {
    assert!(period > 0, "SMA period must be at least 1, got 0");
    let mut averages = Vec::with_capacity(closes.len());
    for t in 0..closes.len() {
        if t + 1 < period {
            averages.push(None);
            continue;
        }
        let window = &closes[t + 1 - period..=t];
        let mut sum = 0.0;
        for close in window {
            sum += close;
        }
        averages.push(Some(sum / period as f64));
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
        entry_time_ms: open.entry_time_ms,
        exit_time_ms,
        entry_price: open.entry_price,
        exit_price,
        quantity: open.quantity,
        pnl,
        pnl_pct: pnl / committed_margin * 100.0,
        commission: open.entry_fee + exit_fee,
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
