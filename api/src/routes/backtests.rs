//! `/backtests`: queue, read, list, change, cancel and delete backtests, and read their
//! trades. The routes of external workers, `claim` and `results`, are in [`jobs`].

mod jobs;

// The OpenAPI document names handlers by their path in this module, which for utoipa
// includes the generated `__path_*` types.
#[allow(unused_imports)]
pub(crate) use jobs::{__path_claim, __path_results, claim, results};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bst_engine::backtest::{DEFAULT_COMMISSION, DEFAULT_INITIAL_CAPITAL};
use bst_engine::orders::{OrderOptions, strategy_and_orders};
use bst_engine::{BacktestRequest, SeriesKey, StrategySpec, TimeRange};
use bst_ingest::{Category, Timeframe};
use bst_query::{
    Backtest, BacktestFilter, BacktestOrder, BacktestStatus, CachedRead, NewBacktest, Page,
    Strategy, Trade, TradeFilter, UpdateOutcome,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::strategies::Deleted;
use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Body of `POST /backtests`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBacktest {
    /// Id of an existing strategy.
    strategy_id: i64,
    /// Instrument of the linear category with stored klines, such as `BTCUSDT`, as text.
    symbol: String,
    /// Bar period: a Bybit code (`1`, `5`, `60`, `D`, ...) or an alias (`1m`, `1h`, `1d`, ...).
    timeframe: String,
    /// First bar open time included, ISO 8601 (UTC when it has no offset).
    start_date: String,
    /// Bar open time where the range ends, excluded, ISO 8601 (UTC when it has no offset).
    end_date: String,
    /// Starting equity, in quote currency. Default: 10000.
    #[serde(default)]
    initial_capital: Option<f64>,
    /// Notional over margin, a multiple from 1 to 100. Default: 1.
    #[serde(default)]
    leverage: Option<f64>,
    /// Commission per fill as a fraction of the notional. Default: 0.00055 (0.055 %).
    #[serde(default)]
    commission: Option<f64>,
    /// Parameters that override the strategy's `config` key by key, as a JSON object. Lengths
    /// are in bars and rates are fractions. Default: `{}`.
    #[serde(default)]
    config: Option<Value>,
}

/// Body of `PUT /backtests/{id}`: either request fields of a queued backtest, which must then
/// validate as a new backtest would, or a `status` change, but not both.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBacktest {
    /// Id of an existing strategy.
    #[serde(default)]
    strategy_id: Option<i64>,
    /// Instrument of the linear category with stored klines, as text.
    #[serde(default)]
    symbol: Option<String>,
    /// Bar period: a Bybit code or an alias such as `1h`.
    #[serde(default)]
    timeframe: Option<String>,
    /// First bar open time included, ISO 8601 (UTC when it has no offset).
    #[serde(default)]
    start_date: Option<String>,
    /// Bar open time where the range ends, excluded, ISO 8601 (UTC when it has no offset).
    #[serde(default)]
    end_date: Option<String>,
    /// Starting equity, in quote currency.
    #[serde(default)]
    initial_capital: Option<f64>,
    /// Notional over margin, a multiple from 1 to 100.
    #[serde(default)]
    leverage: Option<f64>,
    /// Commission per fill as a fraction of the notional.
    #[serde(default)]
    commission: Option<f64>,
    /// Parameters that override the strategy's `config`, as a JSON object that replaces the
    /// stored one as a whole.
    #[serde(default)]
    config: Option<Value>,
    /// New status, as text: `failed` (queued or running before) or `cancelled` (the same as
    /// `POST /backtests/{id}/cancel`).
    #[serde(default)]
    status: Option<String>,
    /// Reason the backtest failed, as text, allowed only with `status` `failed`.
    #[serde(default)]
    error_message: Option<String>,
}

