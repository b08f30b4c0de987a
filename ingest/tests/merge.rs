//! Merges into stored partitions with small hand-made series.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use bst_ingest::layout::{PART_FILE_NAME, kline_partition_dir};
use bst_ingest::writer::{WriteReport, read_series, write_klines};
use bst_ingest::{Category, Kline, Timeframe};
use common::snapshot_files;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

const SYMBOL: &str = "ETHUSDT";
const TIMEFRAME: Timeframe = Timeframe::Minutes(60);
/// 2025-05-31 21:00 UTC, three hours before June starts.
const MAY_31_21H: i64 = 1_748_725_200_000;
const HOUR_MS: i64 = 3_600_000;

fn bar(hour: i64, close: f64, turnover: Option<f64>) -> Kline {
    Kline {
        open_time_ms: MAY_31_21H + hour * HOUR_MS,
        open: 2_500.0,
        high: 2_600.0,
        low: 2_400.0,
        close,
        volume: 10.0,
        turnover,
    }
}

fn write(data_dir: &Path, klines: &[Kline]) -> WriteReport {
    write_klines(data_dir, Category::Linear, SYMBOL, TIMEFRAME, klines).unwrap()
}

fn part_file(data_dir: &Path, month: &str) -> PathBuf {
    kline_partition_dir(data_dir, Category::Linear, SYMBOL, TIMEFRAME, month).join(PART_FILE_NAME)
}

#[test]
fn merge_replaces_changed_rows() {
    let data = tempfile::tempdir().unwrap();
    // Hours 0, 1 and 2 fall in May.
    let stored = [
        bar(0, 2_510.0, None),
        bar(1, 2_520.0, None),
        bar(2, 2_530.0, Some(1.0)),
    ];
    let first = write(data.path(), &stored);
    assert_eq!(first.rows_read, 3);
    assert_eq!(first.rows_written, 3);
    assert_eq!(first.duplicates_skipped, 0);
    assert_eq!(first.partitions_touched, ["2025-05"]);

    let incoming = [
        bar(3, 2_540.0, None),       // new, in June
        bar(0, 2_510.0, None),       // identical to a stored row
        bar(1, 2_525.0, None),       // changed close
        bar(2, 2_530.0, Some(2.0)),  // changed turnover
        bar(3, 2_540.0, None),       // identical to an earlier incoming row
        bar(4, 2_550.0, Some(-0.0)), // new
        bar(4, 2_550.0, Some(0.0)),  // replaces the previous row, differing in the sign bit
    ];
    let report = write(data.path(), &incoming);
    assert_eq!(report.rows_read, 7);
    // Hours 3 and 4 are new and hours 1 and 2 changed; hour 4 counts once.
    assert_eq!(report.rows_written, 4);
    assert_eq!(report.duplicates_skipped, 3);
    assert_eq!(report.partitions_touched, ["2025-05", "2025-06"]);

    let expected = [
        bar(0, 2_510.0, None),
        bar(1, 2_525.0, None),
        bar(2, 2_530.0, Some(2.0)),
        bar(3, 2_540.0, None),
        bar(4, 2_550.0, Some(0.0)),
    ];
    let read_back = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    assert_eq!(read_back, expected);
    assert!(
        read_back[4].turnover.unwrap().is_sign_positive(),
        "the last incoming row wins"
    );
}

#[test]
fn unchanged_month_is_not_rewritten() {
    let data = tempfile::tempdir().unwrap();
    write(data.path(), &[bar(0, 2_510.0, None), bar(3, 2_540.0, None)]);
    let may_file = part_file(data.path(), "2025-05");
    let may_before = snapshot_files(may_file.parent().unwrap());
    #[cfg(unix)]
    let may_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&may_file).unwrap());

    let report = write(data.path(), &[bar(0, 2_510.0, None), bar(4, 2_550.0, None)]);
    assert_eq!(report.rows_written, 1);
    assert_eq!(report.duplicates_skipped, 1);
    assert_eq!(report.partitions_touched, ["2025-06"]);
    assert_eq!(snapshot_files(may_file.parent().unwrap()), may_before);
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&may_file).unwrap()),
        may_inode,
        "the May file must not be replaced"
    );
    let series = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    assert_eq!(series.len(), 3);
}

