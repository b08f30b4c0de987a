//! Routes of external workers: `POST /backtests/{id}/claim` takes a backtest, and
//! `POST /backtests/{id}/results` stores its metrics and trades and completes it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bst_query::{
    Backtest, BacktestOutcome, BacktestStatus, ClaimOutcome, EquityPoint, ExtendedMetrics, NewTrade,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{iso, merged_config, parse_datetime, position_of_side};
use crate::error::{ApiError, ApiResult, ErrorBody, echoed};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Body of `POST /backtests/{id}/claim`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimRequest {
    /// The worker's current time, ISO 8601 (UTC when it has no offset). It becomes the
    /// backtest's `started_at`, and a running backtest whose `started_at` is at least the
    /// server's claim stale time before it may be claimed again. It may be at most 1 day
    /// after the server's clock, and any time before it. Default: the server's clock.
    #[serde(default)]
    now: Option<String>,
}

/// Maximum amount by which a claim's `now` may be ahead of the server's clock. A `now` far
/// in the future would become a `started_at` that no later claim treats as stale, so the
/// backtest could never be claimed again. An earlier `now` is accepted, because it only
/// makes the claim stale sooner.
pub(crate) const MAX_CLAIM_CLOCK_AHEAD: TimeDelta = TimeDelta::days(1);

/// Result of a claim, as the `status` of [`ClaimResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClaimStatus {
    /// The caller claimed the backtest and should run it and post its results.
    Claimed,
    /// Another worker claimed the backtest, and its claim is not stale yet.
    Running,
    /// The backtest already has results.
    Completed,
    /// No backtest has this id.
    NotFound,
    /// The backtest failed or was cancelled, so it cannot be claimed.
    Error,
}

/// Response of `POST /backtests/{id}/claim`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClaimResponse {
    /// Result of the claim.
    status: ClaimStatus,
    /// The backtest after the claim, absent for `not_found`.
    #[serde(skip_serializing_if = "Option::is_none")]
    backtest: Option<Backtest>,
    /// Reason the claim did not succeed, as text, absent for `claimed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The same text as `message` for `not_found` and `error`, the field every error body
    /// has.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Claims a backtest for an external worker.
