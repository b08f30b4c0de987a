//! Checks `datasets/manifest.json` against the sample files under `BST_DATASETS_DIR`.

mod common;

use std::path::{Path, PathBuf};

use bst_ingest::csv_klines::{read_kline_csv, series_from_file_name};
use bst_ingest::samples::{require_datasets_dir, sample_kline_files};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn manifest() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry[name]
        .as_str()
        .unwrap_or_else(|| panic!("manifest entry {entry} has no string {name}"))
}

fn time_ms(entry: &Value, name: &str) -> i64 {
    field(entry, name)
        .parse::<DateTime<Utc>>()
        .unwrap_or_else(|error| panic!("{name} of {entry}: {error}"))
        .timestamp_millis()
}

/// Checks rows, symbol, timeframe and the open time range of a kline CSV entry.
fn check_kline_csv(entry: &Value, path: &Path, rows: usize) {
    let lines = common::gz_lines(path);
    let data_lines = lines[1..].iter().filter(|line| !line.is_empty()).count();
    assert_eq!(data_lines, rows, "rows of {}", path.display());

    let klines = read_kline_csv(path).unwrap();
    assert_eq!(klines.len(), rows, "parsed rows of {}", path.display());
    let first = klines.iter().map(|kline| kline.open_time_ms).min().unwrap();
    let last = klines.iter().map(|kline| kline.open_time_ms).max().unwrap();
    assert_eq!(
        first,
        time_ms(entry, "first_open_time"),
        "{}",
        path.display()
    );
    assert_eq!(last, time_ms(entry, "last_open_time"), "{}", path.display());

    let (symbol, timeframe) = series_from_file_name(path).unwrap();
    assert_eq!(symbol, field(entry, "symbol"), "{}", path.display());
    assert_eq!(
        timeframe.code(),
        field(entry, "timeframe"),
        "{}",
        path.display()
    );
}

/// Checks rows, category, symbol and the open time range of a REST body entry, reading the
/// JSON without the crate's parser so that open bars count too.
fn check_rest_body(entry: &Value, path: &Path, rows: usize) {
    let body: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let list = body["result"]["list"].as_array().unwrap();
    assert_eq!(list.len(), rows, "rows of {}", path.display());
    let open_times: Vec<i64> = list
        .iter()
        .map(|row| row[0].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        open_times.iter().min(),
        Some(&time_ms(entry, "first_open_time"))
    );
    assert_eq!(
        open_times.iter().max(),
        Some(&time_ms(entry, "last_open_time"))
    );
    assert_eq!(
        body["result"]["symbol"],
        entry["symbol"],
        "{}",
        path.display()
    );
    assert_eq!(
        body["result"]["category"],
        entry["category"],
        "{}",
        path.display()
    );
}

#[test]
fn manifest_matches_sample_files() {
    let datasets_dir = require_datasets_dir();
    let manifest = manifest();
    let entries = manifest["files"]
        .as_array()
        .expect("manifest has a files array");
    assert!(!entries.is_empty());

    for entry in entries {
        let relative = field(entry, "path");
        let path = datasets_dir.join(relative);
        assert!(path.is_file(), "{} is missing", path.display());
        assert_eq!(
            sha256_hex(&path),
            field(entry, "sha256"),
            "sha256 of {relative}"
        );

        let rows = usize::try_from(entry["rows"].as_u64().expect("rows is a number")).unwrap();
        match field(entry, "kind") {
            "kline_csv" => check_kline_csv(entry, &path, rows),
            "kline_rest_body" => check_rest_body(entry, &path, rows),
            "trade_csv" => {
                let lines = common::gz_lines(&path);
                assert_eq!(lines.len() - 1, rows, "rows of {relative}");
            }
            "ws_frames" => {
                let text = std::fs::read_to_string(&path).unwrap();
                assert_eq!(text.lines().count(), rows, "frames of {relative}");
            }
            other => panic!("unknown kind {other:?} of {relative}"),
        }
    }
}

#[test]
fn sample_kline_files_match_manifest() {
    let datasets_dir = require_datasets_dir();
    let manifest = manifest();
    let mut expected: Vec<PathBuf> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "kline_csv")
        .map(|entry| datasets_dir.join(field(entry, "path")))
        .collect();
    expected.sort();
    assert_eq!(sample_kline_files(&datasets_dir), expected);
}
