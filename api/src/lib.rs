//! The REST API under `/api/v1` and the workers behind it.
//!
//! Handlers validate requests, read and write the DuckDB metadata store through
//! [`bst_query::Store`] on the blocking pool, and read market data through the DataFusion
//! [`bst_engine::Engine`]. `POST /backtests` stores a `queued` row and wakes a worker; a
//! [`worker`] claims it atomically, runs the engine and stores metrics, trades and the equity curve. Every
//! error leaves as `{"detail": "..."}` with a 4xx status for bad input; internal failures are
//! logged once and reported without detail.

pub mod error;
pub mod extract;
pub mod flight;
pub mod live;
pub mod optimization_worker;
mod routes;
pub mod state;
pub mod worker;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// Builds the router with every route under `/api/v1` and `/healthz`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/strategies",
            get(routes::strategies::list).post(routes::strategies::create),
        )
        .route("/strategies/{id}", get(routes::strategies::get))
        .route(
            "/backtests",
            get(routes::backtests::list).post(routes::backtests::create),
        )
        .route("/backtests/{id}", get(routes::backtests::get))
        .route("/backtests/{id}/trades", get(routes::backtests::trades))
        .route("/backtests/{id}/equity", get(routes::equity::equity))
        .route(
            "/backtests/{id}/equity.svg",
            get(routes::equity::equity_chart),
        )
        .route(
            "/optimizations",
            get(routes::optimizations::list).post(routes::optimizations::create),
        )
        .route("/optimizations/{id}", get(routes::optimizations::get))
        .route(
            "/optimizations/{id}/results",
            get(routes::optimizations::results),
        )
        .route(
            "/optimizations/{id}/cancel",
            post(routes::optimizations::cancel),
        )
        .route("/marketdata/bybit/klines", get(routes::marketdata::klines))
        .route("/live", get(live::route::live))
        .fallback(not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Longest path echoed back in a 404 detail, in characters.
const MAX_ECHOED_PATH_CHARS: usize = 200;

async fn not_found(uri: axum::http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(MAX_ECHOED_PATH_CHARS).collect();
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        detail: format!("no route for {path}; the API is under /api/v1"),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(MAX_ECHOED_PATH_CHARS).collect();
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        detail: format!("method {method} is not allowed on {path}"),
    }
}

/// Serves the router on `listener` until `shutdown` completes, after requeuing jobs that an
/// earlier process left running and starting `workers` workers.
///
/// # Errors
///
/// Store errors at start-up and I/O errors of the listener.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    workers: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let requeued = state
        .with_store(|store| store.requeue_running_backtests())
        .await
        .map_err(|error| std::io::Error::other(error.detail))?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "backtests left running by an earlier process were queued again"
        );
    }
    let requeued = state
        .with_store(|store| store.requeue_running_optimizations())
        .await
        .map_err(|error| std::io::Error::other(error.detail))?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "optimizations left running by an earlier process were queued again"
        );
    }
    let (state, live_tasks) = live::start_from_env(state).map_err(std::io::Error::other)?;
    let worker_handles = worker::spawn_workers(&state, workers);
    match listener.local_addr() {
        Ok(address) => tracing::info!(%address, workers, "serving the REST API"),
        Err(error) => tracing::warn!(%error, workers, "serving the REST API on an unknown address"),
    }
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    for handle in worker_handles.into_iter().chain(live_tasks) {
        handle.abort();
    }
    result
}