///
/// Of many concurrent claims of one queued backtest exactly one gets `claimed`. `not_found`
/// comes with status 404, `error` with 409 and the other results with 200.
#[utoipa::path(
    post,
    path = "/api/v1/backtests/{id}/claim",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "`claimed`, `running` or `completed`", body = ClaimResponse),
        (status = 404, description = "`not_found`", body = ClaimResponse),
        (status = 409, description = "`error`: the backtest failed or was cancelled",
            body = ClaimResponse),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn claim(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> ApiResult<(StatusCode, Json<ClaimResponse>)> {
    let server_now = Utc::now();
    let now = match &body.now {
        Some(text) => claim_time(text, server_now)?,
        None => server_now,
    };
    let outcome = state
        .with_store(move |store| store.claim_backtest_for_worker(id, now))
        .await;
    let (status, response) = match outcome {
        Ok(ClaimOutcome::Claimed(backtest)) => {
            (StatusCode::OK, answer(ClaimStatus::Claimed, backtest, None))
        }
        Ok(ClaimOutcome::Running(backtest)) => {
            let message = format!(
                "backtest {id} is running under a claim from {}",
                backtest
                    .started_at
                    .map_or_else(|| "an unknown time".to_string(), iso)
            );
            (
                StatusCode::OK,
                answer(ClaimStatus::Running, backtest, Some(message)),
            )
        }
        Ok(ClaimOutcome::Completed(backtest)) => {
            let message = format!("backtest {id} is already completed");
            (
                StatusCode::OK,
                answer(ClaimStatus::Completed, backtest, Some(message)),
            )
        }
        Ok(ClaimOutcome::Ended(backtest)) => {
            let message = format!(
                "backtest {id} is {}, so it cannot be claimed; queue a new backtest",
                backtest.status
            );
            let mut response = answer(ClaimStatus::Error, backtest, Some(message.clone()));
            response.detail = Some(message);
            (StatusCode::CONFLICT, response)
        }
        Err(error) if error.status == StatusCode::NOT_FOUND => {
            let response = ClaimResponse {
                status: ClaimStatus::NotFound,
                backtest: None,
                message: Some(error.detail.clone()),
                detail: Some(error.detail),
            };
            (StatusCode::NOT_FOUND, response)
        }
        Err(error) => return Err(error),
    };
    Ok((status, Json(response)))
}

/// Parses a claim's `now` and checks that it is at most [`MAX_CLAIM_CLOCK_AHEAD`] after
/// `server_now`.
fn claim_time(text: &str, server_now: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    let now = parse_datetime("now", text)?;
    let latest = server_now + MAX_CLAIM_CLOCK_AHEAD;
    if now > latest {
        return Err(ApiError::unprocessable(format!(
            "invalid now {}: it is more than {} hours after the server's clock {}; send the \
             worker's current time, at most {}",
            echoed(text),
            MAX_CLAIM_CLOCK_AHEAD.num_hours(),
            iso(server_now),
            iso(latest)
        )));
    }
    Ok(now)
}

fn answer(status: ClaimStatus, backtest: Backtest, message: Option<String>) -> ClaimResponse {
    ClaimResponse {
        status,
        backtest: Some(backtest),
        message,
        detail: None,
    }
}

/// Body of `POST /backtests/{id}/results`: the metrics as flat fields, as `GET
/// /backtests/{id}` returns them, and optionally the trades and the equity curve.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BacktestResults {
    /// Equity at the end of the range, in quote currency, at least 0.
    final_capital: f64,
    /// Return over the range, in percent (12.5 means 12.5 %), at least -100.
    total_return: f64,
    /// Closed trades, as a count that equals the length of `trades` when `trades` is given.
    total_trades: u64,
    /// Trades with a positive pnl, as a count.
    winning_trades: u64,
    /// Trades with a negative pnl, as a count.
    losing_trades: u64,
    /// Winning trades over all trades, in percent from 0 to 100.
    #[serde(default)]
    win_rate: Option<f64>,
    /// Annualized Sharpe ratio of per-bar returns, unitless.
    #[serde(default)]
    sharpe_ratio: Option<f64>,
    /// Largest peak-to-trough fall of the equity curve, in percent from 0 to 100.
    #[serde(default)]
    max_drawdown: Option<f64>,
    /// Bars the worker read, as a count.
    #[serde(default)]
    bars: Option<i64>,
    /// Ratio of the mean per-bar return to its downside deviation, annualized, unitless.
    #[serde(default)]
    sortino_ratio: Option<f64>,
    /// Ratio of the annualized return to the maximum drawdown, unitless.
    #[serde(default)]
    calmar_ratio: Option<f64>,
    /// Sum of positive trade pnl over minus the sum of negative trade pnl, unitless.
    #[serde(default)]
    profit_factor: Option<f64>,
    /// Mean pnl per trade, in quote currency.
    #[serde(default)]
    expectancy: Option<f64>,
    /// Mean `pnl_pct` of the trades, in percent.
    #[serde(default)]
    avg_trade_pct: Option<f64>,
    /// Largest positive trade pnl, in quote currency.
    #[serde(default)]
    largest_win: Option<f64>,
    /// Most negative trade pnl, in quote currency.
    #[serde(default)]
    largest_loss: Option<f64>,
    /// Length of the longest drawdown, in bars.
    #[serde(default)]
    max_drawdown_duration_bars: Option<i64>,
    /// Length of the longest drawdown, in seconds.
    #[serde(default)]
    max_drawdown_duration_seconds: Option<i64>,
    /// Bars whose close found a position open, in percent of all bars.
    #[serde(default)]
    exposure_pct: Option<f64>,
    /// Return of buying at the first open and selling at the last close, in percent, at
    /// least -100.
    #[serde(default)]
    buy_and_hold_return: Option<f64>,
    /// Commission of every fill, in quote currency.
    #[serde(default)]
    total_commission: Option<f64>,
    /// Funding paid by all trades, in quote currency (negative when received).
    #[serde(default)]
    total_funding: Option<f64>,
    /// Trades closed by liquidation, as a count.
    #[serde(default)]
    liquidations: Option<i64>,
    /// Resolved parameters the worker ran with, as a JSON object. Default: the strategy's
    /// `config` overridden by the backtest's.
    #[serde(default)]
    params: Option<Value>,
    /// Name and version of the worker's engine, as text of up to 100 characters. Default:
    /// `external`.
    #[serde(default)]
    engine_version: Option<String>,
    /// Open time of the first bar the worker read, ISO 8601 (UTC when it has no offset).
    #[serde(default)]
    data_start: Option<String>,
    /// Open time of the last bar the worker read, ISO 8601 (UTC when it has no offset).
    #[serde(default)]
    data_end: Option<String>,
    /// Closed trades. Stored trades of an earlier attempt are replaced. Default: none.
    #[serde(default)]
    trades: Option<Vec<ResultTrade>>,
    /// Equity at each bar's close, with strictly increasing open times. Default: none.
    #[serde(default)]
    equity: Vec<ResultEquityPoint>,
}

