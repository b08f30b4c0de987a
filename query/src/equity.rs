//! Equity curves of completed backtests: one row per bar.

use duckdb::types::{TimeUnit, Value};
use duckdb::{Connection, params};

use crate::backtests::backtest_status;
use crate::error::{Error, Result};
use crate::model::EquityPoint;
use crate::store::Store;

impl Store {
    /// Returns the equity curve stored for a backtest, ordered by open time. A backtest that
    /// has not completed has an empty curve.
    ///
    /// Fails with [`Error::NotFound`] when no backtest has this id.
    pub fn equity_curve(&self, backtest_id: i64) -> Result<Vec<EquityPoint>> {
        self.read_snapshot(|connection| {
            backtest_status(connection, backtest_id)?;
            let mut statement = connection.prepare(
                "SELECT open_time, equity, drawdown FROM equity_points
                 WHERE backtest_id = ?
                 ORDER BY open_time",
            )?;
            let points = statement
                .query_map([backtest_id], |row| {
                    Ok(EquityPoint {
                        open_time: row.get(0)?,
                        equity: row.get(1)?,
                        drawdown: row.get(2)?,
                    })
                })?
                .collect::<duckdb::Result<Vec<_>>>()?;
            Ok(points)
        })
    }

    /// Returns the number of equity points stored for a backtest.
    ///
    /// Fails with [`Error::NotFound`] when no backtest has this id.
    pub fn count_equity_points(&self, backtest_id: i64) -> Result<u64> {
        self.read_snapshot(|connection| {
            backtest_status(connection, backtest_id)?;
            let count = connection.query_row(
                "SELECT count(*) FROM equity_points WHERE backtest_id = ?",
                [backtest_id],
                |row| row.get(0),
            )?;
            Ok(count)
        })
    }
}

/// Rejects a curve whose values are not finite or whose open times do not strictly increase.
pub(crate) fn check_equity(points: &[EquityPoint]) -> Result<()> {
    for (index, point) in points.iter().enumerate() {
        for (field, value) in [("equity", point.equity), ("drawdown", point.drawdown)] {
            if !value.is_finite() {
                return Err(Error::InvalidValue {
                    field,
                    value: value.to_string(),
                    expected: format!("a finite number at equity point {index}"),
                });
            }
        }
        if index > 0 && point.open_time <= points[index - 1].open_time {
            return Err(Error::InvalidValue {
                field: "open_time",
                value: point.open_time.to_rfc3339(),
                expected: format!(
                    "a time after {} at equity point {index}, because open times strictly \
                     increase",
                    points[index - 1].open_time.to_rfc3339()
                ),
            });
        }
    }
    Ok(())
}

/// Appends the equity curve of a backtest inside the caller's transaction.
///
/// DuckDB's appender writes the rows in column batches, which is far faster than INSERT
/// statements for the 525,600 points of a year of 1-minute bars.
pub(crate) fn insert_equity(
    connection: &Connection,
    backtest_id: i64,
    points: &[EquityPoint],
) -> Result<()> {
    let mut appender = connection.appender("equity_points")?;
    for point in points {
        let open_time = Value::Timestamp(TimeUnit::Microsecond, point.open_time.timestamp_micros());
        appender.append_row(params![
            backtest_id,
            open_time,
            point.equity,
            point.drawdown
        ])?;
    }
    // The flush on drop discards errors, so flush here to report them.
    appender.flush()?;
    Ok(())
}
