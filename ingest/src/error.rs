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
