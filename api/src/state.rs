//! Shared state of the handlers and workers.

use std::sync::Arc;

use bst_engine::Engine;
use bst_query::Store;
use tokio::sync::Notify;

use crate::error::ApiResult;
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
}

impl AppState {
    /// Creates the state around an opened store and engine.
    pub fn new(store: Store, engine: Engine) -> Self {
        Self {
            store,
            engine,
            jobs_queued: Arc::new(Notify::new()),
            running_optimizations: RunningOptimizations::default(),
            live: crate::live::LiveHub::in_process(),
        }
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