/// A closed trade in a results body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultTrade {
    /// Time of the entry fill, ISO 8601 (UTC when it has no offset).
    entry_time: String,
    /// Time of the exit fill, not before `entry_time`, ISO 8601 (UTC when it has no offset).
    exit_time: String,
    /// Direction: `long`, `short`, `LONG`, `SHORT`, `buy` (a long) or `sell` (a short).
    side: String,
    /// Entry fill price, in quote currency per unit of the base asset, above 0. `price` is
    /// accepted as another name.
    #[serde(alias = "price")]
    entry_price: f64,
    /// Exit fill price, in quote currency per unit of the base asset, above 0.
    exit_price: f64,
    /// Position size, in units of the base asset, above 0. `qty` is accepted as another name.
    #[serde(alias = "qty")]
    quantity: f64,
    /// Profit or loss after commission and funding, in quote currency.
    pnl: f64,
    /// Profit or loss relative to the equity committed at entry, in percent.
    pnl_pct: f64,
    /// Commission of both fills, in quote currency, at least 0. Default: 0.
    #[serde(default)]
    commission: f64,
    /// Funding paid while the position was open, in quote currency (negative when received).
    /// Default: 0.
    #[serde(default)]
    funding: f64,
    /// Why the position closed: signal, stop_loss, take_profit, liquidation or end_of_data.
    /// Default: signal.
    #[serde(default)]
    exit_reason: Option<String>,
}

/// A point of the equity curve in a results body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultEquityPoint {
    /// Open time of the bar, ISO 8601 (UTC when it has no offset).
    open_time: String,
    /// Equity at the bar's close, in quote currency, at least 0.
    equity: f64,
    /// Fall below the highest equity so far, in percent from 0 to 100.
    drawdown: f64,
}

/// Accepted exit reasons, the engine's names.
const EXIT_REASONS: [&str; 5] = [
    "signal",
    "stop_loss",
    "take_profit",
    "liquidation",
    "end_of_data",
];

/// Longest accepted `engine_version`, in characters.
const MAX_ENGINE_VERSION_CHARS: usize = 100;

