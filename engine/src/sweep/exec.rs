//! `SweepExec`: the physical operator that evaluates a sweep's combinations.
//!
//! Its input is one plan over the bars with every distinct indicator column the sweep needs,
//! each computed once by a window function. The operator collects that input once, shares it
//! between its output partitions, and walks the shared columns once per combination: crossings,
//! the fill simulation and the metrics. Each partition evaluates every n-th combination, so
//! the partitions run in parallel, and each emits one small batch per chunk of combinations,
//! so memory does not grow with the number of combinations.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
};
use tokio::sync::OnceCell;

use crate::metrics::{MetricInputs, Metrics, compute_metrics};
use crate::simulate::{SignalColumns, SignalMode, SimulationConfig, simulate};

/// Combinations one output batch carries.
const CHUNK: usize = 16;

/// One operand of a crossing, resolved against the shared columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    Close,
    /// Index into the shared indicator columns.
    Column(usize),
    Level(f64),
}

/// A combination ready to evaluate: its crossings and its account settings.
#[derive(Debug, Clone)]
pub(crate) struct Combination {
    pub long: (Source, Source),
    pub short: (Source, Source),
    pub config: SimulationConfig,
}

/// The bars and indicator columns every combination reads.
#[derive(Debug)]
pub(crate) struct SharedColumns {
    pub open_time_ms: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    /// Indicator columns as the plan produced them, null during warm-up.
    pub indicators: Vec<Float64Array>,
}

impl SharedColumns {
    fn value(&self, source: Source, bar: usize) -> Option<f64> {
        match source {
            Source::Close => Some(self.close[bar]),
            Source::Column(index) => {
                let column = &self.indicators[index];
                column.is_valid(bar).then(|| column.value(bar))
            }
            Source::Level(level) => Some(level),
        }
    }

    /// Returns where `a` crosses above (or below) `b`, with all four values defined.
    fn crossings(&self, a: Source, b: Source, above: bool) -> Vec<bool> {
        let bar_count = self.close.len();
        let mut signals = vec![false; bar_count];
        for (bar, signal) in signals.iter_mut().enumerate().skip(1) {
            let values = (
                self.value(a, bar),
                self.value(b, bar),
                self.value(a, bar - 1),
                self.value(b, bar - 1),
            );
            if let (Some(a_now), Some(b_now), Some(a_before), Some(b_before)) = values {
                *signal = if above {
                    a_now > b_now && a_before <= b_before
                } else {
                    a_now < b_now && a_before >= b_before
                };
            }
        }
        signals
    }
}

/// Evaluates the combinations of a sweep over shared indicator columns.
pub(crate) struct SweepExec {
    input: Arc<dyn ExecutionPlan>,
    /// Names of the indicator columns of `input`, in [`Source::Column`] order.
    indicator_columns: Arc<Vec<String>>,
    combinations: Arc<Vec<Combination>>,
    bars_per_year: f64,
    shared: Arc<OnceCell<Arc<SharedColumns>>>,
    cancel: Arc<AtomicBool>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SweepExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SweepExec")
            .field("combinations", &self.combinations.len())
            .field("indicator_columns", &self.indicator_columns)
            .finish()
    }
}

/// Metrics stored as whole numbers; every other metric is a float.
const INTEGER_METRICS: [&str; 6] = [
    "total_trades",
    "winning_trades",
    "losing_trades",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_seconds",
    "liquidations",
];

/// Names of the metrics, in the order [`Metrics`] serializes them.
pub(crate) fn metric_names() -> Vec<String> {
    let simulation = crate::simulate::Simulation {
        trades: Vec::new(),
        equity: vec![1.0],
        exposed_bars: 0,
    };
    let inputs = MetricInputs {
        initial_capital: 1.0,
        bars_per_year: 1.0,
        open_time_ms: &[0],
        first_open: 1.0,
        last_close: 1.0,
    };
    match serde_json::to_value(compute_metrics(&inputs, &simulation)) {
        Ok(serde_json::Value::Object(object)) => object.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Returns the schema of the operator's output: the combination's index, then one column per metric
/// (Int64 for counts, Float64 otherwise, null where the metric is undefined).
pub(crate) fn output_schema() -> SchemaRef {
    let mut fields = vec![Field::new("combination", DataType::UInt64, false)];
    for name in metric_names() {
        let data_type = if INTEGER_METRICS.contains(&name.as_str()) {
            DataType::Int64
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, data_type, true));
    }
    Arc::new(Schema::new(fields))
}

/// Returns one output batch built from the metrics of some combinations.
fn metrics_batch(schema: &SchemaRef, indexes: Vec<u64>, rows: &[Metrics]) -> DfResult<RecordBatch> {
    let documents: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(indexes))];
    for field in schema.fields().iter().skip(1) {
        let values = documents.iter().map(|document| document.get(field.name()));
        let column: ArrayRef = if field.data_type() == &DataType::Int64 {
            Arc::new(Int64Array::from_iter(
                values.map(|value| value.and_then(serde_json::Value::as_i64)),
            ))
        } else {
            Arc::new(Float64Array::from_iter(
                values.map(|value| value.and_then(serde_json::Value::as_f64)),
            ))
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl SweepExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        indicator_columns: Vec<String>,
        combinations: Vec<Combination>,
        bars_per_year: f64,
        partitions: usize,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let partitions = partitions.clamp(1, combinations.len().max(1));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(output_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            input,
            indicator_columns: Arc::new(indicator_columns),
            combinations: Arc::new(combinations),
            bars_per_year,
            shared: Arc::new(OnceCell::new()),
            cancel,
            properties: Arc::new(properties),
        }
    }

    fn partition_count(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

impl DisplayAs for SweepExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SweepExec: combinations={}, shared_indicators={}",
            self.combinations.len(),
            self.indicator_columns.len()
        )
    }
}

