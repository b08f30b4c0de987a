//! Bars of any timeframe aggregated from stored 1-minute bars as a DataFusion plan.
//!
//! Buckets start on UTC boundaries as Bybit aligns them: minute timeframes on multiples of
//! their length since the Unix epoch, days at 00:00, weeks on Monday 00:00 and months on the
//! 1st. A bucket is kept only when every 1-minute bar of it is present.

use bst_ingest::Timeframe;
use datafusion::arrow::datatypes::IntervalMonthDayNano;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::functions::expr_fn::{date_bin, date_trunc, to_unixtime};
use datafusion::functions_aggregate::expr_fn::{count, first_value, last_value, max, min};
use datafusion::logical_expr::{AggregateUDF, cast, col, lit, when};
use datafusion::prelude::{DataFrame, Expr, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::dataset::{self, SeriesKey, TimeRange, open_time_literal};
use crate::exact_sum::exact_sum_udaf;
use crate::{Error, Result};

/// Timeframe of the bars that resampling reads.
pub const SOURCE_TIMEFRAME: Timeframe = Timeframe::Minutes(1);

/// Open time of Monday 1970-01-05 00:00 UTC, the origin of weekly buckets.
const FIRST_MONDAY_MS: i64 = 4 * 86_400_000;

const MINUTE_NANOS: i64 = 60_000_000_000;

/// Returns a plan of `series.timeframe` bars built from the stored 1-minute bars of the same
/// category and symbol, with the kline file columns, ascending by open time.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when the target is 1 minute, DataFusion planning errors.
pub async fn resample_frame(
    ctx: &SessionContext,
    series: &SeriesKey,
    range: &TimeRange,
) -> Result<DataFrame> {
    let Some(bucket_minutes) = bucket_minutes(series.timeframe) else {
        return Err(Error::InvalidParameter {
            name: "timeframe".to_string(),
            message: "1-minute bars are stored, not resampled".to_string(),
        });
    };
    let source = SeriesKey {
        timeframe: SOURCE_TIMEFRAME,
        ..series.clone()
    };
    let bars = dataset::series_frame(ctx, &source, range).await?;

    let bucket = bucket_start(series.timeframe, bucket_minutes).alias("bucket");
    let by_time = || vec![col("open_time").sort(true, false)];
    let exact_sum = AggregateUDF::clone(&exact_sum_udaf());
    let aggregated = bars.aggregate(
        vec![bucket],
        vec![
            first_value(col("open"), by_time()).alias("open"),
            max(col("high")).alias("high"),
            min(col("low")).alias("low"),
            last_value(col("close"), by_time()).alias("close"),
            exact_sum.call(vec![col("volume")]).alias("volume"),
            exact_sum.call(vec![col("turnover")]).alias("turnover_sum"),
            count(col("turnover")).alias("turnover_count"),
            count(col("open_time")).alias("bar_count"),
        ],
    )?;

    // A bucket cut by the range, or with a bar missing, has fewer bars and is dropped.
    let complete = col("bar_count").eq(expected_bar_count(series.timeframe, bucket_minutes));
    Ok(aggregated
        .filter(complete)?
        .select(vec![
            // date_bin and date_trunc return nanoseconds; the dataset stores milliseconds.
            cast(col("bucket"), open_time_type()).alias("open_time"),
            col("open"),
            col("high"),
            col("low"),
            col("close"),
            col("volume"),
            // A turnover sum is defined only when every 1-minute bar has a turnover.
            when(
                col("turnover_count").eq(col("bar_count")),
                col("turnover_sum"),
            )
            .end()?
            .alias("turnover"),
        ])?
        .sort(vec![col("open_time").sort(true, false)])?)
}

/// Returns the fixed bucket length in minutes, `Some(0)` for months (variable), and `None`
/// for the 1-minute source itself.
fn bucket_minutes(timeframe: Timeframe) -> Option<i64> {
    match timeframe {
        Timeframe::Minutes(1) => None,
        Timeframe::Minutes(minutes) => Some(i64::from(minutes)),
        Timeframe::Day => Some(1_440),
        Timeframe::Week => Some(7 * 1_440),
        Timeframe::Month => Some(0),
    }
}

fn open_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(bst_ingest::layout::UTC.into()))
}

fn interval_minutes(minutes: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(0, 0, minutes * MINUTE_NANOS),
    )))
}

fn bucket_start(timeframe: Timeframe, bucket_minutes: i64) -> Expr {
    match timeframe {
        Timeframe::Month => date_trunc(lit("month"), col("open_time")),
        Timeframe::Week => date_bin(
            interval_minutes(bucket_minutes),
            col("open_time"),
            open_time_literal(FIRST_MONDAY_MS),
        ),
        _ => date_bin(
            interval_minutes(bucket_minutes),
            col("open_time"),
            open_time_literal(0),
        ),
    }
}

/// Returns the number of 1-minute bars in a complete bucket, as an expression over the
/// `bucket` column.
fn expected_bar_count(timeframe: Timeframe, bucket_minutes: i64) -> Expr {
    match timeframe {
        Timeframe::Month => {
            // The 1st of a month plus 31 days always falls in the next month.
            let next_month = date_trunc(lit("month"), col("bucket") + interval_minutes(31 * 1_440));
            (to_unixtime(vec![next_month]) - to_unixtime(vec![col("bucket")])) / lit(60_i64)
        }
        _ => lit(bucket_minutes),
    }
}
