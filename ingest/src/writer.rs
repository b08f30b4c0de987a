//! The partitioned Parquet dataset writer and readers of what it stores.
//!
//! Each month partition of a series contains one file, [`PART_FILE_NAME`]. A write merges the
//! incoming rows into it, keyed by `open_time`, and replaces the file through a temporary
//! file in the same folder and a rename, so a crash leaves either the old or the new file.
//! Temporary files end in `.tmp`, which readers skip because they read only `*.parquet`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::layout::{
    Category, Kline, PART_FILE_NAME, Timeframe, UTC, kline_partition_dir, kline_schema,
    kline_series_dir, month_of, validate_symbol,
};
use crate::{Error, Result};

/// Maximum number of rows in one Parquet row group.
const MAX_ROW_GROUP_ROWS: usize = 1_048_576;

/// Prefix of the temporary files that replace [`PART_FILE_NAME`].
const TMP_FILE_PREFIX: &str = ".part-0000.parquet.";

/// Suffix of the temporary files, which readers skip.
const TMP_FILE_SUFFIX: &str = ".tmp";

/// Distinguishes the temporary files of one process.
static TMP_FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Row counts of one or more writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    /// Number of input rows.
    pub rows_read: usize,
    /// Input rows that were new, or that replaced a stored or earlier input row with the same
    /// `open_time` but different values.
    pub rows_written: usize,
    /// Input rows equal in every field to the stored or earlier input row with the same
    /// `open_time`, compared bit for bit. For [`insert_missing_klines`], every input row
    /// whose `open_time` is already stored or earlier in the input.
    pub duplicates_skipped: usize,
    /// Months (`YYYY-MM`) whose file was rewritten, sorted and without repeats.
    pub partitions_touched: Vec<String>,
}

impl WriteReport {
    /// Adds the counts and the touched partitions of `other` to this report.
    pub fn merge(&mut self, other: WriteReport) {
        self.rows_read += other.rows_read;
        self.rows_written += other.rows_written;
        self.duplicates_skipped += other.duplicates_skipped;
        self.partitions_touched.extend(other.partitions_touched);
        self.partitions_touched.sort();
        self.partitions_touched.dedup();
    }
}

/// Merges klines into the month partitions of one series.
///
/// Rows are grouped by the month of their open time. For each month the stored rows are
/// read, the incoming rows are merged in input order (an incoming row replaces a stored or
/// earlier incoming row with the same `open_time`), and the sorted result replaces the
/// partition file atomically. A month where no row changes is not rewritten. Leftover
/// temporary files in a rewritten partition are removed.
///
/// # Errors
///
/// Returns [`Error::InvalidValue`] for an invalid symbol or a kline that fails
/// [`Kline::validate`] (before anything is written), and I/O or Parquet errors naming the
/// path. Months written before a failure stay written.
pub fn write_klines(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    klines: &[Kline],
) -> Result<WriteReport> {
    write_series(
        data_dir,
        category,
        symbol,
        timeframe,
        klines,
        MergeRule::Replace,
    )
}

/// Inserts the klines whose `open_time` is not stored yet and leaves every stored row as it
/// is, so bars derived from trades never replace bars that the exchange confirmed.
///
/// Works like [`write_klines`] otherwise. Of several input rows with one `open_time`, the
/// first is inserted.
///
/// # Errors
///
/// Returns the errors of [`write_klines`].
pub fn insert_missing_klines(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    klines: &[Kline],
) -> Result<WriteReport> {
    write_series(
        data_dir,
        category,
        symbol,
        timeframe,
        klines,
        MergeRule::InsertMissing,
    )
}

/// Rule for an input row whose `open_time` is already stored or earlier in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MergeRule {
    /// The input row replaces it unless the two are equal bit for bit.
    Replace,
    /// The input row is skipped.
    InsertMissing,
}

