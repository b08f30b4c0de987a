//! The kline dataset as a DataFusion table with hive partitions and a declared sort order.

use std::path::Path;
use std::sync::Arc;

use bst_ingest::layout::{
    self, KLINE_PARTITION_COLUMNS, KLINES_DIR, kline_schema, kline_series_dir,
};
use bst_ingest::tick_writer::{TICK_PARTITION_COLUMNS, TICKS_DIR, tick_schema};
use bst_ingest::{Category, Kline, Timeframe};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;

use crate::{Error, Result, resample};

/// Name of the kline table in every engine session.
pub const KLINES_TABLE: &str = "klines";

/// One stored series: a category, symbol and timeframe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub category: Category,
    pub symbol: String,
    pub timeframe: Timeframe,
}

/// A half-open range `[start, end)` of open times in epoch milliseconds; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl TimeRange {
    /// Checks that the start is before the end when both are set.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRange`] naming both instants.
    pub fn validate(&self) -> Result<()> {
        match (self.start_ms, self.end_ms) {
            (Some(start), Some(end)) if start >= end => Err(Error::InvalidRange {
                start: iso_ms(start),
                end: iso_ms(end),
            }),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        match (self.start_ms, self.end_ms) {
            (None, None) => "stored".to_string(),
            (Some(start), None) => format!("from {}", iso_ms(start)),
            (None, Some(end)) => format!("before {}", iso_ms(end)),
            (Some(start), Some(end)) => format!("from {} to {}", iso_ms(start), iso_ms(end)),
        }
    }
}

/// Formats epoch milliseconds as ISO 8601 UTC with a `Z`.
pub fn iso_ms(ms: i64) -> String {
    layout::utc_from_ms(ms)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// First and last open time and row count of a series inside a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesSummary {
    pub first_open_ms: i64,
    pub last_open_ms: i64,
    pub rows: u64,
}

