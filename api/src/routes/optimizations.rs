//! `/optimizations`: queue parameter sweeps of a strategy, follow their progress, read their
//! ranked results and cancel them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::backtest::{DEFAULT_COMMISSION, DEFAULT_INITIAL_CAPITAL};
use bst_engine::sweep::space::ParameterSpace;
use bst_engine::sweep::walk_forward::{WalkForwardWindows, fold_bounds};
use bst_engine::sweep::{RANKING_METRICS, SearchMethod, SweepRequest};
use bst_engine::{SeriesKey, TimeRange};
use bst_ingest::{Category, Timeframe};
use bst_query::{
    NewOptimization, OPTIMIZATION_METHODS, Optimization, OptimizationFilter, OptimizationParams,
    OptimizationResult, OptimizationStatus, Page, Strategy,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::backtests::parse_timeframe;
use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_datetime};
use crate::optimization_worker::CancelRequest;
use crate::state::AppState;

/// Largest number of combinations one pass of an optimization may evaluate: the grid of a
/// grid search or walk-forward fold, or the trials of a random search.
///
/// NOTE: the engine keeps the metrics of every combination of a pass in memory until it
/// ranks them, about 2 KB each (an estimate), so this bound keeps a pass near 200 MB.
pub(crate) const MAX_COMBINATIONS: u64 = 100_000;

/// Body of `POST /optimizations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOptimization {
    /// Id of the strategy whose parameters are swept; expression strategies are rejected.
    strategy_id: i64,
    /// Instrument of the linear category, such as BTCUSDT.
    #[schema(example = "BTCUSDT")]
    symbol: String,
    /// Bar period: a Bybit code (`1 3 5 15 30 60 120 240 360 720 D W M`, minutes, day, week,
    /// month) or an alias (`1m 5m 1h 4h 1d 1w 1M`).
    #[schema(example = "60")]
    timeframe: String,
    /// First open time included: ISO 8601, `Z` or an offset; without offset it is UTC.
    #[schema(example = "2025-06-01T00:00:00Z")]
    start_date: String,
    /// Open time where the range ends, excluded; after `start_date`.
    #[schema(example = "2025-07-01T00:00:00Z")]
    end_date: String,
    /// The parameter grid: each key a strategy parameter, each value a list of values, a
    /// range `{"low": L, "high": H, "step": S}` (high included when a step reaches it) or
    /// one value.
    #[schema(
        value_type = Object,
        example = json!({"fast_period": [5, 10], "slow_period": {"low": 20, "high": 40, "step": 10}})
    )]
    space: Value,
    /// `grid` (default), `random` or `walk_forward`.
    #[serde(default)]
    method: Option<String>,
    /// Metric the combinations are ranked by, highest first. Default: `sharpe_ratio`.
    #[serde(default)]
    metric: Option<String>,
    /// Combinations drawn by method `random`, 1 to 100000. Default: 100.
    #[serde(default)]
    trials: Option<u64>,
    /// Seed of method `random`. Default: 0.
    #[serde(default)]
    seed: Option<u64>,
    /// Ranked results kept; 0 keeps all. Default: 10.
    #[serde(default)]
    top: Option<u64>,
    /// Strategy parameters and order options every combination shares, overriding the
    /// strategy's `config` key by key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    /// Starting equity in quote currency. Default: 10000.
    #[serde(default)]
    initial_capital: Option<f64>,
    /// Leverage: notional over margin, from 1 to 100. Default: 1.
    #[serde(default)]
    leverage: Option<f64>,
    /// Commission per fill as a fraction of notional (0.00055 is 0.055 %). Default: 0.00055.
    #[serde(default)]
    commission: Option<f64>,
    /// Training window of method `walk_forward`, in bars; required by it.
    #[serde(default)]
    train: Option<u64>,
    /// Test window of method `walk_forward`, in bars; required by it.
    #[serde(default)]
    test: Option<u64>,
    /// Bars between the starts of walk-forward folds. Default: `test`.
    #[serde(default)]
    step: Option<u64>,
}

/// Query of `GET /optimizations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListOptimizations {
    /// Only optimizations of this strategy.
    strategy_id: Option<i64>,
    /// Only optimizations with this status.
    #[param(value_type = Option<OptimizationStatusSchema>)]
    status: Option<String>,
    /// Page size, 1 to 500. Default: 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// Rows skipped before the page. Default: 0.
    offset: Option<u64>,
}