fn write_series(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    klines: &[Kline],
    rule: MergeRule,
) -> Result<WriteReport> {
    validate_symbol(symbol)?;
    for kline in klines {
        kline.validate().map_err(|reason| Error::InvalidValue {
            field: "kline",
            value: format!("{kline:?}: {reason}"),
            expected: "finite values, volume and turnover not negative, a positive low, and \
                       low <= open, close <= high",
        })?;
        if !timeframe.is_aligned(kline.open_time_ms) {
            return Err(Error::InvalidValue {
                field: "open_time",
                value: format!(
                    "{} for interval {timeframe}",
                    crate::layout::utc_from_ms(kline.open_time_ms).to_rfc3339()
                ),
                expected: "an open time on the interval's UTC boundary; check that the \
                           interval matches the data",
            });
        }
    }

    let mut months: BTreeMap<String, Vec<Kline>> = BTreeMap::new();
    for kline in klines {
        months
            .entry(month_of(kline.open_time_ms))
            .or_default()
            .push(*kline);
    }

    let _guard = crate::lock::lock_for_write(data_dir)?;
    let mut report = WriteReport {
        rows_read: klines.len(),
        ..WriteReport::default()
    };
    for (month, incoming) in months {
        let dir = kline_partition_dir(data_dir, category, symbol, timeframe, &month);
        let counts = merge_partition(data_dir, &dir, &incoming, rule)?;
        report.rows_written += counts.rows_written;
        report.duplicates_skipped += counts.duplicates_skipped;
        if counts.rows_written > 0 {
            report.partitions_touched.push(month);
        }
    }

    tracing::info!(
        category = %category,
        symbol,
        timeframe = %timeframe,
        rows_read = report.rows_read,
        rows_written = report.rows_written,
        duplicates_skipped = report.duplicates_skipped,
        partitions_touched = report.partitions_touched.len(),
        insert_missing_only = rule == MergeRule::InsertMissing,
        "wrote klines"
    );
    Ok(report)
}

/// Reads the rows of one partition file in stored order.
///
/// # Errors
///
/// Returns [`Error::Io`] or [`Error::Parquet`] when the file cannot be read, and
/// [`Error::InvalidFile`] when a column is missing or has a type other than the one of
/// [`kline_schema`]. A missing `turnover` column reads as `None`.
pub fn read_partition_file(path: &Path) -> Result<Vec<Kline>> {
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

    let mut klines = Vec::new();
    for batch in reader {
        let batch = batch?;
        append_batch(path, &batch, &mut klines)?;
    }
    Ok(klines)
}

/// Reads all stored rows of one series, ascending by open time.
///
/// Every `*.parquet` file in every `month=` folder is read. A series with no folder returns
/// no rows.
///
/// # Errors
///
/// Returns the errors of [`read_partition_file`], and [`Error::Io`] when a folder cannot be
/// listed.
pub fn read_series(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
) -> Result<Vec<Kline>> {
    validate_symbol(symbol)?;
    let series_dir = kline_series_dir(data_dir, category, symbol, timeframe);
    if !series_dir.is_dir() {
        return Ok(Vec::new());
    }

    let month_dirs = list_dir(&series_dir)?
        .into_iter()
        .filter(|path| path.is_dir() && file_name_of(path).starts_with("month="));
    let mut klines = Vec::new();
    for month_dir in month_dirs {
        let part_files = list_dir(&month_dir)?
            .into_iter()
            .filter(|path| path.is_file() && file_name_of(path).ends_with(".parquet"));
        for part_file in part_files {
            klines.extend(read_partition_file(&part_file)?);
        }
    }
    klines.sort_by_key(|kline| kline.open_time_ms);
    Ok(klines)
}

/// Counts of one partition merge.
struct MergeCounts {
    rows_written: usize,
    duplicates_skipped: usize,
}

