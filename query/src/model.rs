//! Rows of the metadata store and the inputs and filters of its methods.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{Error, Result};

/// Page size of the `Default` filters.
pub const DEFAULT_LIMIT: u64 = 100;

/// A page of rows with the number of rows that match the filter without paging.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page<T> {
    /// Rows of this page, at most `limit` of them.
    pub items: Vec<T>,
    /// Rows that match the filter on all pages, as a count.
    pub total: u64,
}

/// A trading strategy and its default parameters.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Strategy {
    /// Strategy id, an integer assigned by the server.
    pub id: i64,
    /// Display name, plain text of 1 to 200 characters.
    pub name: String,
    /// Free text of up to 10,000 characters, or null.
    pub description: Option<String>,
    /// Strategy kind, such as `sma_crossover` or `expression`, as text.
    pub strategy_type: String,
    /// Default parameters as a JSON object, which a backtest's own `config` overrides key by
    /// key. Lengths are in bars and rates are fractions (0.02 is 2 %).
    pub config: Value,
    /// Whether the strategy is in use, a boolean flag.
    pub is_active: bool,
    /// Creation time, ISO 8601 in UTC.
    pub created_at: DateTime<Utc>,
    /// Time of the last change, ISO 8601 in UTC.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a strategy to create, and the stored fields that an update replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStrategy {
    pub name: String,
    pub description: Option<String>,
    pub strategy_type: String,
    pub config: Value,
    pub is_active: bool,
}

impl From<&Strategy> for NewStrategy {
    fn from(strategy: &Strategy) -> Self {
        Self {
            name: strategy.name.clone(),
            description: strategy.description.clone(),
            strategy_type: strategy.strategy_type.clone(),
            config: strategy.config.clone(),
            is_active: strategy.is_active,
        }
    }
}

/// Outcome of an update that the store checks against the values the caller read first, so
/// that two concurrent partial updates cannot silently undo each other.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome<T> {
    /// The row now has the new values.
    Updated(T),
    /// The stored values differ from the ones the caller read, so nothing was written.
    Changed,
    /// The backtest left `queued`, so its request can no longer change. Strategy updates
    /// never return it.
    NotQueued(BacktestStatus),
}

/// Outcome of [`crate::Store::delete_strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyDeletion {
    /// The strategy is gone.
    Deleted,
    /// Backtests or optimizations still refer to the strategy, so it was kept.
    InUse { backtests: u64, optimizations: u64 },
}

/// Filter and page of [`crate::Store::list_strategies`]. A `None` field matches every row.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyFilter {
    pub is_active: Option<bool>,
    pub strategy_type: Option<String>,
    pub limit: u64,
    pub offset: u64,
}

impl Default for StrategyFilter {
    fn default() -> Self {
        Self {
            is_active: None,
            strategy_type: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// Life cycle of a backtest: `queued` -> `running` -> `completed` | `failed`, or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BacktestStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl BacktestStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [BacktestStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Returns the lowercase name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for BacktestStatus {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| Error::InvalidValue {
                field: "backtest status",
                value: value.to_owned(),
                expected: one_of(Self::ALL.iter().map(|status| status.as_str())),
            })
    }
}

impl_text_column!(BacktestStatus);

/// A backtest request and, once it completes, its results.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Backtest {
    /// Backtest id, an integer assigned by the server.
    pub id: i64,
    /// Id of the strategy the backtest runs.
    pub strategy_id: i64,
    /// Instrument of the linear category, such as `BTCUSDT`, as text.
    pub symbol: String,
    /// Bar period as a Bybit code: `1` to `720` minutes, `D`, `W` or `M`.
    pub timeframe: String,
    /// First bar open time included, ISO 8601 in UTC.
    pub start_date: DateTime<Utc>,
    /// Bar open time where the range ends, excluded, ISO 8601 in UTC.
    pub end_date: DateTime<Utc>,
    /// Starting equity, in quote currency.
    pub initial_capital: f64,
    /// Notional over margin, a multiple (1 means no leverage).
    pub leverage: f64,
    /// Commission rate per fill, as a fraction of the notional (0.00055 is 0.055 %).
    pub commission: f64,
    /// Parameters that override the strategy's `config` key by key, as a JSON object.
    pub config: Value,
    /// Life-cycle state.
    pub status: BacktestStatus,
    /// Reason the backtest failed, as text, or null unless `status` is `failed`.
    pub error_message: Option<String>,
    /// Time the backtest was queued, ISO 8601 in UTC.
    pub created_at: DateTime<Utc>,
    /// Time of the current claim, ISO 8601 in UTC, or null while queued.
    pub started_at: Option<DateTime<Utc>>,
    /// Time the backtest completed, failed or was cancelled, ISO 8601 in UTC.
    pub completed_at: Option<DateTime<Utc>>,
    /// Equity at the end of the range, in quote currency.
    pub final_capital: Option<f64>,
    /// Return over the range, in percent (12.5 means 12.5 %).
    pub total_return: Option<f64>,
    /// Closed trades, as a count.
    pub total_trades: Option<i64>,
    /// Trades with a positive pnl, as a count.
    pub winning_trades: Option<i64>,
    /// Trades with a negative pnl, as a count.
    pub losing_trades: Option<i64>,
    /// Winning trades over all trades, in percent.
    pub win_rate: Option<f64>,
    /// Annualized Sharpe ratio of per-bar returns with a zero risk-free rate, unitless.
    pub sharpe_ratio: Option<f64>,
    /// Largest peak-to-trough fall of the equity curve, in percent.
    pub max_drawdown: Option<f64>,
    /// The metrics of `metrics`, which the JSON also returns as flat fields.
    #[serde(flatten)]
    pub extended: ExtendedMetrics,
    /// Metrics beyond the flat columns above, and the bar count, as a JSON object.
    pub metrics: Option<Value>,
    /// Resolved parameters the engine ran with, as a JSON object.
    pub params: Option<Value>,
    /// Version of the engine that produced the results, as text.
    pub engine_version: Option<String>,
    /// Open time of the first bar the engine read, ISO 8601 in UTC.
    pub data_start: Option<DateTime<Utc>>,
    /// Open time of the last bar the engine read, ISO 8601 in UTC.
    pub data_end: Option<DateTime<Utc>>,
}