/// Life cycle of an optimization: `queued` -> `running` -> `completed`, `failed` or
/// `cancelled`, or `queued` -> `cancelled`.
#[derive(Debug, ToSchema)]
#[schema(as = OptimizationStatus)]
#[serde(rename_all = "lowercase")]
#[allow(
    dead_code,
    reason = "the enum only describes the status in the OpenAPI document"
)]
pub(crate) enum OptimizationStatusSchema {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// An optimization request, its progress and, once it ends, its best combination.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Optimization)]
pub(crate) struct OptimizationView {
    id: i64,
    strategy_id: i64,
    /// Instrument of the linear category, such as BTCUSDT.
    symbol: String,
    /// Bybit timeframe code, such as `60`.
    timeframe: String,
    /// First open time included, ISO 8601 UTC.
    start_date: DateTime<Utc>,
    /// Open time where the range ends, excluded, ISO 8601 UTC.
    end_date: DateTime<Utc>,
    params: OptimizationParamsView,
    #[schema(value_type = OptimizationStatusSchema)]
    status: OptimizationStatus,
    /// Fraction of `total` evaluated, from 0 to 1.
    progress: f64,
    /// Combinations evaluated so far.
    evaluated: u64,
    /// Combinations the run evaluates, or null until known.
    total: Option<u64>,
    /// Parameters of the best combination, once the run ends.
    #[schema(value_type = Option<Object>)]
    best_params: Option<Value>,
    /// Value of the ranking metric for `best_params`, in that metric's unit, or null when it
    /// is undefined.
    best_score: Option<f64>,
    /// Reason of the failure, for status `failed`.
    error_message: Option<String>,
    /// ISO 8601 UTC.
    created_at: DateTime<Utc>,
    /// ISO 8601 UTC, when a worker claimed it.
    started_at: Option<DateTime<Utc>>,
    /// ISO 8601 UTC, when it completed, failed or was cancelled.
    completed_at: Option<DateTime<Utc>>,
}

impl From<Optimization> for OptimizationView {
    fn from(optimization: Optimization) -> Self {
        Self {
            id: optimization.id,
            strategy_id: optimization.strategy_id,
            symbol: optimization.symbol,
            timeframe: optimization.timeframe,
            start_date: optimization.start_date,
            end_date: optimization.end_date,
            params: optimization.params.into(),
            status: optimization.status,
            progress: optimization.progress,
            evaluated: optimization.evaluated,
            total: optimization.total,
            best_params: optimization.best_params,
            best_score: optimization.best_score,
            error_message: optimization.error_message,
            created_at: optimization.created_at,
            started_at: optimization.started_at,
            completed_at: optimization.completed_at,
        }
    }
}

/// Search settings of an optimization, with defaults filled in.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OptimizationParams)]
pub(crate) struct OptimizationParamsView {
    /// The parameter grid: each key a parameter, each value a list, a range or one value.
    #[schema(value_type = Object)]
    space: Value,
    /// `grid`, `random` or `walk_forward`.
    method: String,
    /// Metric the combinations are ranked by.
    metric: String,
    /// Combinations drawn by random search.
    trials: u64,
    /// Seed of random search.
    seed: u64,
    /// Number of ranked results kept, where 0 keeps all.
    top: u64,
    /// Strategy parameters and order options every combination shares.
    #[schema(value_type = Object)]
    config: Value,
    /// Starting equity in quote currency.
    initial_capital: f64,
    /// Leverage: notional over margin.
    leverage: f64,
    /// Commission per fill, as a fraction of notional.
    commission: f64,
    /// Walk-forward training window, in bars.
    train: Option<u64>,
    /// Walk-forward test window, in bars.
    test: Option<u64>,
    /// Bars between the starts of walk-forward folds; null means `test`.
    step: Option<u64>,
}

impl From<OptimizationParams> for OptimizationParamsView {
    fn from(params: OptimizationParams) -> Self {
        Self {
            space: params.space,
            method: params.method,
            metric: params.metric,
            trials: params.trials,
            seed: params.seed,
            top: params.top,
            config: params.config,
            initial_capital: params.initial_capital,
            leverage: params.leverage,
            commission: params.commission,
            train: params.train,
            test: params.test,
            step: params.step,
        }
    }
}

/// A page of optimizations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OptimizationPage {
    items: Vec<OptimizationView>,
    /// Optimizations matching the filter, over all pages.
    total: u64,
}