fn merge_partition(
    data_dir: &Path,
    dir: &Path,
    incoming: &[Kline],
    rule: MergeRule,
) -> Result<MergeCounts> {
    let part_path = dir.join(PART_FILE_NAME);
    let stored = if part_path.is_file() {
        read_partition_file(&part_path)?
    } else {
        Vec::new()
    };

    let mut rows: BTreeMap<i64, Kline> = stored
        .into_iter()
        .map(|kline| (kline.open_time_ms, kline))
        .collect();
    let mut counts = MergeCounts {
        rows_written: 0,
        duplicates_skipped: 0,
    };
    // Open times changed by this input. An input with two different rows at one open time
    // stores the later row, and the open time counts once as written.
    let mut changed = std::collections::HashSet::new();
    for kline in incoming {
        match rows.get(&kline.open_time_ms) {
            Some(_) if rule == MergeRule::InsertMissing => counts.duplicates_skipped += 1,
            Some(existing) if same_bits(existing, kline) => counts.duplicates_skipped += 1,
            _ => {
                rows.insert(kline.open_time_ms, *kline);
                if !changed.insert(kline.open_time_ms) {
                    counts.duplicates_skipped += 1;
                }
            }
        }
    }
    counts.rows_written = changed.len();
    if counts.rows_written == 0 {
        tracing::debug!(partition = %dir.display(), "partition unchanged, not rewritten");
        return Ok(counts);
    }

    create_dir_durable(data_dir, dir)?;
    remove_tmp_files(dir);
    let merged: Vec<Kline> = rows.into_values().collect();
    replace_part_file(dir, &part_path, |tmp_path| write_parquet(tmp_path, &merged))?;
    tracing::debug!(
        partition = %dir.display(),
        rows = merged.len(),
        rows_written = counts.rows_written,
        "partition rewritten"
    );
    Ok(counts)
}

/// Compares every field bit for bit, so `-0.0` differs from `0.0` and equal NaNs match.
fn same_bits(left: &Kline, right: &Kline) -> bool {
    let bits = |kline: &Kline| {
        (
            kline.open_time_ms,
            kline.open.to_bits(),
            kline.high.to_bits(),
            kline.low.to_bits(),
            kline.close.to_bits(),
            kline.volume.to_bits(),
            kline.turnover.map(f64::to_bits),
        )
    };
    bits(left) == bits(right)
}

/// Writes a temporary file in `dir` with `write_file`, which must sync it, renames it over
/// `part_path` and syncs the folder, so the rename itself survives a crash.
pub(crate) fn replace_part_file(
    dir: &Path,
    part_path: &Path,
    write_file: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let counter = TMP_FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_path = dir.join(format!(
        "{TMP_FILE_PREFIX}{}.{counter}{TMP_FILE_SUFFIX}",
        std::process::id()
    ));

    let result = write_file(&tmp_path).and_then(|()| {
        fs::rename(&tmp_path, part_path).map_err(|source| Error::Io {
            path: part_path.to_path_buf(),
            source,
        })
    });
    if let Err(error) = result {
        if let Err(remove_error) = fs::remove_file(&tmp_path) {
            tracing::warn!(
                path = %tmp_path.display(),
                error = %remove_error,
                "failed to remove temporary file after a failed write"
            );
        }
        return Err(error);
    }
    sync_dir(dir)
}

fn write_parquet(path: &Path, klines: &[Kline]) -> Result<()> {
    write_sorted_parquet(path, kline_schema(), klines, to_record_batch)
}

/// Writes rows to a new Parquet file with the dataset's sorted-file properties, in row groups
/// of at most [`MAX_ROW_GROUP_ROWS`], and syncs it to disk.
pub(crate) fn write_sorted_parquet<T>(
    path: &Path,
    schema: arrow::datatypes::SchemaRef,
    rows: &[T],
    to_batch: impl Fn(&[T]) -> Result<RecordBatch>,
) -> Result<()> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let parquet_error = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error)?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(sorted_file_properties()))
        .map_err(parquet_error)?;
    for chunk in rows.chunks(MAX_ROW_GROUP_ROWS) {
        writer.write(&to_batch(chunk)?).map_err(parquet_error)?;
    }
    let file = writer.into_inner().map_err(parquet_error)?;
    file.sync_all().map_err(io_error)
}

