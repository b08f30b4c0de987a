//! `/strategies`: create, read, list, update and delete strategies.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::StrategySpec;
use bst_engine::orders::strategy_and_orders;
use bst_engine::simulate::Direction;
use bst_query::{NewStrategy, Page, Strategy, StrategyDeletion, StrategyFilter, UpdateOutcome};
use chrono::Utc;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest accepted strategy name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Longest accepted strategy description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// Body of `POST /strategies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateStrategy {
    /// Display name, plain text of 1 to 200 characters after trimming spaces.
    name: String,
    /// Free text of up to 10,000 characters.
    #[serde(default)]
    description: Option<String>,
    /// Strategy kind: `sma_crossover`, `ema_crossover`, `rsi`, `macd`, `bollinger_bands` or
    /// `expression`, as text.
    strategy_type: String,
    /// Default parameters as a JSON object, where missing ones take the engine's defaults. Lengths
    /// are in bars and rates are fractions (0.02 is 2 %). Default: `{}`.
    #[serde(default)]
    config: Option<Value>,
    /// Whether the strategy is in use, a boolean flag. Default: true.
    #[serde(default)]
    is_active: Option<bool>,
}

/// Body of `PUT /strategies/{id}`: the fields to change. Absent fields keep their values, and
/// the result must validate as a new strategy would.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateStrategy {
    /// Display name, plain text of 1 to 200 characters after trimming spaces.
    #[serde(default)]
    name: Option<String>,
    /// Free text of up to 10,000 characters, or null to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// Strategy kind, as text, which `config` must suit.
    #[serde(default)]
    strategy_type: Option<String>,
    /// Default parameters as a JSON object, which replaces the stored one as a whole. Lengths
    /// are in bars and rates are fractions.
    #[serde(default)]
    config: Option<Value>,
    /// Whether the strategy is in use, a boolean flag.
    #[serde(default)]
    is_active: Option<bool>,
}

/// Reads a field that may be null as `Some(value)`, so that an absent field (`None` through
/// `#[serde(default)]`) differs from an explicit null (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Query of `GET /strategies`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListStrategies {
    /// Keep only active (true) or inactive (false) strategies.
    is_active: Option<bool>,
    /// Keep only strategies of this kind, as text.
    strategy_type: Option<String>,
    /// Page size, a count from 1 to 500. Default: 50.
    limit: Option<u64>,
    /// Matching rows to skip before the page, a count. Default: 0.
    offset: Option<u64>,
}

/// Body of a successful delete.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// Always true, a boolean flag, because a failed delete returns an error status instead.
    pub(crate) success: bool,
}

/// Creates a strategy.
#[utoipa::path(
    post,
    path = "/api/v1/strategies",
    tag = "strategies",
    request_body = CreateStrategy,
    responses(
        (status = 201, description = "The stored strategy", body = Strategy),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateStrategy>,
) -> ApiResult<(StatusCode, Json<Strategy>)> {
    let new = NewStrategy {
        name: body.name,
        description: body.description,
        strategy_type: body.strategy_type,
        config: body
            .config
            .unwrap_or_else(|| Value::Object(Default::default())),
        is_active: body.is_active.unwrap_or(true),
    };
    let new = check_strategy(&state, new)?;
    let strategy = state
        .with_store(move |store| store.create_strategy(&new))
        .await?;
    Ok((StatusCode::CREATED, Json(strategy)))
}

/// Checks the fields of a new or updated strategy and returns them with the name trimmed.
fn check_strategy(state: &AppState, mut strategy: NewStrategy) -> ApiResult<NewStrategy> {
    let name = strategy.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(format!(
            "invalid name {:?}: expected 1 to {MAX_NAME_CHARS} characters",
            strategy.name
        )));
    }
    strategy.name = name.to_string();
    if let Some(description) = &strategy.description {
        let length = description.chars().count();
        if length > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::unprocessable(format!(
                "invalid description: {length} characters, expected at most \
                 {MAX_DESCRIPTION_CHARS}"
            )));
        }
    }
    if !strategy.config.is_object() {
        return Err(ApiError::unprocessable(format!(
            "invalid config {}: expected a JSON object of strategy parameters",
            strategy.config
        )));
    }
    // The config must describe a strategy the engine can run, defaults filling the gaps.
    let (spec, orders) = strategy_and_orders(&strategy.strategy_type, &strategy.config)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    state
        .engine
        .check_strategy(&spec)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    check_entries(&spec, orders.direction)?;
    Ok(strategy)
}