impl From<Page<Optimization>> for OptimizationPage {
    fn from(page: Page<Optimization>) -> Self {
        Self {
            items: page.items.into_iter().map(OptimizationView::from).collect(),
            total: page.total,
        }
    }
}

/// One ranked combination of an optimization.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OptimizationResultView {
    /// Position by the ranking metric, 1 for the best.
    rank: u64,
    /// The swept parameters of the combination.
    #[schema(value_type = Object)]
    params: Value,
    /// Metrics of the combination, with the names and units of a backtest's metrics
    /// (`total_return`, `win_rate` and `max_drawdown` in percent, `sharpe_ratio` annualized).
    #[schema(value_type = Object)]
    metrics: Value,
}

impl From<OptimizationResult> for OptimizationResultView {
    fn from(result: OptimizationResult) -> Self {
        Self {
            rank: result.rank,
            params: result.params,
            metrics: result.metrics,
        }
    }
}

/// Body of `GET /optimizations/{id}/results`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResultsView {
    optimization_id: i64,
    #[schema(value_type = OptimizationStatusSchema)]
    status: OptimizationStatus,
    /// `grid`, `random` or `walk_forward`.
    method: String,
    /// Metric the combinations are ranked by.
    metric: String,
    /// Parameters of the best combination. A walk-forward reports those its last fold chose.
    #[schema(value_type = Option<Object>)]
    best_params: Option<Value>,
    /// The metric's value for `best_params` on the data they were chosen on, in the metric's
    /// unit.
    best_score: Option<f64>,
    /// Best first, at most `top` of them. Empty for a walk-forward, whose `folds` carry the
    /// combination each training window chose.
    results: Vec<OptimizationResultView>,
    /// Combinations taken from the space.
    tried: u64,
    /// Combinations that are not valid strategies.
    skipped: u64,
    /// Combinations evaluated.
    evaluated: u64,
    /// Combinations the run was to evaluate, when known.
    total: Option<u64>,
    /// Deflated Sharpe ratio of the best combination: a probability from 0 to 1.
    deflated_sharpe_ratio: Option<f64>,
    /// Walk-forward folds: their windows, the chosen parameters and their test metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    folds: Option<Value>,
    /// Walk-forward metrics of the test windows taken together.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    out_of_sample: Option<Value>,
}

/// An optimization's settings as the engine runs them.
#[derive(Debug, Clone)]
pub(crate) struct SweepPlan {
    pub(crate) request: SweepRequest,
    /// Window sizes of a walk-forward; `None` for grid and random search.
    pub(crate) windows: Option<WalkForwardWindows>,
}

/// Counts of one pass over an optimization's space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CombinationCounts {
    /// Combinations taken from the space.
    pub(crate) tried: u64,
    /// Combinations that are not valid strategies.
    pub(crate) skipped: u64,
}

impl CombinationCounts {
    pub(crate) fn valid(self) -> u64 {
        self.tried - self.skipped
    }
}

