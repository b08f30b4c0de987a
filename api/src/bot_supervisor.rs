//! The supervisor of paper bots, which moves `awaiting_start` bots to `running` and
//! `awaiting_stop` bots to `stopped`.
//!
//! It polls the store every [`POLL_INTERVAL`], so a start or stop request completes within
//! that interval plus the wait for the store's connection, which other requests may hold.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::state::AppState;

/// Time between two polls of the store.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Failed polls between two logged failures, after the first one is logged.
const FAILURES_PER_LOG: u64 = 100;

/// Spawns the supervisor task, which runs until it is aborted.
pub fn spawn_bot_supervisor(state: &AppState) -> JoinHandle<()> {
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures: u64 = 0;
        loop {
            interval.tick().await;
            let store = store.clone();
            let result = tokio::task::spawn_blocking(move || store.advance_bots()).await;
            match result {
                Ok(Ok(transitions)) => {
                    for transition in transitions {
                        tracing::info!(
                            bot_id = %transition.bot_id,
                            from = %transition.from,
                            to = %transition.to,
                            "bot status changed"
                        );
                    }
                }
                Ok(Err(error)) => {
                    if failures.is_multiple_of(FAILURES_PER_LOG) {
                        tracing::error!(%error, failures, "failed to advance bot statuses");
                    }
                    failures += 1;
                }
                Err(error) => {
                    if failures.is_multiple_of(FAILURES_PER_LOG) {
                        tracing::error!(%error, failures, "bot supervisor poll panicked");
                    }
                    failures += 1;
                }
            }
        }
    })
}
