//! Optimization rows, their status transitions and their ranked results.

use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row, params};
use serde_json::Value;
use tracing::info;

use crate::error::{Error, Result};
use crate::model::{Page, check_json_object};
use crate::optimization_model::{
    NewOptimization, OPTIMIZATION_METHODS, Optimization, OptimizationFilter, OptimizationOutcome,
    OptimizationParams, OptimizationReport, OptimizationResult, OptimizationStatus,
};
use crate::store::{Store, page_bound, timestamp};

/// Expands to the `WHERE` condition of `list_optimizations`, in which a NULL parameter
/// matches every row. A macro keeps the SQL a literal.
macro_rules! optimization_filter {
    () => {
        "($1::BIGINT IS NULL OR strategy_id = $1::BIGINT)
         AND ($2::VARCHAR IS NULL OR status = $2::VARCHAR)"
    };
}

impl Store {
    /// Queues an optimization of an existing strategy with `created_at = now`.
    ///
    /// Fails with [`Error::NotFound`] when the strategy does not exist and with
    /// [`Error::InvalidValue`] when the dates, amounts, method or JSON fields are invalid.
    pub fn create_optimization(
        &self,
        new: &NewOptimization,
        now: DateTime<Utc>,
    ) -> Result<Optimization> {
        check_new_optimization(new)?;
        let params = &new.params;
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let strategy_exists: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM strategies WHERE id = ?)",
            [new.strategy_id],
            |row| row.get(0),
        )?;
        if !strategy_exists {
            return Err(Error::NotFound {
                entity: "strategy",
                id: new.strategy_id,
            });
        }
        let optimization = transaction.query_row(
            "INSERT INTO optimizations (strategy_id, symbol, timeframe, start_date, end_date,
                 initial_capital, leverage, commission, config, space, method, metric, trials,
                 seed, top, train_bars, test_bars, step_bars, status, total, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING *",
            params![
                new.strategy_id,
                new.symbol,
                new.timeframe,
                timestamp(new.start_date),
                timestamp(new.end_date),
                params.initial_capital,
                params.leverage,
                params.commission,
                params.config,
                params.space,
                params.method,
                params.metric,
                params.trials,
                params.seed,
                params.top,
                params.train,
                params.test,
                params.step,
                OptimizationStatus::Queued,
                new.total,
                timestamp(now)
            ],
            optimization_from_row,
        )?;
        transaction.commit()?;
        info!(
            optimization_id = optimization.id,
            strategy_id = optimization.strategy_id,
            method = %optimization.params.method,
            "queued optimization"
        );
        Ok(optimization)
    }

    /// Returns the optimization with this id, or `None` if there is none.
    pub fn get_optimization(&self, id: i64) -> Result<Option<Optimization>> {
        let connection = self.read();
        let optimization = connection
            .query_row(
                "SELECT * FROM optimizations WHERE id = ?",
                [id],
                optimization_from_row,
            )
            .optional()?;
        Ok(optimization)
    }

    /// Returns one page of the optimizations that match the filter, newest first, and the
    /// number of matches on all pages.
    pub fn list_optimizations(&self, filter: &OptimizationFilter) -> Result<Page<Optimization>> {
        let connection = self.read();
        let total = connection.query_row(
            concat!(
                "SELECT count(*) FROM optimizations WHERE ",
                optimization_filter!()
            ),
            params![filter.strategy_id, filter.status],
            |row| row.get(0),
        )?;
        let mut statement = connection.prepare(concat!(
            "SELECT * FROM optimizations WHERE ",
            optimization_filter!(),
            " ORDER BY id DESC LIMIT $3 OFFSET $4"
        ))?;
        let items = statement
            .query_map(
                params![
                    filter.strategy_id,
                    filter.status,
                    page_bound(filter.limit),
                    page_bound(filter.offset)
                ],
                optimization_from_row,
            )?
            .collect::<duckdb::Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    /// Moves the oldest queued optimization (by `created_at`, then id) to running with
    /// `started_at = now` and returns it, or returns `None` when none is queued.
    ///
    /// The read and the update run in one transaction under the store's lock, so concurrent
    /// callers never claim the same optimization.
    pub fn claim_next_optimization(&self, now: DateTime<Utc>) -> Result<Option<Optimization>> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let oldest_queued: Option<i64> = transaction
            .query_row(
                "SELECT id FROM optimizations WHERE status = ? ORDER BY created_at, id LIMIT 1",
                [OptimizationStatus::Queued],
                |row| row.get(0),
            )
            .optional()?;
        let Some(id) = oldest_queued else {
            return Ok(None);
        };
        let optimization = transaction.query_row(
            "UPDATE optimizations SET status = ?, started_at = ?, progress = 0, evaluated = 0
             WHERE id = ?
             RETURNING *",
            params![OptimizationStatus::Running, timestamp(now), id],
            optimization_from_row,
        )?;
        transaction.commit()?;
        info!(optimization_id = id, "claimed optimization");
        Ok(Some(optimization))
    }

    /// Stores the progress of a running optimization: `evaluated` of `total` combinations.
    /// Returns false, and changes nothing, when the optimization is not running.
    pub fn update_optimization_progress(
        &self,
        id: i64,
        evaluated: u64,
        total: u64,
    ) -> Result<bool> {
        let connection = self.lock();
        let updated = connection.execute(
            "UPDATE optimizations SET evaluated = ?, total = ?, progress = ?
             WHERE id = ? AND status = ?",
            params![
                evaluated,
                total,
                progress(evaluated, total),
                id,
                OptimizationStatus::Running
            ],
        )?;
        Ok(updated > 0)
    }

    /// Stores the outcome of a running optimization and marks it completed with
    /// `completed_at = now`, in one transaction.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id, with
    /// [`Error::InvalidOptimizationTransition`] when it is not running, and with
    /// [`Error::InvalidValue`] when the ranks do not run 1, 2, 3 and so on.
    pub fn complete_optimization(
        &self,
        id: i64,
        outcome: &OptimizationOutcome,
        now: DateTime<Utc>,
    ) -> Result<Optimization> {
        self.finish_running(id, OptimizationStatus::Completed, outcome, now)
    }

    /// Cancels an optimization and returns it.
    ///
    /// A queued one becomes cancelled with no results and `outcome` is ignored. A running one
    /// becomes cancelled with `outcome` stored as its partial results, or with none when
    /// `outcome` is `None`. Fails with [`Error::NotFound`] for an unknown id and with
    /// [`Error::InvalidOptimizationTransition`] when it already completed, failed or was
    /// cancelled.
    pub fn cancel_optimization(
        &self,
        id: i64,
        outcome: Option<&OptimizationOutcome>,
        now: DateTime<Utc>,
    ) -> Result<Optimization> {
        let status = {
            let connection = self.lock();
            optimization_status(&connection, id)?
        };
        match (status, outcome) {
            (OptimizationStatus::Running, Some(outcome)) => {
                self.finish_running(id, OptimizationStatus::Cancelled, outcome, now)
            }
            (OptimizationStatus::Queued | OptimizationStatus::Running, _) => {
                let mut connection = self.lock();
                let transaction = connection.transaction()?;
                let status = optimization_status(&transaction, id)?;
                if status.is_final() {
                    return Err(Error::InvalidOptimizationTransition {
                        id,
                        from: status,
                        to: OptimizationStatus::Cancelled,
                    });
                }
                let optimization = transaction.query_row(
                    "UPDATE optimizations SET status = ?, completed_at = ? WHERE id = ?
                     RETURNING *",
                    params![OptimizationStatus::Cancelled, timestamp(now), id],
                    optimization_from_row,
                )?;
                transaction.commit()?;
                info!(optimization_id = id, from = %status, "cancelled optimization");
                Ok(optimization)
            }
            (status, _) => Err(Error::InvalidOptimizationTransition {
                id,
                from: status,
                to: OptimizationStatus::Cancelled,
            }),
        }
    }

    /// Marks a queued or running optimization failed with this message and
    /// `completed_at = now`.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id and
    /// [`Error::InvalidOptimizationTransition`] when it already completed, failed or was
    /// cancelled.
    pub fn fail_optimization(
        &self,
        id: i64,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Optimization> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let status = optimization_status(&transaction, id)?;
        if status.is_final() {
            return Err(Error::InvalidOptimizationTransition {
                id,
                from: status,
                to: OptimizationStatus::Failed,
            });
        }
        let optimization = transaction.query_row(
            "UPDATE optimizations SET status = ?, error_message = ?, completed_at = ?
             WHERE id = ?
             RETURNING *",
            params![OptimizationStatus::Failed, message, timestamp(now), id],
            optimization_from_row,
        )?;
        transaction.commit()?;
        info!(
            optimization_id = id,
            error = message,
            "marked optimization failed"
        );
        Ok(optimization)
    }

    /// Moves every running optimization back to queued, with `started_at` and the progress
    /// cleared, and returns how many moved. Call it at start-up, before any worker of this
    /// database runs.
    pub fn requeue_running_optimizations(&self) -> Result<usize> {
        let connection = self.lock();
        let requeued = connection.execute(
            "UPDATE optimizations SET status = ?, started_at = NULL, progress = 0, evaluated = 0
             WHERE status = ?",
            params![OptimizationStatus::Queued, OptimizationStatus::Running],
        )?;
        if requeued > 0 {
            info!(
                requeued,
                "requeued optimizations left running by a previous process"
            );
        }
        Ok(requeued)
    }

    /// Returns the stored outcome of an optimization: its status, counts and ranked results
    /// (empty until it completes or is cancelled).
    ///
    /// Fails with [`Error::NotFound`] when no optimization has this id.
    pub fn optimization_report(&self, id: i64) -> Result<OptimizationReport> {
        // The status and the ranked results come from the same snapshot.
        self.read_snapshot(|transaction| {
            let report = transaction
                .query_row(
                    "SELECT id, status, evaluated, tried, skipped, best_params, best_score,
                         deflated_sharpe_ratio, folds, out_of_sample
                     FROM optimizations WHERE id = ?",
                    [id],
                    |row| {
                        Ok(OptimizationReport {
                            optimization_id: row.get("id")?,
                            status: row.get("status")?,
                            outcome: OptimizationOutcome {
                                results: Vec::new(),
                                tried: row.get::<_, Option<u64>>("tried")?.unwrap_or(0),
                                skipped: row.get::<_, Option<u64>>("skipped")?.unwrap_or(0),
                                evaluated: row.get("evaluated")?,
                                best_params: row.get("best_params")?,
                                best_score: row.get("best_score")?,
                                deflated_sharpe_ratio: row.get("deflated_sharpe_ratio")?,
                                folds: row.get("folds")?,
                                out_of_sample: row.get("out_of_sample")?,
                            },
                        })
                    },
                )
                .optional()?;
            let Some(mut report) = report else {
                return Err(Error::NotFound {
                    entity: "optimization",
                    id,
                });
            };
            let mut statement = transaction.prepare(
                "SELECT rank, params, metrics FROM optimization_results
                 WHERE optimization_id = ? ORDER BY rank",
            )?;
            report.outcome.results = statement
                .query_map([id], |row| {
                    Ok(OptimizationResult {
                        rank: row.get("rank")?,
                        params: row.get("params")?,
                        metrics: row.get("metrics")?,
                    })
                })?
                .collect::<duckdb::Result<Vec<_>>>()?;
            Ok(report)
        })
    }

    /// Stores `outcome` for a running optimization and moves it to `status`.
    fn finish_running(
        &self,
        id: i64,
        status: OptimizationStatus,
        outcome: &OptimizationOutcome,
        now: DateTime<Utc>,
    ) -> Result<Optimization> {
        check_outcome(outcome)?;

        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let current = optimization_status(&transaction, id)?;
        if current != OptimizationStatus::Running {
            return Err(Error::InvalidOptimizationTransition {
                id,
                from: current,
                to: status,
            });
        }

        transaction.execute(
            "DELETE FROM optimization_results WHERE optimization_id = ?",
            [id],
        )?;
        insert_results(&transaction, id, &outcome.results)?;

        // A completed run has evaluated every combination, so its progress is 1 even when
        // the total counted up front differs from what the engine evaluated.
        let progress_value = if status == OptimizationStatus::Completed {
            1.0
        } else {
            let total: Option<u64> = transaction.query_row(
                "SELECT total FROM optimizations WHERE id = ?",
                [id],
                |row| row.get(0),
            )?;
            progress(outcome.evaluated, total.unwrap_or(0))
        };

        let optimization = transaction.query_row(
            "UPDATE optimizations SET
                 status = ?, error_message = NULL, completed_at = ?, progress = ?,
                 evaluated = ?, tried = ?, skipped = ?, best_params = ?, best_score = ?,
                 deflated_sharpe_ratio = ?, folds = ?, out_of_sample = ?
             WHERE id = ?
             RETURNING *",
            params![
                status,
                timestamp(now),
                progress_value,
                outcome.evaluated,
                outcome.tried,
                outcome.skipped,
                outcome.best_params,
                outcome.best_score,
                outcome.deflated_sharpe_ratio,
                outcome.folds,
                outcome.out_of_sample,
                id
            ],
            optimization_from_row,
        )?;
        transaction.commit()?;
        info!(
            optimization_id = id,
            %status,
            evaluated = outcome.evaluated,
            results = outcome.results.len(),
            "stored optimization results"
        );
        Ok(optimization)
    }
}

