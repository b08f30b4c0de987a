//! Errors of the ingest crate.

use std::path::PathBuf;

/// Result of ingest operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Ingest failures: bad input names the file and value, I/O names the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field} {value:?}: expected {expected}")]
    InvalidValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("{path}: line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error("{path}: {message}")]
    InvalidFile { path: PathBuf, message: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A Bybit response body that is not valid JSON or lacks an expected field.
    #[error("invalid Bybit response body: {message}")]
    InvalidBody { message: String },

    /// A Bybit response body with a non-zero `retCode`, carrying Bybit's `retMsg`.
    #[error("Bybit returned retCode {code}: {message}")]
    Bybit { code: i64, message: String },

    /// A Bybit REST request that failed without a retry, because of an HTTP status other
    /// than 429 or 5xx or because the request could not be built.
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },

    /// A Bybit REST request that still failed with a retryable error after the last attempt.
    #[error("request to {url} failed after {attempts} attempts; last failure: {last_failure}")]
    RetriesExhausted {
        url: String,
        attempts: u32,
        last_failure: String,
    },

    /// An exact sum of trade sizes or notionals that overflows the decimal range.
    #[error("exact sum of {field} overflows in the bar at {open_time}; check the trade values")]
    SumOverflow {
        field: &'static str,
        open_time: String,
    },

    /// An error in a file whose own message does not name the file.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}
