//! The tick dataset: the trade record, its Arrow schema, and the partitioned writer and reader.
//!
//! Each day of a series is one partition,
//! `<data_dir>/ticks/category=<c>/symbol=<S>/date=<YYYY-MM-DD>/part-0000.parquet`, with rows
//! sorted by `ts`. A write merges the incoming ticks into it, deduplicated on `trade_id`, and
//! replaces the file atomically in the same way as the kline writer.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::DateTime;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::layout::{Category, PART_FILE_NAME, UTC, validate_symbol};
use crate::writer::{
    create_dir_durable, file_name_of, list_dir, remove_tmp_files, replace_part_file,
    write_sorted_parquet,
};
use crate::{Error, Result};

/// Folder of the tick dataset below the data directory.
pub const TICKS_DIR: &str = "ticks";

/// Names of the hive partition columns of the tick dataset, outermost first.
pub const TICK_PARTITION_COLUMNS: [&str; 3] = ["category", "symbol", "date"];

const DAY_US: i64 = 86_400_000_000;

/// The taker's side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// Returns the stored name, `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Side {
    type Err = Error;

    /// Parses the stored names `buy` and `sell` and Bybit's `Buy` and `Sell`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "buy" | "Buy" => Ok(Side::Buy),
            "sell" | "Sell" => Ok(Side::Sell),
            other => Err(Error::InvalidValue {
                field: "side",
                value: other.to_string(),
                expected: "Buy or Sell",
            }),
        }
    }
}

/// One trade. `notional` is the trade's value in the other currency as the exchange reports
/// it: quote currency for linear and spot, coin for inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Trade time in microseconds since the Unix epoch.
    pub ts_us: i64,
    pub price: f64,
    pub size: f64,
    pub notional: f64,
    pub side: Side,
    /// The exchange's trade id (`trdMatchID` in trade dumps), unique per series.
    pub trade_id: String,
    /// Bybit's tick direction, such as `PlusTick` or `ZeroMinusTick`.
    pub tick_direction: Option<String>,
}

impl Tick {
    /// Checks that `ts` is a date that chrono can represent, that price, size and notional
    /// are finite and not negative, and that the trade id is not empty.
    ///
    /// # Errors
    ///
    /// Returns a message naming the first failed condition and its value.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if DateTime::from_timestamp_micros(self.ts_us).is_none() {
            return Err(format!(
                "ts {} us is out of the supported range",
                self.ts_us
            ));
        }
        let values = [
            ("price", self.price),
            ("size", self.size),
            ("notional", self.notional),
        ];
        for (name, value) in values {
            if !value.is_finite() {
                return Err(format!("{name} {value} is not a finite number"));
            }
            if value < 0.0 {
                return Err(format!("{name} {value} is negative"));
            }
        }
        if self.trade_id.is_empty() {
            return Err("the trade id is empty".to_string());
        }
        Ok(())
    }
}

/// Row counts of one tick write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickWriteReport {
    /// Number of input ticks.
    pub ticks_read: usize,
    /// Input ticks whose trade id was not stored yet in their day partition.
    pub ticks_written: usize,
    /// Input ticks whose trade id is stored in their day partition or earlier in the input.
    pub duplicates_skipped: usize,
    /// Days (`YYYY-MM-DD`) whose file was rewritten, sorted and without repeats.
    pub partitions_touched: Vec<String>,
}

impl TickWriteReport {
    /// Adds the counts and the touched partitions of `other` to this report.
    pub fn merge(&mut self, other: TickWriteReport) {
        self.ticks_read += other.ticks_read;
        self.ticks_written += other.ticks_written;
        self.duplicates_skipped += other.duplicates_skipped;
        self.partitions_touched.extend(other.partitions_touched);
        self.partitions_touched.sort();
        self.partitions_touched.dedup();
    }
}

/// Returns the Arrow schema of the tick files (partition columns are not stored in them).
pub fn tick_schema() -> SchemaRef {
    let number = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
        ),
        number("price"),
        number("size"),
        number("notional"),
        Field::new("side", DataType::Utf8, false),
        Field::new("trade_id", DataType::Utf8, false),
        Field::new("tick_direction", DataType::Utf8, true),
    ]))
}

/// Returns the `YYYY-MM-DD` UTC day partition of a trade time in microseconds.
pub fn date_of(ts_us: i64) -> String {
    let day_start_ms = ts_us.div_euclid(DAY_US) * (DAY_US / 1_000);
    DateTime::from_timestamp_millis(day_start_ms).map_or_else(
        || "invalid".to_string(),
        |day| day.format("%Y-%m-%d").to_string(),
    )
}

/// Returns `<data_dir>/ticks/category=../symbol=..` for one series.
pub fn tick_series_dir(data_dir: &Path, category: Category, symbol: &str) -> PathBuf {
    data_dir
        .join(TICKS_DIR)
        .join(format!("category={category}"))
        .join(format!("symbol={symbol}"))
}

/// Returns the folder of one day partition of a series.
pub fn tick_partition_dir(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    date: &str,
) -> PathBuf {
    tick_series_dir(data_dir, category, symbol).join(format!("date={date}"))
}