/// Returns the Parquet writer properties of every dataset file: zstd, page statistics, and
/// the rows declared sorted ascending by the first column.
fn sorted_file_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .build()
}

fn to_record_batch(klines: &[Kline]) -> Result<RecordBatch> {
    let prices = |value: fn(&Kline) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(klines.iter().map(value)))
    };
    let open_time =
        TimestampMillisecondArray::from_iter_values(klines.iter().map(|kline| kline.open_time_ms))
            .with_timezone(UTC);
    let turnover: Float64Array = klines.iter().map(|kline| kline.turnover).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(open_time),
        prices(|kline| kline.open),
        prices(|kline| kline.high),
        prices(|kline| kline.low),
        prices(|kline| kline.close),
        prices(|kline| kline.volume),
        Arc::new(turnover),
    ];
    Ok(RecordBatch::try_new(kline_schema(), columns)?)
}

fn append_batch(path: &Path, batch: &RecordBatch, klines: &mut Vec<Kline>) -> Result<()> {
    let invalid_column = |name: &str, problem: &str| Error::InvalidFile {
        path: path.to_path_buf(),
        message: format!("column {name} {problem}; expected the kline schema"),
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

    let open_time_column = column("open_time")?;
    let open_time = match open_time_column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => open_time_column
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>(
        ),
        _ => None,
    }
    .ok_or_else(|| invalid_column("open_time", "is not Timestamp(Millisecond)"))?;
    let open = float_column("open")?;
    let high = float_column("high")?;
    let low = float_column("low")?;
    let close = float_column("close")?;
    let volume = float_column("volume")?;
    let turnover = match batch.column_by_name("turnover") {
        Some(_) => Some(float_column("turnover")?),
        None => None,
    };

    let required = [open_time as &dyn Array, open, high, low, close, volume];
    let names = ["open_time", "open", "high", "low", "close", "volume"];
    for (array, name) in required.into_iter().zip(names) {
        if array.null_count() > 0 {
            return Err(invalid_column(name, "contains nulls"));
        }
    }

    klines.reserve(batch.num_rows());
    for row in 0..batch.num_rows() {
        klines.push(Kline {
            open_time_ms: open_time.value(row),
            open: open.value(row),
            high: high.value(row),
            low: low.value(row),
            close: close.value(row),
            volume: volume.value(row),
            turnover: turnover.and_then(|array| array.is_valid(row).then(|| array.value(row))),
        });
    }
    Ok(())
}

/// Creates `dir` and its missing parents, syncing the parent of each created folder so that
/// the new entries survive a crash. Syncing stops at `data_dir`, whose own entry is assumed
/// durable.
pub(crate) fn create_dir_durable(data_dir: &Path, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|ancestor| *ancestor != data_dir && !ancestor.is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for created in missing.into_iter().rev() {
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let io_error = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    File::open(dir)
        .map_err(io_error)?
        .sync_all()
        .map_err(io_error)
}

/// Removes temporary files that an interrupted write left in a partition folder. A failure
/// is logged and ignored, because readers skip these files anyway.
pub(crate) fn remove_tmp_files(dir: &Path) {
    let Ok(paths) = list_dir(dir) else {
        return;
    };
    for path in paths {
        let name = file_name_of(&path);
        if !(name.starts_with(TMP_FILE_PREFIX) && name.ends_with(TMP_FILE_SUFFIX)) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed leftover temporary file"),
            Err(error) => tracing::warn!(
                path = %path.display(),
                error = %error,
                "failed to remove leftover temporary file"
            ),
        }
    }
}

/// Lists the entries of a folder, sorted by path.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let io_error = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        paths.push(entry.map_err(io_error)?.path());
    }
    paths.sort();
    Ok(paths)
}

pub(crate) fn file_name_of(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
}
