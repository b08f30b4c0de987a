//! `/backtests/{id}/equity` and `/backtests/{id}/equity.svg`: the equity curve of a completed
//! backtest as JSON points and as an SVG chart with its drawdown and trades.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, extract::State};
use bst_engine::plot::{TradeMarker, equity_svg};
use bst_engine::simulate::Side;
use bst_query::{Backtest, BacktestStatus, EquityPoint, Trade, TradeFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Points returned when the request has no `max_points`.
const DEFAULT_MAX_POINTS: u64 = 5_000;
/// Accepted range of `max_points`.
const MIN_MAX_POINTS: u64 = 2;
const MAX_MAX_POINTS: u64 = 100_000;

/// Query of `GET /backtests/{id}/equity`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EquityQuery {
    /// Most points returned, 2 to 100000. A longer curve is downsampled, keeping the first
    /// and last points, the deepest drawdown and the lowest equity. Default: 5000.
    #[param(minimum = 2, maximum = 100000)]
    max_points: Option<u64>,
}

/// Body of `GET /backtests/{id}/equity`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EquityCurve)]
pub(crate) struct EquityCurveView {
    backtest_id: i64,
    /// Points in time order, at most `max_points` of them.
    points: Vec<EquityPointView>,
    /// Points stored for the backtest, one per bar, before downsampling.
    total_points: usize,
}

/// Equity marked to market at one bar's close.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EquityPoint)]
pub(crate) struct EquityPointView {
    /// The bar's open time, ISO 8601 UTC with milliseconds.
    #[schema(example = "2025-06-01T00:00:00.000Z")]
    timestamp: String,
    /// The bar's open time, in epoch milliseconds.
    open_time: i64,
    /// Equity in quote currency.
    equity: f64,
    /// Percent below the largest equity up to this bar.
    drawdown: f64,
}

impl From<&EquityPoint> for EquityPointView {
    fn from(point: &EquityPoint) -> Self {
        let open_time = point.open_time.timestamp_millis();
        Self {
            timestamp: bst_engine::dataset::iso_ms(open_time),
            open_time,
            equity: point.equity,
            drawdown: point.drawdown,
        }
    }
}

/// Returns the equity curve of a completed backtest.
#[utoipa::path(
    get,
    path = "/api/v1/backtests/{id}/equity",
    tag = "backtests",
    operation_id = "get_backtest_equity",
    params(("id" = i64, Path, description = "Backtest id"), EquityQuery),
    responses(
        (status = 200, description = "The equity curve", body = EquityCurveView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
        (status = 409, description = "The backtest has not completed", body = ErrorBody),
        (status = 422, description = "A parameter does not validate", body = ErrorBody),
    )
)]
pub(crate) async fn equity(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<EquityQuery>,
) -> ApiResult<Json<EquityCurveView>> {
    let max_points = query.max_points.unwrap_or(DEFAULT_MAX_POINTS);
    if !(MIN_MAX_POINTS..=MAX_MAX_POINTS).contains(&max_points) {
        return Err(ApiError::unprocessable(format!(
            "invalid max_points {max_points}: expected {MIN_MAX_POINTS} to {MAX_MAX_POINTS}"
        )));
    }
    let found = state.with_store(move |store| read_curve(store, id)).await?;
    let (_, curve) = completed(found, id)?;
    let sampled = downsample(&curve, usize::try_from(max_points).unwrap_or(usize::MAX));
    Ok(Json(EquityCurveView {
        backtest_id: id,
        points: sampled
            .into_iter()
            .map(|index| EquityPointView::from(&curve[index]))
            .collect(),
        total_points: curve.len(),
    }))
}

