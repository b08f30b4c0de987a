//! Backtest rows and their status transitions.

use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row, params};
use serde::Deserialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::cache::{BacktestRead, FillKey, PageRead};
use crate::equity::{check_equity, insert_equity};
use crate::error::{Error, Result};
use crate::model::{
    Backtest, BacktestFilter, BacktestOutcome, BacktestStatus, ClaimOutcome, EquityPoint,
    ExtendedMetrics, NewBacktest, NewTrade, Page, UpdateOutcome, check_json_object,
};
use crate::store::{Store, optional_timestamp, page_bound, timestamp};
use crate::trades::{check_trades, insert_trades};

/// Expands to the `WHERE` condition of `list_backtests`, in which a NULL parameter matches
/// every row. A macro keeps the SQL a literal, so the only text built at run time is the
/// `ORDER BY` clause, chosen from [`crate::BacktestOrder`].
macro_rules! backtest_filter {
    () => {
        "($1::BIGINT IS NULL OR strategy_id = $1::BIGINT)
         AND ($2::VARCHAR IS NULL OR symbol = $2::VARCHAR)
         AND ($3::VARCHAR IS NULL OR status = $3::VARCHAR)"
    };
}

impl Store {
    /// Queues a backtest of an existing strategy with `created_at = now`.
    ///
    /// Fails with [`Error::NotFound`] when the strategy does not exist and with
    /// [`Error::InvalidValue`] when the dates, amounts or `config` are out of range.
    pub fn create_backtest(&self, new: &NewBacktest, now: DateTime<Utc>) -> Result<Backtest> {
        check_new_backtest(new)?;
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        check_strategy_exists(&transaction, new.strategy_id)?;
        let backtest = transaction.query_row(
            "INSERT INTO backtests (strategy_id, symbol, timeframe, start_date, end_date,
                 initial_capital, leverage, commission, config, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING *",
            params![
                new.strategy_id,
                new.symbol,
                new.timeframe,
                timestamp(new.start_date),
                timestamp(new.end_date),
                new.initial_capital,
                new.leverage,
                new.commission,
                new.config,
                BacktestStatus::Queued,
                timestamp(now)
            ],
            backtest_from_row,
        )?;
        transaction.commit()?;
        connection.changed_only(backtest.id);
        info!(
            backtest_id = backtest.id,
            strategy_id = backtest.strategy_id,
            symbol = %backtest.symbol,
            "queued backtest"
        );
        Ok(backtest)
    }

    /// Returns the backtest with this id, or `None` if there is none.
    pub fn get_backtest(&self, id: i64) -> Result<Option<Backtest>> {
        Ok(self.backtest_read(id)?.map(|read| read.value().clone()))
    }

    /// Returns the backtest with this id as a shared read whose JSON text is made once, or
    /// `None` if there is none. The read is cached until a write changes the backtest.
    pub fn backtest_read(&self, id: i64) -> Result<BacktestRead> {
        if let Some(read) = self.backtest_cache.backtest(id) {
            return Ok(read);
        }
        let _fill = self.backtest_cache.fill_lock(&FillKey::Backtest(id));
        // A reader that held the fill lock before this one may have cached the row.
        if let Some(read) = self.backtest_cache.backtest(id) {
            return Ok(read);
        }
        let generation = self.backtest_cache.generation();
        let connection = self.read();
        // The cached statement skips DuckDB's parse and plan on repeated reads.
        let backtest = connection
            .prepare_cached("SELECT * FROM backtests WHERE id = ?")?
            .query_row([id], backtest_from_row)
            .optional()?;
        drop(connection);
        Ok(self
            .backtest_cache
            .insert_backtest(generation, id, backtest))
    }

    /// Returns the backtest with this id if a recent read cached it, without touching DuckDB,
    /// so async callers may call it on their own thread. `Some(None)` means that the cached
    /// read found no backtest with this id.
    pub fn cached_backtest(&self, id: i64) -> Option<Option<Backtest>> {
        self.cached_backtest_read(id)
            .map(|read| read.map(|read| read.value().clone()))
    }

    /// Returns the shared read of this id if a recent read cached it, as
    /// [`Store::cached_backtest`] does.
    pub fn cached_backtest_read(&self, id: i64) -> Option<BacktestRead> {
        self.backtest_cache.backtest(id)
    }

    /// Returns one page of the backtests that match the filter, in the filter's order, and the
    /// number of matches on all pages.
    pub fn list_backtests(&self, filter: &BacktestFilter) -> Result<Page<Backtest>> {
        Ok(self.backtests_read(filter)?.value().clone())
    }

