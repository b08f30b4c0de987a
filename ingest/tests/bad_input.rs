//! Invalid CSV files and response bodies are rejected with the line or row, and leave the
//! dataset empty.

use std::io::Write;
use std::path::Path;

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::rest_body::{parse_kline_body, read_kline_body_file};
use bst_ingest::writer::write_klines;
use bst_ingest::{Category, Error, Kline, Timeframe};
use flate2::Compression;
use flate2::write::GzEncoder;

const HEADER: &str = "timestamp,open,high,low,close,volume\n";
const GOOD_LINE: &str = "2025-05-30 16:39:00+00:00,104217.5,104402.7,104200.0,104337.8,477.605\n";

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Parses a CSV and writes it, as an importer does, returning the error.
fn import_csv(data_dir: &Path, path: &Path) -> Error {
    read_kline_csv(path)
        .and_then(|klines| {
            write_klines(
                data_dir,
                Category::Linear,
                "BTCUSDT",
                Timeframe::Minutes(1),
                &klines,
            )
        })
        .expect_err("the import must fail")
}

fn assert_empty(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(entries.is_empty(), "data dir is not empty: {entries:?}");
}

#[test]
fn csv_bad_number_names_line() {
    let input = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}{GOOD_LINE}2025-05-30 16:40:00+00:00,104337.8,104409.1,104230.8,1O4288.5,328.242\n"
    );
    let path = write_file(input.path(), "BTCUSDT_1m.csv", text.as_bytes());

    let error = import_csv(data.path(), &path);
    let Error::Parse {
        path: error_path,
        line,
        message,
    } = &error
    else {
        panic!("expected a parse error, got {error}");
    };
    assert_eq!(error_path, &path);
    assert_eq!(*line, 3);
    assert!(message.contains("1O4288.5"), "{message}");
    assert!(message.contains("close"), "{message}");
    assert_empty(data.path());
}

#[test]
fn csv_ohlc_violation_is_rejected() {
    let input = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let cases = [
        (
            "high below close",
            "2025-05-30 16:40:00+00:00,100.0,101.0,99.0,102.0,1.0\n",
            "high",
        ),
        (
            "low above open",
            "2025-05-30 16:40:00+00:00,100.0,103.0,100.5,102.0,1.0\n",
            "low",
        ),
        (
            "non-finite",
            "2025-05-30 16:40:00+00:00,100.0,inf,99.0,102.0,1.0\n",
            "finite",
        ),
        (
            "NaN volume",
            "2025-05-30 16:40:00+00:00,100.0,103.0,99.0,102.0,NaN\n",
            "finite",
        ),
    ];
    for (case, bad_line, expected_word) in cases {
        let text = format!("{HEADER}{GOOD_LINE}{GOOD_LINE}{bad_line}");
        let path = write_file(input.path(), "BTCUSDT_1m.csv", text.as_bytes());
        let error = import_csv(data.path(), &path);
        let Error::Parse { line, message, .. } = &error else {
            panic!("{case}: expected a parse error, got {error}");
        };
        assert_eq!(*line, 4, "{case}");
        assert!(message.contains(expected_word), "{case}: {message}");
        assert_empty(data.path());
    }
}

#[test]
fn csv_bad_timestamp_names_value() {
    let input = tempfile::tempdir().unwrap();
    let text = format!("{HEADER}30/05/2025 16:39,100.0,103.0,99.0,102.0,1.0\n");
    let path = write_file(input.path(), "BTCUSDT_1m.csv", text.as_bytes());
    let error = read_kline_csv(&path).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("30/05/2025 16:39"), "{error}");
}

#[test]
fn csv_missing_column_is_rejected() {
    let input = tempfile::tempdir().unwrap();
    let text = "timestamp,open,high,low,close\n2025-05-30 16:39:00+00:00,1,1,1,1\n";
    let path = write_file(input.path(), "BTCUSDT_1m.csv", text.as_bytes());
    let error = read_kline_csv(&path).unwrap_err();
    assert!(matches!(error, Error::InvalidFile { .. }), "{error}");
    assert!(error.to_string().contains("volume"), "{error}");
}

#[test]
fn csv_gzip_detected_by_content() {
    let input = tempfile::tempdir().unwrap();
    let text = format!("{HEADER}{GOOD_LINE}");
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    let compressed = encoder.finish().unwrap();

    let gzip_named_plain = write_file(input.path(), "gzip.csv", &compressed);
    let plain_named_gzip = write_file(input.path(), "plain.csv.gz", text.as_bytes());
    let expected = Kline {
        open_time_ms: 1_748_623_140_000,
        open: 104_217.5,
        high: 104_402.7,
        low: 104_200.0,
        close: 104_337.8,
        volume: 477.605,
        turnover: None,
    };
    assert_eq!(read_kline_csv(&gzip_named_plain).unwrap(), [expected]);
    assert_eq!(read_kline_csv(&plain_named_gzip).unwrap(), [expected]);
}

