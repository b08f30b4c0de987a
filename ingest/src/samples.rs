//! The real Bybit sample data that tests, examples and benchmarks read.
//!
//! The files are not part of the repository. [`DATASETS_DIR_ENV`] names the folder that
//! contains them, laid out as `bybit/klines/*.csv.gz`, `bybit/rest/*.json` and so on, and
//! `datasets/manifest.json` at the repository root lists each file with its sha256.

use std::path::{Path, PathBuf};

/// Environment variable with the path of the sample data folder.
pub const DATASETS_DIR_ENV: &str = "BST_DATASETS_DIR";

/// Folder of the kline CSV files below the sample data folder.
pub const KLINE_SAMPLES_DIR: &str = "bybit/klines";

/// Returns the sample data folder from [`DATASETS_DIR_ENV`], or `None` when the variable is
/// unset or empty.
pub fn datasets_dir() -> Option<PathBuf> {
    std::env::var_os(DATASETS_DIR_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Returns the sample data folder from [`DATASETS_DIR_ENV`], for tests and examples that
/// must not pass silently without the real data.
///
/// # Panics
///
/// Panics with instructions when the variable is unset or empty.
pub fn require_datasets_dir() -> PathBuf {
    datasets_dir().unwrap_or_else(|| {
        panic!(
            "set {DATASETS_DIR_ENV} to the folder of the real Bybit sample data \
             (it holds bybit/klines/...)"
        )
    })
}

/// Returns the kline CSV files (`*.csv` and `*.csv.gz`) in `bybit/klines` below the sample
/// data folder, sorted by path. A missing folder gives an empty list.
pub fn sample_kline_files(datasets_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(datasets_dir.join(KLINE_SAMPLES_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            path.is_file() && (name.ends_with(".csv") || name.ends_with(".csv.gz"))
        })
        .collect();
    files.sort();
    files
}
