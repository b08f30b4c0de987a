//! DuckDB metadata store of the strategy tester: strategies, backtests with their results, and
//! the trades and equity curve of each backtest.
//!
//! [`Store`] wraps one DuckDB write connection and a few read connections, applies schema
//! migrations when it opens a database, caches backtest reads until the next backtest write,
//! and exposes blocking methods. Every query binds its values as parameters.

/// Implements `Display`, DuckDB's `ToSql` and `FromSql` for an enum stored as its
/// `as_str()` text, reading it back through its `FromStr`.
macro_rules! impl_text_column {
    ($name:ty) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl duckdb::types::ToSql for $name {
            fn to_sql(&self) -> duckdb::Result<duckdb::types::ToSqlOutput<'_>> {
                Ok(duckdb::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl duckdb::types::FromSql for $name {
            fn column_result(
                value: duckdb::types::ValueRef<'_>,
            ) -> duckdb::types::FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|error: crate::Error| {
                    duckdb::types::FromSqlError::Other(Box::new(error))
                })
            }
        }
    };
}

mod backtests;
mod bots;
mod cache;
mod equity;
mod error;
mod model;
mod optimization_model;
mod optimizations;
mod schema;
mod store;
mod strategies;
mod trades;

pub use bots::{
    BOT_ID_PREFIX, Bot, BotError, BotResult, BotStatus, BotTransition, DEAL_ID_PREFIX, Deal,
    DealStatus, NewBot, NewDeal,
};
pub use cache::{BacktestRead, CachedRead, PageRead};
pub use error::{Error, Result};
pub use model::{
    Backtest, BacktestFilter, BacktestOrder, BacktestOutcome, BacktestStatus, ClaimOutcome,
    DEFAULT_LIMIT, EquityPoint, ExtendedMetrics, NewBacktest, NewStrategy, NewTrade, Page,
    Strategy, StrategyDeletion, StrategyFilter, TRADE_SIDES, Trade, TradeFilter, UpdateOutcome,
};
pub use optimization_model::{
    NewOptimization, OPTIMIZATION_METHODS, Optimization, OptimizationFilter, OptimizationOutcome,
    OptimizationParams, OptimizationReport, OptimizationResult, OptimizationStatus,
};
pub use schema::LATEST_SCHEMA_VERSION;
pub use store::{DEFAULT_CLAIM_STALE_AFTER, Store};
