//! A stored backtest's trades and equity curve as Arrow record batches.
//!
//! The rows come from the DuckDB store through [`bst_query::Store`], which returns them as
//! Rust values, and are converted to the arrow 59 batches of DataFusion here. DuckDB's own
//! Arrow export uses another arrow line, so it cannot feed the Flight encoder.

use std::sync::{Arc, LazyLock};

use bst_query::{BacktestStatus, EquityPoint, Trade, TradeFilter};
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::error::{RequestError, RequestResult};
use super::tickets::{BacktestRequest, BacktestTable};
use crate::AppState;

/// Rows per record batch of a backtest result.
const ROWS_PER_BATCH: usize = 8_192;

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

static TRADES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let number = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("backtest_id", DataType::Int64, false),
        timestamp_field("entry_time"),
        timestamp_field("exit_time"),
        Field::new("side", DataType::Utf8, false),
        number("entry_price"),
        number("exit_price"),
        number("quantity"),
        number("pnl"),
        number("pnl_pct"),
        number("commission"),
        number("funding"),
        Field::new("exit_reason", DataType::Utf8, false),
    ]))
});

static EQUITY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        timestamp_field("open_time"),
        Field::new("equity", DataType::Float64, false),
        Field::new("drawdown", DataType::Float64, false),
    ]))
});

/// Returns the schema of a backtest result table.
pub fn schema(table: BacktestTable) -> SchemaRef {
    match table {
        BacktestTable::Trades => Arc::clone(&TRADES_SCHEMA),
        BacktestTable::Equity => Arc::clone(&EQUITY_SCHEMA),
    }
}

/// Checks that the backtest exists and is completed, because a queued or running backtest
/// has no results yet and a failed or cancelled one may have only part of them.
///
/// # Errors
///
/// [`RequestError::NotFound`] for an unknown backtest id, [`RequestError::FailedPrecondition`]
/// naming the status of a backtest that is not completed, and store errors.
async fn require_completed(state: &AppState, id: i64) -> RequestResult<()> {
    let backtest = run_store(state, move |store| store.get_backtest(id))
        .await?
        .ok_or_else(|| RequestError::NotFound(format!("backtest {id} not found")))?;
    if backtest.status == BacktestStatus::Completed {
        return Ok(());
    }
    let next_step = match backtest.status {
        BacktestStatus::Queued | BacktestStatus::Running => {
            format!("poll GET /api/v1/backtests/{id} until its status is completed")
        }
        _ => "only a completed backtest has results; queue a new backtest".to_string(),
    };
    Err(RequestError::FailedPrecondition(format!(
        "backtest {id} is {}, so its trades and equity curve are not available; {next_step}",
        backtest.status
    )))
}

/// Reads a completed backtest's trades or equity curve from the store and returns it as
/// batches of at most [`ROWS_PER_BATCH`] rows.
///
/// # Errors
///
/// [`RequestError::NotFound`] for an unknown backtest id, [`RequestError::FailedPrecondition`]
/// for a backtest that is not completed, and store errors.
pub async fn read_batches(
    state: &AppState,
    request: BacktestRequest,
) -> RequestResult<Vec<RecordBatch>> {
    let id = request.backtest_id;
    require_completed(state, id).await?;
    match request.table {
        BacktestTable::Trades => {
            let filter = TradeFilter {
                side: None,
                limit: u64::MAX,
                offset: 0,
            };
            let trades = run_store(state, move |store| store.list_trades(id, &filter)).await?;
            trades.chunks(ROWS_PER_BATCH).map(trades_batch).collect()
        }
        BacktestTable::Equity => {
            let points = run_store(state, move |store| store.equity_curve(id)).await?;
            points.chunks(ROWS_PER_BATCH).map(equity_batch).collect()
        }
    }
}

/// Returns the number of rows of a completed backtest's result table.
///
/// # Errors
///
/// [`RequestError::NotFound`] for an unknown backtest id, [`RequestError::FailedPrecondition`]
/// for a backtest that is not completed, and store errors.
pub async fn count_rows(state: &AppState, request: BacktestRequest) -> RequestResult<u64> {
    let id = request.backtest_id;
    require_completed(state, id).await?;
    match request.table {
        BacktestTable::Trades => run_store(state, move |store| store.count_trades(id)).await,
        BacktestTable::Equity => run_store(state, move |store| store.count_equity_points(id)).await,
    }
}

async fn run_store<T, F>(state: &AppState, call: F) -> RequestResult<T>
where
    T: Send + 'static,
    F: FnOnce(&bst_query::Store) -> bst_query::Result<T> + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|error| RequestError::internal("blocking store task", error))?
        .map_err(RequestError::from)
}

fn millis(times: impl Iterator<Item = DateTime<Utc>>) -> ArrayRef {
    let values: Vec<i64> = times.map(|time| time.timestamp_millis()).collect();
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

fn trades_batch(trades: &[Trade]) -> RequestResult<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trades.iter().map(|t| t.id).collect::<Int64Array>()),
        Arc::new(trades.iter().map(|t| t.backtest_id).collect::<Int64Array>()),
        millis(trades.iter().map(|t| t.entry_time)),
        millis(trades.iter().map(|t| t.exit_time)),
        Arc::new(
            trades
                .iter()
                .map(|t| Some(t.side.as_str()))
                .collect::<StringArray>(),
        ),
        floats(trades.iter().map(|t| t.entry_price)),
        floats(trades.iter().map(|t| t.exit_price)),
        floats(trades.iter().map(|t| t.quantity)),
        floats(trades.iter().map(|t| t.pnl)),
        floats(trades.iter().map(|t| t.pnl_pct)),
        floats(trades.iter().map(|t| t.commission)),
        floats(trades.iter().map(|t| t.funding)),
        Arc::new(
            trades
                .iter()
                .map(|t| Some(t.exit_reason.as_str()))
                .collect::<StringArray>(),
        ),
    ];
    RecordBatch::try_new(schema(BacktestTable::Trades), columns)
        .map_err(|error| RequestError::internal("trades batch", error))
}

fn equity_batch(points: &[EquityPoint]) -> RequestResult<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        millis(points.iter().map(|p| p.open_time)),
        floats(points.iter().map(|p| p.equity)),
        floats(points.iter().map(|p| p.drawdown)),
    ];
    RecordBatch::try_new(schema(BacktestTable::Equity), columns)
        .map_err(|error| RequestError::internal("equity batch", error))
}
