//! Built-in strategies as crossing rules over indicator columns.
//!
//! Each built-in strategy is a pair of crossings: long when operand A crosses above operand B,
//! short when operand C crosses below operand D. An operand is the close, an indicator window
//! call over the close, or a constant level. A single backtest plans the crossings with
//! window functions; a sweep shares the indicator columns between combinations and evaluates
//! the crossings in the sweep operator.

use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::{ExprFunctionExt, WindowUDF};
use datafusion::prelude::{DataFrame, Expr, col, lit};

use crate::indicators::{Indicator, IndicatorFunction};
use crate::strategy::StrategySpec;
use crate::{Error, Result};

/// One side of a crossing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand {
    Close,
    /// The indicator at this index of [`CrossingRule::indicators`].
    Indicator(usize),
    Level(f64),
}

/// A built-in strategy as indicator calls and two crossings.
#[derive(Debug, Clone)]
pub struct CrossingRule {
    /// Indicator window calls over the close, ordered by open time.
    pub indicators: Vec<Expr>,
    /// Long signal: `long.0` crosses above `long.1`.
    pub long: (Operand, Operand),
    /// Short signal: `short.0` crosses below `short.1`.
    pub short: (Operand, Operand),
}

fn period_literal(period: usize) -> Expr {
    lit(i64::try_from(period).unwrap_or(i64::MAX))
}

/// Orders a window function call by open time over the whole series.
pub(crate) fn window(call: Expr) -> Result<Expr> {
    Ok(call
        .order_by(vec![col("open_time").sort(true, false)])
        .build()?)
}

/// Returns `indicator(close, parameters...) OVER (ORDER BY open_time)`.
fn indicator_of_close(indicator: Indicator, parameters: Vec<Expr>) -> Result<Expr> {
    let mut arguments = vec![col("close")];
    arguments.extend(parameters);
    window(WindowUDF::from(IndicatorFunction::new(indicator)).call(arguments))
}

impl CrossingRule {
    /// Returns the rule of a built-in strategy.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] for an expression strategy, which has no crossing rule, and
    /// DataFusion errors while building the window calls.
    pub fn of(strategy: &StrategySpec) -> Result<Self> {
        let pair = (Operand::Indicator(0), Operand::Indicator(1));
        let rule = match *strategy {
            StrategySpec::SmaCrossover {
                fast_period,
                slow_period,
            }
            | StrategySpec::EmaCrossover {
                fast_period,
                slow_period,
            } => {
                let indicator = if matches!(strategy, StrategySpec::SmaCrossover { .. }) {
                    Indicator::Sma
                } else {
                    Indicator::Ema
                };
                CrossingRule {
                    indicators: vec![
                        indicator_of_close(indicator, vec![period_literal(fast_period)])?,
                        indicator_of_close(indicator, vec![period_literal(slow_period)])?,
                    ],
                    long: pair,
                    short: pair,
                }
            }
            StrategySpec::Rsi {
                period,
                oversold,
                overbought,
            } => CrossingRule {
                indicators: vec![indicator_of_close(
                    Indicator::Rsi,
                    vec![period_literal(period)],
                )?],
                long: (Operand::Indicator(0), Operand::Level(oversold)),
                short: (Operand::Indicator(0), Operand::Level(overbought)),
            },
            StrategySpec::Macd {
                fast_period,
                slow_period,
                signal_period,
            } => {
                let parameters = || {
                    vec![
                        period_literal(fast_period),
                        period_literal(slow_period),
                        period_literal(signal_period),
                    ]
                };
                CrossingRule {
                    indicators: vec![
                        indicator_of_close(Indicator::Macd, parameters())?,
                        indicator_of_close(Indicator::MacdSignal, parameters())?,
                    ],
                    long: pair,
                    short: pair,
                }
            }
            StrategySpec::BollingerBands { period, std_dev } => {
                let parameters = || vec![period_literal(period), lit(std_dev)];
                CrossingRule {
                    indicators: vec![
                        indicator_of_close(Indicator::BollingerLower, parameters())?,
                        indicator_of_close(Indicator::BollingerUpper, parameters())?,
                    ],
                    long: (Operand::Close, Operand::Indicator(0)),
                    short: (Operand::Close, Operand::Indicator(1)),
                }
            }
            StrategySpec::Expression(_) => {
                return Err(Error::Internal(
                    "expression strategies have no crossing rule".to_string(),
                ));
            }
        };
        Ok(rule)
    }

    /// Adds `long_signal` and `short_signal` columns to the bars: each crossing needs both
    /// operands on this bar and on the previous one.
    pub fn plan(self, bars: DataFrame) -> Result<DataFrame> {
        let bar_columns = || {
            vec![
                col("open_time"),
                col("open"),
                col("high"),
                col("low"),
                col("close"),
            ]
        };
        let mut columns = bar_columns();
        columns.extend(
            self.indicators
                .into_iter()
                .enumerate()
                .map(|(index, expr)| expr.alias(format!("indicator_{index}"))),
        );
        let with_indicators = bars.select(columns)?;

        let operand_expr = |operand: Operand| match operand {
            Operand::Close => col("close"),
            Operand::Indicator(index) => col(format!("indicator_{index}")),
            Operand::Level(level) => lit(level),
        };
        let operands = [self.long.0, self.long.1, self.short.0, self.short.1].map(operand_expr);
        let mut columns = bar_columns();
        for (index, operand) in operands.iter().enumerate() {
            columns.push(operand.clone().alias(format!("now_{index}")));
            columns.push(
                window(lag(operand.clone(), Some(1), None))?.alias(format!("before_{index}")),
            );
        }
        let with_previous = with_indicators.select(columns)?;

        let now = |index: usize| col(format!("now_{index}"));
        let before = |index: usize| col(format!("before_{index}"));
        let crosses_above = now(0).gt(now(1)).and(before(0).lt_eq(before(1)));
        let crosses_below = now(2).lt(now(3)).and(before(2).gt_eq(before(3)));
        let mut columns = bar_columns();
        columns.push(crosses_above.is_true().alias("long_signal"));
        columns.push(crosses_below.is_true().alias("short_signal"));
        Ok(with_previous
            .select(columns)?
            .sort(vec![col("open_time").sort(true, false)])?)
    }
}

/// Returns where `a` crosses above `b` (`above`) or below it: `a[t]` beyond `b[t]` and
/// `a[t-1]` not beyond `b[t-1]`, with all four values defined.
pub fn crossings(a: &[Option<f64>], b: &[Option<f64>], above: bool) -> Vec<bool> {
    let mut signals = vec![false; a.len()];
    for t in 1..a.len() {
        if let (Some(a_now), Some(b_now), Some(a_before), Some(b_before)) =
            (a[t], b[t], a[t - 1], b[t - 1])
        {
            signals[t] = if above {
                a_now > b_now && a_before <= b_before
            } else {
                a_now < b_now && a_before >= b_before
            };
        }
    }
    signals
}
