//! Imports of the real Bybit sample files into a temporary dataset.

mod common;

use std::path::Path;

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::layout::{PART_FILE_NAME, kline_partition_dir, kline_series_dir};
use bst_ingest::rest_body::read_kline_body_file;
use bst_ingest::writer::{read_partition_file, read_series, write_klines};
use bst_ingest::{Category, Kline, Timeframe};
use common::{CsvLine, parse_sample_csv, rows_per_month, sample_path, snapshot_files};

const BTCUSDT_1M: &str = "bybit/klines/BTCUSDT_1m.csv.gz";
const BTCUSDT_5M: &str = "bybit/klines/BTCUSDT_5m.csv.gz";
const HOURLY_BODY: &str = "bybit/rest/bybit_v5_kline_linear_BTCUSDT_60_2026-08-15.json";
const DAILY_BODY: &str = "bybit/rest/bybit_v5_kline_linear_BTCUSDT_D_2021-09-19_to_21.json";

fn assert_matches_csv(klines: &[Kline], lines: &[CsvLine]) {
    assert_eq!(klines.len(), lines.len());
    for (kline, line) in klines.iter().zip(lines) {
        let [open, high, low, close, volume] = line.values;
        let expected = Kline {
            open_time_ms: line.open_time_ms,
            open,
            high,
            low,
            close,
            volume,
            turnover: None,
        };
        assert_eq!(*kline, expected, "row at {}", line.timestamp);
    }
}

fn import_csv(data_dir: &Path, relative: &str, timeframe: Timeframe) -> Vec<Kline> {
    let klines = read_kline_csv(&sample_path(relative)).unwrap();
    write_klines(data_dir, Category::Linear, "BTCUSDT", timeframe, &klines).unwrap();
    klines
}

#[test]
fn btcusdt_1m_imports_once() {
    let path = sample_path(BTCUSDT_1M);
    let lines = parse_sample_csv(&path);
    let months = rows_per_month(&lines);
    assert_eq!(lines.len(), 43_200);
    assert_eq!(
        months.keys().collect::<Vec<_>>(),
        ["2025-05", "2025-06"],
        "the sample spans May and June 2025"
    );

    let klines = read_kline_csv(&path).unwrap();
    assert_matches_csv(&klines, &lines);

    let data = tempfile::tempdir().unwrap();
    let timeframe = Timeframe::Minutes(1);
    let report =
        write_klines(data.path(), Category::Linear, "BTCUSDT", timeframe, &klines).unwrap();
    assert_eq!(report.rows_read, lines.len());
    assert_eq!(report.rows_written, lines.len());
    assert_eq!(report.duplicates_skipped, 0);
    assert_eq!(
        report.partitions_touched,
        months.keys().cloned().collect::<Vec<_>>()
    );

    let series_dir = kline_series_dir(data.path(), Category::Linear, "BTCUSDT", timeframe);
    let expected_folders: Vec<String> = months
        .keys()
        .map(|month| format!("month={month}"))
        .collect();
    assert_eq!(common::subfolder_names(&series_dir), expected_folders);
    for (month, rows) in &months {
        let dir = kline_partition_dir(data.path(), Category::Linear, "BTCUSDT", timeframe, month);
        let stored = read_partition_file(&dir.join(PART_FILE_NAME)).unwrap();
        assert_eq!(stored.len(), *rows, "rows of {month}");
    }

    let read_back = read_series(data.path(), Category::Linear, "BTCUSDT", timeframe).unwrap();
    assert_matches_csv(&read_back, &lines);
    assert_eq!(read_back, klines);

    let before = snapshot_files(data.path());
    let again = write_klines(data.path(), Category::Linear, "BTCUSDT", timeframe, &klines).unwrap();
    assert_eq!(again.rows_read, lines.len());
    assert_eq!(again.rows_written, 0);
    assert_eq!(again.duplicates_skipped, 43_200);
    assert!(again.partitions_touched.is_empty(), "{again:?}");
    let after = snapshot_files(data.path());
    assert_eq!(before.len(), months.len(), "one file per month");
    assert_eq!(
        after, before,
        "a repeated import must leave bytes and mtimes unchanged"
    );
}