impl UpdateBacktest {
    /// Returns true when the body changes a request field.
    fn changes_request(&self) -> bool {
        self.strategy_id.is_some()
            || self.symbol.is_some()
            || self.timeframe.is_some()
            || self.start_date.is_some()
            || self.end_date.is_some()
            || self.initial_capital.is_some()
            || self.leverage.is_some()
            || self.commission.is_some()
            || self.config.is_some()
    }
}

/// Query of `GET /backtests`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListBacktests {
    /// Keep only backtests of this strategy id.
    strategy_id: Option<i64>,
    /// Keep only backtests of this instrument, as text.
    symbol: Option<String>,
    /// Keep only backtests in this status: queued, running, completed, failed or cancelled.
    status: Option<String>,
    /// Page size, a count from 1 to 500. Default: 50.
    limit: Option<u64>,
    /// Matching rows to skip before the page, a count. Default: 0.
    offset: Option<u64>,
    /// Sort column: id, created_at, symbol, status, total_return, sharpe_ratio,
    /// max_drawdown, win_rate or final_capital. Default: created_at. Ties are ordered by id,
    /// and nulls come last.
    order_by: Option<String>,
    /// Sort direction: asc or desc. Default: desc.
    order_dir: Option<String>,
}

/// Query of `GET /backtests/{id}/trades`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListTrades {
    /// Keep only trades of one direction: `buy` or `LONG` for longs, `sell` or `SHORT` for
    /// shorts (`long` and `short` work too).
    side: Option<String>,
    /// Page size, a count from 1 to 10000. Default: 1000.
    limit: Option<u64>,
    /// Trades to skip before the page, a count. Default: 0.
    offset: Option<u64>,
}

/// Default and largest page of trades.
const DEFAULT_TRADE_LIMIT: u64 = 1_000;
const MAX_TRADE_LIMIT: u64 = 10_000;

/// Accepted values of the trades route's `side` filter, for error messages.
const SIDE_FILTERS: &str = "buy, sell, LONG, SHORT, long or short";

/// A trade as the contract shapes it: `price` is the entry price, `qty` the quantity and
/// `side` the entry order's side (`buy` opens a long, `sell` a short). The stored fields
/// follow under their own names.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TradeView {
    /// Trade id, an integer assigned by the server.
    id: i64,
    /// Id of the backtest the trade belongs to.
    backtest_id: i64,
    /// Time of the entry fill, ISO 8601 in UTC.
    entry_time: DateTime<Utc>,
    /// Time of the exit fill, ISO 8601 in UTC.
    exit_time: DateTime<Utc>,
    /// Entry fill price, in quote currency per unit of the base asset.
    price: f64,
    /// Position size, in units of the base asset.
    qty: f64,
    /// Side of the entry order: `buy` (a long) or `sell` (a short).
    #[schema(value_type = String)]
    side: &'static str,
    /// Direction of the position: `long` or `short`.
    position: String,
    /// Profit or loss after commission and funding, in quote currency.
    pnl: f64,
    /// Profit or loss relative to the equity committed at entry, in percent.
    pnl_pct: f64,
    /// Entry fill price, in quote currency per unit of the base asset (the same as `price`).
    entry_price: f64,
    /// Exit fill price, in quote currency per unit of the base asset.
    exit_price: f64,
    /// Position size, in units of the base asset (the same as `qty`).
    quantity: f64,
    /// Commission of the entry and exit fills, in quote currency.
    commission: f64,
    /// Funding paid while the position was open, in quote currency (negative when received).
    funding: f64,
    /// Why the position closed: signal, stop_loss, take_profit, liquidation or end_of_data.
    exit_reason: String,
    /// Time the trade was stored, ISO 8601 in UTC.
    created_at: DateTime<Utc>,
}

