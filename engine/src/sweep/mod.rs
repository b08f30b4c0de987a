//! Parameter sweeps: every combination of a built-in strategy's parameters over one series,
//! evaluated by one DataFusion plan.
//!
//! The plan reads the bars once and computes each distinct indicator call once, as a window
//! function column, however many combinations use it. [`exec::SweepExec`] then evaluates the
//! combinations over those shared columns in parallel partitions, with the same crossing
//! rules, fill simulation and metrics as a single backtest, so each combination's metrics
//! equal those of [`crate::backtest::run_backtest`] with the same parameters.

pub mod deflated;
mod exec;
pub mod space;
pub mod walk_forward;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::physical_plan::{ExecutionPlan, displayable, execute_stream};
use datafusion::prelude::{Expr, SessionContext, col};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use self::exec::{Combination, Source, SweepExec};
use self::space::ParameterSpace;
use crate::backtest::{BacktestRequest, run_backtest};
use crate::dataset::{self, SeriesKey, TimeRange};
use crate::orders::strategy_and_orders;
use crate::signals::{CrossingRule, Operand};
use crate::strategy::StrategySpec;
use crate::{Error, Result};

/// Metrics a sweep can rank by; the first group ranks higher values first.
pub const RANKING_METRICS: [&str; 16] = [
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "total_return",
    "final_capital",
    "profit_factor",
    "expectancy",
    "avg_trade_pct",
    "win_rate",
    "winning_trades",
    "total_trades",
    "exposure_pct",
    // Lower is better for these.
    "max_drawdown",
    "max_drawdown_duration_bars",
    "total_commission",
    "liquidations",
];

/// Returns true when a lower value of `metric` ranks first.
fn lower_is_better(metric: &str) -> bool {
    matches!(
        metric,
        "max_drawdown" | "max_drawdown_duration_bars" | "total_commission" | "liquidations"
    )
}

/// Search method: the rule by which a sweep picks combinations from its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMethod {
    /// Every combination of the grid.
    Grid,
    /// `trials` distinct combinations drawn with `seed`.
    Random { trials: u64, seed: u64 },
}

/// A sweep over one series.
#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub series: SeriesKey,
    pub range: TimeRange,
    pub strategy_type: String,
    /// Parameters and order options every combination shares; swept keys override them.
    pub base_config: Map<String, Value>,
    pub space: ParameterSpace,
    pub method: SearchMethod,
    /// Metric the results are ranked by, one of [`RANKING_METRICS`].
    pub metric: String,
    /// Number of ranked results to keep; 0 keeps all.
    pub top: usize,
    pub initial_capital: f64,
    pub commission: f64,
    pub leverage: f64,
}

impl SweepRequest {
    /// Creates a grid sweep over all stored data, ranked by Sharpe ratio, keeping the top 10.
    pub fn new(series: SeriesKey, strategy_type: &str, space: ParameterSpace) -> Self {
        Self {
            series,
            range: TimeRange::default(),
            strategy_type: strategy_type.to_string(),
            base_config: Map::new(),
            space,
            method: SearchMethod::Grid,
            metric: "sharpe_ratio".to_string(),
            top: 10,
            initial_capital: crate::backtest::DEFAULT_INITIAL_CAPITAL,
            commission: crate::backtest::DEFAULT_COMMISSION,
            leverage: 1.0,
        }
    }

    /// Returns the single backtest of one combination of this sweep.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when the combination is not a valid strategy.
    pub fn backtest_request(&self, params: &Map<String, Value>) -> Result<BacktestRequest> {
        let mut config = self.base_config.clone();
        config.extend(
            params
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        let (strategy, orders) = strategy_and_orders(&self.strategy_type, &Value::Object(config))?;
        let mut request = BacktestRequest::new(self.series.clone(), strategy);
        request.range = self.range;
        request.orders = orders;
        request.initial_capital = self.initial_capital;
        request.commission = self.commission;
        request.leverage = self.leverage;
        Ok(request)
    }
}

/// One evaluated combination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepResult {
    /// The swept parameters of the combination.
    pub params: Map<String, Value>,
    /// The metrics, with the names and units of a backtest's metrics.
    pub metrics: Value,
}