/// Registers the `klines` listing table over `<data_dir>/klines`, creating the folder when
/// missing. Each file is declared sorted by `open_time`, so window plans over one series need
/// a merge of sorted files but no sort.
pub(crate) fn register_klines(ctx: &SessionContext, data_dir: &Path) -> Result<()> {
    let root = data_dir.join(KLINES_DIR);
    std::fs::create_dir_all(&root).map_err(|source| Error::Io {
        path: root.clone(),
        source,
    })?;
    let root = root.canonicalize().map_err(|source| Error::Io {
        path: root.clone(),
        source,
    })?;
    let url = ListingTableUrl::parse(format!("{}/", root.display()))?;

    let partition_columns = KLINE_PARTITION_COLUMNS
        .iter()
        .map(|name| (name.to_string(), DataType::Utf8))
        .collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_columns)
        .with_file_sort_order(vec![vec![col("open_time").sort(true, false)]]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(kline_schema());
    ctx.register_table(KLINES_TABLE, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Name of the tick table in every engine session.
pub const TICKS_TABLE: &str = "ticks";

/// Registers the `ticks` listing table over `<data_dir>/ticks`, partitioned by category,
/// symbol and date, creating the folder when missing. Each file is declared sorted by `ts`.
pub(crate) fn register_ticks(ctx: &SessionContext, data_dir: &Path) -> Result<()> {
    let root = data_dir.join(TICKS_DIR);
    std::fs::create_dir_all(&root).map_err(|source| Error::Io {
        path: root.clone(),
        source,
    })?;
    let root = root.canonicalize().map_err(|source| Error::Io {
        path: root.clone(),
        source,
    })?;
    let url = ListingTableUrl::parse(format!("{}/", root.display()))?;

    let partition_columns = TICK_PARTITION_COLUMNS
        .iter()
        .map(|name| (name.to_string(), DataType::Utf8))
        .collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_columns)
        .with_file_sort_order(vec![vec![col("ts").sort(true, false)]]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(tick_schema());
    ctx.register_table(TICKS_TABLE, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Returns a timestamp literal matching the `open_time` column type.
pub(crate) fn open_time_literal(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some(layout::UTC.into()),
    ))
}

/// Returns the rows of one series inside a range, with partition filters that prune every
/// other folder.
pub(crate) async fn series_frame(
    ctx: &SessionContext,
    series: &SeriesKey,
    range: &TimeRange,
) -> Result<DataFrame> {
    let mut filter = col("category")
        .eq(lit(series.category.as_str()))
        .and(col("symbol").eq(lit(series.symbol.as_str())))
        .and(col("timeframe").eq(lit(series.timeframe.code())));
    if let Some(start) = range.start_ms {
        filter = filter
            .and(col("month").gt_eq(lit(layout::month_of(start))))
            .and(col("open_time").gt_eq(open_time_literal(start)));
    }
    if let Some(end) = range.end_ms {
        filter = filter
            .and(col("month").lt_eq(lit(layout::month_of(end - 1))))
            .and(col("open_time").lt(open_time_literal(end)));
    }
    Ok(ctx.table(KLINES_TABLE).await?.filter(filter)?)
}

/// Returns the bars of a series inside a range: the stored ones, or for a timeframe that is
/// not stored, bars aggregated from the stored 1-minute bars.
pub(crate) async fn bars_frame(
    ctx: &SessionContext,
    data_dir: &Path,
    series: &SeriesKey,
    range: &TimeRange,
) -> Result<DataFrame> {
    let stored =
        kline_series_dir(data_dir, series.category, &series.symbol, series.timeframe).is_dir();
    if stored || series.timeframe == resample::SOURCE_TIMEFRAME {
        series_frame(ctx, series, range).await
    } else {
        resample::resample_frame(ctx, series, range).await
    }
}

/// Returns the first and last open time and the row count of a series in a range, or `None`
/// when it has no rows there.
pub(crate) async fn series_summary(
    ctx: &SessionContext,
    data_dir: &Path,
    series: &SeriesKey,
    range: &TimeRange,
) -> Result<Option<SeriesSummary>> {
    let summary = bars_frame(ctx, data_dir, series, range)
        .await?
        .aggregate(
            vec![],
            vec![
                min(col("open_time")).alias("first"),
                max(col("open_time")).alias("last"),
                count(col("open_time")).alias("rows"),
            ],
        )?
        .collect()
        .await?;
    let Some(batch) = summary.first() else {
        return Ok(None);
    };
    let first = batch.column(0).as_primitive::<TimestampMillisecondType>();
    let last = batch.column(1).as_primitive::<TimestampMillisecondType>();
    let rows = batch.column(2).as_primitive::<Int64Type>();
    if batch.num_rows() == 0 || first.is_null(0) {
        return Ok(None);
    }
    Ok(Some(SeriesSummary {
        first_open_ms: first.value(0),
        last_open_ms: last.value(0),
        rows: u64::try_from(rows.value(0)).unwrap_or_default(),
    }))
}

/// Returns [`Error::NoData`] for a series and range.
pub(crate) fn no_data(series: &SeriesKey, range: &TimeRange) -> Error {
    Error::NoData {
        category: series.category.to_string(),
        symbol: series.symbol.clone(),
        timeframe: series.timeframe.code(),
        range: range.describe(),
    }
}

/// Returns up to `limit` bars of a series, newest first, whose open time is at most
/// `newest_open_ms` when given.
pub(crate) async fn recent_klines(
    ctx: &SessionContext,
    data_dir: &Path,
    series: &SeriesKey,
    limit: usize,
    newest_open_ms: Option<i64>,
) -> Result<Vec<Kline>> {
    let range = TimeRange {
        start_ms: None,
        end_ms: newest_open_ms.map(|newest| newest.saturating_add(1)),
    };
    let batches = bars_frame(ctx, data_dir, series, &range)
        .await?
        .sort(vec![col("open_time").sort(false, false)])?
        .limit(0, Some(limit))?
        .select_columns(&[
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "turnover",
        ])?
        .collect()
        .await?;
    let mut klines = Vec::with_capacity(limit);
    for batch in &batches {
        klines.extend(klines_from_batch(batch)?);
    }
    Ok(klines)
}

/// Converts a batch with the kline file columns, in file order, into rows.
pub(crate) fn klines_from_batch(batch: &RecordBatch) -> Result<Vec<Kline>> {
    let open_time = batch.column(0);
    let DataType::Timestamp(TimeUnit::Millisecond, _) = open_time.data_type() else {
        return Err(Error::Internal(format!(
            "open_time has type {}, expected a millisecond timestamp",
            open_time.data_type()
        )));
    };
    let open_time = open_time.as_primitive::<TimestampMillisecondType>();
    let float = |index: usize| batch.column(index).as_primitive::<Float64Type>();
    let (open, high, low, close, volume, turnover) =
        (float(1), float(2), float(3), float(4), float(5), float(6));
    Ok((0..batch.num_rows())
        .map(|row| Kline {
            open_time_ms: open_time.value(row),
            open: open.value(row),
            high: high.value(row),
            low: low.value(row),
            close: close.value(row),
            volume: volume.value(row),
            turnover: (!turnover.is_null(row)).then(|| turnover.value(row)),
        })
        .collect())
}
