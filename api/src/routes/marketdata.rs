//! `/marketdata`: stored bars newest first, bars fetched from Bybit's v5 REST API, and the
//! list of stored kline series.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_engine::SeriesKey;
use bst_engine::dataset::iso_ms;
use bst_ingest::bybit_rest::{BASE_URL_ENV, BybitRestClient, ClientConfig, DEFAULT_BASE_URL};
use bst_ingest::{Category, Kline, Timeframe};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::flight::tickets::DatasetSeries;
use crate::state::AppState;

/// Default and largest number of bars returned.
const DEFAULT_KLINE_LIMIT: u64 = 200;
const MAX_KLINE_LIMIT: u64 = 1_000;

/// Attempts of one Bybit request from the fetch route, the first one included. Fewer than
/// the command-line backfill makes, so that a failing Bybit gets a 502 within seconds.
const FETCH_MAX_ATTEMPTS: u32 = 3;

/// Backoff before the first retry of the fetch route, doubled for the next.
const FETCH_RETRY_BASE_DELAY: Duration = Duration::from_millis(250);

/// Upper bound of one backoff of the fetch route, including a wait for a rate limit reset.
const FETCH_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Query of `GET /marketdata/bybit/klines`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct KlineQuery {
    /// Bybit symbol, such as `BTCUSDT`.
    symbol: String,
    /// Bybit interval code (`1`, `3`, `5`, `15`, `30`, `60`, `120`, `240`, `360`, `720`,
    /// `D`, `W`, `M`) or alias (`1m`, `1h`, `1d`, ...). Default `1` (one minute).
    interval: Option<String>,
    /// Bybit category: `linear`, `spot` or `inverse` (default `linear`).
    category: Option<String>,
    /// Number of bars, 1 to 1000 (default 200).
    limit: Option<u64>,
    /// Newest open time to return, in epoch milliseconds.
    start_time: Option<i64>,
}

/// Query of `GET /marketdata/bybit/klines/fetch`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FetchQuery {
    /// Bybit symbol, such as `BTCUSDT`.
    symbol: String,
    /// Bybit interval code (`1`, `3`, `5`, `15`, `30`, `60`, `120`, `240`, `360`, `720`,
    /// `D`, `W`, `M`) or alias (`1m`, `1h`, `1d`, ...).
    interval: String,
    /// Bybit category: `linear`, `spot` or `inverse` (default `linear`).
    category: Option<String>,
    /// Number of closed bars, 1 to 1000 (default 200).
    limit: Option<u64>,
    /// `1` stores the fetched bars in the dataset, `0` (the default) does not.
    persist: Option<String>,
}

/// One bar as the market data routes return it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KlineRow {
    /// Bybit symbol, such as `BTCUSDT`.
    symbol: String,
    /// Bybit interval code of the bar, such as `1` or `D`.
    interval: String,
    /// Open time of the bar, in epoch milliseconds.
    open_time: i64,
    /// Open time of the bar, ISO 8601 UTC.
    timestamp: String,
    /// First trade price of the bar, in quote currency.
    open: f64,
    /// Highest trade price of the bar, in quote currency.
    high: f64,
    /// Lowest trade price of the bar, in quote currency.
    low: f64,
    /// Last trade price of the bar, in quote currency.
    close: f64,
    /// Traded quantity, in the base coin (in contracts for inverse).
    volume: f64,
    /// Traded value, in quote currency (in the base coin for inverse), or null when the
    /// source did not report it.
    turnover: Option<f64>,
}

impl KlineRow {
    fn new(symbol: &str, interval: &str, kline: &Kline) -> Self {
        Self {
            symbol: symbol.to_string(),
            interval: interval.to_string(),
            open_time: kline.open_time_ms,
            timestamp: iso_ms(kline.open_time_ms),
            open: kline.open,
            high: kline.high,
            low: kline.low,
            close: kline.close,
            volume: kline.volume,
            turnover: kline.turnover,
        }
    }
}

/// One stored kline series.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StoredSeries {
    /// Bybit category: `linear`, `spot` or `inverse`.
    category: String,
    /// Bybit symbol, such as `BTCUSDT`.
    symbol: String,
    /// Bybit interval code of the bars, such as `1` or `D`.
    interval: String,
    /// Open time of the first stored bar, ISO 8601 UTC.
    first_open_time: String,
    /// Open time of the first stored bar, in epoch milliseconds.
    first_open_time_ms: i64,
    /// Open time of the last stored bar, ISO 8601 UTC.
    last_open_time: String,
    /// Open time of the last stored bar, in epoch milliseconds.
    last_open_time_ms: i64,
    /// Number of stored bars.
    rows: i64,
}

