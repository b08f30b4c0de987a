//! Trade rows of completed backtests.

use chrono::{DateTime, Utc};
use duckdb::{Connection, Row, ToSql, params};

use crate::backtests::backtest_status;
use crate::error::Result;
use crate::model::{NewTrade, Trade, TradeFilter, check_side};
use crate::store::{Store, page_bound, timestamp};

impl Store {
    /// Returns one page of a backtest's trades, ordered by `entry_time` and then id.
    ///
    /// Fails with [`crate::Error::NotFound`] when no backtest has this id and with
    /// [`crate::Error::InvalidValue`] when the side filter is not `"long"` or `"short"`.
    pub fn list_trades(&self, backtest_id: i64, filter: &TradeFilter) -> Result<Vec<Trade>> {
        if let Some(side) = &filter.side {
            check_side(side)?;
        }
        self.read_snapshot(|connection| {
            backtest_status(connection, backtest_id)?;
            let mut statement = connection.prepare(
                "SELECT * FROM trades
                 WHERE backtest_id = $1 AND ($2::VARCHAR IS NULL OR side = $2::VARCHAR)
                 ORDER BY entry_time, id
                 LIMIT $3 OFFSET $4",
            )?;
            let trades = statement
                .query_map(
                    params![
                        backtest_id,
                        filter.side,
                        page_bound(filter.limit),
                        page_bound(filter.offset)
                    ],
                    trade_from_row,
                )?
                .collect::<duckdb::Result<Vec<_>>>()?;
            Ok(trades)
        })
    }

    /// Returns the number of trades stored for a backtest.
    ///
    /// Fails with [`crate::Error::NotFound`] when no backtest has this id.
    pub fn count_trades(&self, backtest_id: i64) -> Result<u64> {
        self.read_snapshot(|connection| {
            backtest_status(connection, backtest_id)?;
            let count = connection.query_row(
                "SELECT count(*) FROM trades WHERE backtest_id = ?",
                [backtest_id],
                |row| row.get(0),
            )?;
            Ok(count)
        })
    }
}

/// Rejects trades whose side is not `"long"` or `"short"`.
pub(crate) fn check_trades(trades: &[NewTrade]) -> Result<()> {
    trades.iter().try_for_each(|trade| check_side(&trade.side))
}

/// Rows of one multi-row INSERT statement.
const TRADES_PER_INSERT: usize = 256;

/// Inserts trades of a backtest with `created_at = now`, inside the caller's transaction.
pub(crate) fn insert_trades(
    connection: &Connection,
    backtest_id: i64,
    trades: &[NewTrade],
    now: DateTime<Utc>,
) -> Result<()> {
    let created_at = timestamp(now);
    // One statement per chunk of rows: each DuckDB statement costs about as much as a
    // thousand rows, so a row per statement made large backtests hold the store for seconds.
    for chunk in trades.chunks(TRADES_PER_INSERT) {
        let times: Vec<_> = chunk
            .iter()
            .map(|trade| (timestamp(trade.entry_time), timestamp(trade.exit_time)))
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 13);
        for (trade, (entry_time, exit_time)) in chunk.iter().zip(&times) {
            values.extend([
                &backtest_id as &dyn ToSql,
                entry_time,
                exit_time,
                &trade.side,
                &trade.entry_price,
                &trade.exit_price,
                &trade.quantity,
                &trade.pnl,
                &trade.pnl_pct,
                &trade.commission,
                &trade.funding,
                &trade.exit_reason,
                &created_at,
            ]);
        }
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        connection.execute(
            &format!(
                "INSERT INTO trades (backtest_id, entry_time, exit_time, side, entry_price,
                     exit_price, quantity, pnl, pnl_pct, commission, funding, exit_reason,
                     created_at)
                 VALUES {rows}"
            ),
            values.as_slice(),
        )?;
    }
    Ok(())
}

fn trade_from_row(row: &Row<'_>) -> duckdb::Result<Trade> {
    Ok(Trade {
        id: row.get("id")?,
        backtest_id: row.get("backtest_id")?,
        entry_time: row.get("entry_time")?,
        exit_time: row.get("exit_time")?,
        side: row.get("side")?,
        entry_price: row.get("entry_price")?,
        exit_price: row.get("exit_price")?,
        quantity: row.get("quantity")?,
        pnl: row.get("pnl")?,
        pnl_pct: row.get("pnl_pct")?,
        commission: row.get("commission")?,
        funding: row.get("funding")?,
        exit_reason: row.get("exit_reason")?,
        created_at: row.get("created_at")?,
    })
}