impl ExecutionPlan for SweepExec {
    fn name(&self) -> &str {
        "SweepExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "SweepExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            indicator_columns: Arc::clone(&self.indicator_columns),
            combinations: Arc::clone(&self.combinations),
            bars_per_year: self.bars_per_year,
            shared: Arc::new(OnceCell::new()),
            cancel: Arc::clone(&self.cancel),
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let partitions = self.partition_count();
        let state = PartitionState {
            schema: self.schema(),
            next: partition,
            step: partitions,
            input: Arc::clone(&self.input),
            indicator_columns: Arc::clone(&self.indicator_columns),
            combinations: Arc::clone(&self.combinations),
            bars_per_year: self.bars_per_year,
            shared: Arc::clone(&self.shared),
            cancel: Arc::clone(&self.cancel),
            context,
        };
        let stream = futures::stream::try_unfold(state, |mut state| async move {
            let shared = Arc::clone(
                state
                    .shared
                    .get_or_try_init(|| {
                        collect_shared(
                            Arc::clone(&state.input),
                            Arc::clone(&state.indicator_columns),
                            Arc::clone(&state.context),
                        )
                    })
                    .await?,
            );
            if state.next >= state.combinations.len() || state.cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let mut indexes = Vec::with_capacity(CHUNK);
            let mut rows = Vec::with_capacity(CHUNK);
            while indexes.len() < CHUNK && state.next < state.combinations.len() {
                let combination = &state.combinations[state.next];
                rows.push(evaluate(&shared, combination, state.bars_per_year)?);
                indexes.push(state.next as u64);
                state.next += state.step;
            }
            let batch = metrics_batch(&state.schema, indexes, &rows)?;
            Ok(Some((batch, state)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// State of one output partition while it runs.
struct PartitionState {
    schema: SchemaRef,
    next: usize,
    step: usize,
    input: Arc<dyn ExecutionPlan>,
    indicator_columns: Arc<Vec<String>>,
    combinations: Arc<Vec<Combination>>,
    bars_per_year: f64,
    shared: Arc<OnceCell<Arc<SharedColumns>>>,
    cancel: Arc<AtomicBool>,
    context: Arc<TaskContext>,
}

/// Runs the input plan and copies its columns out.
async fn collect_shared(
    input: Arc<dyn ExecutionPlan>,
    indicator_columns: Arc<Vec<String>>,
    context: Arc<TaskContext>,
) -> DfResult<Arc<SharedColumns>> {
    let schema = input.schema();
    let batches = collect(input, context).await?;
    let batch = concat_batches(&schema, &batches)?;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| DataFusionError::Internal(format!("sweep input has no column {name}")))
    };
    let floats = |name: &str| -> DfResult<Vec<f64>> {
        let array: &Float64Array = column(name)?.as_primitive::<Float64Type>();
        Ok(array.values().to_vec())
    };
    let mut indicators = Vec::with_capacity(indicator_columns.len());
    for name in indicator_columns.iter() {
        indicators.push(column(name)?.as_primitive::<Float64Type>().clone());
    }
    Ok(Arc::new(SharedColumns {
        open_time_ms: column("open_time")?
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec(),
        open: floats("open")?,
        high: floats("high")?,
        low: floats("low")?,
        close: floats("close")?,
        indicators,
    }))
}

/// Runs one combination and returns its metrics.
fn evaluate(
    shared: &SharedColumns,
    combination: &Combination,
    bars_per_year: f64,
) -> DfResult<Metrics> {
    let bar_count = shared.close.len();
    if bar_count == 0 {
        return Err(DataFusionError::Execution(
            "the sweep range contains no bars".to_string(),
        ));
    }
    let long = shared.crossings(combination.long.0, combination.long.1, true);
    let short = shared.crossings(combination.short.0, combination.short.1, false);
    let columns = SignalColumns {
        open_time_ms: &shared.open_time_ms,
        open: &shared.open,
        high: &shared.high,
        low: &shared.low,
        close: &shared.close,
        mode: SignalMode::Crossings,
        entry_long: &long,
        exit_long: &[],
        entry_short: &short,
        exit_short: &[],
    };
    let simulation = simulate(columns, &combination.config);
    Ok(compute_metrics(
        &MetricInputs {
            initial_capital: combination.config.initial_capital,
            bars_per_year,
            open_time_ms: &shared.open_time_ms,
            first_open: shared.open[0],
            last_close: shared.close[bar_count - 1],
        },
        &simulation,
    ))
}
