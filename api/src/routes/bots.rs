//! `/bots` and `/active-deals`: paper bots, their start and stop requests, and their deals.
//!
//! No order leaves the process. Start and stop requests set `awaiting_start` or
//! `awaiting_stop`, which [`crate::bot_supervisor`] turns into `running` or `stopped`. A
//! deal's current price is the close of the newest stored bar of its symbol (category
//! `linear`), so deal pnl follows the dataset, not the exchange.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::SeriesKey;
use bst_ingest::layout::{kline_series_dir, validate_symbol};
use bst_ingest::{Category, Timeframe};
use bst_query::{Bot, BotError, BotResult, BotStatus, Deal, DealStatus, NewBot, NewDeal, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult, ErrorBody, echoed};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest accepted bot name and strategy name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Largest number of symbols of one bot.
const MAX_BOT_SYMBOLS: usize = 50;

/// Bybit interval codes whose stored bars can give a deal's current price.
const PRICE_TIMEFRAMES: [&str; 13] = [
    "1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M",
];

/// Body of `POST /bots`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBot {
    /// Display name, 1 to 200 characters after trimming spaces.
    #[schema(example = "BTC Scalper")]
    name: String,
    /// Name of the strategy the bot runs, 1 to 200 characters, such as `scalper_v1`.
    #[schema(example = "scalper_v1")]
    strategy: String,
    /// Bybit symbols the bot trades: 1 to 50 distinct ones of uppercase letters and digits.
    #[schema(example = json!(["BTCUSDT"]))]
    symbols: Vec<String>,
    /// Capital assigned to the bot, in quote currency (USDT for USDT contracts), positive.
    #[schema(example = 1000.0)]
    capital_allocated: f64,
}

/// Query of `GET /bots`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListBots {
    /// Page size in bots, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Bots to skip before the page (default 0).
    offset: Option<u64>,
}

/// A page of bots.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BotList {
    /// Bots of this page, ordered by id.
    items: Vec<Bot>,
    /// Number of bots on all pages.
    total: u64,
}

/// Response of `POST /bots/{id}/start` and `POST /bots/{id}/stop`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BotActionResult {
    /// Always true, because a request that is not allowed gets a 409 with a `detail`.
    ok: bool,
    /// The bot's status after the request: `awaiting_start` or `awaiting_stop`.
    status: BotStatus,
    /// Summary of the change, for display.
    message: String,
}

/// Response of `POST /bots/{id}/delete`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BotDeleteResult {
    /// Always true, because a delete that is not allowed gets a 409 with a `detail`.
    ok: bool,
    /// Summary of the deletion, for display.
    message: String,
}

/// Body of `POST /active-deals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDeal {
    /// Id of the bot that opens the deal, such as `bot_1`.
    #[schema(example = "bot_1")]
    bot_id: String,
    /// Bybit symbol, one of the bot's symbols.
    #[schema(example = "BTCUSDT")]
    symbol: String,
    /// Entry price in quote currency per unit of the base coin, positive.
    #[schema(example = 60000.0)]
    entry_price: f64,
    /// Position size in the base coin, positive.
    #[schema(example = 0.02)]
    quantity: f64,
}

/// Query of `GET /active-deals`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListDeals {
    /// Only the deals of this bot, such as `bot_1`.
    bot_id: Option<String>,
    /// Page size in deals, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Deals to skip before the page (default 0).
    offset: Option<u64>,
}

/// Body of `POST /active-deals/{id}/average`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AverageDeal {
    /// Quantity to add, in the base coin, positive.
    #[schema(example = 0.01)]
    quantity: f64,
    /// Price of the added quantity, in quote currency per unit of the base coin, positive.
    #[schema(example = 59000.0)]
    price: f64,
}

