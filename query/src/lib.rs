//! DuckDB metadata store of the strategy tester: strategies, backtests with their results, and
//! the trades and equity curve of each backtest.
//!
//! [`Store`] wraps one DuckDB connection, applies schema migrations when it opens a database,
//! and exposes blocking methods. Every query binds its values as parameters.

mod backtests;
mod bots;
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
