//! Helpers shared by the integration tests. Each test crate uses only some of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use bst_ingest::samples::require_datasets_dir;
use chrono::NaiveDateTime;
use flate2::read::GzDecoder;

/// One data line of a sample kline CSV, parsed by the test without the crate's reader.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CsvLine {
    /// The `timestamp` field as written, such as `2025-05-30 16:39:00+00:00`.
    pub(crate) timestamp: String,
    pub(crate) open_time_ms: i64,
    /// open, high, low, close, volume.
    pub(crate) values: [f64; 5],
}

/// Returns the path of a file below the sample data folder, panicking when it is missing.
pub(crate) fn sample_path(relative: &str) -> PathBuf {
    let path = require_datasets_dir().join(relative);
    assert!(path.is_file(), "sample file {} not found", path.display());
    path
}

/// Returns the decompressed lines of a gzip file.
pub(crate) fn gz_lines(path: &Path) -> Vec<String> {
    let file = File::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    BufReader::new(GzDecoder::new(file))
        .lines()
        .map(|line| line.unwrap_or_else(|error| panic!("{}: {error}", path.display())))
        .collect()
}

/// Parses the data lines of a sample kline CSV, which has the header
/// `timestamp,open,high,low,close,volume` and UTC timestamps ending in `+00:00`.
pub(crate) fn parse_sample_csv(path: &Path) -> Vec<CsvLine> {
    let lines = gz_lines(path);
    assert_eq!(lines[0], "timestamp,open,high,low,close,volume");
    lines[1..]
        .iter()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 6, "{line}");
            let naive = fields[0]
                .strip_suffix("+00:00")
                .unwrap_or_else(|| panic!("timestamp not in UTC: {line}"));
            let open_time = NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
                .unwrap_or_else(|error| panic!("{line}: {error}"));
            let number = |index: usize| -> f64 {
                fields[index]
                    .parse()
                    .unwrap_or_else(|error| panic!("{line}: {error}"))
            };
            CsvLine {
                timestamp: fields[0].to_string(),
                open_time_ms: open_time.and_utc().timestamp_millis(),
                values: [number(1), number(2), number(3), number(4), number(5)],
            }
        })
        .collect()
}

/// Counts the lines of each `YYYY-MM` month, taken from the first 7 characters of the
/// timestamp text.
pub(crate) fn rows_per_month(lines: &[CsvLine]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line.timestamp[..7].to_string()).or_insert(0) += 1;
    }
    counts
}

/// Returns the names of the subfolders of `dir`, sorted.
pub(crate) fn subfolder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Returns every file below `dir` except the write lock, with its bytes and modification
/// time, sorted by path.
pub(crate) fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.ends_with(bst_ingest::lock::LOCK_FILE_NAME) {
                let mut bytes = Vec::new();
                File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                files.push((path, bytes, modified));
            }
        }
    }
    files.sort_by(|left, right| left.0.cmp(&right.0));
    files
}
