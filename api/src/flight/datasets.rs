//! The stored datasets as Flight `FlightInfo`s: one per kline series and one per tick series.

use std::path::Path;

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use bst_engine::dataset::{KLINES_TABLE, TICKS_TABLE};
use bst_ingest::Category;
use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType, TimestampMillisecondType};
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::prelude::{Expr, SessionContext, col, lit};
use serde_json::json;

use super::error::{RequestError, RequestResult};
use super::tickets::{self, DatasetRequest, DatasetSeries};

/// Row count and time range of one stored series.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeriesSummary {
    series: DatasetSeries,
    rows: i64,
    /// First and last time in epoch microseconds: `open_time` for klines, `ts` for ticks.
    first_us: i64,
    last_us: i64,
}

/// Returns a FlightInfo for every stored kline and tick series, klines first, each sorted by
/// category, symbol and timeframe.
///
/// # Errors
///
/// DataFusion errors of the summary queries.
pub async fn list(ctx: &SessionContext, data_dir: &Path) -> RequestResult<Vec<FlightInfo>> {
    let mut summaries = summarize(ctx, KLINES_TABLE, None).await?;
    summaries.extend(summarize(ctx, TICKS_TABLE, None).await?);
    let mut infos = Vec::with_capacity(summaries.len());
    for summary in &summaries {
        infos.push(flight_info(ctx, data_dir, summary).await?);
    }
    Ok(infos)
}

/// Returns the FlightInfo of one series.
///
/// # Errors
///
/// [`RequestError::NotFound`] when the series is not stored or has no rows.
pub async fn series_info(
    ctx: &SessionContext,
    data_dir: &Path,
    series: &DatasetSeries,
) -> RequestResult<FlightInfo> {
    if !series.is_stored(data_dir) {
        return Err(series.not_found());
    }
    let table = match series {
        DatasetSeries::Klines { .. } => KLINES_TABLE,
        DatasetSeries::Ticks { .. } => TICKS_TABLE,
    };
    let filter = tickets::series_filter(series, None, None);
    let summaries = summarize(ctx, table, Some(filter)).await?;
    let Some(summary) = summaries.first() else {
        return Err(series.not_found());
    };
    flight_info(ctx, data_dir, summary).await
}

async fn flight_info(
    ctx: &SessionContext,
    data_dir: &Path,
    summary: &SeriesSummary,
) -> RequestResult<FlightInfo> {
    let request = DatasetRequest {
        series: summary.series.clone(),
        start_ms: None,
        end_ms: None,
        columns: Vec::new(),
    };
    let frame = tickets::dataset_frame(ctx, data_dir, &request).await?;
    let schema = tickets::frame_schema(&frame);
    let ticket = ticket_json(&summary.series);
    let metadata = json!({
        "first_open_time": iso_us(summary.first_us),
        "last_open_time": iso_us(summary.last_us),
        "rows": summary.rows,
    });
    let info = FlightInfo::new()
        .try_with_schema(&schema)
        .map_err(|error| RequestError::internal("schema encoding", error))?
        .with_descriptor(FlightDescriptor::new_path(summary.series.path()))
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_total_records(summary.rows)
        .with_ordered(true)
        .with_app_metadata(metadata.to_string());
    Ok(info)
}

/// Returns the JSON ticket that reads a whole series.
fn ticket_json(series: &DatasetSeries) -> String {
    let ticket = match series {
        DatasetSeries::Klines {
            category,
            symbol,
            timeframe,
        } => json!({
            "dataset": KLINES_TABLE,
            "category": category.as_str(),
            "symbol": symbol,
            "timeframe": timeframe.code(),
        }),
        DatasetSeries::Ticks { category, symbol } => json!({
            "dataset": TICKS_TABLE,
            "category": category.as_str(),
            "symbol": symbol,
        }),
    };
    ticket.to_string()
}

/// Formats epoch microseconds as ISO 8601 UTC: milliseconds when the value has no finer
/// part, microseconds otherwise.
fn iso_us(us: i64) -> String {
    let Some(time) = DateTime::from_timestamp_micros(us) else {
        return us.to_string();
    };
    let precision = if us % 1_000 == 0 {
        SecondsFormat::Millis
    } else {
        SecondsFormat::Micros
    };
    time.to_rfc3339_opts(precision, true)
}