/// Merges ticks into the day partitions of one series.
///
/// Ticks are grouped by the UTC day of `ts`. For each day, the incoming ticks whose
/// `trade_id` is neither in the stored partition nor earlier in that day's input are appended
/// to the stored ones. The rows, stably sorted by `ts`, then replace the partition file
/// atomically, so stored rows keep their order and new rows with an equal `ts` follow them
/// in input order. A day with no new tick is not rewritten.
///
/// # Errors
///
/// Returns [`Error::InvalidValue`] for an invalid symbol or a tick that fails
/// [`Tick::validate`] (before anything is written), and I/O or Parquet errors naming the
/// path. Days written before a failure stay written.
pub fn write_ticks(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    ticks: &[Tick],
) -> Result<TickWriteReport> {
    validate_symbol(symbol)?;
    for tick in ticks {
        tick.validate().map_err(|reason| Error::InvalidValue {
            field: "tick",
            value: format!("{tick:?}: {reason}"),
            expected: "finite price, size and notional that are not negative, and a trade id",
        })?;
    }

    let mut days: BTreeMap<String, Vec<&Tick>> = BTreeMap::new();
    for tick in ticks {
        days.entry(date_of(tick.ts_us)).or_default().push(tick);
    }

    let _guard = crate::lock::lock_for_write(data_dir)?;
    let mut report = TickWriteReport {
        ticks_read: ticks.len(),
        ..TickWriteReport::default()
    };
    for (date, incoming) in days {
        let dir = tick_partition_dir(data_dir, category, symbol, &date);
        let written = merge_tick_partition(data_dir, &dir, &incoming)?;
        report.ticks_written += written;
        report.duplicates_skipped += incoming.len() - written;
        if written > 0 {
            report.partitions_touched.push(date);
        }
    }

    tracing::info!(
        category = %category,
        symbol,
        ticks_read = report.ticks_read,
        ticks_written = report.ticks_written,
        duplicates_skipped = report.duplicates_skipped,
        partitions_touched = report.partitions_touched.len(),
        "wrote ticks"
    );
    Ok(report)
}

/// Reads the ticks of one partition file in stored order.
///
/// # Errors
///
/// Returns [`Error::Io`] or [`Error::Parquet`] when the file cannot be read, and
/// [`Error::InvalidFile`] when a column is missing, has a type other than the one of
/// [`tick_schema`], or contains an unknown side.
pub fn read_tick_partition_file(path: &Path) -> Result<Vec<Tick>> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parquet_error = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)?;

    let mut ticks = Vec::new();
    for batch in reader {
        append_tick_batch(path, &batch?, &mut ticks)?;
    }
    Ok(ticks)
}

/// Reads all stored ticks of one series, ascending by `ts`, each day in stored order.
///
/// # Errors
///
/// Returns the errors of [`read_tick_partition_file`], and [`Error::Io`] when a folder
/// cannot be listed.
pub fn read_ticks(data_dir: &Path, category: Category, symbol: &str) -> Result<Vec<Tick>> {
    validate_symbol(symbol)?;
    let series_dir = tick_series_dir(data_dir, category, symbol);
    if !series_dir.is_dir() {
        return Ok(Vec::new());
    }
    let date_dirs = list_dir(&series_dir)?
        .into_iter()
        .filter(|path| path.is_dir() && file_name_of(path).starts_with("date="));
    let mut ticks = Vec::new();
    for date_dir in date_dirs {
        let part_files = list_dir(&date_dir)?
            .into_iter()
            .filter(|path| path.is_file() && file_name_of(path).ends_with(".parquet"));
        for part_file in part_files {
            ticks.extend(read_tick_partition_file(&part_file)?);
        }
    }
    ticks.sort_by_key(|tick| tick.ts_us);
    Ok(ticks)
}

/// Merges one day and returns the number of ticks written.
fn merge_tick_partition(data_dir: &Path, dir: &Path, incoming: &[&Tick]) -> Result<usize> {
    let part_path = dir.join(PART_FILE_NAME);
    let mut rows = if part_path.is_file() {
        read_tick_partition_file(&part_path)?
    } else {
        Vec::new()
    };
    let stored_rows = rows.len();

    let mut trade_ids: HashSet<String> = rows.iter().map(|tick| tick.trade_id.clone()).collect();
    for tick in incoming {
        if trade_ids.insert(tick.trade_id.clone()) {
            rows.push((*tick).clone());
        }
    }
    let written = rows.len() - stored_rows;
    if written == 0 {
        tracing::debug!(partition = %dir.display(), "partition unchanged, not rewritten");
        return Ok(0);
    }

    rows.sort_by_key(|tick| tick.ts_us);
    create_dir_durable(data_dir, dir)?;
    remove_tmp_files(dir);
    replace_part_file(dir, &part_path, |tmp_path| write_tick_file(tmp_path, &rows))?;
    tracing::debug!(
        partition = %dir.display(),
        rows = rows.len(),
        ticks_written = written,
        "partition rewritten"
    );
    Ok(written)
}