#[test]
fn btcusdt_5m_adds_own_series() {
    let data = tempfile::tempdir().unwrap();
    import_csv(data.path(), BTCUSDT_1M, Timeframe::Minutes(1));
    let one_minute_dir = kline_series_dir(
        data.path(),
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
    );
    let one_minute_before = snapshot_files(&one_minute_dir);

    let path = sample_path(BTCUSDT_5M);
    let lines = parse_sample_csv(&path);
    assert_eq!(lines.len(), 25_920);
    let klines = read_kline_csv(&path).unwrap();
    let timeframe = Timeframe::Minutes(5);
    let report =
        write_klines(data.path(), Category::Linear, "BTCUSDT", timeframe, &klines).unwrap();
    assert_eq!(report.rows_written, lines.len());
    assert_eq!(report.duplicates_skipped, 0);
    let months = rows_per_month(&lines);
    assert_eq!(
        report.partitions_touched,
        months.keys().cloned().collect::<Vec<_>>()
    );

    let series_dir = kline_series_dir(data.path(), Category::Linear, "BTCUSDT", timeframe);
    assert!(
        series_dir.ends_with("timeframe=5"),
        "{}",
        series_dir.display()
    );
    for (month, rows) in &months {
        let dir = kline_partition_dir(data.path(), Category::Linear, "BTCUSDT", timeframe, month);
        let stored = read_partition_file(&dir.join(PART_FILE_NAME)).unwrap();
        assert_eq!(stored.len(), *rows, "rows of {month}");
    }
    let read_back = read_series(data.path(), Category::Linear, "BTCUSDT", timeframe).unwrap();
    assert_matches_csv(&read_back, &lines);

    assert_eq!(snapshot_files(&one_minute_dir), one_minute_before);
}

/// Parses the `list` rows of a response body in the test, as (open time, 6 numbers).
fn body_rows(path: &Path) -> (i64, Vec<(i64, [f64; 6])>) {
    let text = std::fs::read_to_string(path).unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let time = body["time"].as_i64().unwrap();
    let rows = body["result"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let field = |index: usize| row[index].as_str().unwrap();
            let number = |index: usize| field(index).parse::<f64>().unwrap();
            let values = [
                number(1),
                number(2),
                number(3),
                number(4),
                number(5),
                number(6),
            ];
            (field(0).parse::<i64>().unwrap(), values)
        })
        .collect();
    (time, rows)
}

fn kline_from_row(open_time_ms: i64, values: [f64; 6]) -> Kline {
    let [open, high, low, close, volume, turnover] = values;
    Kline {
        open_time_ms,
        open,
        high,
        low,
        close,
        volume,
        turnover: Some(turnover),
    }
}

#[test]
fn hourly_body_stores_closed_bar() {
    let path = sample_path(HOURLY_BODY);
    let (response_time, rows) = body_rows(&path);
    assert_eq!(rows.len(), 2);
    let hour_ms = 3_600_000;
    let closed: Vec<&(i64, [f64; 6])> = rows
        .iter()
        .filter(|(open_time, _)| open_time + hour_ms <= response_time)
        .collect();
    assert_eq!(closed.len(), 1, "the newest bar is still open");
    assert_eq!(closed[0].0, 1_786_816_800_000);

    let body = read_kline_body_file(&path, Timeframe::Minutes(60)).unwrap();
    assert_eq!(body.category, Category::Linear);
    assert_eq!(body.symbol, "BTCUSDT");
    assert_eq!(body.response_time_ms, response_time);
    assert_eq!(body.rows_read, 2);
    assert_eq!(body.open_bars_dropped, 1);

    let data = tempfile::tempdir().unwrap();
    let timeframe = Timeframe::Minutes(60);
    let report = write_klines(
        data.path(),
        body.category,
        &body.symbol,
        timeframe,
        &body.klines,
    )
    .unwrap();
    assert_eq!(report.rows_written, 1);
    assert_eq!(report.partitions_touched, ["2026-08"]);

    let stored = read_series(data.path(), Category::Linear, "BTCUSDT", timeframe).unwrap();
    assert_eq!(stored, [kline_from_row(closed[0].0, closed[0].1)]);
}

#[test]
fn daily_body_stores_three_bars() {
    let path = sample_path(DAILY_BODY);
    let (response_time, rows) = body_rows(&path);
    assert_eq!(rows.len(), 3);
    let day_ms = 86_400_000;
    assert!(
        rows.iter()
            .all(|(open_time, _)| open_time + day_ms <= response_time)
    );

    let body = read_kline_body_file(&path, Timeframe::Day).unwrap();
    assert_eq!(body.open_bars_dropped, 0);

    let data = tempfile::tempdir().unwrap();
    let report = write_klines(
        data.path(),
        body.category,
        &body.symbol,
        Timeframe::Day,
        &body.klines,
    )
    .unwrap();
    assert_eq!(report.rows_written, 3);
    assert_eq!(report.partitions_touched, ["2021-09"]);

    let mut expected: Vec<Kline> = rows
        .iter()
        .map(|(open_time, values)| kline_from_row(*open_time, *values))
        .collect();
    expected.reverse();
    assert!(
        expected.is_sorted_by_key(|kline| kline.open_time_ms),
        "body rows are newest first"
    );
    let stored = read_series(data.path(), Category::Linear, "BTCUSDT", Timeframe::Day).unwrap();
    assert_eq!(stored, expected);
    assert_eq!(
        stored
            .iter()
            .map(|kline| kline.open_time_ms)
            .collect::<Vec<_>>(),
        [1_632_009_600_000, 1_632_096_000_000, 1_632_182_400_000]
    );
}
