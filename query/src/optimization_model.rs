//! Optimization rows: parameter sweeps of one strategy over one series, queued and run like
//! backtests, and their ranked results.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::DEFAULT_LIMIT;

/// Life cycle of an optimization: `queued` -> `running` -> `completed` | `failed` |
/// `cancelled`, or `queued` -> `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl OptimizationStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [OptimizationStatus; 5] = [
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

    /// Returns true for the statuses an optimization never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl FromStr for OptimizationStatus {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| Error::InvalidValue {
                field: "optimization status",
                value: value.to_owned(),
                expected: format!(
                    "one of {}",
                    Self::ALL.map(OptimizationStatus::as_str).join(", ")
                ),
            })
    }
}

impl_text_column!(OptimizationStatus);

/// Search methods an optimization accepts.
pub const OPTIMIZATION_METHODS: [&str; 3] = ["grid", "random", "walk_forward"];

/// Search settings of an optimization: its request without the series and the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationParams {
    /// The parameter grid: each key a parameter, each value a list, a range or one value.
    pub space: Value,
    /// `grid`, `random` or `walk_forward`.
    pub method: String,
    /// Metric the combinations are ranked by.
    pub metric: String,
    /// Combinations drawn by random search.
    pub trials: u64,
    /// Seed of random search.
    pub seed: u64,
    /// Number of ranked results kept, where 0 keeps all.
    pub top: u64,
    /// Strategy parameters and order options every combination shares. They override the
    /// strategy's `config` key by key, and the swept parameters override both.
    pub config: Value,
    pub initial_capital: f64,
    pub leverage: f64,
    /// Commission rate per fill, as a fraction of the notional.
    pub commission: f64,
    /// Walk-forward training window, in bars.
    pub train: Option<u64>,
    /// Walk-forward test window, in bars.
    pub test: Option<u64>,
    /// Bars between the starts of walk-forward folds. `None` means `test`.
    pub step: Option<u64>,
}

/// Fields of an optimization to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOptimization {
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    pub params: OptimizationParams,
    /// Combinations the run evaluates, when known before it starts.
    pub total: Option<u64>,
}

/// An optimization request, its progress and, once it ends, its best combination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Optimization {
    pub id: i64,
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    pub params: OptimizationParams,
    pub status: OptimizationStatus,
    /// Fraction of `total` evaluated, from 0 to 1.
    pub progress: f64,
    /// Combinations evaluated so far.
    pub evaluated: u64,
    /// Combinations the run evaluates, or `None` until known.
    pub total: Option<u64>,
    /// Parameters of the best combination, once the run ends.
    pub best_params: Option<Value>,
    /// Value of the ranking metric for `best_params`, or `None` when it is undefined.
    pub best_score: Option<f64>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One ranked combination of an optimization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationResult {
    /// Position by the ranking metric, 1 for the best.
    pub rank: u64,
    /// The swept parameters of the combination.
    pub params: Value,
    /// Metrics of the combination, with the names and units of a backtest's metrics.
    pub metrics: Value,
}

/// Results and counts of a finished or cancelled run, as the store keeps them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OptimizationOutcome {
    /// Best first, with ranks 1, 2, 3 and so on.
    pub results: Vec<OptimizationResult>,
    /// Combinations taken from the space.
    pub tried: u64,
    /// Combinations that are not valid strategies.
    pub skipped: u64,
    pub evaluated: u64,
    pub best_params: Option<Value>,
    pub best_score: Option<f64>,
    /// Deflated Sharpe ratio of the best combination, a probability from 0 to 1.
    pub deflated_sharpe_ratio: Option<f64>,
    /// Walk-forward folds, as a JSON array.
    pub folds: Option<Value>,
    /// Walk-forward result of the test windows taken together, as a JSON object.
    pub out_of_sample: Option<Value>,
}

/// The stored outcome of an optimization, read back with its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizationReport {
    pub optimization_id: i64,
    pub status: OptimizationStatus,
    pub outcome: OptimizationOutcome,
}

/// Filter and page of [`crate::Store::list_optimizations`]. A `None` field matches every
/// row. Rows come newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizationFilter {
    pub strategy_id: Option<i64>,
    pub status: Option<OptimizationStatus>,
    pub limit: u64,
    pub offset: u64,
}

impl Default for OptimizationFilter {
    fn default() -> Self {
        Self {
            strategy_id: None,
            status: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}
