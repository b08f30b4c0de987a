//! Errors of the engine: user errors name the bad value, the rest wrap DataFusion and Arrow.

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Engine failures. The first group is caused by the request and maps to a 4xx status; the
/// rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid strategy_type {name:?}: expected one of {known}")]
    UnknownStrategy { name: String, known: &'static str },

    #[error("invalid parameter {name}: {message}")]
    InvalidParameter { name: String, message: String },

    #[error("invalid range: start {start} is not before end {end}")]
    InvalidRange { start: String, end: String },

    #[error(
        "no {category} {symbol} klines with interval {timeframe} {range}; load them with `bst ingest`"
    )]
    NoData {
        category: String,
        symbol: String,
        timeframe: String,
        range: String,
    },

    #[error(transparent)]
    Ingest(#[from] bst_ingest::Error),

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Returns true when the request caused the error, so that a caller reports it to the user
    /// instead of logging it as a fault.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::UnknownStrategy { .. }
            | Error::InvalidParameter { .. }
            | Error::InvalidRange { .. }
            | Error::NoData { .. } => true,
            Error::Ingest(error) => matches!(error, bst_ingest::Error::InvalidValue { .. }),
            _ => false,
        }
    }
}