/// Queues an optimization; a worker runs it.
#[utoipa::path(
    post,
    path = "/api/v1/optimizations",
    tag = "optimizations",
    operation_id = "create_optimization",
    request_body = CreateOptimization,
    responses(
        (status = 201, description = "The optimization, queued", body = OptimizationView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown strategy_id", body = ErrorBody),
        (status = 413, description = "Body over 2 MiB", body = ErrorBody),
        (status = 422, description = "A field does not validate, or no data covers the range",
            body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateOptimization>,
) -> ApiResult<(StatusCode, Json<OptimizationView>)> {
    let timeframe = parse_timeframe(&body.timeframe)?;
    let start = parse_datetime("start_date", &body.start_date)?;
    let end = parse_datetime("end_date", &body.end_date)?;
    if start >= end {
        return Err(ApiError::unprocessable(format!(
            "invalid range: start_date {} must be before end_date {}",
            body.start_date, body.end_date
        )));
    }
    let params = params_of(&body)?;
    let strategy_id = body.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let plan = plan_sweep(&strategy, &body.symbol, timeframe, start, end, &params)?;

    let counted = plan.request.clone();
    let counts = tokio::task::spawn_blocking(move || count_combinations(&counted)).await??;
    let Some(summary) = state
        .engine
        .series_summary(&plan.request.series, &plan.request.range)
        .await?
    else {
        return Err(ApiError::unprocessable(format!(
            "invalid symbol {:?}: no linear klines with timeframe {} from {} to {}; \
             load them with `bst ingest klines`",
            plan.request.series.symbol,
            timeframe.code(),
            start.to_rfc3339(),
            end.to_rfc3339()
        )));
    };
    let passes = match plan.windows {
        None => 1,
        Some(windows) => {
            let bars = usize::try_from(summary.rows).unwrap_or(usize::MAX);
            let folds = fold_bounds(bars, windows).len() as u64;
            if folds == 0 {
                return Err(ApiError::unprocessable(format!(
                    "invalid train {}: the range has {bars} bars, fewer than one training \
                     window plus one test bar; lower train or widen the range",
                    windows.train
                )));
            }
            folds
        }
    };

    let new = NewOptimization {
        strategy_id,
        symbol: plan.request.series.symbol.clone(),
        timeframe: timeframe.code(),
        start_date: start,
        end_date: end,
        params,
        total: Some(counts.valid().saturating_mul(passes)),
    };
    let optimization = state
        .with_store(move |store| store.create_optimization(&new, Utc::now()))
        .await?;
    tracing::info!(
        optimization_id = optimization.id,
        strategy_id,
        method = %optimization.params.method,
        total = ?optimization.total,
        "optimization queued"
    );
    state.jobs_queued.notify_one();
    Ok((StatusCode::CREATED, Json(optimization.into())))
}

/// Checks the search fields of a request body and fills in their defaults.
fn params_of(body: &CreateOptimization) -> ApiResult<OptimizationParams> {
    let method = body.method.clone().unwrap_or_else(|| "grid".to_string());
    if !OPTIMIZATION_METHODS.contains(&method.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "invalid method {method:?}: expected one of {}",
            OPTIMIZATION_METHODS.join(", ")
        )));
    }
    let metric = body
        .metric
        .clone()
        .unwrap_or_else(|| "sharpe_ratio".to_string());
    if !RANKING_METRICS.contains(&metric.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "invalid metric {metric:?}: expected one of {}",
            RANKING_METRICS.join(", ")
        )));
    }
    check_method_fields(body, &method)?;

    let trials = body.trials.unwrap_or(100);
    if !(1..=MAX_COMBINATIONS).contains(&trials) {
        return Err(ApiError::unprocessable(format!(
            "invalid trials {trials}: expected 1 to {MAX_COMBINATIONS}"
        )));
    }
    let config = match &body.config {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "invalid config {other}: expected a JSON object of strategy parameters and \
                 order options"
            )));
        }
    };

    Ok(OptimizationParams {
        space: body.space.clone(),
        method,
        metric,
        trials,
        seed: body.seed.unwrap_or(0),
        top: body.top.unwrap_or(10),
        config,
        initial_capital: body.initial_capital.unwrap_or(DEFAULT_INITIAL_CAPITAL),
        leverage: body.leverage.unwrap_or(1.0),
        commission: body.commission.unwrap_or(DEFAULT_COMMISSION),
        train: body.train,
        test: body.test,
        step: body.step,
    })
}

