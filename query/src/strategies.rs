//! Strategy rows.

use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row, params};
use tracing::info;

use crate::error::{Error, Result};
use crate::model::{
    NewStrategy, Page, Strategy, StrategyDeletion, StrategyFilter, UpdateOutcome, check_json_object,
};
use crate::store::{Store, page_bound, timestamp};

/// Expands to the `WHERE` condition of `list_strategies`, in which a NULL parameter matches
/// every row. A macro keeps the SQL a literal, so no query text is built at run time.
macro_rules! strategy_filter {
    () => {
        "($1::BOOLEAN IS NULL OR is_active = $1::BOOLEAN)
         AND ($2::VARCHAR IS NULL OR strategy_type = $2::VARCHAR)"
    };
}

impl Store {
    /// Inserts a strategy with `created_at` and `updated_at` set to the current time.
    ///
    /// Fails with [`crate::Error::InvalidValue`] when `config` is not a JSON object.
    pub fn create_strategy(&self, new: &NewStrategy) -> Result<Strategy> {
        check_json_object("config", &new.config)?;
        let now = timestamp(Utc::now());
        let connection = self.lock();
        let strategy = connection.query_row(
            "INSERT INTO strategies
                (name, description, strategy_type, config, is_active, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             RETURNING *",
            params![
                new.name,
                new.description,
                new.strategy_type,
                new.config,
                new.is_active,
                now,
                now
            ],
            strategy_from_row,
        )?;
        info!(strategy_id = strategy.id, name = %strategy.name, "created strategy");
        Ok(strategy)
    }

    /// Returns the strategy with this id, or `None` if there is none.
    pub fn get_strategy(&self, id: i64) -> Result<Option<Strategy>> {
        let connection = self.read();
        let strategy = connection
            .query_row(
                "SELECT * FROM strategies WHERE id = ?",
                [id],
                strategy_from_row,
            )
            .optional()?;
        Ok(strategy)
    }

    /// Replaces the fields of a strategy with `updated` and sets `updated_at = now`, provided
    /// that the stored fields still equal `previous`, the values the caller read and merged
    /// its change into. Returns [`UpdateOutcome::Changed`] and writes nothing otherwise.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id and with [`Error::InvalidValue`] when
    /// `config` is not a JSON object.
    pub fn update_strategy(
        &self,
        id: i64,
        previous: &NewStrategy,
        updated: &NewStrategy,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome<Strategy>> {
        check_json_object("config", &updated.config)?;
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let stored = read_strategy(&transaction, id)?;
        if NewStrategy::from(&stored) != *previous {
            return Ok(UpdateOutcome::Changed);
        }
        let strategy = transaction.query_row(
            "UPDATE strategies SET
                 name = ?, description = ?, strategy_type = ?, config = ?, is_active = ?,
                 updated_at = ?
             WHERE id = ?
             RETURNING *",
            params![
                updated.name,
                updated.description,
                updated.strategy_type,
                updated.config,
                updated.is_active,
                timestamp(now),
                id
            ],
            strategy_from_row,
        )?;
        transaction.commit()?;
        info!(strategy_id = id, "updated strategy");
        Ok(UpdateOutcome::Updated(strategy))
    }

    /// Deletes a strategy that no backtest or optimization refers to. Returns
    /// [`StrategyDeletion::InUse`] with the counts of those rows, and keeps the strategy,
    /// otherwise.
    ///
    /// Fails with [`Error::NotFound`] for an unknown id.
    pub fn delete_strategy(&self, id: i64) -> Result<StrategyDeletion> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        read_strategy(&transaction, id)?;
        let (backtests, optimizations): (u64, u64) = transaction.query_row(
            "SELECT
                 (SELECT count(*) FROM backtests WHERE strategy_id = $1),
                 (SELECT count(*) FROM optimizations WHERE strategy_id = $1)",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if backtests > 0 || optimizations > 0 {
            return Ok(StrategyDeletion::InUse {
                backtests,
                optimizations,
            });
        }
        transaction.execute("DELETE FROM strategies WHERE id = ?", [id])?;
        transaction.commit()?;
        info!(strategy_id = id, "deleted strategy");
        Ok(StrategyDeletion::Deleted)
    }

    /// Returns one page of the strategies that match the filter, ordered by id, and the number
    /// of matches on all pages.
    pub fn list_strategies(&self, filter: &StrategyFilter) -> Result<Page<Strategy>> {
        let connection = self.read();
        let total = connection.query_row(
            concat!("SELECT count(*) FROM strategies WHERE ", strategy_filter!()),
            params![filter.is_active, filter.strategy_type],
            |row| row.get(0),
        )?;
        let mut statement = connection.prepare(concat!(
            "SELECT * FROM strategies WHERE ",
            strategy_filter!(),
            " ORDER BY id LIMIT $3 OFFSET $4"
        ))?;
        let items = statement
            .query_map(
                params![
                    filter.is_active,
                    filter.strategy_type,
                    page_bound(filter.limit),
                    page_bound(filter.offset)
                ],
                strategy_from_row,
            )?
            .collect::<duckdb::Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }
}

/// Reads a strategy, or fails with [`Error::NotFound`] when no strategy has this id.
fn read_strategy(connection: &Connection, id: i64) -> Result<Strategy> {
    connection
        .query_row(
            "SELECT * FROM strategies WHERE id = ?",
            [id],
            strategy_from_row,
        )
        .optional()?
        .ok_or(Error::NotFound {
            entity: "strategy",
            id,
        })
}

fn strategy_from_row(row: &Row<'_>) -> duckdb::Result<Strategy> {
    Ok(Strategy {
        id: row.get("id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        strategy_type: row.get("strategy_type")?,
        config: row.get("config")?,
        is_active: row.get("is_active")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}