/// A deal with its price and pnl, as `GET /active-deals` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActiveDeal {
    /// Deal id, such as `deal_1`.
    #[schema(example = "deal_1")]
    id: String,
    /// Id of the bot that opened the deal, such as `bot_1`.
    #[schema(example = "bot_1")]
    bot_id: String,
    /// Bybit symbol, such as `BTCUSDT`.
    symbol: String,
    /// Average entry price, in quote currency per unit of the base coin.
    entry_price: f64,
    /// Position size in the base coin.
    quantity: f64,
    /// Price of the next averaging order, in quote currency. Always null, because paper bots
    /// place no orders of their own.
    next_open_price: Option<f64>,
    /// Close of the newest stored bar of the symbol (category linear), in quote currency.
    /// Null when the deal is not active or no bar is stored.
    current_price: Option<f64>,
    /// Close time of the bar that `current_price` comes from, ISO 8601 UTC, or null.
    current_price_time: Option<DateTime<Utc>>,
    /// `(price - entry_price) * quantity` in quote currency, at `current_price` while active
    /// and at `exit_price` once closed. Null when there is no such price.
    pnl_abs: Option<f64>,
    /// `(price - entry_price) / entry_price * 100` in percent, at the same price as
    /// `pnl_abs`.
    pnl_pct: Option<f64>,
    /// `active`, `closed` or `cancelled`.
    status: DealStatus,
    /// Time the deal was opened, ISO 8601 UTC.
    opened_at: DateTime<Utc>,
    /// Time the deal was closed or cancelled, ISO 8601 UTC, or null while active.
    closed_at: Option<DateTime<Utc>>,
    /// Price the deal was closed at, in quote currency, or null unless closed.
    exit_price: Option<f64>,
}

/// A page of active deals.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DealList {
    /// Active deals of this page, ordered by id.
    items: Vec<ActiveDeal>,
    /// Number of active deals on all pages.
    total: u64,
}

/// Response of `POST /active-deals/{id}/close`, `/cancel` and `/average`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DealActionResult {
    /// Always true, because an action that is not allowed gets a 409 with a `detail`.
    ok: bool,
    /// The action done: `close`, `cancel` or `average`.
    action: &'static str,
    /// Summary of the action with the prices and pnl involved, for display.
    message: String,
}

/// The close of a stored bar.
#[derive(Debug, Clone, Copy)]
struct LatestPrice {
    close: f64,
    close_time_ms: i64,
}

/// Lists bots by id, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/bots",
    tag = "bots",
    params(ListBots),
    responses(
        (status = 200, description = "A page of bots", body = BotList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Invalid limit or offset", body = ErrorBody),
    )
)]
pub(crate) async fn list_bots(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListBots>,
) -> ApiResult<Json<BotList>> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = with_bots(&state, move |store| store.list_bots(limit, offset)).await?;
    Ok(Json(BotList {
        items: page.items,
        total: page.total,
    }))
}

/// Returns one bot.
#[utoipa::path(
    get,
    path = "/api/v1/bots/{id}",
    tag = "bots",
    params(("id" = String, Path, description = "Bot id, such as `bot_1`")),
    responses(
        (status = 200, description = "The bot", body = Bot),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this id", body = ErrorBody),
    )
)]
pub(crate) async fn get_bot(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Bot>> {
    Ok(Json(
        with_bots(&state, move |store| store.get_bot(&id)).await?,
    ))
}

/// Creates a paper bot in status `stopped`.
#[utoipa::path(
    post,
    path = "/api/v1/bots",
    tag = "bots",
    request_body = CreateBot,
    responses(
        (status = 201, description = "The created bot, status `stopped`", body = Bot),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    )
)]
pub(crate) async fn create_bot(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBot>,
) -> ApiResult<(StatusCode, Json<Bot>)> {
    let new = NewBot {
        name: checked_name("name", &body.name)?,
        strategy: checked_name("strategy", &body.strategy)?,
        symbols: checked_symbols(body.symbols)?,
        capital_allocated: checked_positive("capital_allocated", body.capital_allocated)?,
    };
    let bot = with_bots(&state, move |store| store.create_bot(&new)).await?;
    Ok((StatusCode::CREATED, Json(bot)))
}