    /// Returns the page of `filter` as a shared read whose JSON text is made once. The read is
    /// cached until the next write to the backtests table.
    pub fn backtests_read(&self, filter: &BacktestFilter) -> Result<PageRead> {
        if let Some(read) = self.backtest_cache.page(filter) {
            return Ok(read);
        }
        let _fill = self
            .backtest_cache
            .fill_lock(&FillKey::Page(filter.clone()));
        // A reader that held the fill lock before this one may have cached the page.
        if let Some(read) = self.backtest_cache.page(filter) {
            return Ok(read);
        }
        let generation = self.backtest_cache.generation();
        let page = self.query_backtests(filter)?;
        Ok(self
            .backtest_cache
            .insert_page(generation, filter.clone(), page))
    }

    /// Returns the page of `filter` if a recent read cached it, without touching DuckDB, so
    /// async callers may call it on their own thread.
    pub fn cached_backtests(&self, filter: &BacktestFilter) -> Option<Page<Backtest>> {
        self.cached_backtests_read(filter)
            .map(|read| read.value().clone())
    }

    /// Returns the shared read of `filter` if a recent read cached it, as
    /// [`Store::cached_backtests`] does.
    pub fn cached_backtests_read(&self, filter: &BacktestFilter) -> Option<PageRead> {
        self.backtest_cache.page(filter)
    }

    fn query_backtests(&self, filter: &BacktestFilter) -> Result<Page<Backtest>> {
        let direction = if filter.descending { "DESC" } else { "ASC" };
        let items_sql = format!(
            concat!(
                "SELECT * FROM backtests WHERE ",
                backtest_filter!(),
                " ORDER BY {column} {direction} NULLS LAST, id {direction} LIMIT $4 OFFSET $5"
            ),
            column = filter.order_by.as_str(),
            direction = direction,
        );

        // The count and the rows come from the same snapshot.
        self.read_snapshot(|transaction| {
            let total = transaction
                .prepare_cached(concat!(
                    "SELECT count(*) FROM backtests WHERE ",
                    backtest_filter!()
                ))?
                .query_row(
                    params![filter.strategy_id, filter.symbol, filter.status],
                    |row| row.get(0),
                )?;
            let mut statement = transaction.prepare_cached(&items_sql)?;
            let items = statement
                .query_map(
                    params![
                        filter.strategy_id,
                        filter.symbol,
                        filter.status,
                        page_bound(filter.limit),
                        page_bound(filter.offset)
                    ],
                    backtest_from_row,
                )?
                .collect::<duckdb::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
    }

    /// Moves the oldest queued backtest (by `created_at`, then id) to running with
    /// `started_at = now` and returns it, or returns `None` when none is queued.
    ///
    /// The read and the update run in one transaction under the store's lock, so concurrent
    /// callers never claim the same backtest.
    pub fn claim_next_backtest(&self, now: DateTime<Utc>) -> Result<Option<Backtest>> {
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let oldest_queued: Option<i64> = transaction
            .query_row(
                "SELECT id FROM backtests WHERE status = ? ORDER BY created_at, id LIMIT 1",
                [BacktestStatus::Queued],
                |row| row.get(0),
            )
            .optional()?;
        let Some(id) = oldest_queued else {
            return Ok(None);
        };
        let backtest = mark_running(&transaction, id, now)?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, "claimed backtest");
        Ok(Some(backtest))
    }

    /// Moves this backtest from queued to running with `started_at = now` and returns it, or
    /// returns `None` when its status is not queued.
    ///
    /// Fails with [`Error::NotFound`] when no backtest has this id.
    pub fn claim_backtest(&self, id: i64, now: DateTime<Utc>) -> Result<Option<Backtest>> {
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        if backtest_status(&transaction, id)? != BacktestStatus::Queued {
            return Ok(None);
        }
        let backtest = mark_running(&transaction, id, now)?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, "claimed backtest");
        Ok(Some(backtest))
    }

