//! In-process backtest workers: claim a queued backtest, run it, store the outcome, trades and
//! equity curve.

use std::time::Duration;

use bst_engine::{BacktestReport, BacktestRequest, SeriesKey, TimeRange};
use bst_ingest::layout::utc_from_ms;
use bst_ingest::{Category, Timeframe};
use bst_query::{Backtest, BacktestOutcome, EquityPoint, NewTrade};
use chrono::Utc;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::routes::backtests::resolve_strategy;
use crate::state::AppState;

/// How long an idle worker sleeps before it looks for queued jobs again, in case a wake-up
/// was missed (for example a job queued by another process).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Starts `count` workers that run queued backtests, and queued optimizations while no
/// backtest is queued, until the runtime shuts down.
pub fn spawn_workers(state: &AppState, count: usize) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|worker| {
            let state = state.clone();
            tokio::spawn(async move { run_worker(state, worker).await })
        })
        .collect()
}

async fn run_worker(state: AppState, worker: usize) {
    tracing::debug!(worker, "backtest worker started");
    loop {
        let claimed = state
            .with_store(|store| store.claim_next_backtest(Utc::now()))
            .await;
        match claimed {
            Ok(Some(backtest)) => run_claimed(&state, worker, backtest).await,
            Ok(None) => {
                if crate::optimization_worker::run_next_optimization(&state, worker).await {
                    continue;
                }
                let _ = tokio::time::timeout(IDLE_POLL, state.jobs_queued.notified()).await;
            }
            Err(error) => {
                tracing::warn!(worker, detail = %error.detail, "claiming a backtest failed; retrying");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

async fn run_claimed(state: &AppState, worker: usize, backtest: Backtest) {
    let id = backtest.id;
    let _busy = state.busy_workers.start();
    tracing::info!(worker, backtest_id = id, symbol = %backtest.symbol, "backtest started");
    let result = run_backtest(state, &backtest).await;
    let now = Utc::now();
    let stored = match result {
        Ok(report) => {
            let (outcome, trades) = outcome_of(&report);
            let equity = equity_of(&report);
            tracing::info!(
                worker,
                backtest_id = id,
                trades = trades.len(),
                equity_points = equity.len(),
                final_capital = report.metrics.final_capital,
                "backtest completed"
            );
            state
                .with_store(move |store| {
                    store.complete_backtest(id, &outcome, &trades, &equity, now)
                })
                .await
        }
        Err(error) => {
            tracing::warn!(worker, backtest_id = id, detail = %error.detail, "backtest failed");
            let message = error.detail;
            state
                .with_store(move |store| store.fail_backtest(id, &message, now))
                .await
        }
    };
    match stored {
        Ok(_) => {}
        // The store takes an outcome only while the backtest is running, so a 409 or 404 means
        // it was cancelled or deleted meanwhile.
        Err(error)
            if matches!(
                error.status,
                axum::http::StatusCode::CONFLICT | axum::http::StatusCode::NOT_FOUND
            ) =>
        {
            tracing::info!(worker, backtest_id = id, detail = %error.detail, "backtest was cancelled or deleted while it ran; its outcome is dropped");
        }
        Err(error) => {
            tracing::error!(worker, backtest_id = id, detail = %error.detail, "storing the backtest outcome failed");
            // Marking it failed keeps it from staying running and being run again at every
            // restart, for example when its equity overflowed to infinity.
            let message = format!("the result could not be stored: {}", error.detail);
            let now = Utc::now();
            if let Err(error) = state
                .with_store(move |store| store.fail_backtest(id, &message, now))
                .await
            {
                tracing::error!(worker, backtest_id = id, detail = %error.detail, "storing the failed status of the backtest failed too");
            }
        }
    }
}

/// Rebuilds the engine request of a stored backtest and runs it.
async fn run_backtest(state: &AppState, backtest: &Backtest) -> Result<BacktestReport, ApiError> {
    let strategy_id = backtest.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let overrides = match &backtest.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let timeframe: Timeframe = backtest
        .timeframe
        .parse()
        .map_err(|error: bst_ingest::Error| ApiError::unprocessable(error.to_string()))?;
    let (strategy_spec, orders) = resolve_strategy(&strategy, &overrides)?;
    let mut request = BacktestRequest::new(
        SeriesKey {
            category: Category::Linear,
            symbol: backtest.symbol.clone(),
            timeframe,
        },
        strategy_spec,
    );
    request.orders = orders;
    request.range = TimeRange {
        start_ms: Some(backtest.start_date.timestamp_millis()),
        end_ms: Some(backtest.end_date.timestamp_millis()),
    };
    request.initial_capital = backtest.initial_capital;
    request.commission = backtest.commission;
    request.leverage = backtest.leverage;
    Ok(state.engine.run_backtest(&request).await?)
}

/// Returns the metrics beyond the flat columns, and the bar count, as one JSON object.
fn extended_metrics(report: &BacktestReport) -> Value {
    let mut object = serde_json::to_value(&report.metrics)
        .ok()
        .and_then(|value| value.as_object().cloned())
        .unwrap_or_default();
    for flat in [
        "final_capital",
        "total_return",
        "total_trades",
        "winning_trades",
        "losing_trades",
        "win_rate",
        "sharpe_ratio",
        "max_drawdown",
    ] {
        object.remove(flat);
    }
    object.insert("bars".to_string(), Value::from(report.bars));
    Value::Object(object)
}

/// Converts an engine report into the rows the store keeps.
fn outcome_of(report: &BacktestReport) -> (BacktestOutcome, Vec<NewTrade>) {
    let metrics = &report.metrics;
    let outcome = BacktestOutcome {
        final_capital: metrics.final_capital,
        total_return: metrics.total_return,
        total_trades: metrics.total_trades as i64,
        winning_trades: metrics.winning_trades as i64,
        losing_trades: metrics.losing_trades as i64,
        win_rate: metrics.win_rate,
        sharpe_ratio: metrics.sharpe_ratio,
        max_drawdown: Some(metrics.max_drawdown),
        metrics: extended_metrics(report),
        params: report.params.clone(),
        engine_version: report.engine_version.to_string(),
        data_start: Some(utc_from_ms(report.data_start_ms)),
        data_end: Some(utc_from_ms(report.data_end_ms)),
    };
    let trades = report
        .trades
        .iter()
        .map(|trade| NewTrade {
            entry_time: utc_from_ms(trade.entry_time_ms),
            exit_time: utc_from_ms(trade.exit_time_ms),
            side: trade.side.as_str().to_string(),
            entry_price: trade.entry_price,
            exit_price: trade.exit_price,
            quantity: trade.quantity,
            pnl: trade.pnl,
            pnl_pct: trade.pnl_pct,
            commission: trade.commission,
            funding: trade.funding,
            exit_reason: trade.exit_reason.as_str().to_string(),
        })
        .collect();
    (outcome, trades)
}

/// Converts an engine report's equity curve into the points the store keeps.
fn equity_of(report: &BacktestReport) -> Vec<EquityPoint> {
    report
        .equity
        .iter()
        .map(|point| EquityPoint {
            open_time: utc_from_ms(point.open_time_ms),
            equity: point.equity,
            drawdown: point.drawdown,
        })
        .collect()
}