fn write_tick_file(path: &Path, ticks: &[Tick]) -> Result<()> {
    write_sorted_parquet(path, tick_schema(), ticks, to_tick_batch)
}

fn to_tick_batch(ticks: &[Tick]) -> Result<RecordBatch> {
    let numbers = |value: fn(&Tick) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(ticks.iter().map(value)))
    };
    let ts = TimestampMicrosecondArray::from_iter_values(ticks.iter().map(|tick| tick.ts_us))
        .with_timezone(UTC);
    let side = StringArray::from_iter_values(ticks.iter().map(|tick| tick.side.as_str()));
    let trade_id = StringArray::from_iter_values(ticks.iter().map(|tick| tick.trade_id.as_str()));
    let tick_direction: StringArray = ticks
        .iter()
        .map(|tick| tick.tick_direction.as_deref())
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts),
        numbers(|tick| tick.price),
        numbers(|tick| tick.size),
        numbers(|tick| tick.notional),
        Arc::new(side),
        Arc::new(trade_id),
        Arc::new(tick_direction),
    ];
    Ok(RecordBatch::try_new(tick_schema(), columns)?)
}

fn append_tick_batch(path: &Path, batch: &RecordBatch, ticks: &mut Vec<Tick>) -> Result<()> {
    let invalid_column = |name: &str, problem: &str| Error::InvalidFile {
        path: path.to_path_buf(),
        message: format!("column {name} {problem}; expected the tick schema"),
    };
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| invalid_column(name, "is missing"))
    };
    let float_column = |name: &str| -> Result<&Float64Array> {
        column(name)?
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| invalid_column(name, "is not Float64"))
    };
    let string_column = |name: &str| -> Result<&StringArray> {
        column(name)?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| invalid_column(name, "is not Utf8"))
    };

    let ts = column("ts")?
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| invalid_column("ts", "is not Timestamp(Microsecond)"))?;
    let price = float_column("price")?;
    let size = float_column("size")?;
    let notional = float_column("notional")?;
    let side = string_column("side")?;
    let trade_id = string_column("trade_id")?;
    let tick_direction = string_column("tick_direction")?;

    let required = [ts as &dyn Array, price, size, notional, side, trade_id];
    let names = ["ts", "price", "size", "notional", "side", "trade_id"];
    for (array, name) in required.into_iter().zip(names) {
        if array.null_count() > 0 {
            return Err(invalid_column(name, "contains nulls"));
        }
    }

    ticks.reserve(batch.num_rows());
    for row in 0..batch.num_rows() {
        let side = side
            .value(row)
            .parse::<Side>()
            .map_err(|error| invalid_column("side", &error.to_string()))?;
        ticks.push(Tick {
            ts_us: ts.value(row),
            price: price.value(row),
            size: size.value(row),
            notional: notional.value(row),
            side,
            trade_id: trade_id.value(row).to_string(),
            tick_direction: tick_direction
                .is_valid(row)
                .then(|| tick_direction.value(row).to_string()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(ts_us: i64, trade_id: &str) -> Tick {
        Tick {
            ts_us,
            price: 8300.5,
            size: 10.0,
            notional: 0.0012,
            side: Side::Buy,
            trade_id: trade_id.to_string(),
            tick_direction: None,
        }
    }

    #[test]
    fn dates_split_at_utc_midnight() {
        assert_eq!(date_of(1_569_888_000_000_000), "2019-10-01");
        assert_eq!(date_of(1_569_887_999_999_999), "2019-09-30");
        assert_eq!(date_of(-1), "1969-12-31");
    }

    #[test]
    fn write_merges_and_deduplicates() {
        let data = tempfile::tempdir().unwrap();
        let first = [tick(2_000, "b"), tick(1_000, "a")];
        let report = write_ticks(data.path(), Category::Inverse, "BTCUSD", &first).unwrap();
        assert_eq!(report.ticks_written, 2);
        assert_eq!(report.partitions_touched, vec!["1970-01-01".to_string()]);

        let second = [tick(1_000, "a"), tick(1_500, "c"), tick(1_500, "c")];
        let report = write_ticks(data.path(), Category::Inverse, "BTCUSD", &second).unwrap();
        assert_eq!(report.ticks_written, 1);
        assert_eq!(report.duplicates_skipped, 2);

        let stored = read_ticks(data.path(), Category::Inverse, "BTCUSD").unwrap();
        let ids: Vec<&str> = stored.iter().map(|tick| tick.trade_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);

        let again = write_ticks(data.path(), Category::Inverse, "BTCUSD", &second).unwrap();
        assert_eq!(again.ticks_written, 0);
        assert!(again.partitions_touched.is_empty());
    }

    #[test]
    fn write_rejects_negative_size() {
        let data = tempfile::tempdir().unwrap();
        let mut bad = tick(1_000, "a");
        bad.size = -1.0;
        let error = write_ticks(data.path(), Category::Inverse, "BTCUSD", &[bad]).unwrap_err();
        assert!(error.to_string().contains("size -1 is negative"), "{error}");
        assert!(!data.path().join(TICKS_DIR).exists());
    }
}