/// Returns stored bars of one series, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/marketdata/bybit/klines",
    tag = "marketdata",
    params(KlineQuery),
    responses(
        (status = 200, description = "Stored bars, newest first", body = Vec<KlineRow>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Invalid symbol, interval, category or limit; \
            the `detail` names it", body = ErrorBody),
    )
)]
pub(crate) async fn klines(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<KlineQuery>,
) -> ApiResult<Json<Vec<KlineRow>>> {
    check_symbol(&query.symbol)?;
    let timeframe = parse_interval(query.interval.as_deref().unwrap_or("1"))?;
    let category = parse_category(query.category.as_deref())?;
    let limit = checked_limit(query.limit)?;

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
        .iter()
        .map(|kline| KlineRow::new(&query.symbol, &interval, kline))
        .collect();
    Ok(Json(rows))
}

/// Fetches the newest closed bars from Bybit's v5 REST API, and stores them with `persist=1`.
#[utoipa::path(
    get,
    path = "/api/v1/marketdata/bybit/klines/fetch",
    tag = "marketdata",
    params(FetchQuery),
    responses(
        (status = 200, description = "The newest closed bars from Bybit's v5 REST API, newest \
            first", body = Vec<KlineRow>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Invalid symbol, interval, category, limit or persist; \
            the `detail` names it", body = ErrorBody),
        (status = 502, description = "Bybit failed: a non-zero retCode, an HTTP error after \
            retries, or no connection", body = ErrorBody),
    )
)]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FetchQuery>,
) -> ApiResult<Json<Vec<KlineRow>>> {
    check_symbol(&query.symbol)?;
    let timeframe = parse_interval(&query.interval)?;
    let category = parse_category(query.category.as_deref())?;
    let limit = checked_limit(query.limit)? as usize;
    let persist = match query.persist.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "invalid persist {other:?}: expected 0 or 1"
            )));
        }
    };

    let client = bybit_client()?;
    // Bybit counts the bar still open in `limit` and the client drops it, so one more bar is
    // requested to return `limit` closed bars.
    let request_limit = (limit + 1).min(MAX_KLINE_LIMIT as usize) as u32;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = client
        .fetch_klines(category, &query.symbol, timeframe, 0, now_ms, request_limit)
        .await
        .map_err(|error| bybit_error(&query.symbol, &error))?;
    let klines = &body.klines[body.klines.len().saturating_sub(limit)..];

    if persist {
        let data_dir = state.engine.data_dir().to_path_buf();
        let symbol = query.symbol.clone();
        let rows = klines.to_vec();
        let report = tokio::task::spawn_blocking(move || {
            bst_ingest::writer::write_klines(&data_dir, category, &symbol, timeframe, &rows)
        })
        .await?
        .map_err(|error| persist_error(&query.symbol, &error))?;
        tracing::info!(
            %category,
            symbol = %query.symbol,
            interval = %timeframe.code(),
            fetched = klines.len(),
            written = report.rows_written,
            "stored bars fetched from Bybit"
        );
    }

    let interval = timeframe.code();
    let rows = klines
        .iter()
        .rev()
        .map(|kline| KlineRow::new(&query.symbol, &interval, kline))
        .collect();
    Ok(Json(rows))
}