/// Rejects an expression strategy that lacks an entry condition its `direction` uses. A
/// backtest checks the same rule on its merged config, because its own `config` can change
/// the direction.
fn check_entries(strategy: &StrategySpec, direction: Direction) -> ApiResult<()> {
    let StrategySpec::Expression(conditions) = strategy else {
        return Ok(());
    };
    let required = [
        (
            "entry_long",
            direction != Direction::Short,
            &conditions.entry_long,
        ),
        (
            "entry_short",
            direction != Direction::Long,
            &conditions.entry_short,
        ),
    ];
    for (name, needed, condition) in required {
        if needed && condition.is_none() {
            return Err(ApiError::unprocessable(format!(
                "invalid config: direction {} needs an {name} condition; add {name} or change \
                 direction",
                direction.as_str()
            )));
        }
    }
    Ok(())
}

/// Returns one strategy.
#[utoipa::path(
    get,
    path = "/api/v1/strategies/{id}",
    tag = "strategies",
    params(("id" = i64, Path, description = "Strategy id")),
    responses(
        (status = 200, description = "The strategy", body = Strategy),
        (status = 404, description = "No strategy has this id", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Strategy>> {
    state
        .with_store(move |store| store.get_strategy(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("strategy", id))
}

/// Lists strategies by id, filtered and paged.
#[utoipa::path(
    get,
    path = "/api/v1/strategies",
    tag = "strategies",
    params(ListStrategies),
    responses(
        (status = 200, description = "One page of strategies and the count on all pages",
            body = Page<Strategy>),
        (status = 422, description = "A query parameter is invalid, and `detail` names it",
            body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListStrategies>,
) -> ApiResult<Json<Page<Strategy>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = StrategyFilter {
        is_active: query.is_active,
        strategy_type: query.strategy_type,
        limit,
        offset,
    };
    Ok(Json(
        state
            .with_store(move |store| store.list_strategies(&filter))
            .await?,
    ))
}

/// Changes some fields of a strategy.
///
/// The merged strategy must validate as a new one would. Backtests queued earlier read the
/// new `config` when a worker runs them.
#[utoipa::path(
    put,
    path = "/api/v1/strategies/{id}",
    tag = "strategies",
    params(("id" = i64, Path, description = "Strategy id")),
    request_body = UpdateStrategy,
    responses(
        (status = 200, description = "The updated strategy", body = Strategy),
        (status = 404, description = "No strategy has this id", body = ErrorBody),
        (status = 409, description = "Another request changed the strategy meanwhile, so send \
            the update again", body = ErrorBody),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpdateStrategy>,
) -> ApiResult<Json<Strategy>> {
    let stored = state
        .with_store(move |store| store.get_strategy(id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", id))?;
    let previous = NewStrategy::from(&stored);
    let mut updated = previous.clone();
    if let Some(name) = body.name {
        updated.name = name;
    }
    if let Some(description) = body.description {
        updated.description = description;
    }
    if let Some(strategy_type) = body.strategy_type {
        updated.strategy_type = strategy_type;
    }
    if let Some(config) = body.config {
        updated.config = config;
    }
    if let Some(is_active) = body.is_active {
        updated.is_active = is_active;
    }
    let updated = check_strategy(&state, updated)?;
    let outcome = state
        .with_store(move |store| store.update_strategy(id, &previous, &updated, Utc::now()))
        .await?;
    match outcome {
        UpdateOutcome::Updated(strategy) => Ok(Json(strategy)),
        UpdateOutcome::Changed | UpdateOutcome::NotQueued(_) => Err(ApiError {
            status: StatusCode::CONFLICT,
            detail: format!(
                "strategy {id} changed while this update was checked; send the update again"
            ),
        }),
    }
}

/// Deletes a strategy that no backtest or optimization refers to.
#[utoipa::path(
    delete,
    path = "/api/v1/strategies/{id}",
    tag = "strategies",
    params(("id" = i64, Path, description = "Strategy id")),
    responses(
        (status = 200, description = "The strategy is deleted", body = Deleted),
        (status = 404, description = "No strategy has this id", body = ErrorBody),
        (status = 409, description = "Backtests or optimizations refer to the strategy",
            body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Deleted>> {
    let deletion = state
        .with_store(move |store| store.delete_strategy(id))
        .await?;
    match deletion {
        StrategyDeletion::Deleted => Ok(Json(Deleted { success: true })),
        StrategyDeletion::InUse {
            backtests,
            optimizations,
        } => Err(ApiError {
            status: StatusCode::CONFLICT,
            detail: format!(
                "strategy {id} is used by {backtests} backtests and {optimizations} \
                 optimizations; delete those first, or set is_active to false to retire it"
            ),
        }),
    }
}