    /// Claims a backtest for an external worker, in one transaction under the store's lock,
    /// so that of many concurrent claims of one queued backtest exactly one succeeds.
    ///
    /// A queued backtest becomes running with `started_at = now`. So does a running one whose
    /// claim is stale: `now` is at least the store's claim stale time after `started_at`,
    /// because its worker is presumed dead. `now` is the claiming worker's clock, as the
    /// contract's `claim` route defines it. Fails with [`Error::NotFound`] for an unknown id.
    pub fn claim_backtest_for_worker(&self, id: i64, now: DateTime<Utc>) -> Result<ClaimOutcome> {
        let stale_after = self.claim_stale_after;
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let backtest = read_backtest(&transaction, id)?;
        let outcome = match backtest.status {
            BacktestStatus::Queued => ClaimOutcome::Claimed(mark_running(&transaction, id, now)?),
            BacktestStatus::Running => {
                let held_since = backtest.started_at;
                let stale = held_since.is_none_or(|started| now - started >= stale_after);
                if !stale {
                    return Ok(ClaimOutcome::Running(backtest));
                }
                let reclaimed = mark_running(&transaction, id, now)?;
                warn!(
                    backtest_id = id,
                    started_at = ?held_since,
                    stale_after_seconds = stale_after.num_seconds(),
                    "reclaimed a backtest whose claim is stale"
                );
                ClaimOutcome::Claimed(reclaimed)
            }
            BacktestStatus::Completed => return Ok(ClaimOutcome::Completed(backtest)),
            BacktestStatus::Failed | BacktestStatus::Cancelled => {
                return Ok(ClaimOutcome::Ended(backtest));
            }
        };
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, "claimed backtest");
        Ok(outcome)
    }

    /// Replaces the request fields of a queued backtest with `updated`, provided that the
    /// stored ones still equal `previous`, the values the caller read and merged its change
    /// into. Returns [`UpdateOutcome::Changed`] or [`UpdateOutcome::NotQueued`] and writes
    /// nothing otherwise.
    ///
    /// Fails with [`Error::NotFound`] when the backtest or the strategy of `updated` does not
    /// exist, and with [`Error::InvalidValue`] when `updated` is out of range.
    pub fn update_queued_backtest(
        &self,
        id: i64,
        previous: &NewBacktest,
        updated: &NewBacktest,
    ) -> Result<UpdateOutcome<Backtest>> {
        check_new_backtest(updated)?;
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let stored = read_backtest(&transaction, id)?;
        if stored.status != BacktestStatus::Queued {
            return Ok(UpdateOutcome::NotQueued(stored.status));
        }
        if NewBacktest::from(&stored) != *previous {
            return Ok(UpdateOutcome::Changed);
        }
        check_strategy_exists(&transaction, updated.strategy_id)?;
        let backtest = transaction.query_row(
            "UPDATE backtests SET
                 strategy_id = ?, symbol = ?, timeframe = ?, start_date = ?, end_date = ?,
                 initial_capital = ?, leverage = ?, commission = ?, config = ?
             WHERE id = ?
             RETURNING *",
            params![
                updated.strategy_id,
                updated.symbol,
                updated.timeframe,
                timestamp(updated.start_date),
                timestamp(updated.end_date),
                updated.initial_capital,
                updated.leverage,
                updated.commission,
                updated.config,
                id
            ],
            backtest_from_row,
        )?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, "updated queued backtest");
        Ok(UpdateOutcome::Updated(backtest))
    }

    /// Marks a queued or running backtest cancelled with `completed_at = now`. A worker that
    /// still runs it can no longer store an outcome, because completing needs the status
    /// `running` and failing needs `queued` or `running`.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id and [`Error::InvalidTransition`] when
    /// the backtest already completed, failed or was cancelled.
    pub fn cancel_backtest(&self, id: i64, now: DateTime<Utc>) -> Result<Backtest> {
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let status = backtest_status(&transaction, id)?;
        if !matches!(status, BacktestStatus::Queued | BacktestStatus::Running) {
            return Err(Error::InvalidTransition {
                id,
                from: status,
                to: BacktestStatus::Cancelled,
            });
        }
        let backtest = transaction.query_row(
            "UPDATE backtests SET status = ?, completed_at = ? WHERE id = ? RETURNING *",
            params![BacktestStatus::Cancelled, timestamp(now), id],
            backtest_from_row,
        )?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, from = %status, "cancelled backtest");
        Ok(backtest)
    }

    /// Deletes a backtest in any status with its trades and equity curve, in one transaction.
    /// A worker that still runs it fails to store an outcome with [`Error::NotFound`].
    ///
    /// Fails with [`Error::NotFound`] for an unknown id.
    pub fn delete_backtest(&self, id: i64) -> Result<()> {
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let status = backtest_status(&transaction, id)?;
        transaction.execute("DELETE FROM trades WHERE backtest_id = ?", [id])?;
        transaction.execute("DELETE FROM equity_points WHERE backtest_id = ?", [id])?;
        transaction.execute("DELETE FROM backtests WHERE id = ?", [id])?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, %status, "deleted backtest");
        Ok(())
    }

    /// Stores the results, trades and equity curve of a running backtest and marks it
    /// completed with `completed_at = now`, all in one transaction.
    ///
    /// Trades and equity points stored for this backtest by an earlier attempt are deleted
    /// first. Fails with [`Error::NotFound`] for an unknown id and with
    /// [`Error::InvalidTransition`] when the backtest is not running. Fails with
    /// [`Error::InvalidValue`] when `metrics` is not a JSON object, when a trade side is not
    /// `"long"` or `"short"`, and when the curve has a non-finite value or open times that do
    /// not strictly increase.
    pub fn complete_backtest(
        &self,
        id: i64,
        outcome: &BacktestOutcome,
        trades: &[NewTrade],
        equity: &[EquityPoint],
        now: DateTime<Utc>,
    ) -> Result<Backtest> {
        check_json_object("metrics", &outcome.metrics)?;
        check_trades(trades)?;
        check_equity(equity)?;

        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let status = backtest_status(&transaction, id)?;
        if status != BacktestStatus::Running {
            return Err(Error::InvalidTransition {
                id,
                from: status,
                to: BacktestStatus::Completed,
            });
        }
        transaction.execute("DELETE FROM trades WHERE backtest_id = ?", [id])?;
        insert_trades(&transaction, id, trades, now)?;
        transaction.execute("DELETE FROM equity_points WHERE backtest_id = ?", [id])?;
        insert_equity(&transaction, id, equity)?;
        let backtest = transaction.query_row(
            "UPDATE backtests SET
                 status = ?, error_message = NULL, completed_at = ?,
                 final_capital = ?, total_return = ?, total_trades = ?,
                 winning_trades = ?, losing_trades = ?, win_rate = ?,
                 sharpe_ratio = ?, max_drawdown = ?, metrics = ?, params = ?,
                 engine_version = ?, data_start = ?, data_end = ?
             WHERE id = ?
             RETURNING *",
            params![
                BacktestStatus::Completed,
                timestamp(now),
                outcome.final_capital,
                outcome.total_return,
                outcome.total_trades,
                outcome.winning_trades,
                outcome.losing_trades,
                outcome.win_rate,
                outcome.sharpe_ratio,
                outcome.max_drawdown,
                outcome.metrics,
                outcome.params,
                outcome.engine_version,
                optional_timestamp(outcome.data_start),
                optional_timestamp(outcome.data_end),
                id
            ],
            backtest_from_row,
        )?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(
            backtest_id = id,
            trades = trades.len(),
            equity_points = equity.len(),
            total_return = outcome.total_return,
            "completed backtest"
        );
        Ok(backtest)
    }

    /// Marks a queued or running backtest failed with this message and `completed_at = now`.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id and [`Error::InvalidTransition`] when
    /// the backtest already finished or was cancelled.
    pub fn fail_backtest(&self, id: i64, message: &str, now: DateTime<Utc>) -> Result<Backtest> {
        let mut connection = self.lock_backtests();
        let transaction = connection.transaction()?;
        let status = backtest_status(&transaction, id)?;
        if !matches!(status, BacktestStatus::Queued | BacktestStatus::Running) {
            return Err(Error::InvalidTransition {
                id,
                from: status,
                to: BacktestStatus::Failed,
            });
        }
        let backtest = transaction.query_row(
            "UPDATE backtests SET status = ?, error_message = ?, completed_at = ?
             WHERE id = ?
             RETURNING *",
            params![BacktestStatus::Failed, message, timestamp(now), id],
            backtest_from_row,
        )?;
        transaction.commit()?;
        connection.changed_only(id);
        info!(backtest_id = id, error = message, "marked backtest failed");
        Ok(backtest)
    }

    /// Moves every running backtest back to queued with `started_at` cleared and returns how
    /// many moved. Call it at start-up, before any worker of this database runs.
    pub fn requeue_running_backtests(&self) -> Result<usize> {
        let connection = self.lock_backtests();
        let requeued = connection.execute(
            "UPDATE backtests SET status = ?, started_at = NULL WHERE status = ?",
            params![BacktestStatus::Queued, BacktestStatus::Running],
        )?;
        if requeued > 0 {
            info!(
                requeued,
                "requeued backtests left running by a previous process"
            );
        }
        Ok(requeued)
    }
}

