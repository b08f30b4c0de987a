//! `/strategies`: create, read and list strategies.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::StrategySpec;
use bst_engine::orders::strategy_and_orders;
use bst_engine::simulate::Direction;
use bst_query::{NewStrategy, Page, Strategy, StrategyFilter};
use serde::Deserialize;
use serde_json::Value;

use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest accepted strategy name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Longest accepted strategy description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// Body of `POST /strategies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateStrategy {
    name: String,
    #[serde(default)]
    description: Option<String>,
    strategy_type: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    is_active: Option<bool>,
}

/// Query of `GET /strategies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListStrategies {
    is_active: Option<bool>,
    strategy_type: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateStrategy>,
) -> ApiResult<(StatusCode, Json<Strategy>)> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(format!(
            "invalid name {:?}: expected 1 to {MAX_NAME_CHARS} characters",
            body.name
        )));
    }
    if let Some(description) = &body.description {
        let length = description.chars().count();
        if length > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::unprocessable(format!(
                "invalid description: {length} characters, expected at most \
                 {MAX_DESCRIPTION_CHARS}"
            )));
        }
    }
    let config = body
        .config
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !config.is_object() {
        return Err(ApiError::unprocessable(format!(
            "invalid config {config}: expected a JSON object of strategy parameters"
        )));
    }
    // The config must describe a strategy the engine can run, defaults filling the gaps.
    let (strategy, orders) = strategy_and_orders(&body.strategy_type, &config)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    state
        .engine
        .check_strategy(&strategy)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    check_entries(&strategy, orders.direction)?;

    let new = NewStrategy {
        name,
        description: body.description,
        strategy_type: body.strategy_type,
        config,
        is_active: body.is_active.unwrap_or(true),
    };
    let strategy = state
        .with_store(move |store| store.create_strategy(&new))
        .await?;
    Ok((StatusCode::CREATED, Json(strategy)))
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