/// Lists every stored kline series with its first and last open time and row count.
#[utoipa::path(
    get,
    path = "/api/v1/marketdata/datasets",
    tag = "marketdata",
    responses(
        (status = 200, description = "Every stored kline series with its first and last open \
            time and row count, sorted by category, symbol and interval",
            body = Vec<StoredSeries>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub(crate) async fn datasets(State(state): State<AppState>) -> ApiResult<Json<Vec<StoredSeries>>> {
    // The Flight listing computes the same summaries, so both APIs report the same numbers.
    let infos = crate::flight::datasets::list(state.engine.session(), state.engine.data_dir())
        .await
        .map_err(|error| ApiError::internal("dataset listing", &error))?;
    let mut series = Vec::with_capacity(infos.len());
    for info in infos {
        let Some(descriptor) = &info.flight_descriptor else {
            continue;
        };
        let Ok(DatasetSeries::Klines {
            category,
            symbol,
            timeframe,
        }) = DatasetSeries::from_path(&descriptor.path)
        else {
            continue;
        };
        let metadata: serde_json::Value = serde_json::from_slice(&info.app_metadata)
            .map_err(|error| ApiError::internal("dataset listing metadata", &error))?;
        let first_open_time = metadata_time(&metadata, "first_open_time")?;
        let last_open_time = metadata_time(&metadata, "last_open_time")?;
        series.push(StoredSeries {
            category: category.to_string(),
            symbol,
            interval: timeframe.code(),
            first_open_time: iso_ms(first_open_time),
            first_open_time_ms: first_open_time,
            last_open_time: iso_ms(last_open_time),
            last_open_time_ms: last_open_time,
            rows: info.total_records,
        });
    }
    Ok(Json(series))
}

/// Reads an ISO 8601 time of the Flight listing's metadata as epoch milliseconds.
fn metadata_time(metadata: &serde_json::Value, field: &str) -> ApiResult<i64> {
    let text = metadata.get(field).and_then(serde_json::Value::as_str);
    let time = text.and_then(|text| DateTime::parse_from_rfc3339(text).ok());
    time.map(|time| time.timestamp_millis()).ok_or_else(|| {
        let error = std::io::Error::other(format!("no ISO 8601 {field} in {metadata}"));
        ApiError::internal("dataset listing metadata", &error)
    })
}

fn check_symbol(symbol: &str) -> ApiResult<()> {
    bst_ingest::layout::validate_symbol(symbol)
        .map_err(|error| ApiError::unprocessable(error.to_string()))
}

fn parse_interval(text: &str) -> ApiResult<Timeframe> {
    text.parse().map_err(|_| {
        ApiError::unprocessable(format!(
            "invalid interval {text:?}: expected one of the timeframe codes {}",
            bst_ingest::layout::TIMEFRAME_CODES
        ))
    })
}

fn parse_category(text: Option<&str>) -> ApiResult<Category> {
    match text {
        None => Ok(Category::Linear),
        Some(text) => text
            .parse()
            .map_err(|error: bst_ingest::Error| ApiError::unprocessable(error.to_string())),
    }
}

fn checked_limit(limit: Option<u64>) -> ApiResult<u64> {
    let limit = limit.unwrap_or(DEFAULT_KLINE_LIMIT);
    if limit == 0 || limit > MAX_KLINE_LIMIT {
        return Err(ApiError::unprocessable(format!(
            "invalid limit {limit}: expected 1 to {MAX_KLINE_LIMIT}"
        )));
    }
    Ok(limit)
}

/// Returns the process's Bybit client, created on first use with the base URL of
/// `BYBIT_REST_URL` (default Bybit's mainnet). A later change of the variable is not seen.
fn bybit_client() -> ApiResult<&'static BybitRestClient> {
    static CLIENT: OnceLock<Option<BybitRestClient>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let base_url =
            std::env::var(BASE_URL_ENV).unwrap_or_else(|_| DEFAULT_BASE_URL.to_string());
        let config = ClientConfig {
            base_url,
            max_attempts: FETCH_MAX_ATTEMPTS,
            retry_base_delay: FETCH_RETRY_BASE_DELAY,
            retry_max_delay: FETCH_RETRY_MAX_DELAY,
            ..ClientConfig::default()
        };
        match BybitRestClient::new(config) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(%error, "cannot create the Bybit REST client; check {BASE_URL_ENV}");
                None
            }
        }
    });
    client.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        detail: "the Bybit REST client is not configured; the server log has the cause".to_string(),
    })
}

/// Classifies a failed Bybit request: Bybit's own failures are 502 with their message, and
/// anything else is internal.
fn bybit_error(symbol: &str, error: &bst_ingest::Error) -> ApiError {
    match error {
        bst_ingest::Error::Bybit { .. }
        | bst_ingest::Error::Http { .. }
        | bst_ingest::Error::RetriesExhausted { .. }
        | bst_ingest::Error::InvalidBody { .. } => {
            tracing::warn!(%error, symbol, "Bybit kline request failed");
            ApiError {
                status: StatusCode::BAD_GATEWAY,
                detail: format!("Bybit kline request for {symbol} failed: {error}"),
            }
        }
        bst_ingest::Error::InvalidValue { .. } => ApiError::unprocessable(error.to_string()),
        other => ApiError::internal("Bybit kline request", other),
    }
}

/// Classifies a failed write of fetched bars: a bar that fails validation came from Bybit,
/// so it is a 502; I/O and Parquet errors are internal.
fn persist_error(symbol: &str, error: &bst_ingest::Error) -> ApiError {
    match error {
        bst_ingest::Error::InvalidValue { .. } => {
            tracing::warn!(%error, symbol, "Bybit returned a bar that cannot be stored");
            ApiError {
                status: StatusCode::BAD_GATEWAY,
                detail: format!("Bybit returned a bar of {symbol} that cannot be stored: {error}"),
            }
        }
        other => ApiError::internal("storing fetched bars", other),
    }
}
