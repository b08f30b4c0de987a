//! Shared state of the handlers and workers.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::http::HeaderValue;
use bst_engine::Engine;
use bst_query::Store;
use tokio::sync::Notify;

use crate::auth::ApiKeys;
use crate::error::ApiResult;
use crate::metrics::{BusyWorkers, HttpMetrics};
use crate::optimization_worker::RunningOptimizations;

/// State shared by handlers and workers: the metadata store, the engine, a signal that wakes
/// idle workers when a job is queued, and the cancel flags of running optimizations.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub engine: Engine,
    pub jobs_queued: Arc<Notify>,
    pub running_optimizations: RunningOptimizations,
    /// The bus of `/live`; [`crate::live::start_from_env`] replaces the in-process default.
    pub live: crate::live::LiveHub,
    /// Keys that every request but `/healthz` must carry; `None` lets every request in.
    pub api_keys: Option<ApiKeys>,
    /// Origins that browsers may call the API from (CORS); empty sends no CORS headers.
    pub cors_origins: Vec<HeaderValue>,
    /// Request counters and latency histograms of `/metrics`.
    pub http_metrics: HttpMetrics,
    /// In-process workers running a job, for `/metrics`.
    pub busy_workers: BusyWorkers,
    /// In-process workers started by [`crate::serve`], for `/metrics`.
    pub workers: Arc<AtomicUsize>,
}

impl AppState {
    /// Creates the state around an opened store and engine, without API keys or CORS
    /// origins.
    pub fn new(store: Store, engine: Engine) -> Self {
        Self {
            store,
            engine,
            jobs_queued: Arc::new(Notify::new()),
            running_optimizations: RunningOptimizations::default(),
            live: crate::live::LiveHub::in_process(),
            api_keys: None,
            cors_origins: Vec::new(),
            http_metrics: HttpMetrics::default(),
            busy_workers: BusyWorkers::default(),
            workers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Requires one of `keys` on every request but `/healthz`.
    #[must_use]
    pub fn with_api_keys(mut self, keys: Option<ApiKeys>) -> Self {
        self.api_keys = keys;
        self
    }

    /// Allows browsers on `origins` to call the API.
    #[must_use]
    pub fn with_cors_origins(mut self, origins: Vec<HeaderValue>) -> Self {
        self.cors_origins = origins;
        self
    }

    /// Runs a blocking store call on the blocking thread pool, because DuckDB calls block.
    pub async fn with_store<T, F>(&self, call: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> bst_query::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || call(&store)).await??)
    }
}
