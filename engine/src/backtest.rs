//! Backtests: a strategy's signals as a DataFusion window plan, then fills and metrics.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Float64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType};
use datafusion::prelude::{DataFrame, SessionContext, col};
use serde::Serialize;

use crate::dataset::{self, SeriesKey, TimeRange};
use crate::metrics::{MetricInputs, Metrics, compute_metrics, drawdown_curve};
use crate::orders::OrderOptions;
use crate::signals::CrossingRule;
use crate::simulate::{
    Direction, SignalColumns, SignalMode, SimulationConfig, TradeRecord, simulate,
};
use crate::strategy::{Conditions, StrategySpec};
use crate::{ENGINE_VERSION, Error, Result, expression};

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
    /// Leverage: notional over margin, from 1 to [`MAX_LEVERAGE`].
    pub leverage: f64,
    pub orders: OrderOptions,
}

/// Largest accepted leverage.
pub const MAX_LEVERAGE: f64 = 100.0;

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
            orders: OrderOptions::default(),
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
        if !(self.leverage.is_finite() && (1.0..=MAX_LEVERAGE).contains(&self.leverage)) {
            return Err(invalid(
                "leverage",
                format!("must be from 1 to {MAX_LEVERAGE}, got {}", self.leverage),
            ));
        }
        let rate = self.orders.maintenance_margin_rate;
        if self.leverage > 1.0 && rate >= 1.0 / self.leverage {
            return Err(invalid(
                "maintenance_margin_rate",
                format!(
                    "must be below 1 / leverage ({}) so that a new position is not liquidated \
                     at once, got {rate}",
                    1.0 / self.leverage
                ),
            ));
        }
        if let StrategySpec::Expression(conditions) = &self.strategy {
            check_entries(conditions, self.orders.direction)?;
        }
        Ok(())
    }

    /// Returns the simulation settings of the request.
    pub fn simulation_config(&self) -> SimulationConfig {
        SimulationConfig {
            initial_capital: self.initial_capital,
            commission: self.commission,
            position_size: self.orders.position_size,
            leverage: self.leverage,
            maintenance_margin_rate: self.orders.maintenance_margin_rate,
            direction: self.orders.direction,
            stop_loss: self.orders.stop_loss,
            take_profit: self.orders.take_profit,
            slippage: self.orders.slippage,
            funding_rate: self.orders.funding_rate,
        }
    }
}

/// Checks that an expression strategy has the entry conditions its direction uses.
fn check_entries(conditions: &Conditions, direction: Direction) -> Result<()> {
    let needs_long = direction != Direction::Short;
    let needs_short = direction != Direction::Long;
    if needs_long && conditions.entry_long.is_none() {
        return Err(invalid(
            "entry_long",
            format!(
                "direction {} needs an entry_long condition",
                direction.as_str()
            ),
        ));
    }
    if needs_short && conditions.entry_short.is_none() {
        return Err(invalid(
            "entry_short",
            format!(
                "direction {} needs an entry_short condition",
                direction.as_str()
            ),
        ));
    }
    Ok(())
}

fn invalid(name: &str, message: String) -> Error {
    Error::InvalidParameter {
        name: name.to_string(),
        message,
    }
}

/// The equity at one bar's close and its fall below the running peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EquityPoint {
    pub open_time_ms: i64,
    pub equity: f64,
    /// Percent below the largest equity up to this bar.
    pub drawdown: f64,
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
    /// Resolved strategy parameters and order options, defaults included.
    pub params: serde_json::Value,
    pub engine_version: &'static str,
}