/// Groups a table by series and returns each series' row count and time range.
async fn summarize(
    ctx: &SessionContext,
    table: &'static str,
    filter: Option<Expr>,
) -> RequestResult<Vec<SeriesSummary>> {
    let (keys, time_column) = if table == KLINES_TABLE {
        (vec!["category", "symbol", "timeframe"], "open_time")
    } else {
        (vec!["category", "symbol"], "ts")
    };
    let group: Vec<Expr> = keys.iter().map(|key| col(*key)).collect();
    let sort = keys.iter().map(|key| col(*key).sort(true, false)).collect();
    let aggregates = vec![
        count(lit(1)).alias("rows"),
        min(col(time_column)).alias("first"),
        max(col(time_column)).alias("last"),
    ];
    let mut frame = ctx
        .table(table)
        .await
        .map_err(|error| RequestError::from_datafusion("dataset listing", error))?;
    if let Some(filter) = filter {
        frame = frame
            .filter(filter)
            .map_err(|error| RequestError::from_datafusion("dataset listing", error))?;
    }
    let batches = frame
        .aggregate(group, aggregates)
        .and_then(|frame| frame.sort(sort))
        .map_err(|error| RequestError::from_datafusion("dataset listing", error))?
        .collect()
        .await
        .map_err(|error| RequestError::from_datafusion("dataset listing", error))?;
    let mut summaries = Vec::new();
    for batch in &batches {
        summaries.extend(summaries_of_batch(batch, table)?);
    }
    Ok(summaries)
}

fn summaries_of_batch(batch: &RecordBatch, table: &str) -> RequestResult<Vec<SeriesSummary>> {
    let text = |name: &str| -> RequestResult<Vec<String>> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| RequestError::internal("dataset listing", format!("no {name}")))?;
        let strings =
            datafusion::arrow::compute::cast(column, &datafusion::arrow::datatypes::DataType::Utf8)
                .map_err(|error| RequestError::internal("dataset listing", error))?;
        Ok(strings
            .as_string::<i32>()
            .iter()
            .map(|value| value.unwrap_or_default().to_string())
            .collect())
    };
    let categories = text("category")?;
    let symbols = text("symbol")?;
    let timeframes = if table == KLINES_TABLE {
        Some(text("timeframe")?)
    } else {
        None
    };
    let rows = batch
        .column_by_name("rows")
        .map(|column| column.as_primitive::<Int64Type>().clone())
        .ok_or_else(|| RequestError::internal("dataset listing", "no rows column"))?;
    let (first, last) = time_columns_us(batch, table)?;

    let mut summaries = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if first.is_null(row) || last.is_null(row) {
            continue;
        }
        let category: Category = categories[row]
            .parse()
            .map_err(|error| RequestError::internal("dataset listing", error))?;
        let symbol = symbols[row].clone();
        let series = match &timeframes {
            Some(timeframes) => DatasetSeries::Klines {
                category,
                symbol,
                timeframe: timeframes[row]
                    .parse()
                    .map_err(|error| RequestError::internal("dataset listing", error))?,
            },
            None => DatasetSeries::Ticks { category, symbol },
        };
        summaries.push(SeriesSummary {
            series,
            rows: rows.value(row),
            first_us: first.value(row),
            last_us: last.value(row),
        });
    }
    Ok(summaries)
}

/// Returns the `first` and `last` columns in epoch microseconds.
fn time_columns_us(
    batch: &RecordBatch,
    table: &str,
) -> RequestResult<(
    datafusion::arrow::array::Int64Array,
    datafusion::arrow::array::Int64Array,
)> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| RequestError::internal("dataset listing", format!("no {name}")))
    };
    let to_us = |array: &dyn Array| -> datafusion::arrow::array::Int64Array {
        if table == KLINES_TABLE {
            array
                .as_primitive::<TimestampMillisecondType>()
                .unary(|ms| ms * 1_000)
        } else {
            array
                .as_primitive::<TimestampMicrosecondType>()
                .unary(|us| us)
        }
    };
    Ok((
        to_us(column("first")?.as_ref()),
        to_us(column("last")?.as_ref()),
    ))
}