impl From<Trade> for TradeView {
    fn from(trade: Trade) -> Self {
        let side = if trade.side == "short" { "sell" } else { "buy" };
        Self {
            id: trade.id,
            backtest_id: trade.backtest_id,
            entry_time: trade.entry_time,
            exit_time: trade.exit_time,
            price: trade.entry_price,
            qty: trade.quantity,
            side,
            position: trade.side,
            pnl: trade.pnl,
            pnl_pct: trade.pnl_pct,
            entry_price: trade.entry_price,
            exit_price: trade.exit_price,
            quantity: trade.quantity,
            commission: trade.commission,
            funding: trade.funding,
            exit_reason: trade.exit_reason,
            created_at: trade.created_at,
        }
    }
}

/// Queues a backtest for a worker.
#[utoipa::path(
    post,
    path = "/api/v1/backtests",
    tag = "backtests",
    request_body = CreateBacktest,
    responses(
        (status = 201, description = "The queued backtest", body = Backtest),
        (status = 404, description = "No strategy has `strategy_id`", body = ErrorBody),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBacktest>,
) -> ApiResult<(StatusCode, Json<Backtest>)> {
    let new = NewBacktest {
        strategy_id: body.strategy_id,
        symbol: body.symbol,
        timeframe: body.timeframe,
        start_date: parse_datetime("start_date", &body.start_date)?,
        end_date: parse_datetime("end_date", &body.end_date)?,
        initial_capital: body.initial_capital.unwrap_or(DEFAULT_INITIAL_CAPITAL),
        leverage: body.leverage.unwrap_or(1.0),
        commission: body.commission.unwrap_or(DEFAULT_COMMISSION),
        config: body.config.unwrap_or(Value::Null),
    };
    let new = check_request(&state, new).await?;
    let strategy_id = new.strategy_id;
    let backtest = state
        .with_store(move |store| store.create_backtest(&new, Utc::now()))
        .await?;
    tracing::info!(backtest_id = backtest.id, strategy_id, "backtest queued");
    state.jobs_queued.notify_one();
    Ok((StatusCode::CREATED, Json(backtest)))
}

/// Checks a backtest request against its strategy and the stored klines and returns it with
/// the timeframe as a Bybit code and a null `config` as `{}`.
async fn check_request(state: &AppState, mut new: NewBacktest) -> ApiResult<NewBacktest> {
    let timeframe = parse_timeframe(&new.timeframe)?;
    if new.start_date >= new.end_date {
        return Err(ApiError::unprocessable(format!(
            "invalid range: start_date {} must be before end_date {}",
            iso(new.start_date),
            iso(new.end_date)
        )));
    }
    let overrides = match std::mem::take(&mut new.config) {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        other => {
            return Err(ApiError::unprocessable(format!(
                "invalid config {other}: expected a JSON object of strategy parameters"
            )));
        }
    };

    let strategy_id = new.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let (strategy_spec, orders) = resolve_strategy(&strategy, &overrides)?;
    let mut request = BacktestRequest::new(
        SeriesKey {
            category: Category::Linear,
            symbol: new.symbol.clone(),
            timeframe,
        },
        strategy_spec,
    );
    request.orders = orders;
    request.range = TimeRange {
        start_ms: Some(new.start_date.timestamp_millis()),
        end_ms: Some(new.end_date.timestamp_millis()),
    };
    request.initial_capital = new.initial_capital;
    request.commission = new.commission;
    request.leverage = new.leverage;
    request.validate()?;
    state.engine.check_strategy(&request.strategy)?;
    if state
        .engine
        .series_summary(&request.series, &request.range)
        .await?
        .is_none()
    {
        return Err(ApiError::unprocessable(format!(
            "invalid symbol {:?}: no linear klines with timeframe {} from {} to {}; \
             load them with `bst ingest klines`",
            request.series.symbol,
            timeframe.code(),
            iso(new.start_date),
            iso(new.end_date)
        )));
    }
    new.timeframe = timeframe.code();
    new.config = Value::Object(overrides);
    Ok(new)
}

