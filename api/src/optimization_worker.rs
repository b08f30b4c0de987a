//! Optimizations in the in-process workers: claim a queued optimization, run its sweep or
//! walk-forward while a side task writes its progress to the store, and store the ranked
//! results, or the partial ones when it is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bst_engine::sweep::walk_forward::{WalkForwardReport, run_walk_forward};
use bst_engine::sweep::{SweepControl, SweepReport, metric_value, run_sweep};
use bst_ingest::Timeframe;
use bst_query::{Optimization, OptimizationOutcome, OptimizationResult, OptimizationStatus, Store};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::ApiError;
use crate::routes::optimizations::{CombinationCounts, count_combinations, plan_sweep};
use crate::state::AppState;

/// How often a running optimization's progress is written to the store, at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Cancel flags of the optimizations that workers of this process run, by optimization id.
///
/// Claims, cancel requests and the storing of outcomes take the map's lock around their
/// store calls, so a cancel request finds either a queued optimization or a running one
/// whose flag its worker reads before it stores the outcome.
#[derive(Debug, Clone, Default)]
pub struct RunningOptimizations {
    flags: Arc<Mutex<HashMap<i64, Arc<AtomicBool>>>>,
    runtime: Arc<OnceLock<SweepRuntime>>,
}

/// A Tokio runtime of its own for sweeps, started on first use.
///
/// DataFusion runs a sweep's partitions as tasks on the current runtime, and each poll
/// evaluates a batch of combinations, which takes a second or more over a month of 1-minute
/// bars in a debug build. On the server's runtime those polls delayed HTTP requests and
/// progress writes by many seconds when several sweeps ran.
#[derive(Debug)]
struct SweepRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SweepRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context, and the last clone
        // of the state may be dropped in one.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Outcome of a cancel request.
#[derive(Debug)]
pub(crate) enum CancelRequest {
    /// The optimization was queued (or running in no worker of this process) and is now
    /// cancelled.
    Cancelled(Optimization),
    /// The optimization is running here; its worker stops it and stores the partial results.
    Signalled(Optimization),
}

impl RunningOptimizations {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Arc<AtomicBool>>> {
        // The map holds only flags, so a thread that panicked while holding it left it valid.
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a handle of the sweep runtime, starting it on the first call.
    fn sweep_runtime(&self) -> Result<tokio::runtime::Handle, ApiError> {
        let runtime = self.runtime.get_or_init(|| {
            let built = tokio::runtime::Builder::new_multi_thread()
                .thread_name("bst-sweep")
                .enable_all()
                .build();
            match built {
                Ok(runtime) => SweepRuntime(Some(runtime)),
                Err(error) => {
                    tracing::error!(%error, "starting the sweep runtime failed; optimizations will fail until a restart");
                    SweepRuntime(None)
                }
            }
        });
        match &runtime.0 {
            Some(runtime) => Ok(runtime.handle().clone()),
            None => Err(ApiError {
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                detail: "the sweep runtime failed to start; restart the server".to_string(),
            }),
        }
    }