/// Draws the equity curve, its drawdown and the trades of a completed backtest as SVG.
#[utoipa::path(
    get,
    path = "/api/v1/backtests/{id}/equity.svg",
    tag = "backtests",
    operation_id = "get_backtest_equity_chart",
    params(("id" = i64, Path, description = "Backtest id")),
    responses(
        (status = 200, description = "An SVG chart", content_type = "image/svg+xml", body = String),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown id", body = ErrorBody),
        (status = 409, description = "The backtest has not completed, or has no stored curve",
            body = ErrorBody),
        (status = 422, description = "The id is not an integer", body = ErrorBody),
    )
)]
pub(crate) async fn equity_chart(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let found = state.with_store(move |store| read_curve(store, id)).await?;
    let (backtest, curve) = completed(found, id)?;
    if curve.is_empty() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            detail: format!(
                "backtest {id} has no stored equity curve because it completed before curves \
                 were stored; queue the same backtest again with POST /api/v1/backtests"
            ),
        });
    }
    let all_trades = TradeFilter {
        side: None,
        limit: u64::MAX,
        offset: 0,
    };
    let trades = state
        .with_store(move |store| store.list_trades(id, &all_trades))
        .await?;
    let title = chart_title(&backtest);
    let svg = tokio::task::spawn_blocking(move || {
        let points: Vec<bst_engine::backtest::EquityPoint> =
            curve.iter().map(engine_point).collect();
        let markers: Vec<TradeMarker> = trades.iter().map(trade_marker).collect();
        equity_svg(&points, &markers, &title)
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg))
}

/// Reads a backtest and, when it has completed, its curve. Returns `None` for an unknown id.
fn read_curve(
    store: &bst_query::Store,
    id: i64,
) -> bst_query::Result<Option<(Backtest, Vec<EquityPoint>)>> {
    let Some(backtest) = store.get_backtest(id)? else {
        return Ok(None);
    };
    let curve = if backtest.status == BacktestStatus::Completed {
        store.equity_curve(id)?
    } else {
        Vec::new()
    };
    Ok(Some((backtest, curve)))
}

/// Rejects an unknown id with a 404 and a backtest that has not completed with a 409.
fn completed(
    found: Option<(Backtest, Vec<EquityPoint>)>,
    id: i64,
) -> ApiResult<(Backtest, Vec<EquityPoint>)> {
    let (backtest, curve) = found.ok_or_else(|| ApiError::not_found("backtest", id))?;
    if backtest.status != BacktestStatus::Completed {
        return Err(not_completed(&backtest));
    }
    Ok((backtest, curve))
}

fn not_completed(backtest: &Backtest) -> ApiError {
    let id = backtest.id;
    let next_step = match backtest.status {
        BacktestStatus::Queued | BacktestStatus::Running => {
            format!("poll GET /api/v1/backtests/{id} until its status is completed")
        }
        _ => "only a completed backtest has one".to_string(),
    };
    ApiError {
        status: StatusCode::CONFLICT,
        detail: format!(
            "backtest {id} is {}, so it has no equity curve; {next_step}",
            backtest.status
        ),
    }
}

fn chart_title(backtest: &Backtest) -> String {
    let mut title = format!(
        "Backtest {}: {} timeframe {}",
        backtest.id, backtest.symbol, backtest.timeframe
    );
    if let Some(total_return) = backtest.total_return {
        title.push_str(&format!(", return {total_return:.2} %"));
    }
    if let Some(max_drawdown) = backtest.max_drawdown {
        title.push_str(&format!(", max drawdown {max_drawdown:.2} %"));
    }
    title
}

fn engine_point(point: &EquityPoint) -> bst_engine::backtest::EquityPoint {
    bst_engine::backtest::EquityPoint {
        open_time_ms: point.open_time.timestamp_millis(),
        equity: point.equity,
        drawdown: point.drawdown,
    }
}

fn trade_marker(trade: &Trade) -> TradeMarker {
    TradeMarker {
        side: if trade.side == "short" {
            Side::Short
        } else {
            Side::Long
        },
        entry_time_ms: trade.entry_time.timestamp_millis(),
        exit_time_ms: trade.exit_time.timestamp_millis(),
        entry_price: trade.entry_price,
        exit_price: trade.exit_price,
        pnl: trade.pnl,
        pnl_pct: trade.pnl_pct,
    }
}