/// Returns `evaluated / total` clamped to 0..=1, and 0 when `total` is 0.
fn progress(evaluated: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (evaluated as f64 / total as f64).clamp(0.0, 1.0)
}

/// Returns the status of an optimization, or [`Error::NotFound`] when no optimization has
/// this id.
fn optimization_status(connection: &Connection, id: i64) -> Result<OptimizationStatus> {
    connection
        .query_row(
            "SELECT status FROM optimizations WHERE id = ?",
            [id],
            |row| row.get(0),
        )
        .optional()?
        .ok_or(Error::NotFound {
            entity: "optimization",
            id,
        })
}

/// Appends ranked results inside the caller's transaction.
fn insert_results(
    connection: &Connection,
    optimization_id: i64,
    results: &[OptimizationResult],
) -> Result<()> {
    let mut appender = connection.appender("optimization_results")?;
    for result in results {
        appender.append_row(params![
            optimization_id,
            result.rank,
            result.params,
            result.metrics
        ])?;
    }
    // The flush on drop discards errors, so flush here to report them.
    appender.flush()?;
    Ok(())
}

fn check_new_optimization(new: &NewOptimization) -> Result<()> {
    if new.start_date >= new.end_date {
        return Err(Error::InvalidValue {
            field: "end_date",
            value: new.end_date.to_rfc3339(),
            expected: format!("a time after start_date {}", new.start_date.to_rfc3339()),
        });
    }
    let params = &new.params;
    if !OPTIMIZATION_METHODS.contains(&params.method.as_str()) {
        return Err(Error::InvalidValue {
            field: "method",
            value: params.method.clone(),
            expected: format!("one of {}", OPTIMIZATION_METHODS.join(", ")),
        });
    }
    check_positive("initial_capital", params.initial_capital, false)?;
    check_positive("leverage", params.leverage, false)?;
    check_positive("commission", params.commission, true)?;
    check_json_object("config", &params.config)?;
    check_json_object("space", &params.space)
}