#[test]
fn reports_merge_sums() {
    let mut total = WriteReport {
        rows_read: 3,
        rows_written: 2,
        duplicates_skipped: 1,
        partitions_touched: vec!["2025-06".to_string()],
    };
    total.merge(WriteReport {
        rows_read: 5,
        rows_written: 1,
        duplicates_skipped: 4,
        partitions_touched: vec!["2025-05".to_string(), "2025-06".to_string()],
    });
    let expected = WriteReport {
        rows_read: 8,
        rows_written: 3,
        duplicates_skipped: 5,
        partitions_touched: vec!["2025-05".to_string(), "2025-06".to_string()],
    };
    assert_eq!(total, expected);
}

#[test]
fn leftover_tmp_file_is_ignored() {
    let data = tempfile::tempdir().unwrap();
    write(data.path(), &[bar(0, 2_510.0, None), bar(3, 2_540.0, None)]);

    // Leftovers of a write interrupted before its rename, in both months.
    let may_dir = part_file(data.path(), "2025-05")
        .parent()
        .unwrap()
        .to_path_buf();
    let june_dir = part_file(data.path(), "2025-06")
        .parent()
        .unwrap()
        .to_path_buf();
    let may_tmp = may_dir.join(".part-0000.parquet.99999.0.tmp");
    let june_tmp = june_dir.join(".part-0000.parquet.99999.1.tmp");
    std::fs::write(&may_tmp, b"PAR1 truncated").unwrap();
    std::fs::write(&june_tmp, b"").unwrap();

    let read_back = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    assert_eq!(read_back, [bar(0, 2_510.0, None), bar(3, 2_540.0, None)]);

    let report = write(data.path(), &[bar(1, 2_520.0, None)]);
    assert_eq!(report.rows_written, 1);
    assert_eq!(report.partitions_touched, ["2025-05"]);
    assert!(!may_tmp.exists(), "the write to May removes its leftover");
    assert!(
        june_tmp.exists(),
        "June was not written, so its leftover stays"
    );

    let read_back = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    assert_eq!(
        read_back,
        [
            bar(0, 2_510.0, None),
            bar(1, 2_520.0, None),
            bar(3, 2_540.0, None)
        ]
    );
}

#[test]
fn part_file_metadata_is_set() {
    let data = tempfile::tempdir().unwrap();
    // Written out of order, stored sorted.
    write(
        data.path(),
        &[
            bar(2, 2_530.0, Some(3.0)),
            bar(0, 2_510.0, None),
            bar(1, 2_520.0, None),
        ],
    );

    let path = part_file(data.path(), "2025-05");
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let metadata = reader.metadata();
    assert_eq!(metadata.file_metadata().num_rows(), 3);
    assert_eq!(metadata.num_row_groups(), 1);
    let row_group = metadata.row_group(0);
    let sorting = row_group
        .sorting_columns()
        .expect("sorting_columns must be set");
    assert_eq!(sorting.len(), 1);
    assert_eq!(sorting[0].column_idx, 0);
    assert!(!sorting[0].descending);
    let open_time = row_group.column(0);
    assert_eq!(open_time.column_path().string(), "open_time");
    assert!(matches!(open_time.compression(), Compression::ZSTD(_)));
    let statistics = open_time
        .statistics()
        .expect("open_time statistics must be written");
    assert_eq!(statistics.null_count_opt(), Some(0));

    let read_back = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    let open_times: Vec<i64> = read_back.iter().map(|kline| kline.open_time_ms).collect();
    assert_eq!(
        open_times,
        [MAY_31_21H, MAY_31_21H + HOUR_MS, MAY_31_21H + 2 * HOUR_MS]
    );
}

#[test]
fn repeated_open_time_counts_once() {
    let data = tempfile::tempdir().unwrap();
    let report = write(
        data.path(),
        &[
            bar(0, 2_510.0, None),
            bar(0, 2_515.0, None),
            bar(1, 2_520.0, None),
        ],
    );
    assert_eq!(report.rows_read, 3);
    assert_eq!(report.rows_written, 2);
    assert_eq!(report.duplicates_skipped, 1);

    let stored = read_series(data.path(), Category::Linear, SYMBOL, TIMEFRAME).unwrap();
    let closes: Vec<f64> = stored.iter().map(|kline| kline.close).collect();
    assert_eq!(closes, [2_515.0, 2_520.0]);
}