/// Ranked results and counts of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// Best first by `metric`; combinations whose metric is null come last.
    pub results: Vec<SweepResult>,
    pub metric: String,
    /// Combinations taken from the space: the whole grid, or the random trials.
    pub tried: u64,
    /// Combinations that are not valid strategies (such as fast_period >= slow_period).
    pub skipped: u64,
    /// Combinations evaluated; fewer than `tried - skipped` after a cancel.
    pub evaluated: u64,
    pub cancelled: bool,
    /// Bars in the range.
    pub bars: usize,
    /// Deflated Sharpe ratio of the best combination, a probability from 0 to 1. The number
    /// of trials is `evaluated`, every combination evaluated, including those whose Sharpe
    /// ratio is null. The variance of the trials' Sharpe ratios is the sample variance over
    /// the combinations that have one, because a null Sharpe ratio (no trade, or an equity
    /// curve that reached 0) has no value to contribute. `None` when the best combination has
    /// no Sharpe ratio, after a cancel, or when the formula is not defined.
    pub deflated_sharpe_ratio: Option<f64>,
    /// Wall time of the sweep, planning and evaluation, in seconds.
    pub seconds: f64,
}

/// Progress and cancellation of a running sweep.
#[derive(Clone, Default)]
pub struct SweepControl {
    /// Set to stop the sweep; it returns the results evaluated so far.
    pub cancel: Arc<AtomicBool>,
    /// Called with (evaluated, total) after each batch of combinations.
    pub progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
}

impl std::fmt::Debug for SweepControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepControl")
            .field("cancel", &self.cancel.load(Ordering::Relaxed))
            .finish()
    }
}

/// Builds the physical plan of a sweep's valid combinations: the bars with each distinct
/// indicator column, under a [`SweepExec`].
async fn sweep_plan(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
    strategies: &[(StrategySpec, crate::simulate::SimulationConfig)],
    cancel: Arc<AtomicBool>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut shared: Vec<Expr> = Vec::new();
    let mut positions: HashMap<Expr, usize> = HashMap::new();
    let mut combinations = Vec::with_capacity(strategies.len());
    for (strategy, config) in strategies {
        let rule = CrossingRule::of(strategy)?;
        let columns: Vec<usize> = rule
            .indicators
            .into_iter()
            .map(|expr| {
                *positions.entry(expr.clone()).or_insert_with(|| {
                    shared.push(expr);
                    shared.len() - 1
                })
            })
            .collect();
        let source = |operand: Operand| match operand {
            Operand::Close => Source::Close,
            Operand::Indicator(index) => Source::Column(columns[index]),
            Operand::Level(level) => Source::Level(level),
        };
        combinations.push(Combination {
            long: (source(rule.long.0), source(rule.long.1)),
            short: (source(rule.short.0), source(rule.short.1)),
            config: *config,
        });
    }

    let names: Vec<String> = (0..shared.len())
        .map(|index| format!("shared_{index}"))
        .collect();
    let bars = dataset::bars_frame(ctx, data_dir, &request.series, &request.range).await?;
    let mut columns = vec![
        col("open_time"),
        col("open"),
        col("high"),
        col("low"),
        col("close"),
    ];
    columns.extend(
        shared
            .into_iter()
            .zip(&names)
            .map(|(expr, name)| expr.alias(name)),
    );
    let frame = bars
        .select(columns)?
        .sort(vec![col("open_time").sort(true, false)])?;
    let input = frame.create_physical_plan().await?;
    let partitions = ctx.state().config().target_partitions();
    Ok(Arc::new(SweepExec::new(
        input,
        names,
        combinations,
        request.series.timeframe.bars_per_year(),
        partitions,
        cancel,
    )))
}

/// Returns the physical plan of a sweep's valid combinations as indented text, for
/// inspection: one `SweepExec` over one window computation of the shared indicators.
///
/// # Errors
///
/// The errors of [`run_sweep`] before execution.
pub async fn explain_sweep(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
) -> Result<String> {
    let (_, strategies, _, _) = valid_combinations(request)?;
    let plan = sweep_plan(ctx, data_dir, request, &strategies, Arc::default()).await?;
    Ok(displayable(plan.as_ref()).indent(false).to_string())
}