/// Requests the start of a `stopped` or `error` bot.
#[utoipa::path(
    post,
    path = "/api/v1/bots/{id}/start",
    tag = "bots",
    params(("id" = String, Path, description = "Bot id, such as `bot_1`")),
    responses(
        (status = 200, description = "The bot is `awaiting_start`; the supervisor makes it \
            `running` within a second", body = BotActionResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this id", body = ErrorBody),
        (status = 409, description = "The bot is not `stopped` or `error`; the `detail` \
            names its status", body = ErrorBody),
    )
)]
pub(crate) async fn start_bot(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BotActionResult>> {
    let bot = with_bots(&state, move |store| store.request_bot_start(&id)).await?;
    Ok(Json(BotActionResult {
        ok: true,
        status: bot.status,
        message: format!(
            "bot {} is {}; it starts within a second",
            bot.id, bot.status
        ),
    }))
}

/// Requests the stop of a `running` or `awaiting_start` bot.
#[utoipa::path(
    post,
    path = "/api/v1/bots/{id}/stop",
    tag = "bots",
    params(("id" = String, Path, description = "Bot id, such as `bot_1`")),
    responses(
        (status = 200, description = "The bot is `awaiting_stop`; the supervisor makes it \
            `stopped` within a second", body = BotActionResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this id", body = ErrorBody),
        (status = 409, description = "The bot is not `running` or `awaiting_start`; the \
            `detail` names its status", body = ErrorBody),
    )
)]
pub(crate) async fn stop_bot(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BotActionResult>> {
    let bot = with_bots(&state, move |store| store.request_bot_stop(&id)).await?;
    Ok(Json(BotActionResult {
        ok: true,
        status: bot.status,
        message: format!("bot {} is {}; it stops within a second", bot.id, bot.status),
    }))
}

/// Deletes a `stopped` or `error` bot without active deals.
#[utoipa::path(
    post,
    path = "/api/v1/bots/{id}/delete",
    tag = "bots",
    params(("id" = String, Path, description = "Bot id, such as `bot_1`")),
    responses(
        (status = 200, description = "The bot is deleted; its closed and cancelled deals \
            stay stored", body = BotDeleteResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this id", body = ErrorBody),
        (status = 409, description = "The bot is not `stopped` or `error`, or it has active \
            deals; the `detail` names the cause", body = ErrorBody),
    )
)]
pub(crate) async fn delete_bot(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BotDeleteResult>> {
    let message = format!("bot {id} deleted");
    with_bots(&state, move |store| store.delete_bot(&id)).await?;
    Ok(Json(BotDeleteResult { ok: true, message }))
}

/// Opens a long deal of a bot on one of the bot's symbols.
#[utoipa::path(
    post,
    path = "/api/v1/active-deals",
    tag = "active-deals",
    request_body = CreateDeal,
    responses(
        (status = 201, description = "The opened deal", body = ActiveDeal),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this `bot_id`", body = ErrorBody),
        (status = 422, description = "Invalid field, or a symbol that is not one of the \
            bot's", body = ErrorBody),
    )
)]
pub(crate) async fn create_deal(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateDeal>,
) -> ApiResult<(StatusCode, Json<ActiveDeal>)> {
    validate_symbol(&body.symbol).map_err(|error| ApiError::invalid_input(&error))?;
    let entry_price = checked_positive("entry_price", body.entry_price)?;
    let quantity = checked_positive("quantity", body.quantity)?;
    checked_cost(("entry_price", entry_price), ("quantity", quantity))?;
    let new = NewDeal {
        bot_id: body.bot_id,
        symbol: body.symbol,
        entry_price,
        quantity,
    };
    let deal = with_bots(&state, move |store| store.create_deal(&new)).await?;
    let price = latest_close(&state, &deal.symbol).await?;
    Ok((StatusCode::CREATED, Json(deal_view(deal, price))))
}

/// Lists active deals by id with their current price and pnl, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/active-deals",
    tag = "active-deals",
    params(ListDeals),
    responses(
        (status = 200, description = "A page of active deals with their current price and \
            pnl", body = DealList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No bot has this `bot_id`", body = ErrorBody),
        (status = 422, description = "Invalid limit or offset", body = ErrorBody),
    )
)]
pub(crate) async fn list_deals(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListDeals>,
) -> ApiResult<Json<DealList>> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let bot_id = query.bot_id;
    let page = with_bots(&state, move |store| {
        store.list_active_deals(bot_id.as_deref(), limit, offset)
    })
    .await?;
    let mut prices: HashMap<String, Option<LatestPrice>> = HashMap::new();
    let mut items = Vec::with_capacity(page.items.len());
    for deal in page.items {
        let price = match prices.get(&deal.symbol) {
            Some(price) => *price,
            None => {
                let price = latest_close(&state, &deal.symbol).await?;
                prices.insert(deal.symbol.clone(), price);
                price
            }
        };
        items.push(deal_view(deal, price));
    }
    Ok(Json(DealList {
        items,
        total: page.total,
    }))
}