    /// Claims the oldest queued optimization and registers its cancel flag.
    fn claim(
        &self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> bst_query::Result<Option<(Optimization, Arc<AtomicBool>)>> {
        let mut flags = self.lock();
        let Some(optimization) = store.claim_next_optimization(now)? else {
            return Ok(None);
        };
        let cancel = Arc::new(AtomicBool::new(false));
        flags.insert(optimization.id, Arc::clone(&cancel));
        Ok(Some((optimization, cancel)))
    }

    /// Cancels a queued optimization, or sets the cancel flag of a running optimization whose
    /// worker is in this process.
    ///
    /// Fails with [`bst_query::Error::NotFound`] for an unknown id and with
    /// [`bst_query::Error::InvalidOptimizationTransition`] when it already ended.
    pub(crate) fn cancel(
        &self,
        store: &Store,
        id: i64,
        now: DateTime<Utc>,
    ) -> bst_query::Result<CancelRequest> {
        let flags = self.lock();
        let Some(optimization) = store.get_optimization(id)? else {
            return Err(bst_query::Error::NotFound {
                entity: "optimization",
                id,
            });
        };
        if optimization.status == OptimizationStatus::Running
            && let Some(flag) = flags.get(&id)
        {
            flag.store(true, Ordering::Relaxed);
            return Ok(CancelRequest::Signalled(optimization));
        }
        Ok(CancelRequest::Cancelled(
            store.cancel_optimization(id, None, now)?,
        ))
    }

    /// Unregisters a run that ended and stores its outcome with `store_outcome`, which gets
    /// whether a cancel was requested.
    fn finish<T>(
        &self,
        store: &Store,
        id: i64,
        store_outcome: impl FnOnce(&Store, bool) -> bst_query::Result<T>,
    ) -> bst_query::Result<T> {
        let mut flags = self.lock();
        let cancelled = flags
            .remove(&id)
            .is_some_and(|flag| flag.load(Ordering::Relaxed));
        store_outcome(store, cancelled)
    }
}

/// Combinations evaluated so far, shared by the engine's progress callback and the task
/// that writes progress to the store.
#[derive(Debug, Default)]
struct Progress {
    evaluated: AtomicU64,
    total: AtomicU64,
    /// Walk-forward folds finished, and the count of the previous callback, which marks
    /// where one fold's sweep ends and the next begins.
    folds: Mutex<(u64, u64)>,
}

impl Progress {
    /// Records the progress of a grid or random sweep.
    fn record_sweep(&self, evaluated: u64, total: u64) {
        self.evaluated.store(evaluated, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Records the progress of one fold's sweep in a walk-forward. Every fold sweeps the same
    /// combinations, so a fold's sweep has ended when the previous call reported all of them.
    fn record_fold(&self, evaluated: u64, per_fold: u64) {
        let mut folds = self.folds.lock().unwrap_or_else(PoisonError::into_inner);
        let (finished, previous) = &mut *folds;
        if *previous == per_fold {
            *finished += 1;
        }
        *previous = evaluated;
        self.evaluated.store(
            finished.saturating_mul(per_fold).saturating_add(evaluated),
            Ordering::Relaxed,
        );
    }
}

/// Claims one queued optimization and runs it. Returns false when none was queued or the
/// claim failed.
pub(crate) async fn run_next_optimization(state: &AppState, worker: usize) -> bool {
    let running = state.running_optimizations.clone();
    let claimed = state
        .with_store(move |store| running.claim(store, Utc::now()))
        .await;
    match claimed {
        Ok(Some((optimization, cancel))) => {
            run_claimed(state, worker, optimization, cancel).await;
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(worker, detail = %error.detail, "claiming an optimization failed; retrying");
            false
        }
    }
}

async fn run_claimed(
    state: &AppState,
    worker: usize,
    optimization: Optimization,
    cancel: Arc<AtomicBool>,
) {
    let id = optimization.id;
    let _busy = state.busy_workers.start();
    tracing::info!(
        worker,
        optimization_id = id,
        strategy_id = optimization.strategy_id,
        method = %optimization.params.method,
        total = ?optimization.total,
        "optimization started"
    );
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    progress
        .total
        .store(optimization.total.unwrap_or(0), Ordering::Relaxed);
    let writer = tokio::spawn(write_progress(state.clone(), id, Arc::clone(&progress)));
    let result = run_optimization(state, &optimization, cancel, &progress).await;
    writer.abort();

    let now = Utc::now();
    let running = state.running_optimizations.clone();
    let stored = match result {
        Ok(outcome) => {
            let evaluated = outcome.evaluated;
            let best_score = outcome.best_score;
            let finished = state
                .with_store(move |store| {
                    running.finish(store, id, |store, cancelled| {
                        if cancelled {
                            store.cancel_optimization(id, Some(&outcome), now)
                        } else {
                            store.complete_optimization(id, &outcome, now)
                        }
                    })
                })
                .await;
            if let Ok(optimization) = &finished {
                let outcome = if optimization.status == OptimizationStatus::Cancelled {
                    "optimization cancelled"
                } else {
                    "optimization completed"
                };
                tracing::info!(
                    worker,
                    optimization_id = id,
                    evaluated,
                    best_score,
                    seconds = started.elapsed().as_secs_f64(),
                    "{outcome}"
                );
            }
            finished.map(drop)
        }
        Err(error) => {
            tracing::warn!(worker, optimization_id = id, detail = %error.detail, "optimization failed");
            let message = error.detail;
            state
                .with_store(move |store| {
                    running.finish(store, id, |store, _| {
                        store.fail_optimization(id, &message, now).map(drop)
                    })
                })
                .await
        }
    };
    if let Err(error) = stored {
        tracing::error!(worker, optimization_id = id, detail = %error.detail, "storing the optimization outcome failed");
    }
}

/// Writes `progress` to the store every [`PROGRESS_INTERVAL`] while it changes, until the
/// task is aborted.
async fn write_progress(state: AppState, id: i64, progress: Arc<Progress>) {
    let mut written = (0, progress.total.load(Ordering::Relaxed));
    let mut failures = 0_u64;
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let current = (
            progress.evaluated.load(Ordering::Relaxed),
            progress.total.load(Ordering::Relaxed),
        );
        if current == written {
            continue;
        }
        let (evaluated, total) = current;
        let stored = state
            .with_store(move |store| store.update_optimization_progress(id, evaluated, total))
            .await;
        match stored {
            Ok(_) => {
                written = current;
                failures = 0;
            }
            Err(error) => {
                // Log the first failure of a run of them; later writes retry.
                if failures == 0 {
                    tracing::warn!(optimization_id = id, detail = %error.detail, "storing optimization progress failed");
                }
                failures += 1;
            }
        }
    }
}

/// Rebuilds the engine's sweep of a stored optimization and runs it.
async fn run_optimization(
    state: &AppState,
    optimization: &Optimization,
    cancel: Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> Result<OptimizationOutcome, ApiError> {
    let strategy_id = optimization.strategy_id;
    let strategy = state
        .with_store(move |store| store.get_strategy(strategy_id))
        .await?
        .ok_or_else(|| ApiError::not_found("strategy", strategy_id))?;
    let timeframe: Timeframe = optimization
        .timeframe
        .parse()
        .map_err(|error: bst_ingest::Error| ApiError::unprocessable(error.to_string()))?;
    let plan = plan_sweep(
        &strategy,
        &optimization.symbol,
        timeframe,
        optimization.start_date,
        optimization.end_date,
        &optimization.params,
    )?;
    let metric = &optimization.params.metric;
    let runtime = state.running_optimizations.sweep_runtime()?;
    let engine = state.engine.clone();
    let request = plan.request.clone();

    let Some(windows) = plan.windows else {
        let recorder = Arc::clone(progress);
        let control = SweepControl {
            cancel,
            progress: Some(Arc::new(move |evaluated, total| {
                recorder.record_sweep(evaluated, total);
            })),
        };
        let report = runtime
            .spawn(async move {
                run_sweep(engine.session(), engine.data_dir(), &request, &control).await
            })
            .await??;
        return Ok(outcome_of_sweep(report, metric));
    };

    let counted = plan.request.clone();
    let counts = tokio::task::spawn_blocking(move || count_combinations(&counted)).await??;
    let recorder = Arc::clone(progress);
    let control = SweepControl {
        cancel,
        progress: Some(Arc::new(move |evaluated, per_fold| {
            recorder.record_fold(evaluated, per_fold);
        })),
    };
    let report = runtime
        .spawn(async move {
            run_walk_forward(
                engine.session(),
                engine.data_dir(),
                &request,
                windows,
                &control,
            )
            .await
        })
        .await??;
    let evaluated = progress.evaluated.load(Ordering::Relaxed);
    outcome_of_walk_forward(&report, counts, evaluated, metric)
}

/// Converts a sweep's report into the outcome the store keeps.
fn outcome_of_sweep(report: SweepReport, metric: &str) -> OptimizationOutcome {
    let best_score = report
        .results
        .first()
        .and_then(|best| metric_value(best, metric));
    let results: Vec<OptimizationResult> = report
        .results
        .into_iter()
        .zip(1..)
        .map(|(result, rank)| OptimizationResult {
            rank,
            params: Value::Object(result.params),
            metrics: result.metrics,
        })
        .collect();
    OptimizationOutcome {
        best_params: results.first().map(|best| best.params.clone()),
        best_score,
        results,
        tried: report.tried,
        skipped: report.skipped,
        evaluated: report.evaluated,
        deflated_sharpe_ratio: report.deflated_sharpe_ratio,
        folds: None,
        out_of_sample: None,
    }
}

/// Converts a walk-forward's report into the outcome the store keeps. The best parameters
/// are those the last fold chose, the ones to trade after the range, scored on its training
/// window. The counts cover the folds that ran.
fn outcome_of_walk_forward(
    report: &WalkForwardReport,
    counts: CombinationCounts,
    evaluated: u64,
    metric: &str,
) -> Result<OptimizationOutcome, ApiError> {
    let folds_run = report.folds.len() as u64;
    let last_choice = report
        .folds
        .iter()
        .rev()
        .find(|fold| !fold.params.is_empty());
    let to_json = |value: Result<Value, serde_json::Error>| {
        value.map_err(|error| ApiError::internal("walk-forward report", &error))
    };
    Ok(OptimizationOutcome {
        results: Vec::new(),
        tried: counts.tried.saturating_mul(folds_run),
        skipped: counts.skipped.saturating_mul(folds_run),
        evaluated,
        best_params: last_choice.map(|fold| Value::Object(fold.params.clone())),
        best_score: last_choice.and_then(|fold| fold.in_sample.get(metric).and_then(Value::as_f64)),
        deflated_sharpe_ratio: None,
        folds: Some(to_json(serde_json::to_value(&report.folds))?),
        out_of_sample: Some(to_json(serde_json::to_value(&report.out_of_sample))?),
    })
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use std::sync::atomic::Ordering;

    #[test]
    fn fold_progress_adds_finished_folds() {
        let progress = Progress::default();
        // The third fold's sweep reports all 40 combinations in one call.
        for (evaluated, expected) in [(16, 16), (40, 40), (16, 56), (40, 80), (40, 120), (8, 128)] {
            progress.record_fold(evaluated, 40);
            assert_eq!(
                progress.evaluated.load(Ordering::Relaxed),
                expected,
                "after a callback with {evaluated} of 40"
            );
        }
    }
}