/// Resolves a backtest's strategy: the strategy's `config`, overridden key by key by the
/// backtest's own `config`.
pub(crate) fn resolve_strategy(
    strategy: &Strategy,
    overrides: &Map<String, Value>,
) -> ApiResult<(StrategySpec, OrderOptions)> {
    Ok(strategy_and_orders(
        &strategy.strategy_type,
        &merged_config(strategy, overrides),
    )?)
}

/// Returns the strategy's `config` overridden key by key by a backtest's `config`.
pub(crate) fn merged_config(strategy: &Strategy, overrides: &Map<String, Value>) -> Value {
    let mut params = match &strategy.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    params.extend(
        overrides
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    Value::Object(params)
}

pub(crate) fn parse_timeframe(text: &str) -> ApiResult<Timeframe> {
    text.parse::<Timeframe>().map_err(|_| {
        ApiError::unprocessable(format!(
            "invalid timeframe {text:?}: expected one of {}",
            bst_ingest::layout::TIMEFRAME_CODES
        ))
    })
}

pub(crate) use crate::extract::parse_datetime;

/// Formats a time as ISO 8601 with `Z`, as responses write it.
fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Returns one backtest with its results.
#[utoipa::path(
    get,
    path = "/api/v1/backtests/{id}",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    responses(
        (status = 200, description = "The backtest", body = Backtest),
        (status = 404, description = "No backtest has this id", body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    // A cached read skips the hop to a blocking thread and reuses its JSON text.
    let read = match state.store.cached_backtest_read(id) {
        Some(read) => read,
        None => {
            state
                .with_store(move |store| store.backtest_read(id))
                .await?
        }
    };
    let read = read.ok_or_else(|| ApiError::not_found("backtest", id))?;
    json_response(&*read)
}

/// Returns a 200 response whose body is the JSON text of a shared read.
fn json_response<T: Serialize>(read: &CachedRead<T>) -> ApiResult<Response> {
    let json = read
        .json()
        .map_err(|error| ApiError::internal("response serialization", &error))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Lists backtests, filtered, sorted and paged.
#[utoipa::path(
    get,
    path = "/api/v1/backtests",
    tag = "backtests",
    params(ListBacktests),
    responses(
        (status = 200, description = "One page of backtests and the count on all pages",
            body = Page<Backtest>),
        (status = 422, description = "A query parameter is invalid, and `detail` names it and the \
            accepted values", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListBacktests>,
) -> ApiResult<Response> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<BacktestStatus>)
        .transpose()?;
    // The column comes from a fixed set of names, so no request text reaches the SQL.
    let order_by = query
        .order_by
        .as_deref()
        .map(str::parse::<BacktestOrder>)
        .transpose()?
        .unwrap_or_default();
    let descending = match query.order_dir.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "invalid order_dir {other:?}: expected asc or desc"
            )));
        }
    };
    let filter = BacktestFilter {
        strategy_id: query.strategy_id,
        symbol: query.symbol,
        status,
        limit,
        offset,
        order_by,
        descending,
    };
    let read = match state.store.cached_backtests_read(&filter) {
        Some(read) => read,
        None => {
            state
                .with_store(move |store| store.backtests_read(&filter))
                .await?
        }
    };
    json_response(&*read)
}