/// Builds the signal plan of a request: the series in the range with window-function columns
/// ordered by `open_time`. Built-in strategies add `long_signal` and `short_signal`;
/// expression strategies add one column per given condition, named after it.
///
/// # Errors
///
/// [`Error::InvalidParameter`] naming a condition that does not plan, and DataFusion
/// planning errors.
pub async fn signal_plan(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &BacktestRequest,
) -> Result<DataFrame> {
    let bars = dataset::bars_frame(ctx, data_dir, &request.series, &request.range).await?;
    match &request.strategy {
        StrategySpec::Expression(conditions) => {
            let plan = expression::plan_conditions(ctx, bars, &conditions.present())?;
            Ok(plan.sort(vec![col("open_time").sort(true, false)])?)
        }
        strategy => CrossingRule::of(strategy)?.plan(bars),
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

    let mode = match request.strategy {
        StrategySpec::Expression(_) => SignalMode::Levels,
        _ => SignalMode::Crossings,
    };
    let columns = SignalArrays::try_from_batch(&signals, mode)?;
    let simulation = simulate(columns.as_columns(), &request.simulation_config());
    let bar_count = columns.open_time_ms.len();
    let metrics = compute_metrics(
        &MetricInputs {
            initial_capital: request.initial_capital,
            bars_per_year: request.series.timeframe.bars_per_year(),
            open_time_ms: &columns.open_time_ms,
            first_open: columns.open[0],
            last_close: columns.close[bar_count - 1],
        },
        &simulation,
    );

    let drawdown = drawdown_curve(&simulation.equity);
    let equity = columns
        .open_time_ms
        .iter()
        .zip(&simulation.equity)
        .zip(drawdown)
        .map(|((&open_time_ms, &equity), drawdown)| EquityPoint {
            open_time_ms,
            equity,
            drawdown,
        })
        .collect();
    let mut params = request.strategy.params();
    if let (Some(params), serde_json::Value::Object(orders)) =
        (params.as_object_mut(), request.orders.to_json())
    {
        params.extend(orders);
    }
    Ok(BacktestReport {
        metrics,
        trades: simulation.trades,
        equity,
        bars: bar_count,
        data_start_ms: columns.open_time_ms[0],
        data_end_ms: columns.open_time_ms[bar_count - 1],
        strategy_type: request.strategy.strategy_type(),
        params,
        engine_version: ENGINE_VERSION,
    })
}

/// Owned input columns of the simulation, copied out of the plan's output.
struct SignalArrays {
    open_time_ms: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    mode: SignalMode,
    entry_long: Vec<bool>,
    exit_long: Vec<bool>,
    entry_short: Vec<bool>,
    exit_short: Vec<bool>,
}

impl SignalArrays {
    fn try_from_batch(batch: &RecordBatch, mode: SignalMode) -> Result<Self> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("signal plan has no column {name}")))
        };
        let floats = |name: &str| -> Result<Vec<f64>> {
            let array: &Float64Array = column(name)?.as_primitive::<Float64Type>();
            Ok(array.values().to_vec())
        };
        // A condition the strategy does not give is false on every bar.
        let flags = |name: &str| -> Vec<bool> {
            let Some(array) = batch.column_by_name(name) else {
                return vec![false; batch.num_rows()];
            };
            let array: &BooleanArray = array.as_boolean();
            (0..array.len())
                .map(|row| array.is_valid(row) && array.value(row))
                .collect()
        };
        let open_time = column("open_time")?.as_primitive::<TimestampMillisecondType>();
        let (entry_long, entry_short) = match mode {
            SignalMode::Crossings => (flags("long_signal"), flags("short_signal")),
            SignalMode::Levels => (flags("entry_long"), flags("entry_short")),
        };
        Ok(Self {
            open_time_ms: open_time.values().to_vec(),
            open: floats("open")?,
            high: floats("high")?,
            low: floats("low")?,
            close: floats("close")?,
            mode,
            entry_long,
            exit_long: flags("exit_long"),
            entry_short,
            exit_short: flags("exit_short"),
        })
    }

    fn as_columns(&self) -> SignalColumns<'_> {
        SignalColumns {
            open_time_ms: &self.open_time_ms,
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            mode: self.mode,
            entry_long: &self.entry_long,
            exit_long: &self.exit_long,
            entry_short: &self.entry_short,
            exit_short: &self.exit_short,
        }
    }
}
