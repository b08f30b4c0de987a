//! The REST API under `/api/v1` and the workers behind it.
//!
//! Handlers validate requests, read and write the DuckDB metadata store through
//! [`bst_query::Store`] on the blocking pool, and read market data through the DataFusion
//! [`bst_engine::Engine`]. `POST /backtests` stores a `queued` row and wakes a worker; a
//! [`worker`] claims it atomically, runs the engine and stores metrics, trades and the equity curve. Every
//! error leaves as `{"detail": "..."}` with a 4xx status for bad input; internal failures are
//! logged once and reported without detail.

pub mod auth;
pub mod bot_supervisor;
pub mod error;
pub mod extract;
pub mod flight;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod optimization_worker;
mod routes;
pub mod state;
pub mod worker;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
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
        .route(
            "/strategies/{id}",
            get(routes::strategies::get)
                .put(routes::strategies::update)
                .delete(routes::strategies::delete),
        )
        .route(
            "/backtests",
            get(routes::backtests::list).post(routes::backtests::create),
        )
        .route(
            "/backtests/{id}",
            get(routes::backtests::get)
                .put(routes::backtests::update)
                .delete(routes::backtests::delete),
        )
        .route("/backtests/{id}/claim", post(routes::backtests::claim))
        .route(
            "/backtests/{id}/results",
            post(routes::backtests::results).layer(axum::extract::DefaultBodyLimit::max(
                RESULTS_BODY_LIMIT_BYTES,
            )),
        )
        .route("/backtests/{id}/cancel", post(routes::backtests::cancel))
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
        .route(
            "/marketdata/bybit/klines/fetch",
            get(routes::marketdata::fetch),
        )
        .route("/marketdata/datasets", get(routes::marketdata::datasets))
        .route(
            "/bots",
            get(routes::bots::list_bots).post(routes::bots::create_bot),
        )
        .route("/bots/{id}", get(routes::bots::get_bot))
        .route("/bots/{id}/start", post(routes::bots::start_bot))
        .route("/bots/{id}/stop", post(routes::bots::stop_bot))
        .route("/bots/{id}/delete", post(routes::bots::delete_bot))
        .route(
            "/active-deals",
            get(routes::bots::list_deals).post(routes::bots::create_deal),
        )
        .route("/active-deals/{id}", get(routes::bots::get_deal))
        .route("/active-deals/{id}/close", post(routes::bots::close_deal))
        .route("/active-deals/{id}/cancel", post(routes::bots::cancel_deal))
        .route(
            "/active-deals/{id}/average",
            post(routes::bots::average_deal),
        )
        .route("/live", get(live::route::live))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(not_found);
    let mut router = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Layers run after routing, so they see the route template; the last one added
        // runs first.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(from_fn_with_state(state.clone(), auth::require_api_key))
        .layer(from_fn_with_state(state.clone(), metrics::track_requests))
        .layer(
            // The span has the path without the query, because `/live?token=` carries a key.
            TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path()
                )
            }),
        );
    if let Some(cors) = cors_layer(&state.cors_origins) {
        // Outermost, so that preflight requests, which carry no key, get a response.
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// `GET /healthz`: `ok` while the process serves requests. It needs no API key, so that
/// probes work without one.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "health",
    security(()),
    responses(
        (status = 200, description = "The server is up", content_type = "text/plain",
            body = String, example = "ok"),
    )
)]
async fn health() -> &'static str {
    "ok"
}

/// Turns a panic in a handler into a 500 with a generic detail, logging the panic message
/// once, so the client gets a response instead of a dropped connection.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    axum::response::IntoResponse::into_response(ApiError::internal_message(
        "a request handler panicked",
        message,
    ))
}

/// Builds the CORS layer of `origins`, where `*` allows any origin; `None` when there are
/// no origins, so that no CORS header is sent.
fn cors_layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Largest body of `POST /backtests/{id}/results`, in bytes: about 200,000 trades of some 300
/// bytes of JSON each. Other routes keep axum's default of 2 MiB.
const RESULTS_BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Longest path echoed back in a 404 detail, in characters.
const MAX_ECHOED_PATH_CHARS: usize = 200;

async fn not_found(uri: axum::extract::OriginalUri) -> ApiError {
    // The original URI, because a router nested under /api/v1 gets the path without it.
    let path: String = uri.path().chars().take(MAX_ECHOED_PATH_CHARS).collect();
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        detail: format!("no route for {path}; the API is under /api/v1"),
    }
}

async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::extract::OriginalUri,
) -> ApiError {
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
    state
        .workers
        .store(workers, std::sync::atomic::Ordering::Relaxed);
    let (state, live_tasks) = live::start_from_env(state).map_err(std::io::Error::other)?;
    let worker_handles = worker::spawn_workers(&state, workers);
    let bot_supervisor = bot_supervisor::spawn_bot_supervisor(&state);
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
    bot_supervisor.abort();
    result
}