/// Metrics of a completed backtest that the store keeps in the `metrics` JSON column and
/// [`Backtest`] also serializes as flat fields.
///
/// Every field is `None` until the backtest completes, and also where the metric has no
/// defined value (`docs/backtesting.md` lists when). Percentages are in percent (12.5 means
/// 12.5 %).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExtendedMetrics {
    /// Bars the engine read, as a count.
    pub bars: Option<i64>,
    /// Ratio of the mean per-bar return to its downside deviation, annualized.
    pub sortino_ratio: Option<f64>,
    /// Ratio of the annualized return to the maximum drawdown, both as fractions.
    pub calmar_ratio: Option<f64>,
    /// Ratio of the sum of positive trade pnl to minus the sum of negative trade pnl.
    pub profit_factor: Option<f64>,
    /// Mean pnl per trade, in quote currency.
    pub expectancy: Option<f64>,
    /// Mean `pnl_pct` of the trades, in percent.
    pub avg_trade_pct: Option<f64>,
    /// Largest positive trade pnl, in quote currency.
    pub largest_win: Option<f64>,
    /// Most negative trade pnl, in quote currency (a negative number).
    pub largest_loss: Option<f64>,
    /// Length of the longest drawdown, in bars.
    pub max_drawdown_duration_bars: Option<i64>,
    /// Length of the longest drawdown, in seconds of bar open time.
    pub max_drawdown_duration_seconds: Option<i64>,
    /// Bars whose close found a position open, in percent of all bars.
    pub exposure_pct: Option<f64>,
    /// `(last close / first open - 1) x 100`, in percent.
    pub buy_and_hold_return: Option<f64>,
    /// Commission of every fill, in quote currency.
    pub total_commission: Option<f64>,
    /// Funding paid by all trades, in quote currency (negative when received).
    pub total_funding: Option<f64>,
    /// Trades closed by liquidation, as a count.
    pub liquidations: Option<i64>,
}

/// Fields of a backtest to queue, and the request fields that an update of a queued backtest
/// replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBacktest {
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    pub initial_capital: f64,
    pub leverage: f64,
    pub commission: f64,
    pub config: Value,
}

impl From<&Backtest> for NewBacktest {
    fn from(backtest: &Backtest) -> Self {
        Self {
            strategy_id: backtest.strategy_id,
            symbol: backtest.symbol.clone(),
            timeframe: backtest.timeframe.clone(),
            start_date: backtest.start_date,
            end_date: backtest.end_date,
            initial_capital: backtest.initial_capital,
            leverage: backtest.leverage,
            commission: backtest.commission,
            config: backtest.config.clone(),
        }
    }
}

/// Outcome of [`crate::Store::claim_backtest_for_worker`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The backtest was queued, or running under a stale claim, and is now running with
    /// `started_at` set to the claim time.
    Claimed(Backtest),
    /// Another worker claimed the backtest, and its claim is not stale yet.
    Running(Backtest),
    /// The backtest already completed.
    Completed(Backtest),
    /// The backtest failed or was cancelled, so no worker may claim it.
    Ended(Backtest),
}

/// Sort column of [`crate::Store::list_backtests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacktestOrder {
    Id,
    #[default]
    CreatedAt,
    Symbol,
    /// Sorts by the status name as text.
    Status,
    TotalReturn,
    SharpeRatio,
    MaxDrawdown,
    WinRate,
    FinalCapital,
}