/// Rejects a non-finite amount, a negative one, and zero unless `zero_allowed`.
fn check_positive(field: &'static str, value: f64, zero_allowed: bool) -> Result<()> {
    if value.is_finite() && (value > 0.0 || (zero_allowed && value == 0.0)) {
        return Ok(());
    }
    let expected = if zero_allowed {
        "a finite number >= 0"
    } else {
        "a finite number > 0"
    };
    Err(Error::InvalidValue {
        field,
        value: value.to_string(),
        expected: expected.to_owned(),
    })
}

/// Rejects ranks that do not run 1, 2, 3 and so on, and non-object params or metrics.
fn check_outcome(outcome: &OptimizationOutcome) -> Result<()> {
    for (index, result) in outcome.results.iter().enumerate() {
        let expected = index as u64 + 1;
        if result.rank != expected {
            return Err(Error::InvalidValue {
                field: "rank",
                value: result.rank.to_string(),
                expected: format!("{expected}, the position of the result"),
            });
        }
        check_json_object("params", &result.params)?;
        check_json_object("metrics", &result.metrics)?;
    }
    Ok(())
}

fn optimization_from_row(row: &Row<'_>) -> duckdb::Result<Optimization> {
    let params = OptimizationParams {
        space: row.get("space")?,
        method: row.get("method")?,
        metric: row.get("metric")?,
        trials: row.get("trials")?,
        seed: row.get("seed")?,
        top: row.get("top")?,
        config: row.get("config")?,
        initial_capital: row.get("initial_capital")?,
        leverage: row.get("leverage")?,
        commission: row.get("commission")?,
        train: row.get("train_bars")?,
        test: row.get("test_bars")?,
        step: row.get("step_bars")?,
    };
    let best_params: Option<Value> = row.get("best_params")?;
    Ok(Optimization {
        id: row.get("id")?,
        strategy_id: row.get("strategy_id")?,
        symbol: row.get("symbol")?,
        timeframe: row.get("timeframe")?,
        start_date: row.get("start_date")?,
        end_date: row.get("end_date")?,
        params,
        status: row.get("status")?,
        progress: row.get("progress")?,
        evaluated: row.get("evaluated")?,
        total: row.get("total")?,
        best_params,
        best_score: row.get("best_score")?,
        error_message: row.get("error_message")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        completed_at: row.get("completed_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::progress;

    #[test]
    fn progress_is_a_clamped_fraction() {
        assert_eq!(progress(0, 0), 0.0);
        assert_eq!(progress(3, 4), 0.75);
        assert_eq!(progress(5, 4), 1.0);
    }
}