/// Changes a backtest: the request fields of a queued one, or its status to `failed` or
/// `cancelled`.
///
/// A request change must validate as a new backtest would. A backtest that a worker claimed
/// keeps its request, so the change gets 409.
#[utoipa::path(
    put,
    path = "/api/v1/backtests/{id}",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    request_body = UpdateBacktest,
    responses(
        (status = 200, description = "The updated backtest", body = Backtest),
        (status = 404, description = "No backtest, or no strategy of `strategy_id`, has this id",
            body = ErrorBody),
        (status = 409, description = "The status does not allow the change, and `detail` names it",
            body = ErrorBody),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpdateBacktest>,
) -> ApiResult<Json<Backtest>> {
    if body.status.is_some() {
        return update_status(&state, id, body).await.map(Json);
    }
    if body.error_message.is_some() {
        return Err(ApiError::unprocessable(
            "invalid error_message: it needs status \"failed\" in the same request",
        ));
    }

    let stored = state
        .with_store(move |store| store.get_backtest(id))
        .await?
        .ok_or_else(|| ApiError::not_found("backtest", id))?;
    if stored.status != BacktestStatus::Queued {
        return Err(not_queued(id, stored.status));
    }
    let previous = NewBacktest::from(&stored);
    let mut updated = previous.clone();
    if let Some(strategy_id) = body.strategy_id {
        updated.strategy_id = strategy_id;
    }
    if let Some(symbol) = body.symbol {
        updated.symbol = symbol;
    }
    if let Some(timeframe) = body.timeframe {
        updated.timeframe = timeframe;
    }
    if let Some(start_date) = &body.start_date {
        updated.start_date = parse_datetime("start_date", start_date)?;
    }
    if let Some(end_date) = &body.end_date {
        updated.end_date = parse_datetime("end_date", end_date)?;
    }
    if let Some(initial_capital) = body.initial_capital {
        updated.initial_capital = initial_capital;
    }
    if let Some(leverage) = body.leverage {
        updated.leverage = leverage;
    }
    if let Some(commission) = body.commission {
        updated.commission = commission;
    }
    if let Some(config) = body.config {
        updated.config = config;
    }
    let updated = check_request(&state, updated).await?;
    let outcome = state
        .with_store(move |store| store.update_queued_backtest(id, &previous, &updated))
        .await?;
    match outcome {
        UpdateOutcome::Updated(backtest) => Ok(Json(backtest)),
        UpdateOutcome::NotQueued(status) => Err(not_queued(id, status)),
        UpdateOutcome::Changed => Err(ApiError {
            status: StatusCode::CONFLICT,
            detail: format!(
                "backtest {id} changed while this update was checked; send the update again"
            ),
        }),
    }
}

fn not_queued(id: i64, status: BacktestStatus) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        detail: format!(
            "backtest {id} is {status}, and only a queued backtest's request can change; \
             queue a new backtest instead"
        ),
    }
}

/// Applies the `status` change of a `PUT /backtests/{id}` body.
async fn update_status(state: &AppState, id: i64, body: UpdateBacktest) -> ApiResult<Backtest> {
    if body.changes_request() {
        return Err(ApiError::unprocessable(
            "invalid body: status cannot change together with request fields; send them in \
             separate requests",
        ));
    }
    let now = Utc::now();
    match body.status.as_deref() {
        Some("failed") => {
            let message = body
                .error_message
                .unwrap_or_else(|| format!("marked failed through PUT /api/v1/backtests/{id}"));
            Ok(state
                .with_store(move |store| store.fail_backtest(id, &message, now))
                .await?)
        }
        Some("cancelled") if body.error_message.is_none() => Ok(state
            .with_store(move |store| store.cancel_backtest(id, now))
            .await?),
        Some("cancelled") => Err(ApiError::unprocessable(
            "invalid error_message: it needs status \"failed\", not \"cancelled\"",
        )),
        other => Err(ApiError::unprocessable(format!(
            "invalid status {:?}: expected failed or cancelled; a worker completes a backtest \
             through POST /api/v1/backtests/{id}/results",
            other.unwrap_or_default()
        ))),
    }
}