#[test]
fn csv_turnover_and_forms_parse() {
    let input = tempfile::tempdir().unwrap();
    let text = "volume,turnover,timestamp,open,high,low,close\n\
                1.5,150.0,2025-05-30T16:39:00Z,100,101,99,100.5\n\
                2.5,,1748623200000,100.5,102,100,101\n\
                3.5,350.0,2025-05-30 16:41:00,101,101,100,100\n";
    let path = write_file(input.path(), "BTCUSDT_1m.csv", text.as_bytes());
    let klines = read_kline_csv(&path).unwrap();
    let open_times: Vec<i64> = klines.iter().map(|kline| kline.open_time_ms).collect();
    assert_eq!(
        open_times,
        [1_748_623_140_000, 1_748_623_200_000, 1_748_623_260_000]
    );
    let turnovers: Vec<Option<f64>> = klines.iter().map(|kline| kline.turnover).collect();
    assert_eq!(turnovers, [Some(150.0), None, Some(350.0)]);
    assert_eq!(klines[0].volume, 1.5);
    assert_eq!(klines[0].close, 100.5);
}

#[test]
fn body_error_code_is_returned() {
    let input = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let text = r#"{"retCode":10001,"retMsg":"Invalid period!","result":{},"retExtInfo":{},"time":1786820637599}"#;

    let error = parse_kline_body(text, Timeframe::Minutes(60)).unwrap_err();
    let Error::Bybit { code, message } = &error else {
        panic!("expected a Bybit error, got {error}");
    };
    assert_eq!(*code, 10001);
    assert_eq!(message, "Invalid period!");

    let path = write_file(input.path(), "body.json", text.as_bytes());
    let error = read_kline_body_file(&path, Timeframe::Minutes(60))
        .and_then(|body| {
            write_klines(
                data.path(),
                body.category,
                &body.symbol,
                Timeframe::Minutes(60),
                &body.klines,
            )
        })
        .unwrap_err();
    let Error::InFile {
        path: error_path,
        source,
    } = &error
    else {
        panic!("expected the error to name the file, got {error}");
    };
    assert_eq!(error_path, &path);
    assert!(
        matches!(source.as_ref(), Error::Bybit { code: 10001, message } if message == "Invalid period!"),
        "{source}"
    );
    assert!(error.to_string().contains("Invalid period!"), "{error}");
    assert_empty(data.path());
}

#[test]
fn body_bad_rows_name_index() {
    let row = |fields: &str| {
        format!(
            r#"{{"retCode":0,"retMsg":"OK","result":{{"symbol":"BTCUSDT","category":"linear","list":[["1632182400000","43057","43600","39520","40724.5","102692.021","4182081209.2145"],{fields}]}},"time":1677516322292}}"#
        )
    };
    let cases = [
        (
            row(r#"["1632096000000","47274.5","47342","42500","43057","91656.427"]"#),
            "result.list[1]",
        ),
        (
            row(r#"["1632096000000",47274.5,"47342","42500","43057","91656.427","1"]"#),
            "result.list[1][1] (open)",
        ),
        (
            row(r#"["1632096000000","x","47342","42500","43057","91656.427","1"]"#),
            "\"x\"",
        ),
        (
            row(r#"["1632096000000","47274.5","40000","42500","43057","91656.427","1"]"#),
            "high 40000",
        ),
        ("{not json".to_string(), "malformed JSON"),
    ];
    for (text, expected) in cases {
        let error = parse_kline_body(&text, Timeframe::Day).unwrap_err();
        assert!(matches!(error, Error::InvalidBody { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{expected}: {error}");
    }
}

#[test]
fn writer_rejects_invalid_kline_first() {
    let data = tempfile::tempdir().unwrap();
    let good = Kline {
        open_time_ms: 1_748_623_140_000,
        open: 1.0,
        high: 2.0,
        low: 0.5,
        close: 1.5,
        volume: 3.0,
        turnover: None,
    };
    let bad = Kline {
        open_time_ms: 1_751_328_000_000, // 2025-07-01, a later month than the good row
        close: f64::NAN,
        ..good
    };
    let error = write_klines(
        data.path(),
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
        &[good, bad],
    )
    .unwrap_err();
    assert!(
        matches!(error, Error::InvalidValue { field: "kline", .. }),
        "{error}"
    );
    assert_empty(data.path());

    let error = write_klines(
        data.path(),
        Category::Linear,
        "../BTC",
        Timeframe::Minutes(1),
        &[good],
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "symbol",
                ..
            }
        ),
        "{error}"
    );
    assert_empty(data.path());
}