/// Returns the ascending indices of the points to return, at most `max_points` of them
/// (`max_points` >= 2).
///
/// A curve of at most `max_points` points is returned whole. A longer one keeps the first
/// and last point, the point of the largest drawdown (so the maximum over the returned
/// `drawdown` values equals the backtest's `max_drawdown`) and, when `max_points` is 4 or
/// more, the point of the lowest equity. The remaining budget goes to points at evenly spaced
/// indices `round(i x (n - 1) / (m - 1))` for `i` in `0..m`. Indices chosen twice count once,
/// so a response can have fewer than `max_points` points.
fn downsample(points: &[EquityPoint], max_points: usize) -> Vec<usize> {
    let count = points.len();
    if count <= max_points {
        return (0..count).collect();
    }

    let last = count - 1;
    let first_max = |value: fn(&EquityPoint) -> f64| {
        (0..count).fold(0, |best, index| {
            if value(&points[index]) > value(&points[best]) {
                index
            } else {
                best
            }
        })
    };
    let deepest_drawdown = first_max(|point| point.drawdown);
    let lowest_equity = first_max(|point| -point.equity);
    let mut extremes = Vec::with_capacity(2);
    for index in [deepest_drawdown, lowest_equity] {
        if index != 0 && index != last && !extremes.contains(&index) {
            extremes.push(index);
        }
    }

    // Even points need at least two slots, for the first and the last point.
    extremes.truncate(max_points.saturating_sub(2));
    let even = max_points - extremes.len();

    let mut indices: Vec<usize> = (0..even)
        .map(|step| (step * last + (even - 1) / 2) / (even - 1))
        .chain(extremes)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    indices
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn curve(equities: &[f64]) -> Vec<EquityPoint> {
        let mut peak = f64::MIN;
        equities
            .iter()
            .enumerate()
            .map(|(index, &equity)| {
                peak = peak.max(equity);
                EquityPoint {
                    open_time: DateTime::<Utc>::from_timestamp_millis(index as i64 * 60_000)
                        .unwrap(),
                    equity,
                    drawdown: (peak - equity) / peak * 100.0,
                }
            })
            .collect()
    }

    #[test]
    fn downsample_short_curve_unchanged() {
        let points = curve(&[1.0, 2.0, 3.0]);
        assert_eq!(downsample(&points, 3), [0, 1, 2]);
        assert_eq!(downsample(&points, 100), [0, 1, 2]);
    }

    #[test]
    fn downsample_keeps_ends_and_extremes() {
        // Lowest equity 90 at index 100, peak 200 at 300, deepest drawdown at 301 (50 %).
        let mut equities: Vec<f64> = (0..10_000)
            .map(|index| 100.0 + index as f64 * 1e-3)
            .collect();
        equities[300] = 200.0;
        equities[301] = 100.0;
        equities[100] = 90.0;
        let points = curve(&equities);

        let sampled = downsample(&points, 50);
        assert!(sampled.len() <= 50, "{} points", sampled.len());
        assert_eq!(sampled.first(), Some(&0));
        assert_eq!(sampled.last(), Some(&9_999));
        assert!(sampled.contains(&301), "deepest drawdown missing");
        assert!(sampled.contains(&100), "lowest equity missing");
        assert!(sampled.windows(2).all(|pair| pair[0] < pair[1]));
        let max_drawdown = sampled
            .iter()
            .map(|&index| points[index].drawdown)
            .fold(0.0, f64::max);
        assert_eq!(max_drawdown, 50.0);
    }

    #[test]
    fn downsample_budget_of_two_and_three() {
        let mut equities = vec![100.0; 1_000];
        equities[400] = 50.0;
        equities[700] = 40.0;
        let points = curve(&equities);
        assert_eq!(downsample(&points, 2), [0, 999]);
        // The lowest equity is also the deepest drawdown here.
        assert_eq!(downsample(&points, 3), [0, 700, 999]);
    }

    #[test]
    fn downsample_even_spacing() {
        let points = curve(&vec![100.0; 101]);
        assert_eq!(downsample(&points, 5), [0, 25, 50, 75, 100]);
    }
}