/// Cancels a queued or running backtest. A worker that still runs it cannot store an outcome
/// afterwards.
#[utoipa::path(
    post,
    path = "/api/v1/backtests/{id}/cancel",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    responses(
        (status = 200, description = "The cancelled backtest", body = Backtest),
        (status = 404, description = "No backtest has this id", body = ErrorBody),
        (status = 409, description = "The backtest already completed, failed or was \
            cancelled; `detail` names its status", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Backtest>> {
    let backtest = state
        .with_store(move |store| store.cancel_backtest(id, Utc::now()))
        .await?;
    Ok(Json(backtest))
}

/// Deletes a backtest in any status with its trades and equity curve.
#[utoipa::path(
    delete,
    path = "/api/v1/backtests/{id}",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    responses(
        (status = 200, description = "The backtest is deleted", body = Deleted),
        (status = 404, description = "No backtest has this id", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Deleted>> {
    state
        .with_store(move |store| store.delete_backtest(id))
        .await?;
    Ok(Json(Deleted { success: true }))
}

/// Lists the trades of a backtest by entry time, as a bare array.
#[utoipa::path(
    get,
    path = "/api/v1/backtests/{id}/trades",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id"), ListTrades),
    responses(
        (status = 200, description = "One page of trades", body = Vec<TradeView>),
        (status = 404, description = "No backtest has this id", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid, and `detail` names it and the \
            accepted values", body = ErrorBody),
    )
)]
pub(crate) async fn trades(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<ListTrades>,
) -> ApiResult<Json<Vec<TradeView>>> {
    let (limit, offset) = page_bounds(
        query.limit,
        query.offset,
        DEFAULT_TRADE_LIMIT,
        MAX_TRADE_LIMIT,
    )?;
    let side = query.side.as_deref().map(position_of_side).transpose()?;
    let filter = TradeFilter {
        side: side.map(str::to_string),
        limit,
        offset,
    };
    let trades = state
        .with_store(move |store| store.list_trades(id, &filter))
        .await?;
    Ok(Json(trades.into_iter().map(TradeView::from).collect()))
}

/// Maps a side as clients write it to the stored position: `long` or `short`.
pub(crate) fn position_of_side(side: &str) -> ApiResult<&'static str> {
    match side {
        "buy" | "LONG" | "long" => Ok("long"),
        "sell" | "SHORT" | "short" => Ok("short"),
        other => Err(ApiError::unprocessable(format!(
            "invalid side {other:?}: expected {SIDE_FILTERS}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::OpenApi;

    use crate::routes::{backtests, strategies};

    /// The strategy, backtest and trade routes alone, so that their schemas can be checked
    /// apart from the rest of the document.
    #[derive(OpenApi)]
    #[openapi(paths(
        strategies::list,
        strategies::get,
        strategies::create,
        strategies::update,
        strategies::delete,
        backtests::list,
        backtests::get,
        backtests::create,
        backtests::update,
        backtests::delete,
        backtests::cancel,
        backtests::claim,
        backtests::results,
        backtests::trades,
    ))]
    struct Routes;

    /// Returns true when a schema has a description, or, as utoipa writes an optional
    /// reference, one of its `oneOf` branches has.
    fn described(schema: &Value) -> bool {
        let own = schema
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|text| !text.trim().is_empty());
        let branches = schema.get("oneOf").and_then(Value::as_array);
        own || branches.is_some_and(|branches| branches.iter().any(described))
    }

    /// Collects `schema.property` names of every property without a description.
    fn undocumented(name: &str, value: &Value, missing: &mut Vec<String>) {
        if let Some(properties) = value.get("properties").and_then(Value::as_object) {
            for (property, schema) in properties {
                if !described(schema) {
                    missing.push(format!("{name}.{property}"));
                }
            }
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            for part in value
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                undocumented(name, part, missing);
            }
        }
    }

    #[test]
    fn every_schema_field_is_described() {
        let document = serde_json::to_value(Routes::openapi()).unwrap();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for name in [
            "Strategy",
            "Backtest",
            "TradeView",
            "BacktestResults",
            "ClaimResponse",
        ] {
            assert!(schemas.contains_key(name), "schema {name} is missing");
        }
        let mut missing = Vec::new();
        for (name, schema) in schemas {
            undocumented(name, schema, &mut missing);
        }
        for operation in document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
        {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(format!("parameter {}", parameter["name"]));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