/// Valid combinations of a sweep: their parameters, strategies and settings, and the counts
/// of combinations tried and skipped.
type Combinations = (
    Vec<Map<String, Value>>,
    Vec<(StrategySpec, crate::simulate::SimulationConfig)>,
    u64,
    u64,
);

fn valid_combinations(request: &SweepRequest) -> Result<Combinations> {
    if !RANKING_METRICS.contains(&request.metric.as_str()) {
        return Err(Error::InvalidParameter {
            name: "metric".to_string(),
            message: format!(
                "unknown metric {:?}; expected one of {}",
                request.metric,
                RANKING_METRICS.join(", ")
            ),
        });
    }
    if request.strategy_type == "expression" {
        return Err(Error::InvalidParameter {
            name: "strategy".to_string(),
            message: "sweeps run the built-in strategies; run expression strategies as \
                      single backtests"
                .to_string(),
        });
    }

    let candidates = match request.method {
        SearchMethod::Grid => request.space.grid(),
        SearchMethod::Random { trials, seed } => request.space.random(trials, seed),
    };
    let tried = candidates.len() as u64;
    let mut params = Vec::with_capacity(candidates.len());
    let mut strategies = Vec::with_capacity(candidates.len());
    let mut skipped = 0;
    let mut first_skip = None;
    for candidate in candidates {
        match request.backtest_request(&candidate) {
            Ok(backtest) => {
                // Settings shared by every combination fail the whole sweep, not one row.
                backtest.validate()?;
                strategies.push((backtest.strategy.clone(), backtest.simulation_config()));
                params.push(candidate);
            }
            Err(Error::InvalidParameter { name, message }) => {
                if !request
                    .space
                    .parameters
                    .iter()
                    .any(|(swept, _)| *swept == name)
                {
                    return Err(Error::InvalidParameter { name, message });
                }
                tracing::debug!(%name, %message, "sweep combination skipped");
                skipped += 1;
                if first_skip.is_none() {
                    first_skip = Some((name, message, candidate));
                }
            }
            Err(other) => return Err(other),
        }
    }
    // A space without one valid combination is a mistake in the grid, such as a value of
    // the wrong type, so it fails with the first combination's error.
    if let Some((name, message, candidate)) = first_skip
        && params.is_empty()
    {
        return Err(Error::InvalidParameter {
            name,
            message: format!(
                "none of the {tried} combinations is a valid {} strategy; the first, {}, \
                 fails with: {message}",
                request.strategy_type,
                Value::Object(candidate)
            ),
        });
    }
    Ok((params, strategies, tried, skipped))
}

