//! Backtests: a strategy's signals as a DataFusion window plan, then fills and metrics.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Float64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType};
use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::{ExprFunctionExt, WindowUDF};
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use serde::Serialize;

use crate::dataset::{self, SeriesKey, TimeRange};
use crate::indicators::{Indicator, IndicatorFunction};
use crate::metrics::{Metrics, compute_metrics};
use crate::simulate::{SignalColumns, SimulationConfig, TradeRecord, simulate_long_only};
use crate::strategy::StrategySpec;
use crate::{ENGINE_VERSION, Error, Result};

/// Default commission per leg: Bybit's taker rate.
pub const DEFAULT_COMMISSION: f64 = 0.00055;

/// Default starting equity in quote currency.
pub const DEFAULT_INITIAL_CAPITAL: f64 = 10_000.0;

/// Everything a backtest needs: the series, the range, the strategy and the account.
///
/// ```
/// use bst_engine::backtest::BacktestRequest;
/// use bst_engine::dataset::{SeriesKey, TimeRange};
/// use bst_engine::strategy::StrategySpec;
/// use bst_ingest::{Category, Timeframe};
///
/// let request = BacktestRequest::new(
///     SeriesKey {
///         category: Category::Linear,
///         symbol: "BTCUSDT".to_string(),
///         timeframe: Timeframe::Minutes(1),
///     },
///     StrategySpec::SmaCrossover { fast_period: 10, slow_period: 30 },
/// );
/// assert_eq!(request.range, TimeRange::default());
/// assert!(request.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestRequest {
    pub series: SeriesKey,
    pub range: TimeRange,
    pub strategy: StrategySpec,
    /// Starting equity in quote currency.
    pub initial_capital: f64,
    /// Commission as a fraction of notional per leg.
    pub commission: f64,
    /// Leverage; only 1 is supported until liquidation is modelled.
    pub leverage: f64,
}

impl BacktestRequest {
    /// Creates a request over all stored data with the default account settings.
    pub fn new(series: SeriesKey, strategy: StrategySpec) -> Self {
        Self {
            series,
            range: TimeRange::default(),
            strategy,
            initial_capital: DEFAULT_INITIAL_CAPITAL,
            commission: DEFAULT_COMMISSION,
            leverage: 1.0,
        }
    }

    /// Checks the range and the account settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRange`] or [`Error::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.range.validate()?;
        bst_ingest::layout::validate_symbol(&self.series.symbol)?;
        if !(self.initial_capital.is_finite() && self.initial_capital > 0.0) {
            return Err(invalid(
                "initial_capital",
                format!("must be a positive number, got {}", self.initial_capital),
            ));
        }
        if !(self.commission.is_finite() && (0.0..0.1).contains(&self.commission)) {
            return Err(invalid(
                "commission",
                format!(
                    "must be a fraction from 0 to below 0.1 (0.00055 is 0.055 %), got {}",
                    self.commission
                ),
            ));
        }
        // NOTE: leverage above 1 needs liquidation, which the engine does not model yet.
        if self.leverage != 1.0 {
            return Err(invalid(
                "leverage",
                format!("only 1 is supported for now, got {}", self.leverage),
            ));
        }
        Ok(())
    }
}

fn invalid(name: &str, message: String) -> Error {
    Error::InvalidParameter {
        name: name.to_string(),
        message,
    }
}

/// The equity at one bar's close.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EquityPoint {
    pub open_time_ms: i64,
    pub equity: f64,
}

/// Result of a backtest: metrics, trades, the equity curve and what was run on which data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    pub metrics: Metrics,
    pub trades: Vec<TradeRecord>,
    pub equity: Vec<EquityPoint>,
    /// Number of bars in the range, warm-up included.
    pub bars: usize,
    /// Open time of the first bar in the range.
    pub data_start_ms: i64,
    /// Open time of the last bar in the range.
    pub data_end_ms: i64,
    pub strategy_type: &'static str,
    /// Resolved strategy parameters, defaults included.
    pub params: serde_json::Value,
    pub engine_version: &'static str,
}

/// Builds the signal plan of a request: the series in the range with `long_signal` and
/// `short_signal` columns computed by window functions ordered by `open_time`.
///
/// # Errors
///
/// DataFusion planning errors.
pub async fn signal_plan(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &BacktestRequest,
) -> Result<DataFrame> {
    let bars = dataset::bars_frame(ctx, data_dir, &request.series, &request.range).await?;
    signal_rule(&request.strategy)?.plan(bars)
}

fn period_literal(period: usize) -> Expr {
    lit(i64::try_from(period).unwrap_or(i64::MAX))
}

