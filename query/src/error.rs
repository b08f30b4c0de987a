use std::path::PathBuf;

use crate::model::BacktestStatus;
use crate::optimization_model::OptimizationStatus;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder that should contain the database file does not exist.
    #[error(
        "cannot open DuckDB database {path} because folder {} does not exist. Create the folder first.",
        .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    MissingFolder { path: PathBuf },

    /// DuckDB could not open or create the database file.
    #[error("failed to open DuckDB database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },

    /// A schema migration failed, so its transaction was rolled back.
    #[error("failed to apply schema migration {version}: {source}")]
    Migration {
        version: i64,
        #[source]
        source: duckdb::Error,
    },

    /// A query failed inside DuckDB.
    #[error("DuckDB query failed: {0}")]
    Database(#[from] duckdb::Error),

    /// No row exists with this id.
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: i64 },

    /// The backtest's current status does not allow the requested change.
    #[error("backtest {id} is {from}, so it cannot become {to}")]
    InvalidTransition {
        id: i64,
        from: BacktestStatus,
        to: BacktestStatus,
    },

    /// The optimization's current status does not allow the requested change.
    #[error("optimization {id} is {from}, so it cannot become {to}")]
    InvalidOptimizationTransition {
        id: i64,
        from: OptimizationStatus,
        to: OptimizationStatus,
    },

    /// An input value is outside the accepted set or range.
    #[error("invalid {field} {value:?}: expected {expected}")]
    InvalidValue {
        field: &'static str,
        value: String,
        expected: String,
    },
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