/// Runs a sweep.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for an unknown metric, an expression strategy, invalid
/// shared settings, or a space in which no combination is valid; [`Error::NoData`] when the
/// range has no bars; DataFusion errors.
pub async fn run_sweep(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
    control: &SweepControl,
) -> Result<SweepReport> {
    let started = Instant::now();
    let (params, strategies, tried, skipped) = valid_combinations(request)?;

    let summary = dataset::series_summary(ctx, data_dir, &request.series, &request.range).await?;
    let Some(summary) = summary else {
        return Err(dataset::no_data(&request.series, &request.range));
    };
    let total = params.len() as u64;
    // Only the best `top` results are kept (plus a slack that amortizes re-ranking), and one
    // Sharpe ratio per combination that has one for the deflated Sharpe ratio, so memory
    // grows slowly with the number of combinations.
    let keep = (request.top > 0).then(|| request.top.max(256) * 4);
    let mut ranked: Vec<(usize, SweepResult)> = Vec::new();
    let mut sharpe_ratios: Vec<f64> = Vec::new();
    let mut evaluated = 0;
    if total > 0 {
        let plan = sweep_plan(
            ctx,
            data_dir,
            request,
            &strategies,
            Arc::clone(&control.cancel),
        )
        .await?;
        let mut stream = execute_stream(plan, ctx.task_ctx())?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let indexes = batch.column(0).as_primitive::<UInt64Type>();
            for row in 0..batch.num_rows() {
                let index = indexes.value(row) as usize;
                let result = SweepResult {
                    params: params[index].clone(),
                    metrics: metrics_of_row(&batch, row),
                };
                sharpe_ratios.extend(metric_value(&result, "sharpe_ratio"));
                ranked.push((index, result));
                evaluated += 1;
            }
            if let Some(keep) = keep
                && ranked.len() > keep
            {
                rank(&mut ranked, &request.metric);
                ranked.truncate(request.top);
            }
            if let Some(progress) = &control.progress {
                progress(evaluated, total);
            }
        }
    }
    let cancelled = control.cancel.load(Ordering::Relaxed) && evaluated < total;

    rank(&mut ranked, &request.metric);
    if request.top > 0 {
        ranked.truncate(request.top);
    }
    let results: Vec<SweepResult> = ranked.into_iter().map(|(_, result)| result).collect();
    let deflated_sharpe_ratio = match results.first() {
        Some(best) if !cancelled => {
            let trials = usize::try_from(evaluated).unwrap_or(usize::MAX);
            deflated_sharpe_of_best(ctx, data_dir, request, best, trials, &sharpe_ratios).await?
        }
        _ => None,
    };
    Ok(SweepReport {
        results,
        metric: request.metric.clone(),
        tried,
        skipped,
        evaluated,
        cancelled,
        bars: usize::try_from(summary.rows).unwrap_or(usize::MAX),
        deflated_sharpe_ratio,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Returns the metric columns of one output row as a JSON object, as [`crate::Metrics`]
/// serializes them.
fn metrics_of_row(batch: &RecordBatch, row: usize) -> Value {
    let schema = batch.schema();
    let mut object = Map::new();
    for (index, field) in schema.fields().iter().enumerate().skip(1) {
        let column = batch.column(index);
        let value = if column.is_null(row) {
            Value::Null
        } else if field.data_type() == &DataType::Int64 {
            Value::from(column.as_primitive::<Int64Type>().value(row))
        } else {
            Value::from(column.as_primitive::<Float64Type>().value(row))
        };
        object.insert(field.name().clone(), value);
    }
    Value::Object(object)
}

/// Returns the metric of a result as a number, `None` when null or absent.
pub fn metric_value(result: &SweepResult, metric: &str) -> Option<f64> {
    result.metrics.get(metric).and_then(Value::as_f64)
}

/// Sorts results best first by `metric`, nulls last, ties by combination index, so the
/// order does not depend on which partition finished first.
fn rank(results: &mut [(usize, SweepResult)], metric: &str) {
    let lower_first = lower_is_better(metric);
    results.sort_by(|(a_index, a), (b_index, b)| {
        let by_metric = match (metric_value(a, metric), metric_value(b, metric)) {
            (Some(a), Some(b)) => {
                let order = a.total_cmp(&b);
                if lower_first { order } else { order.reverse() }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_metric.then(a_index.cmp(b_index))
    });
}

/// Computes the deflated Sharpe ratio of the best result over `trials` evaluated
/// combinations: the sample variance of the per-bar Sharpe ratios of those that have one
/// (`sharpe_ratios`, annualized), and the moments of the best one's returns from a single
/// backtest of it.
async fn deflated_sharpe_of_best(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
    best: &SweepResult,
    trials: usize,
    sharpe_ratios: &[f64],
) -> Result<Option<f64>> {
    let Some(best_sharpe) = metric_value(best, "sharpe_ratio") else {
        return Ok(None);
    };
    let annualization = request.series.timeframe.bars_per_year().sqrt();
    let per_bar: Vec<f64> = sharpe_ratios
        .iter()
        .map(|sharpe| sharpe / annualization)
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

    let report = run_backtest(ctx, data_dir, &request.backtest_request(&best.params)?).await?;
    let returns: Vec<f64> = report
        .equity
        .windows(2)
        .map(|pair| pair[1].equity / pair[0].equity - 1.0)
        .collect();
    let Some((skewness, kurtosis)) = deflated::skewness_and_kurtosis(&returns) else {
        return Ok(None);
    };
    Ok(deflated::deflated_sharpe_ratio(
        best_sharpe / annualization,
        trials,
        variance,
        returns.len(),
        skewness,
        kurtosis,
    ))
}