/// Orders a window function call by open time over the whole series.
fn window(call: Expr) -> Result<Expr> {
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

/// A strategy as crossings: long when `long_a` crosses above `long_b`, short when `short_a`
/// crosses below `short_b`. Operands are expressions over `close` and the indicator columns.
struct SignalRule {
    indicators: Vec<(Expr, &'static str)>,
    long: (Expr, Expr),
    short: (Expr, Expr),
}

fn signal_rule(strategy: &StrategySpec) -> Result<SignalRule> {
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
            SignalRule {
                indicators: vec![
                    (
                        indicator_of_close(indicator, vec![period_literal(fast_period)])?,
                        "fast",
                    ),
                    (
                        indicator_of_close(indicator, vec![period_literal(slow_period)])?,
                        "slow",
                    ),
                ],
                long: (col("fast"), col("slow")),
                short: (col("fast"), col("slow")),
            }
        }
        StrategySpec::Rsi {
            period,
            oversold,
            overbought,
        } => SignalRule {
            indicators: vec![(
                indicator_of_close(Indicator::Rsi, vec![period_literal(period)])?,
                "rsi",
            )],
            long: (col("rsi"), lit(oversold)),
            short: (col("rsi"), lit(overbought)),
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
            SignalRule {
                indicators: vec![
                    (indicator_of_close(Indicator::Macd, parameters())?, "macd"),
                    (
                        indicator_of_close(Indicator::MacdSignal, parameters())?,
                        "macd_signal",
                    ),
                ],
                long: (col("macd"), col("macd_signal")),
                short: (col("macd"), col("macd_signal")),
            }
        }
        StrategySpec::BollingerBands { period, std_dev } => {
            let parameters = || vec![period_literal(period), lit(std_dev)];
            SignalRule {
                indicators: vec![
                    (
                        indicator_of_close(Indicator::BollingerLower, parameters())?,
                        "lower",
                    ),
                    (
                        indicator_of_close(Indicator::BollingerUpper, parameters())?,
                        "upper",
                    ),
                ],
                long: (col("close"), col("lower")),
                short: (col("close"), col("upper")),
            }
        }
    };
    Ok(rule)
}

impl SignalRule {
    /// Adds `long_signal` and `short_signal` columns to the bars: each crossing needs both
    /// operands on this bar and on the previous one.
    fn plan(self, bars: DataFrame) -> Result<DataFrame> {
        let mut columns = vec![col("open_time"), col("open"), col("close")];
        columns.extend(
            self.indicators
                .into_iter()
                .map(|(expr, name)| expr.alias(name)),
        );
        let with_indicators = bars.select(columns)?;

        let operands = [self.long.0, self.long.1, self.short.0, self.short.1];
        let mut columns = vec![col("open_time"), col("open"), col("close")];
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
        Ok(with_previous
            .select(vec![
                col("open_time"),
                col("open"),
                col("close"),
                crosses_above.is_true().alias("long_signal"),
                crosses_below.is_true().alias("short_signal"),
            ])?
            .sort(vec![col("open_time").sort(true, false)])?)
    }
}

/// Runs a backtest: plans the signals, executes the plan, simulates fills and computes
/// metrics.
///
/// # Errors
///
/// The request's validation errors, [`Error::NoData`] when the range contains no bars, and
/// DataFusion errors.
pub async fn run_backtest(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &BacktestRequest,
) -> Result<BacktestReport> {
    request.validate()?;
    let plan = signal_plan(ctx, data_dir, request).await?;
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let batches = plan.collect().await?;
    let signals = concat_batches(&schema, &batches)?;
    if signals.num_rows() == 0 {
        return Err(dataset::no_data(&request.series, &request.range));
    }

    let columns = SignalArrays::try_from_batch(&signals)?;
    let config = SimulationConfig {
        initial_capital: request.initial_capital,
        commission: request.commission,
        position_size: 1.0,
        leverage: request.leverage,
    };
    let simulation = simulate_long_only(columns.as_columns(), &config);
    let metrics = compute_metrics(
        request.initial_capital,
        &simulation.trades,
        &simulation.equity,
        request.series.timeframe.bars_per_year(),
    );

    let open_times = columns.open_time_ms;
    let equity = open_times
        .iter()
        .zip(&simulation.equity)
        .map(|(&open_time_ms, &equity)| EquityPoint {
            open_time_ms,
            equity,
        })
        .collect();
    Ok(BacktestReport {
        metrics,
        trades: simulation.trades,
        equity,
        bars: open_times.len(),
        data_start_ms: open_times[0],
        data_end_ms: open_times[open_times.len() - 1],
        strategy_type: request.strategy.strategy_type(),
        params: request.strategy.params(),
        engine_version: ENGINE_VERSION,
    })
}

/// Owned input columns of the simulation, copied out of the plan's output.
struct SignalArrays {
    open_time_ms: Vec<i64>,
    open: Vec<f64>,
    close: Vec<f64>,
    long_signal: Vec<bool>,
    short_signal: Vec<bool>,
}

impl SignalArrays {
    fn try_from_batch(batch: &RecordBatch) -> Result<Self> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("signal plan has no column {name}")))
        };
        let floats = |name: &str| -> Result<Vec<f64>> {
            let array: &Float64Array = column(name)?.as_primitive::<Float64Type>();
            Ok(array.values().to_vec())
        };
        let flags = |name: &str| -> Result<Vec<bool>> {
            let array: &BooleanArray = column(name)?.as_boolean();
            Ok((0..array.len())
                .map(|row| array.is_valid(row) && array.value(row))
                .collect())
        };
        let open_time = column("open_time")?.as_primitive::<TimestampMillisecondType>();
        Ok(Self {
            open_time_ms: open_time.values().to_vec(),
            open: floats("open")?,
            close: floats("close")?,
            long_signal: flags("long_signal")?,
            short_signal: flags("short_signal")?,
        })
    }

    fn as_columns(&self) -> SignalColumns<'_> {
        SignalColumns {
            open_time_ms: &self.open_time_ms,
            open: &self.open,
            close: &self.close,
            long_signal: &self.long_signal,
            short_signal: &self.short_signal,
        }
    }
}