/// Returns one deal, active, closed or cancelled.
#[utoipa::path(
    get,
    path = "/api/v1/active-deals/{id}",
    tag = "active-deals",
    params(("id" = String, Path, description = "Deal id, such as `deal_1`")),
    responses(
        (status = 200, description = "The deal, active, closed or cancelled", body = ActiveDeal),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No deal has this id", body = ErrorBody),
    )
)]
pub(crate) async fn get_deal(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ActiveDeal>> {
    let deal = with_bots(&state, move |store| store.get_deal(&id)).await?;
    let price = if deal.status == DealStatus::Active {
        latest_close(&state, &deal.symbol).await?
    } else {
        None
    };
    Ok(Json(deal_view(deal, price)))
}

/// Closes an active deal at the newest stored close of its symbol.
#[utoipa::path(
    post,
    path = "/api/v1/active-deals/{id}/close",
    tag = "active-deals",
    params(("id" = String, Path, description = "Deal id, such as `deal_1`")),
    responses(
        (status = 200, description = "The deal is closed at the newest stored close of its \
            symbol and leaves the active list", body = DealActionResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No deal has this id", body = ErrorBody),
        (status = 409, description = "The deal is closed or cancelled, or no bar of its \
            symbol is stored; the `detail` names the cause", body = ErrorBody),
    )
)]
pub(crate) async fn close_deal(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DealActionResult>> {
    let lookup_id = id.clone();
    let deal = with_bots(&state, move |store| store.get_deal(&lookup_id)).await?;
    let Some(price) = latest_close(&state, &deal.symbol).await? else {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            detail: format!(
                "cannot close deal {id}: no bar of linear {} is stored, so there is no price; \
                 store bars with GET /api/v1/marketdata/bybit/klines/fetch?persist=1 first",
                deal.symbol
            ),
        });
    };
    let deal = with_bots(&state, move |store| store.close_deal(&id, price.close)).await?;
    let pnl = deal.realized_pnl.unwrap_or_default();
    Ok(Json(DealActionResult {
        ok: true,
        action: "close",
        message: format!(
            "deal {} closed at {} with pnl {pnl} (entry price {}, quantity {})",
            deal.id, price.close, deal.entry_price, deal.quantity
        ),
    }))
}

/// Cancels an active deal without pnl.
#[utoipa::path(
    post,
    path = "/api/v1/active-deals/{id}/cancel",
    tag = "active-deals",
    params(("id" = String, Path, description = "Deal id, such as `deal_1`")),
    responses(
        (status = 200, description = "The deal is cancelled without pnl and leaves the active \
            list", body = DealActionResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No deal has this id", body = ErrorBody),
        (status = 409, description = "The deal is closed or cancelled; the `detail` names its \
            status", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_deal(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DealActionResult>> {
    let deal = with_bots(&state, move |store| store.cancel_deal(&id)).await?;
    Ok(Json(DealActionResult {
        ok: true,
        action: "cancel",
        message: format!("deal {} cancelled", deal.id),
    }))
}

/// Adds quantity at a price to an active deal and re-weights its entry price.
#[utoipa::path(
    post,
    path = "/api/v1/active-deals/{id}/average",
    tag = "active-deals",
    params(("id" = String, Path, description = "Deal id, such as `deal_1`")),
    request_body = AverageDeal,
    responses(
        (status = 200, description = "The quantity is added and the entry price re-weighted",
            body = DealActionResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No deal has this id", body = ErrorBody),
        (status = 409, description = "The deal is closed or cancelled; the `detail` names its \
            status", body = ErrorBody),
        (status = 422, description = "Invalid quantity or price", body = ErrorBody),
    )
)]
pub(crate) async fn average_deal(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AverageDeal>,
) -> ApiResult<Json<DealActionResult>> {
    let quantity = checked_positive("quantity", body.quantity)?;
    let price = checked_positive("price", body.price)?;
    checked_cost(("price", price), ("quantity", quantity))?;
    let deal = with_bots(&state, move |store| {
        store.average_deal(&id, quantity, price)
    })
    .await?;
    Ok(Json(DealActionResult {
        ok: true,
        action: "average",
        message: format!(
            "deal {} averaged: quantity {}, entry price {}",
            deal.id, deal.quantity, deal.entry_price
        ),
    }))
}

/// Runs a blocking bot or deal call of the store on the blocking thread pool.
async fn with_bots<T, F>(state: &AppState, call: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> BotResult<T> + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await?
        .map_err(|error| match error {
            BotError::NotFound { entity, id } => ApiError::not_found(entity, id),
            BotError::Conflict { message } => ApiError {
                status: StatusCode::CONFLICT,
                detail: message,
            },
            BotError::Store(error) => error.into(),
        })
}

/// Returns the close of the newest stored bar of a `linear` symbol over every stored
/// timeframe, by bar close time, or `None` when no bar is stored.
async fn latest_close(state: &AppState, symbol: &str) -> ApiResult<Option<LatestPrice>> {
    let mut latest: Option<LatestPrice> = None;
    for code in PRICE_TIMEFRAMES {
        let Ok(timeframe) = code.parse::<Timeframe>() else {
            continue;
        };
        let stored =
            kline_series_dir(state.engine.data_dir(), Category::Linear, symbol, timeframe).is_dir();
        if !stored {
            continue;
        }
        let series = SeriesKey {
            category: Category::Linear,
            symbol: symbol.to_string(),
            timeframe,
        };
        let bars = state.engine.recent_klines(&series, 1, None).await?;
        let Some(bar) = bars.first() else {
            continue;
        };
        let close_time_ms = timeframe.bar_end_ms(bar.open_time_ms);
        if latest.is_none_or(|latest| close_time_ms > latest.close_time_ms) {
            latest = Some(LatestPrice {
                close: bar.close,
                close_time_ms,
            });
        }
    }
    Ok(latest)
}

/// Shapes a deal with its pnl: at `price` while active, at the exit price once closed.
fn deal_view(deal: Deal, price: Option<LatestPrice>) -> ActiveDeal {
    let current = match deal.status {
        DealStatus::Active => price,
        DealStatus::Closed | DealStatus::Cancelled => None,
    };
    let pnl_price = match deal.status {
        DealStatus::Active => current.map(|price| price.close),
        DealStatus::Closed => deal.exit_price,
        DealStatus::Cancelled => None,
    };
    let pnl_abs = pnl_price.map(|price| (price - deal.entry_price) * deal.quantity);
    let pnl_pct = pnl_price.map(|price| (price - deal.entry_price) / deal.entry_price * 100.0);
    ActiveDeal {
        id: deal.id,
        bot_id: deal.bot_id,
        symbol: deal.symbol,
        entry_price: deal.entry_price,
        quantity: deal.quantity,
        next_open_price: None,
        current_price: current.map(|price| price.close),
        current_price_time: current
            .and_then(|price| DateTime::<Utc>::from_timestamp_millis(price.close_time_ms)),
        pnl_abs,
        pnl_pct,
        status: deal.status,
        opened_at: deal.opened_at,
        closed_at: deal.closed_at,
        exit_price: deal.exit_price,
    }
}

/// Trims a name and checks that it has 1 to [`MAX_NAME_CHARS`] characters.
fn checked_name(field: &str, text: &str) -> ApiResult<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(format!(
            "invalid {field} {}: expected 1 to {MAX_NAME_CHARS} characters",
            echoed(text)
        )));
    }
    Ok(trimmed.to_string())
}

