//! Schema migrations, applied in ascending version order.
//!
//! Timestamps are `TIMESTAMP` columns that contain UTC, so no time zone extension is needed.
//! JSON values are `VARCHAR` columns that contain serde_json text.
//!
//! The tables have no `FOREIGN KEY` constraints. DuckDB runs some `UPDATE`s as a `DELETE` plus
//! an `INSERT`, and that `DELETE` fails while a foreign key references the row (DuckDB
//! documentation, "Indexes", section "Over-Eager Constraint Checking in Foreign Keys"). With the
//! DuckDB bundled in the duckdb crate 1.20000.1, a foreign key from trades rejected the update
//! that completes a backtest after its trades were inserted. The store checks references
//! itself instead: `create_backtest` checks the strategy, and only `complete_backtest` inserts
//! trades, after it has read the backtest.

/// A schema change, applied in its own transaction.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
}

/// Every migration, in ascending version order. Append new ones and never edit applied ones.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: "
        CREATE SEQUENCE strategies_id_seq START 1;
        CREATE TABLE strategies (
            id BIGINT PRIMARY KEY DEFAULT nextval('strategies_id_seq'),
            name VARCHAR NOT NULL,
            description VARCHAR,
            strategy_type VARCHAR NOT NULL,
            config VARCHAR NOT NULL,
            is_active BOOLEAN NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );

        CREATE SEQUENCE backtests_id_seq START 1;
        CREATE TABLE backtests (
            id BIGINT PRIMARY KEY DEFAULT nextval('backtests_id_seq'),
            strategy_id BIGINT NOT NULL,
            symbol VARCHAR NOT NULL,
            timeframe VARCHAR NOT NULL,
            start_date TIMESTAMP NOT NULL,
            end_date TIMESTAMP NOT NULL,
            initial_capital DOUBLE NOT NULL,
            leverage DOUBLE NOT NULL,
            commission DOUBLE NOT NULL,
            config VARCHAR NOT NULL,
            status VARCHAR NOT NULL
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
            error_message VARCHAR,
            created_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            completed_at TIMESTAMP,
            final_capital DOUBLE,
            total_return DOUBLE,
            total_trades BIGINT,
            winning_trades BIGINT,
            losing_trades BIGINT,
            win_rate DOUBLE,
            sharpe_ratio DOUBLE,
            max_drawdown DOUBLE,
            metrics VARCHAR,
            params VARCHAR,
            engine_version VARCHAR,
            data_start TIMESTAMP,
            data_end TIMESTAMP
        );

        CREATE SEQUENCE trades_id_seq START 1;
        CREATE TABLE trades (
            id BIGINT PRIMARY KEY DEFAULT nextval('trades_id_seq'),
            backtest_id BIGINT NOT NULL,
            entry_time TIMESTAMP NOT NULL,
            exit_time TIMESTAMP NOT NULL,
            side VARCHAR NOT NULL CHECK (side IN ('long', 'short')),
            entry_price DOUBLE NOT NULL,
            exit_price DOUBLE NOT NULL,
            quantity DOUBLE NOT NULL,
            pnl DOUBLE NOT NULL,
            pnl_pct DOUBLE NOT NULL,
            commission DOUBLE NOT NULL,
            exit_reason VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        );
    ",
    },
    Migration {
        version: 2,
        // One row per bar of a completed backtest. Without a primary key, appending a year of
        // 1-minute bars (525,600 rows) builds no index. `complete_backtest` appends a backtest's
        // rows together, so DuckDB's per-row-group min/max statistics of `backtest_id` let reads
        // of one backtest skip most row groups of the others.
        sql: "
        CREATE TABLE equity_points (
            backtest_id BIGINT NOT NULL,
            open_time TIMESTAMP NOT NULL,
            equity DOUBLE NOT NULL,
            drawdown DOUBLE NOT NULL
        );
    ",
    },
    Migration {
        version: 3,
        // Funding each trade paid, in quote currency. The default fills the rows of trades
        // stored before the engine charged funding.
        sql: "
        ALTER TABLE trades ADD COLUMN funding DOUBLE NOT NULL DEFAULT 0;
    ",
    },
    Migration {
        version: 4,
        // Parameter sweeps queued over the REST API. The request columns mirror those of
        // backtests. `config` and `space` are JSON objects, `folds` is a JSON array and
        // `out_of_sample` a JSON object of a walk-forward. `optimization_results` has one row
        // per kept combination, written together when the run ends.
        sql: "
        CREATE SEQUENCE IF NOT EXISTS optimizations_id_seq START 1;
        CREATE TABLE IF NOT EXISTS optimizations (
            id BIGINT PRIMARY KEY DEFAULT nextval('optimizations_id_seq'),
            strategy_id BIGINT NOT NULL,
            symbol VARCHAR NOT NULL,
            timeframe VARCHAR NOT NULL,
            start_date TIMESTAMP NOT NULL,
            end_date TIMESTAMP NOT NULL,
            initial_capital DOUBLE NOT NULL,
            leverage DOUBLE NOT NULL,
            commission DOUBLE NOT NULL,
            config VARCHAR NOT NULL,
            space VARCHAR NOT NULL,
            method VARCHAR NOT NULL CHECK (method IN ('grid', 'random', 'walk_forward')),
            metric VARCHAR NOT NULL,
            trials UBIGINT NOT NULL,
            seed UBIGINT NOT NULL,
            top UBIGINT NOT NULL,
            train_bars UBIGINT,
            test_bars UBIGINT,
            step_bars UBIGINT,
            status VARCHAR NOT NULL
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
            error_message VARCHAR,
            progress DOUBLE NOT NULL DEFAULT 0,
            evaluated UBIGINT NOT NULL DEFAULT 0,
            total UBIGINT,
            tried UBIGINT,
            skipped UBIGINT,
            best_params VARCHAR,
            best_score DOUBLE,
            deflated_sharpe_ratio DOUBLE,
            folds VARCHAR,
            out_of_sample VARCHAR,
            created_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            completed_at TIMESTAMP
        );

        CREATE TABLE IF NOT EXISTS optimization_results (
            optimization_id BIGINT NOT NULL,
            rank UBIGINT NOT NULL,
            params VARCHAR NOT NULL,
            metrics VARCHAR NOT NULL
        );
    ",
    },
    Migration {
        version: 5,
        // Paper bots and their deals. The API shows the BIGINT ids as `bot_1` and `deal_1`.
        // `symbols` is a JSON array of strings. A deal's `exit_price` and `realized_pnl` (quote
        // currency) are set when it is closed.
        sql: "
        CREATE SEQUENCE IF NOT EXISTS bots_id_seq START 1;
        CREATE TABLE IF NOT EXISTS bots (
            id BIGINT PRIMARY KEY DEFAULT nextval('bots_id_seq'),
            name VARCHAR NOT NULL,
            strategy VARCHAR NOT NULL,
            symbols VARCHAR NOT NULL,
            capital_allocated DOUBLE NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN
                ('running', 'stopped', 'awaiting_start', 'awaiting_stop', 'error')),
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );

        CREATE SEQUENCE IF NOT EXISTS deals_id_seq START 1;
        CREATE TABLE IF NOT EXISTS deals (
            id BIGINT PRIMARY KEY DEFAULT nextval('deals_id_seq'),
            bot_id BIGINT NOT NULL,
            symbol VARCHAR NOT NULL,
            entry_price DOUBLE NOT NULL,
            quantity DOUBLE NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('active', 'closed', 'cancelled')),
            opened_at TIMESTAMP NOT NULL,
            closed_at TIMESTAMP,
            exit_price DOUBLE,
            realized_pnl DOUBLE
        );
    ",
    },
];

/// Version of the newest migration, which a fully migrated database reports.
pub const LATEST_SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migration_versions_strictly_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].version < pair[1].version,
                "migration {} is listed before migration {}",
                pair[0].version,
                pair[1].version
            );
        }
        assert!(MIGRATIONS[0].version >= 1);
    }
}