/// Stores the results of a backtest that an external worker ran, and completes it.
///
/// The backtest must be running, that is claimed through `POST /backtests/{id}/claim`. The
/// metrics, trades and equity curve are stored in one transaction.
#[utoipa::path(
    post,
    path = "/api/v1/backtests/{id}/results",
    tag = "backtests",
    params(("id" = i64, Path, description = "Backtest id")),
    request_body = BacktestResults,
    responses(
        (status = 200, description = "The completed backtest", body = Backtest),
        (status = 404, description = "No backtest has this id", body = ErrorBody),
        (status = 409, description = "The backtest is not running, and `detail` names its status",
            body = ErrorBody),
        (status = 422, description = "The body does not validate, and `detail` names the field",
            body = ErrorBody),
    )
)]
pub(crate) async fn results(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<BacktestResults>,
) -> ApiResult<Json<Backtest>> {
    let stored = state
        .with_store(move |store| store.get_backtest(id))
        .await?
        .ok_or_else(|| ApiError::not_found("backtest", id))?;
    if stored.status != BacktestStatus::Running {
        return Err(not_running(id, stored.status));
    }
    let params = match body.params.clone() {
        Some(params) => params,
        None => default_params(&state, &stored).await?,
    };
    let (outcome, trades, equity) = outcome_of(body, params)?;
    let now = Utc::now();
    let completed = state
        .with_store(move |store| store.complete_backtest(id, &outcome, &trades, &equity, now))
        .await;
    match completed {
        Ok(backtest) => Ok(Json(backtest)),
        Err(error) if error.status == StatusCode::CONFLICT => {
            // Another request changed the status after the read above.
            let status = state
                .with_store(move |store| store.get_backtest(id))
                .await?
                .map_or(BacktestStatus::Running, |backtest| backtest.status);
            Err(not_running(id, status))
        }
        Err(error) => Err(error),
    }
}

fn not_running(id: i64, status: BacktestStatus) -> ApiError {
    let next_step = match status {
        BacktestStatus::Queued => format!("claim it with POST /api/v1/backtests/{id}/claim first"),
        _ => "results are accepted only for a running backtest".to_string(),
    };
    ApiError {
        status: StatusCode::CONFLICT,
        detail: format!("backtest {id} is {status}, so it cannot take results; {next_step}"),
    }
}

/// Returns the strategy's `config` overridden by the backtest's, the parameters a worker runs
/// with when it reports none.
async fn default_params(state: &AppState, backtest: &Backtest) -> ApiResult<Value> {
    let strategy_id = backtest.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let overrides = match &backtest.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    Ok(merged_config(&strategy, &overrides))
}