/// Checks that a bot has 1 to [`MAX_BOT_SYMBOLS`] distinct valid symbols.
fn checked_symbols(symbols: Vec<String>) -> ApiResult<Vec<String>> {
    if symbols.is_empty() || symbols.len() > MAX_BOT_SYMBOLS {
        return Err(ApiError::unprocessable(format!(
            "invalid symbols: {} given, expected 1 to {MAX_BOT_SYMBOLS} symbols such as \
             [\"BTCUSDT\"]",
            symbols.len()
        )));
    }
    for (index, symbol) in symbols.iter().enumerate() {
        validate_symbol(symbol).map_err(|error| ApiError::invalid_input(&error))?;
        if symbols[..index].contains(symbol) {
            return Err(ApiError::unprocessable(format!(
                "invalid symbols: {symbol} is listed twice; list each symbol once"
            )));
        }
    }
    Ok(symbols)
}

/// Checks that a price, quantity or capital is finite and positive.
fn checked_positive(field: &str, value: f64) -> ApiResult<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ApiError::unprocessable(format!(
            "invalid {field} {}: expected a positive number",
            format_number(value)
        )))
    }
}

/// Checks that a price times a quantity is finite, because a deal whose cost overflows to
/// infinity would show a null entry price and pnl.
fn checked_cost(price: (&str, f64), quantity: (&str, f64)) -> ApiResult<()> {
    let (price_field, price) = price;
    let (quantity_field, quantity) = quantity;
    if (price * quantity).is_finite() {
        return Ok(());
    }
    Err(ApiError::unprocessable(format!(
        "invalid {quantity_field} {} at {price_field} {}: {price_field} x {quantity_field} \
         overflows to infinity; expected a product of at most {:e}",
        format_number(quantity),
        format_number(price),
        f64::MAX
    )))
}

/// Formats a number in scientific notation when plain digits would be longer than about 16
/// characters, so that 1e308 does not print as 309 digits.
fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e15).contains(&magnitude) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}