/// Rejects fields that `method` does not use, and checks the window sizes of a walk-forward.
fn check_method_fields(body: &CreateOptimization, method: &str) -> ApiResult<()> {
    let owned_fields = [
        ("trials", body.trials, "random"),
        ("seed", body.seed, "random"),
        ("train", body.train, "walk_forward"),
        ("test", body.test, "walk_forward"),
        ("step", body.step, "walk_forward"),
    ];
    for (name, value, owner) in owned_fields {
        if value.is_some() && method != owner {
            return Err(ApiError::unprocessable(format!(
                "invalid {name}: only method {owner} uses it, and this request's method is \
                 {method}; remove {name} or set method to {owner}"
            )));
        }
    }
    if method != "walk_forward" {
        return Ok(());
    }

    let windows = [
        ("train", body.train, true),
        ("test", body.test, true),
        ("step", body.step, false),
    ];
    for (name, value, required) in windows {
        match value {
            None if required => {
                return Err(ApiError::unprocessable(format!(
                    "missing {name}: method walk_forward needs train and test, in bars"
                )));
            }
            Some(0) => {
                return Err(ApiError::unprocessable(format!(
                    "invalid {name} 0: expected a number of bars above 0"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Builds the engine's sweep of an optimization of `strategy`. The shared configuration is
/// the strategy's `config`, overridden key by key by the optimization's `config`.
pub(crate) fn plan_sweep(
    strategy: &Strategy,
    symbol: &str,
    timeframe: Timeframe,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    params: &OptimizationParams,
) -> ApiResult<SweepPlan> {
    if strategy.strategy_type == "expression" {
        return Err(ApiError::unprocessable(format!(
            "invalid strategy_id {}: it is an expression strategy, and optimizations sweep \
             the built-in strategies; run expression strategies as backtests",
            strategy.id
        )));
    }
    let space = ParameterSpace::parse(&params.space).map_err(space_error)?;

    let mut base_config = match &strategy.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if let Value::Object(overrides) = &params.config {
        base_config.extend(
            overrides
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
    }

    let series = SeriesKey {
        category: Category::Linear,
        symbol: symbol.to_string(),
        timeframe,
    };
    let mut request = SweepRequest::new(series, &strategy.strategy_type, space);
    request.range = TimeRange {
        start_ms: Some(start.timestamp_millis()),
        end_ms: Some(end.timestamp_millis()),
    };
    request.base_config = base_config;
    request.metric.clone_from(&params.metric);
    request.top = usize::try_from(params.top).unwrap_or(usize::MAX);
    request.initial_capital = params.initial_capital;
    request.commission = params.commission;
    request.leverage = params.leverage;

    let mut windows = None;
    match params.method.as_str() {
        "random" => {
            request.method = SearchMethod::Random {
                trials: params.trials,
                seed: params.seed,
            };
        }
        "walk_forward" => {
            let (Some(train), Some(test)) = (params.train, params.test) else {
                return Err(ApiError::unprocessable(
                    "missing train or test: method walk_forward needs both, in bars",
                ));
            };
            let bars = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
            let fold_windows = WalkForwardWindows {
                train: bars(train),
                test: bars(test),
                step: params.step.map(bars),
            };
            fold_windows.validate()?;
            windows = Some(fold_windows);
        }
        _ => {}
    }
    Ok(SweepPlan { request, windows })
}

/// Reports a space that does not parse under the request's field name, `space`.
fn space_error(error: bst_engine::Error) -> ApiError {
    match error {
        bst_engine::Error::InvalidParameter { name, message } if name == "grid" => {
            ApiError::unprocessable(format!("invalid space: {message}"))
        }
        bst_engine::Error::InvalidParameter { name, message } => {
            ApiError::unprocessable(format!("invalid space parameter {name}: {message}"))
        }
        other => other.into(),
    }
}

/// Counts the combinations one pass takes from the space and how many of them are not valid
/// strategies. The rules are those of the engine's sweep. An error naming a swept parameter
/// skips the combination, and any other error rejects the whole optimization.
///
/// Fails with 422 when the pass is larger than [`MAX_COMBINATIONS`], when a shared setting
/// is invalid, and when no combination is valid.
pub(crate) fn count_combinations(request: &SweepRequest) -> ApiResult<CombinationCounts> {
    let candidates = match request.method {
        SearchMethod::Grid => {
            let count = request.space.combination_count();
            if count > MAX_COMBINATIONS {
                return Err(ApiError::unprocessable(format!(
                    "invalid space: {count} combinations, expected at most {MAX_COMBINATIONS}; \
                     narrow the ranges or use method random"
                )));
            }
            request.space.grid()
        }
        SearchMethod::Random { trials, seed } => request.space.random(trials, seed),
    };
    let tried = candidates.len() as u64;
    let mut skipped = 0;
    let mut first_skip = None;
    for candidate in candidates {
        let error = match request.backtest_request(&candidate) {
            Ok(backtest) => match backtest.validate() {
                Ok(()) => continue,
                // Settings every combination shares fail the whole optimization.
                Err(error) => return Err(error.into()),
            },
            Err(error) => error,
        };
        let bst_engine::Error::InvalidParameter { name, .. } = &error else {
            return Err(error.into());
        };
        let swept = request
            .space
            .parameters
            .iter()
            .any(|(parameter, _)| parameter == name);
        if !swept {
            return Err(error.into());
        }
        skipped += 1;
        first_skip
            .get_or_insert_with(|| format!("{} gives: {error}", Value::Object(candidate.clone())));
    }
    if skipped == tried {
        return Err(ApiError::unprocessable(format!(
            "invalid space: none of its {tried} combinations is a valid {} strategy; {}",
            request.strategy_type,
            first_skip.unwrap_or_default()
        )));
    }
    Ok(CombinationCounts { tried, skipped })
}

/// Returns one optimization with its progress.
#[utoipa::path(
    get,
    path = "/api/v1/optimizations/{id}",
    tag = "optimizations",
    operation_id = "get_optimization",
    params(("id" = i64, Path, description = "Optimization id")),
    responses(
        (status = 200, description = "The optimization", body = OptimizationView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<OptimizationView>> {
    state
        .with_store(move |store| store.get_optimization(id))
        .await?
        .map(|optimization| Json(optimization.into()))
        .ok_or_else(|| ApiError::not_found("optimization", id))
}

/// Lists optimizations, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/optimizations",
    tag = "optimizations",
    operation_id = "list_optimizations",
    params(ListOptimizations),
    responses(
        (status = 200, description = "A page of optimizations", body = OptimizationPage),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "A query parameter does not validate", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListOptimizations>,
) -> ApiResult<Json<OptimizationPage>> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<OptimizationStatus>)
        .transpose()?;
    let filter = OptimizationFilter {
        strategy_id: query.strategy_id,
        status,
        limit,
        offset,
    };
    let page = state
        .with_store(move |store| store.list_optimizations(&filter))
        .await?;
    Ok(Json(page.into()))
}

/// Returns the ranked results of a completed or cancelled optimization.
#[utoipa::path(
    get,
    path = "/api/v1/optimizations/{id}/results",
    tag = "optimizations",
    operation_id = "get_optimization_results",
    params(("id" = i64, Path, description = "Optimization id")),
    responses(
        (status = 200, description = "Ranked results", body = ResultsView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
        (status = 409, description = "The optimization is queued, running or failed",
            body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn results(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ResultsView>> {
    let (optimization, report) = state
        .with_store(move |store| {
            let Some(optimization) = store.get_optimization(id)? else {
                return Err(bst_query::Error::NotFound {
                    entity: "optimization",
                    id,
                });
            };
            let report = store.optimization_report(id)?;
            Ok((optimization, report))
        })
        .await?;
    match report.status {
        OptimizationStatus::Completed | OptimizationStatus::Cancelled => {}
        OptimizationStatus::Queued | OptimizationStatus::Running => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                detail: format!(
                    "optimization {id} is {}, with {} of {} combinations evaluated; poll \
                     GET /api/v1/optimizations/{id} until its status is completed",
                    report.status,
                    optimization.evaluated,
                    optimization
                        .total
                        .map_or_else(|| "unknown".to_string(), |total| total.to_string())
                ),
            });
        }
        OptimizationStatus::Failed => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                detail: format!(
                    "optimization {id} is failed, so it has no results: {}",
                    optimization
                        .error_message
                        .as_deref()
                        .unwrap_or("no message")
                ),
            });
        }
    }
    let outcome = report.outcome;
    Ok(Json(ResultsView {
        optimization_id: id,
        status: report.status,
        method: optimization.params.method,
        metric: optimization.params.metric,
        best_params: outcome.best_params,
        best_score: outcome.best_score,
        results: outcome
            .results
            .into_iter()
            .map(OptimizationResultView::from)
            .collect(),
        tried: outcome.tried,
        skipped: outcome.skipped,
        evaluated: outcome.evaluated,
        total: optimization.total,
        deflated_sharpe_ratio: outcome.deflated_sharpe_ratio,
        folds: outcome.folds,
        out_of_sample: outcome.out_of_sample,
    }))
}

/// Cancels an optimization. Returns 200 with it cancelled when it was queued, and 202 with it
/// still running when a worker of this process runs it. That worker stops once each engine
/// thread ends its current batch of combinations, and stores the partial results.
#[utoipa::path(
    post,
    path = "/api/v1/optimizations/{id}/cancel",
    tag = "optimizations",
    operation_id = "cancel_optimization",
    params(("id" = i64, Path, description = "Optimization id")),
    responses(
        (status = 200, description = "The optimization, cancelled while queued",
            body = OptimizationView),
        (status = 202, description = "The optimization, still running until its worker stops",
            body = OptimizationView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
        (status = 409, description = "The optimization has already ended", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<OptimizationView>)> {
    let running = state.running_optimizations.clone();
    let request = state
        .with_store(move |store| running.cancel(store, id, Utc::now()))
        .await?;
    Ok(match request {
        CancelRequest::Cancelled(optimization) => {
            tracing::info!(optimization_id = id, "optimization cancelled while queued");
            (StatusCode::OK, Json(optimization.into()))
        }
        CancelRequest::Signalled(optimization) => {
            tracing::info!(optimization_id = id, "optimization cancel requested");
            (StatusCode::ACCEPTED, Json(optimization.into()))
        }
    })
}
