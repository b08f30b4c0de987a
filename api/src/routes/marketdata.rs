//! `/marketdata/bybit/klines`: stored bars, newest first.

use axum::Json;
use axum::extract::State;
use bst_engine::SeriesKey;
use bst_engine::dataset::iso_ms;
use bst_ingest::Category;
use serde::{Deserialize, Serialize};

use super::backtests::parse_timeframe;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Default and largest number of bars returned.
const DEFAULT_KLINE_LIMIT: u64 = 200;
const MAX_KLINE_LIMIT: u64 = 1_000;

/// Query of `GET /marketdata/bybit/klines`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KlineQuery {
    symbol: String,
    /// Bybit interval code or alias; defaults to 1 minute.
    interval: Option<String>,
    category: Option<String>,
    limit: Option<u64>,
    /// Newest open time to return, in epoch milliseconds.
    start_time: Option<i64>,
}

/// One bar as the route returns it: `open_time` in ms and `timestamp` in ISO 8601.
#[derive(Debug, Serialize)]
pub(crate) struct KlineRow {
    symbol: String,
    interval: String,
    open_time: i64,
    timestamp: String,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    turnover: Option<f64>,
}

pub(crate) async fn klines(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<KlineQuery>,
) -> ApiResult<Json<Vec<KlineRow>>> {
    bst_ingest::layout::validate_symbol(&query.symbol)
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    let timeframe = parse_timeframe(query.interval.as_deref().unwrap_or("1"))?;
    let category = match query.category.as_deref() {
        None => Category::Linear,
        Some(text) => text
            .parse()
            .map_err(|error: bst_ingest::Error| ApiError::unprocessable(error.to_string()))?,
    };
    let limit = query.limit.unwrap_or(DEFAULT_KLINE_LIMIT);
    if limit == 0 || limit > MAX_KLINE_LIMIT {
        return Err(ApiError::unprocessable(format!(
            "invalid limit {limit}: expected 1 to {MAX_KLINE_LIMIT}"
        )));
    }

    let series = SeriesKey {
        category,
        symbol: query.symbol.clone(),
        timeframe,
    };
    let klines = state
        .engine
        .recent_klines(&series, limit as usize, query.start_time)
        .await?;
    let interval = timeframe.code();
    let rows = klines
        .into_iter()
        .map(|kline| KlineRow {
            symbol: query.symbol.clone(),
            interval: interval.clone(),
            open_time: kline.open_time_ms,
            timestamp: iso_ms(kline.open_time_ms),
            open: kline.open,
            high: kline.high,
            low: kline.low,
            close: kline.close,
            volume: kline.volume,
            turnover: kline.turnover,
        })
        .collect();
    Ok(Json(rows))
}