/// Checks a results body and converts it into the rows the store keeps.
fn outcome_of(
    body: BacktestResults,
    params: Value,
) -> ApiResult<(BacktestOutcome, Vec<NewTrade>, Vec<EquityPoint>)> {
    check_metrics(&body)?;
    if !params.is_object() {
        return Err(ApiError::unprocessable(format!(
            "invalid params {}: expected a JSON object",
            echoed(&params.to_string())
        )));
    }
    let engine_version = body
        .engine_version
        .unwrap_or_else(|| "external".to_string());
    if engine_version.trim().is_empty() || engine_version.chars().count() > MAX_ENGINE_VERSION_CHARS
    {
        return Err(ApiError::unprocessable(format!(
            "invalid engine_version {}: expected 1 to {MAX_ENGINE_VERSION_CHARS} characters",
            echoed(&engine_version)
        )));
    }
    let data_start = optional_datetime("data_start", body.data_start.as_deref())?;
    let data_end = optional_datetime("data_end", body.data_end.as_deref())?;
    if let (Some(start), Some(end)) = (data_start, data_end)
        && start > end
    {
        return Err(ApiError::unprocessable(format!(
            "invalid data_end {}: expected a time not before data_start {}",
            iso(end),
            iso(start)
        )));
    }

    let trades = match body.trades {
        Some(trades) => {
            if trades.len() as u64 != body.total_trades {
                return Err(ApiError::unprocessable(format!(
                    "invalid total_trades {}: the body has {} trades; send them all or omit \
                     trades",
                    body.total_trades,
                    trades.len()
                )));
            }
            trades
                .into_iter()
                .enumerate()
                .map(|(index, trade)| trade_of(index, trade))
                .collect::<ApiResult<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    let equity = body
        .equity
        .into_iter()
        .enumerate()
        .map(|(index, point)| {
            Ok(EquityPoint {
                open_time: parse_datetime(&format!("equity[{index}].open_time"), &point.open_time)?,
                equity: point.equity,
                drawdown: point.drawdown,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;

    let extended = ExtendedMetrics {
        bars: body.bars,
        sortino_ratio: body.sortino_ratio,
        calmar_ratio: body.calmar_ratio,
        profit_factor: body.profit_factor,
        expectancy: body.expectancy,
        avg_trade_pct: body.avg_trade_pct,
        largest_win: body.largest_win,
        largest_loss: body.largest_loss,
        max_drawdown_duration_bars: body.max_drawdown_duration_bars,
        max_drawdown_duration_seconds: body.max_drawdown_duration_seconds,
        exposure_pct: body.exposure_pct,
        buy_and_hold_return: body.buy_and_hold_return,
        total_commission: body.total_commission,
        total_funding: body.total_funding,
        liquidations: body.liquidations,
    };
    let metrics = serde_json::to_value(&extended)
        .map_err(|error| ApiError::internal("serializing metrics", &error))?;
    let outcome = BacktestOutcome {
        final_capital: body.final_capital,
        total_return: body.total_return,
        total_trades: count("total_trades", body.total_trades)?,
        winning_trades: count("winning_trades", body.winning_trades)?,
        losing_trades: count("losing_trades", body.losing_trades)?,
        win_rate: body.win_rate,
        sharpe_ratio: body.sharpe_ratio,
        max_drawdown: body.max_drawdown,
        metrics,
        params,
        engine_version,
        data_start,
        data_end,
    };
    Ok((outcome, trades, equity))
}

/// Accepted values of a number in a results body: `min` to `max`, both included, in `unit`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: f64,
    max: f64,
    unit: &'static str,
}

/// Any finite number.
const FINITE: Bounds = Bounds {
    min: f64::MIN,
    max: f64::MAX,
    unit: "",
};

/// An amount of quote currency or a ratio that cannot be negative.
const NON_NEGATIVE: Bounds = Bounds {
    min: 0.0,
    max: f64::MAX,
    unit: "",
};

/// A share of a whole, such as a win rate or a drawdown.
const PERCENT: Bounds = Bounds {
    min: 0.0,
    max: 100.0,
    unit: " percent",
};

/// A return: losing everything is -100 %, and there is no upper bound.
const RETURN_PERCENT: Bounds = Bounds {
    min: -100.0,
    max: f64::MAX,
    unit: " percent",
};

/// Checks that `value` is finite and within `bounds`, with a 422 naming `field`, the value
/// and the bounds otherwise.
fn check_number(field: &str, value: f64, bounds: Bounds) -> ApiResult<()> {
    if value.is_finite() && (bounds.min..=bounds.max).contains(&value) {
        return Ok(());
    }
    let unit = bounds.unit;
    let expected = match (bounds.min > f64::MIN, bounds.max < f64::MAX) {
        (true, true) => format!("a number from {} to {}{unit}", bounds.min, bounds.max),
        (true, false) => format!("a finite number >= {}{unit}", bounds.min),
        (false, true) => format!("a finite number <= {}{unit}", bounds.max),
        (false, false) => format!("a finite number{unit}"),
    };
    Err(ApiError::unprocessable(format!(
        "invalid {field} {value}: expected {expected}"
    )))
}

/// Rejects metrics that are not finite or lie outside their ranges. serde_json already
/// rejects a number that overflows f64, such as 1e400, before this check runs.
fn check_metrics(body: &BacktestResults) -> ApiResult<()> {
    check_number("final_capital", body.final_capital, NON_NEGATIVE)?;
    check_number("total_return", body.total_return, RETURN_PERCENT)?;
    if body.winning_trades.saturating_add(body.losing_trades) > body.total_trades {
        return Err(ApiError::unprocessable(format!(
            "invalid winning_trades {} and losing_trades {}: together they exceed total_trades \
             {}",
            body.winning_trades, body.losing_trades, body.total_trades
        )));
    }
    // NOTE: with leverage the engine's own equity curve can fall below zero, and then its
    // drawdown exceeds 100 %. This route accepts only curves that stay at or above zero, as
    // the check of final_capital already requires.
    let optional = [
        ("win_rate", body.win_rate, PERCENT),
        ("exposure_pct", body.exposure_pct, PERCENT),
        ("max_drawdown", body.max_drawdown, PERCENT),
        ("total_commission", body.total_commission, NON_NEGATIVE),
        (
            "buy_and_hold_return",
            body.buy_and_hold_return,
            RETURN_PERCENT,
        ),
        ("sharpe_ratio", body.sharpe_ratio, FINITE),
        ("sortino_ratio", body.sortino_ratio, FINITE),
        ("calmar_ratio", body.calmar_ratio, FINITE),
        ("profit_factor", body.profit_factor, NON_NEGATIVE),
        ("expectancy", body.expectancy, FINITE),
        ("avg_trade_pct", body.avg_trade_pct, FINITE),
        ("largest_win", body.largest_win, FINITE),
        ("largest_loss", body.largest_loss, FINITE),
        ("total_funding", body.total_funding, FINITE),
    ];
    for (field, value, bounds) in optional {
        if let Some(value) = value {
            check_number(field, value, bounds)?;
        }
    }
    let counts = [
        ("bars", body.bars),
        (
            "max_drawdown_duration_bars",
            body.max_drawdown_duration_bars,
        ),
        (
            "max_drawdown_duration_seconds",
            body.max_drawdown_duration_seconds,
        ),
        ("liquidations", body.liquidations),
    ];
    for (field, value) in counts {
        if let Some(value) = value
            && value < 0
        {
            return Err(ApiError::unprocessable(format!(
                "invalid {field} {value}: expected a count >= 0"
            )));
        }
    }
    for (index, point) in body.equity.iter().enumerate() {
        check_number(
            &format!("equity[{index}].equity"),
            point.equity,
            NON_NEGATIVE,
        )?;
        check_number(
            &format!("equity[{index}].drawdown"),
            point.drawdown,
            PERCENT,
        )?;
    }
    Ok(())
}

/// Converts a count to the store's integer type.
fn count(field: &str, value: u64) -> ApiResult<i64> {
    i64::try_from(value).map_err(|_| {
        ApiError::unprocessable(format!(
            "invalid {field} {value}: expected at most {}",
            i64::MAX
        ))
    })
}

fn optional_datetime(field: &str, text: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    text.map(|text| parse_datetime(field, text)).transpose()
}

/// Checks one trade of a results body and converts it into a stored trade.
fn trade_of(index: usize, trade: ResultTrade) -> ApiResult<NewTrade> {
    let field = |name: &str| format!("trades[{index}].{name}");
    let entry_time = parse_datetime(&field("entry_time"), &trade.entry_time)?;
    let exit_time = parse_datetime(&field("exit_time"), &trade.exit_time)?;
    if exit_time < entry_time {
        return Err(ApiError::unprocessable(format!(
            "invalid {} {:?}: expected a time not before entry_time {:?}",
            field("exit_time"),
            trade.exit_time,
            trade.entry_time
        )));
    }
    let side = position_of_side(&trade.side).map_err(|_| {
        ApiError::unprocessable(format!(
            "invalid {} {}: expected long, short, LONG, SHORT, buy or sell",
            field("side"),
            echoed(&trade.side)
        ))
    })?;
    let positive = [
        ("entry_price", trade.entry_price),
        ("exit_price", trade.exit_price),
        ("quantity", trade.quantity),
    ];
    for (name, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(ApiError::unprocessable(format!(
                "invalid {} {value}: expected a finite number > 0",
                field(name)
            )));
        }
    }
    check_number(&field("commission"), trade.commission, NON_NEGATIVE)?;
    check_number(&field("pnl"), trade.pnl, FINITE)?;
    check_number(&field("pnl_pct"), trade.pnl_pct, FINITE)?;
    check_number(&field("funding"), trade.funding, FINITE)?;
    let exit_reason = trade.exit_reason.unwrap_or_else(|| "signal".to_string());
    if !EXIT_REASONS.contains(&exit_reason.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "invalid {} {}: expected one of {}",
            field("exit_reason"),
            echoed(&exit_reason),
            EXIT_REASONS.join(", ")
        )));
    }
    Ok(NewTrade {
        entry_time,
        exit_time,
        side: side.to_string(),
        entry_price: trade.entry_price,
        exit_price: trade.exit_price,
        quantity: trade.quantity,
        pnl: trade.pnl,
        pnl_pct: trade.pnl_pct,
        commission: trade.commission,
        funding: trade.funding,
        exit_reason,
    })
}
