//! `/backtests`: queue backtests, read them and their trades.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::backtest::{DEFAULT_COMMISSION, DEFAULT_INITIAL_CAPITAL};
use bst_engine::orders::{OrderOptions, strategy_and_orders};
use bst_engine::{BacktestRequest, SeriesKey, StrategySpec, TimeRange};
use bst_ingest::{Category, Timeframe};
use bst_query::{
    Backtest, BacktestFilter, BacktestOrder, BacktestStatus, NewBacktest, Page, Strategy, Trade,
    TradeFilter,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{DEFAULT_LIMIT, MAX_LIMIT, page_bounds};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Body of `POST /backtests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBacktest {
    strategy_id: i64,
    symbol: String,
    timeframe: String,
    start_date: String,
    end_date: String,
    #[serde(default)]
    initial_capital: Option<f64>,
    #[serde(default)]
    leverage: Option<f64>,
    #[serde(default)]
    commission: Option<f64>,
    #[serde(default)]
    config: Option<Value>,
}

/// Query of `GET /backtests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListBacktests {
    strategy_id: Option<i64>,
    symbol: Option<String>,
    status: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    order_by: Option<String>,
    order_dir: Option<String>,
}

/// Query of `GET /backtests/{id}/trades`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTrades {
    side: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// Default and largest page of trades.
const DEFAULT_TRADE_LIMIT: u64 = 1_000;
const MAX_TRADE_LIMIT: u64 = 10_000;

/// A trade as the contract shapes it: `price` is the entry price, `qty` the quantity and
/// `side` the entry order's side (`buy` opens a long, `sell` a short).
#[derive(Debug, Serialize)]
pub(crate) struct TradeView {
    id: i64,
    backtest_id: i64,
    entry_time: DateTime<Utc>,
    exit_time: DateTime<Utc>,
    price: f64,
    qty: f64,
    side: &'static str,
    position: String,
    pnl: f64,
    pnl_pct: f64,
    entry_price: f64,
    exit_price: f64,
    quantity: f64,
    commission: f64,
    /// Funding paid while the position was open, in quote currency (negative when received).
    funding: f64,
    exit_reason: String,
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

pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBacktest>,
) -> ApiResult<(StatusCode, Json<Backtest>)> {
    let timeframe = parse_timeframe(&body.timeframe)?;
    let start = parse_datetime("start_date", &body.start_date)?;
    let end = parse_datetime("end_date", &body.end_date)?;
    if start >= end {
        return Err(ApiError::unprocessable(format!(
            "invalid range: start_date {} must be before end_date {}",
            body.start_date, body.end_date
        )));
    }
    let overrides = match body.config {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "invalid config {other}: expected a JSON object of strategy parameters"
            )));
        }
    };

    let strategy_id = body.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let (strategy_spec, orders) = resolve_strategy(&strategy, &overrides)?;
    let mut request = BacktestRequest::new(
        SeriesKey {
            category: Category::Linear,
            symbol: body.symbol.clone(),
            timeframe,
        },
        strategy_spec,
    );
    request.orders = orders;
    request.range = TimeRange {
        start_ms: Some(start.timestamp_millis()),
        end_ms: Some(end.timestamp_millis()),
    };
    request.initial_capital = body.initial_capital.unwrap_or(DEFAULT_INITIAL_CAPITAL);
    request.commission = body.commission.unwrap_or(DEFAULT_COMMISSION);
    request.leverage = body.leverage.unwrap_or(1.0);
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
            start.to_rfc3339(),
            end.to_rfc3339()
        )));
    }

    let new = NewBacktest {
        strategy_id,
        symbol: request.series.symbol,
        timeframe: timeframe.code(),
        start_date: start,
        end_date: end,
        initial_capital: request.initial_capital,
        leverage: request.leverage,
        commission: request.commission,
        config: Value::Object(overrides),
    };
    let backtest = state
        .with_store(move |store| store.create_backtest(&new, Utc::now()))
        .await?;
    tracing::info!(backtest_id = backtest.id, strategy_id, "backtest queued");
    state.jobs_queued.notify_one();
    Ok((StatusCode::CREATED, Json(backtest)))
}

/// Resolves a backtest's strategy: the strategy's `config`, overridden key by key by the
/// backtest's own `config`.
pub(crate) fn resolve_strategy(
    strategy: &Strategy,
    overrides: &Map<String, Value>,
) -> ApiResult<(StrategySpec, OrderOptions)> {
    let mut params = match &strategy.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    params.extend(
        overrides
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    Ok(strategy_and_orders(
        &strategy.strategy_type,
        &Value::Object(params),
    )?)
}

pub(crate) fn parse_timeframe(text: &str) -> ApiResult<Timeframe> {
    text.parse::<Timeframe>().map_err(|_| {
        ApiError::unprocessable(format!(
            "invalid timeframe {text:?}: expected one of {}",
            bst_ingest::layout::TIMEFRAME_CODES
        ))
    })
}

fn parse_datetime(field: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    bst_engine::time::parse_utc(text).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "invalid {field} {text:?}: expected {}",
            bst_engine::time::DATETIME_FORMS
        ))
    })
}

pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Backtest>> {
    state
        .with_store(move |store| store.get_backtest(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("backtest", id))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListBacktests>,
) -> ApiResult<Json<Page<Backtest>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset, DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<BacktestStatus>)
        .transpose()?;
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
    Ok(Json(
        state
            .with_store(move |store| store.list_backtests(&filter))
            .await?,
    ))
}

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
    let side = match query.side.as_deref() {
        None => None,
        Some("buy" | "LONG" | "long") => Some("long".to_string()),
        Some("sell" | "SHORT" | "short") => Some("short".to_string()),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "invalid side {other:?}: expected buy, sell, LONG or SHORT"
            )));
        }
    };
    let filter = TradeFilter {
        side,
        limit,
        offset,
    };
    let trades = state
        .with_store(move |store| {
            if store.get_backtest(id)?.is_none() {
                return Err(bst_query::Error::NotFound {
                    entity: "backtest",
                    id,
                });
            }
            store.list_trades(id, &filter)
        })
        .await?;
    Ok(Json(trades.into_iter().map(TradeView::from).collect()))
}