/// Returns the status of a backtest, or [`Error::NotFound`] when no backtest has this id.
pub(crate) fn backtest_status(connection: &Connection, id: i64) -> Result<BacktestStatus> {
    connection
        .query_row("SELECT status FROM backtests WHERE id = ?", [id], |row| {
            row.get(0)
        })
        .optional()?
        .ok_or(Error::NotFound {
            entity: "backtest",
            id,
        })
}

/// Reads a backtest, or fails with [`Error::NotFound`] when no backtest has this id.
fn read_backtest(connection: &Connection, id: i64) -> Result<Backtest> {
    connection
        .query_row(
            "SELECT * FROM backtests WHERE id = ?",
            [id],
            backtest_from_row,
        )
        .optional()?
        .ok_or(Error::NotFound {
            entity: "backtest",
            id,
        })
}

/// Fails with [`Error::NotFound`] when no strategy has this id.
fn check_strategy_exists(connection: &Connection, id: i64) -> Result<()> {
    let exists: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM strategies WHERE id = ?)",
        [id],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    Err(Error::NotFound {
        entity: "strategy",
        id,
    })
}

/// Moves a backtest that the caller found queued, or running under a stale claim, to running
/// with `started_at = now`.
fn mark_running(connection: &Connection, id: i64, now: DateTime<Utc>) -> Result<Backtest> {
    let backtest = connection.query_row(
        "UPDATE backtests SET status = ?, started_at = ? WHERE id = ? RETURNING *",
        params![BacktestStatus::Running, timestamp(now), id],
        backtest_from_row,
    )?;
    Ok(backtest)
}

