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

use super::backtests::parse_timeframe;
use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::optimization_worker::CancelRequest;
use crate::state::AppState;

/// Largest number of combinations one pass of an optimization may evaluate: the grid of a
/// grid search or walk-forward fold, or the trials of a random search.
///
/// NOTE: the engine keeps the metrics of every combination of a pass in memory until it
/// ranks them, about 2 KB each (an estimate), so this bound keeps a pass near 200 MB.
pub(crate) const MAX_COMBINATIONS: u64 = 100_000;

/// Body of `POST /optimizations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOptimization {
    strategy_id: i64,
    symbol: String,
    timeframe: String,
    start_date: String,
    end_date: String,
    space: Value,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    trials: Option<u64>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    top: Option<u64>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    initial_capital: Option<f64>,
    #[serde(default)]
    leverage: Option<f64>,
    #[serde(default)]
    commission: Option<f64>,
    #[serde(default)]
    train: Option<u64>,
    #[serde(default)]
    test: Option<u64>,
    #[serde(default)]
    step: Option<u64>,
}

/// Query of `GET /optimizations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListOptimizations {
    strategy_id: Option<i64>,
    status: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// Body of `GET /optimizations/{id}/results`.
#[derive(Debug, Serialize)]
pub(crate) struct ResultsView {
    optimization_id: i64,
    status: OptimizationStatus,
    method: String,
    metric: String,
    /// Parameters of the best combination. A walk-forward reports those its last fold chose.
    best_params: Option<Value>,
    /// The metric's value for `best_params` on the data they were chosen on.
    best_score: Option<f64>,
    /// Best first, at most `top` of them. Empty for a walk-forward, whose `folds` carry the
    /// combination each training window chose.
    results: Vec<OptimizationResult>,
    tried: u64,
    skipped: u64,
    evaluated: u64,
    total: Option<u64>,
    deflated_sharpe_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    folds: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateOptimization>,
) -> ApiResult<(StatusCode, Json<Optimization>)> {
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
    Ok((StatusCode::CREATED, Json(optimization)))
}

fn parse_datetime(field: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    bst_engine::time::parse_utc(text).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "invalid {field} {text:?}: expected {}",
            bst_engine::time::DATETIME_FORMS
        ))
    })
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
            windows = Some(WalkForwardWindows {
                train: bars(train),
                test: bars(test),
                step: params.step.map(bars),
            });
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

pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Optimization>> {
    state
        .with_store(move |store| store.get_optimization(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("optimization", id))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListOptimizations>,
) -> ApiResult<Json<Page<Optimization>>> {
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
    Ok(Json(
        state
            .with_store(move |store| store.list_optimizations(&filter))
            .await?,
    ))
}

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
        results: outcome.results,
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
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<Optimization>)> {
    let running = state.running_optimizations.clone();
    let request = state
        .with_store(move |store| running.cancel(store, id, Utc::now()))
        .await?;
    Ok(match request {
        CancelRequest::Cancelled(optimization) => {
            tracing::info!(optimization_id = id, "optimization cancelled while queued");
            (StatusCode::OK, Json(optimization))
        }
        CancelRequest::Signalled(optimization) => {
            tracing::info!(optimization_id = id, "optimization cancel requested");
            (StatusCode::ACCEPTED, Json(optimization))
        }
    })
}