impl BacktestOrder {
    /// Every sort column.
    pub const ALL: [BacktestOrder; 9] = [
        Self::Id,
        Self::CreatedAt,
        Self::Symbol,
        Self::Status,
        Self::TotalReturn,
        Self::SharpeRatio,
        Self::MaxDrawdown,
        Self::WinRate,
        Self::FinalCapital,
    ];

    /// Returns the column name, which is also the accepted `order_by` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::CreatedAt => "created_at",
            Self::Symbol => "symbol",
            Self::Status => "status",
            Self::TotalReturn => "total_return",
            Self::SharpeRatio => "sharpe_ratio",
            Self::MaxDrawdown => "max_drawdown",
            Self::WinRate => "win_rate",
            Self::FinalCapital => "final_capital",
        }
    }
}

impl fmt::Display for BacktestOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BacktestOrder {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|order| order.as_str() == value)
            .ok_or_else(|| Error::InvalidValue {
                field: "order_by",
                value: value.to_owned(),
                expected: one_of(Self::ALL.iter().map(|order| order.as_str())),
            })
    }
}

/// Filter, page and sort order of [`crate::Store::list_backtests`]. A `None` field matches
/// every row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BacktestFilter {
    pub strategy_id: Option<i64>,
    pub symbol: Option<String>,
    pub status: Option<BacktestStatus>,
    pub limit: u64,
    pub offset: u64,
    /// Sort column. Rows with equal values are ordered by id in the same direction, and NULL
    /// values sort last in both directions.
    pub order_by: BacktestOrder,
    pub descending: bool,
}

impl Default for BacktestFilter {
    fn default() -> Self {
        Self {
            strategy_id: None,
            symbol: None,
            status: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
            order_by: BacktestOrder::default(),
            descending: false,
        }
    }
}

/// Results of a finished engine run, stored by [`crate::Store::complete_backtest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestOutcome {
    pub final_capital: f64,
    pub total_return: f64,
    pub total_trades: i64,
    pub winning_trades: i64,
    pub losing_trades: i64,
    pub win_rate: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    /// Metrics beyond the flat fields, as a JSON object.
    pub metrics: Value,
    pub params: Value,
    pub engine_version: String,
    pub data_start: Option<DateTime<Utc>>,
    pub data_end: Option<DateTime<Utc>>,
}

/// Accepted values of a trade's `side`.
pub const TRADE_SIDES: [&str; 2] = ["long", "short"];

/// A closed trade of a backtest, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTrade {
    pub entry_time: DateTime<Utc>,
    pub exit_time: DateTime<Utc>,
    /// `"long"` or `"short"`.
    pub side: String,
    pub entry_price: f64,
    pub exit_price: f64,
    pub quantity: f64,
    pub pnl: f64,
    pub pnl_pct: f64,
    pub commission: f64,
    /// Funding paid while the position was open, in quote currency (negative when received).
    pub funding: f64,
    pub exit_reason: String,
}

/// A stored trade of a backtest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trade {
    pub id: i64,
    pub backtest_id: i64,
    pub entry_time: DateTime<Utc>,
    pub exit_time: DateTime<Utc>,
    /// `"long"` or `"short"`.
    pub side: String,
    pub entry_price: f64,
    pub exit_price: f64,
    pub quantity: f64,
    pub pnl: f64,
    pub pnl_pct: f64,
    pub commission: f64,
    /// Funding paid while the position was open, in quote currency (negative when received).
    pub funding: f64,
    pub exit_reason: String,
    pub created_at: DateTime<Utc>,
}

/// Filter and page of [`crate::Store::list_trades`]. `side: None` matches both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeFilter {
    /// `"long"` or `"short"`.
    pub side: Option<String>,
    pub limit: u64,
    pub offset: u64,
}

impl Default for TradeFilter {
    fn default() -> Self {
        Self {
            side: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// Rejects a trade side other than `"long"` and `"short"`.
pub(crate) fn check_side(side: &str) -> Result<()> {
    if TRADE_SIDES.contains(&side) {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            field: "trade side",
            value: side.to_owned(),
            expected: one_of(TRADE_SIDES),
        })
    }
}

/// Rejects a JSON value that is not an object.
pub(crate) fn check_json_object(field: &'static str, value: &Value) -> Result<()> {
    if value.is_object() {
        return Ok(());
    }
    Err(Error::InvalidValue {
        field,
        value: value.to_string(),
        expected: "a JSON object".to_owned(),
    })
}

fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    format!("one of {}", names.join(", "))
}

/// The equity of a backtest at one bar's close.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EquityPoint {
    /// Open time of the bar.
    pub open_time: DateTime<Utc>,
    /// Equity at the bar's close, in quote currency.
    pub equity: f64,
    /// Percent below the largest equity of the curve up to this bar.
    pub drawdown: f64,
}