fn check_new_backtest(new: &NewBacktest) -> Result<()> {
    if new.start_date >= new.end_date {
        return Err(Error::InvalidValue {
            field: "end_date",
            value: new.end_date.to_rfc3339(),
            expected: format!("a time after start_date {}", new.start_date.to_rfc3339()),
        });
    }
    check_amount("initial_capital", new.initial_capital, false)?;
    check_amount("leverage", new.leverage, false)?;
    check_amount("commission", new.commission, true)?;
    check_json_object("config", &new.config)
}

/// Rejects a non-finite amount, a negative one, and zero unless `zero_allowed`.
fn check_amount(field: &'static str, value: f64, zero_allowed: bool) -> Result<()> {
    let valid = value.is_finite() && (value > 0.0 || (zero_allowed && value == 0.0));
    if valid {
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

/// Reads the flat metrics out of a stored `metrics` object. A missing key reads as `None`.
/// A key with a value of the wrong type leaves every flat metric `None` and logs a warning,
/// so that the backtest itself still reads.
fn extended_metrics(id: i64, metrics: Option<&Value>) -> ExtendedMetrics {
    let Some(metrics) = metrics else {
        return ExtendedMetrics::default();
    };
    ExtendedMetrics::deserialize(metrics).unwrap_or_else(|error| {
        warn!(backtest_id = id, %error, "ignoring a malformed metrics object");
        ExtendedMetrics::default()
    })
}

fn backtest_from_row(row: &Row<'_>) -> duckdb::Result<Backtest> {
    let id = row.get("id")?;
    let metrics: Option<Value> = row.get("metrics")?;
    Ok(Backtest {
        id,
        strategy_id: row.get("strategy_id")?,
        symbol: row.get("symbol")?,
        timeframe: row.get("timeframe")?,
        start_date: row.get("start_date")?,
        end_date: row.get("end_date")?,
        initial_capital: row.get("initial_capital")?,
        leverage: row.get("leverage")?,
        commission: row.get("commission")?,
        config: row.get("config")?,
        status: row.get("status")?,
        error_message: row.get("error_message")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        completed_at: row.get("completed_at")?,
        final_capital: row.get("final_capital")?,
        total_return: row.get("total_return")?,
        total_trades: row.get("total_trades")?,
        winning_trades: row.get("winning_trades")?,
        losing_trades: row.get("losing_trades")?,
        win_rate: row.get("win_rate")?,
        sharpe_ratio: row.get("sharpe_ratio")?,
        max_drawdown: row.get("max_drawdown")?,
        extended: extended_metrics(id, metrics.as_ref()),
        metrics,
        params: row.get("params")?,
        engine_version: row.get("engine_version")?,
        data_start: row.get("data_start")?,
        data_end: row.get("data_end")?,
    })
}
