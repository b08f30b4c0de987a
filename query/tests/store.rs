//! Tests of the metadata store on a DuckDB file in a temporary folder.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::Path;
use std::thread;

use bst_query::{
    Backtest, BacktestFilter, BacktestOrder, BacktestOutcome, BacktestStatus, EquityPoint, Error,
    ExtendedMetrics, LATEST_SCHEMA_VERSION, NewBacktest, NewStrategy, NewTrade, Store,
    StrategyFilter, TradeFilter,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tempfile::TempDir;

const DB_FILE: &str = "metadata.duckdb";

fn open_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("create temporary folder");
    let store = Store::open(&dir.path().join(DB_FILE)).expect("open store");
    (dir, store)
}

/// Returns 2024-01-01T00:00:00Z plus `minutes`.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn new_strategy(name: &str, strategy_type: &str, is_active: bool) -> NewStrategy {
    NewStrategy {
        name: name.to_owned(),
        description: None,
        strategy_type: strategy_type.to_owned(),
        config: json!({"fast": 10, "slow": 30}),
        is_active,
    }
}

fn new_backtest(strategy_id: i64, symbol: &str) -> NewBacktest {
    NewBacktest {
        strategy_id,
        symbol: symbol.to_owned(),
        timeframe: "60".to_owned(),
        start_date: at(0),
        end_date: at(60 * 24 * 30),
        initial_capital: 10_000.0,
        leverage: 2.0,
        commission: 0.00055,
        config: json!({"fast": 12}),
    }
}

fn outcome(total_return: f64, sharpe_ratio: Option<f64>) -> BacktestOutcome {
    BacktestOutcome {
        final_capital: 10_000.0 * (1.0 + total_return),
        total_return,
        total_trades: 4,
        winning_trades: 3,
        losing_trades: 1,
        win_rate: Some(0.75),
        sharpe_ratio,
        max_drawdown: Some(0.125),
        metrics: json!({"profit_factor": 2.5, "avg_trade_pnl": 31.25}),
        params: json!({"fast": 12, "slow": 30}),
        engine_version: "bst-engine 0.1.0".to_owned(),
        data_start: Some(at(0)),
        data_end: Some(at(60 * 24 * 30 - 60)),
    }
}

fn new_trade(entry_minute: i64, side: &str, pnl: f64) -> NewTrade {
    NewTrade {
        entry_time: at(entry_minute),
        exit_time: at(entry_minute + 90),
        side: side.to_owned(),
        entry_price: 42_000.5,
        exit_price: 42_000.5 + pnl,
        quantity: 1.0,
        pnl,
        pnl_pct: pnl / 42_000.5,
        commission: 0.25,
        funding: pnl / 100.0,
        exit_reason: "take_profit".to_owned(),
    }
}

/// Returns `count` equity points one minute apart from minute `first_minute`, with a
/// drawdown that follows the equity's running peak.
fn equity_curve(first_minute: i64, count: i64) -> Vec<EquityPoint> {
    let mut peak = f64::MIN;
    (0..count)
        .map(|index| {
            // A wave with a slow upward trend, so the curve has drawdowns and new peaks.
            let equity = 10_000.0 + index as f64 * 0.01 + 250.0 * (index as f64 / 997.0).sin();
            peak = peak.max(equity);
            EquityPoint {
                open_time: at(first_minute + index),
                equity,
                drawdown: (peak - equity) / peak * 100.0,
            }
        })
        .collect()
}

fn ids(backtests: &[Backtest]) -> Vec<i64> {
    backtests.iter().map(|backtest| backtest.id).collect()
}

/// Reads `(version, applied_at)` rows straight from the file, bypassing the store.
fn read_migration_rows(path: &Path) -> Vec<(i64, DateTime<Utc>)> {
    let connection = duckdb::Connection::open(path).unwrap();
    let mut statement = connection
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap()
}

#[test]
fn migrations_create_schema_and_version() {
    let (dir, store) = open_store();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA_VERSION);
    drop(store);

    let path = dir.path().join(DB_FILE);
    let rows = read_migration_rows(&path);
    assert!(!rows.is_empty());
    assert_eq!(rows.last().unwrap().0, LATEST_SCHEMA_VERSION);

    let connection = duckdb::Connection::open(&path).unwrap();
    let mut statement = connection
        .prepare("SELECT table_name FROM information_schema.tables ORDER BY table_name")
        .unwrap();
    let tables: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "backtests",
            "bots",
            "deals",
            "equity_points",
            "optimization_results",
            "optimizations",
            "schema_migrations",
            "strategies",
            "trades"
        ]
    );
}

#[test]
fn reopen_adds_equity_table_to_version_1() {
    let (dir, store) = open_store();
    let path = dir.path().join(DB_FILE);
    let strategy = store
        .create_strategy(&new_strategy("kept", "trend", true))
        .unwrap();
    drop(store);

    // Turn the file back into a version 1 database, as an earlier release left it.
    let connection = duckdb::Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "DROP TABLE equity_points; ALTER TABLE trades DROP COLUMN funding; \
             DELETE FROM schema_migrations WHERE version >= 2;",
        )
        .unwrap();
    drop(connection);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA_VERSION);
    assert!(store.get_strategy(strategy.id).unwrap().is_some());
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    let curve = equity_curve(0, 3);
    store
        .complete_backtest(backtest.id, &outcome(0.1, None), &[], &curve, at(2))
        .unwrap();
    assert_eq!(store.equity_curve(backtest.id).unwrap(), curve);
}

#[test]
fn reopen_adds_trade_funding_to_version_2() {
    let (dir, store) = open_store();
    let path = dir.path().join(DB_FILE);
    let strategy = store
        .create_strategy(&new_strategy("kept", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    let trades = [new_trade(60, "long", 12.5)];
    store
        .complete_backtest(backtest.id, &outcome(0.1, None), &trades, &[], at(2))
        .unwrap();
    drop(store);

    // Turn the file back into a version 2 database, whose trades had no funding column.
    let connection = duckdb::Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "ALTER TABLE trades DROP COLUMN funding; \
             DELETE FROM schema_migrations WHERE version >= 3;",
        )
        .unwrap();
    drop(connection);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA_VERSION);
    drop(store);
    let connection = duckdb::Connection::open(&path).unwrap();
    let nullable: String = connection
        .query_row(
            "SELECT is_nullable FROM information_schema.columns
             WHERE table_name = 'trades' AND column_name = 'funding'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(nullable, "NO");
    drop(connection);

    let store = Store::open(&path).unwrap();
    let stored = store
        .list_trades(backtest.id, &TradeFilter::default())
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].funding, 0.0);
    assert_eq!(stored[0].pnl, 12.5);

    let next = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(3))
        .unwrap();
    store.claim_backtest(next.id, at(4)).unwrap().unwrap();
    store
        .complete_backtest(next.id, &outcome(0.1, None), &trades, &[], at(5))
        .unwrap();
    let stored = store.list_trades(next.id, &TradeFilter::default()).unwrap();
    assert_eq!(stored[0].funding, trades[0].funding);
}

#[test]
fn backtest_json_has_flat_metrics() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    let queued = serde_json::to_value(&backtest).unwrap();
    for field in ["sortino_ratio", "bars", "liquidations", "total_funding"] {
        assert_eq!(queued.get(field), Some(&Value::Null), "{field}");
    }

    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    let mut results = outcome(0.1, None);
    results.metrics = json!({
        "bars": 1440,
        "sortino_ratio": 1.25,
        "calmar_ratio": null,
        "max_drawdown_duration_seconds": 3600,
        "liquidations": 2,
        "total_funding": -0.75
    });
    let completed = store
        .complete_backtest(backtest.id, &results, &[], &[], at(2))
        .unwrap();
    let json = serde_json::to_value(&completed).unwrap();

    assert_eq!(json["bars"], json!(1440));
    assert_eq!(json["sortino_ratio"], json!(1.25));
    assert_eq!(json["calmar_ratio"], Value::Null);
    assert_eq!(json["max_drawdown_duration_seconds"], json!(3600));
    assert_eq!(json["liquidations"], json!(2));
    assert_eq!(json["total_funding"], json!(-0.75));
    assert_eq!(json["profit_factor"], Value::Null);
    assert_eq!(json["metrics"], results.metrics);
}

#[test]
fn in_memory_store_is_migrated() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.schema_version().unwrap(), LATEST_SCHEMA_VERSION);
    let strategy = store
        .create_strategy(&new_strategy("memory", "trend", true))
        .unwrap();
    assert_eq!(strategy.id, 1);
}

#[test]
fn open_rejects_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join(DB_FILE);

    let error = Store::open(&path).unwrap_err();

    assert!(matches!(error, Error::MissingFolder { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(!path.exists());
}

#[test]
fn reopen_keeps_data_and_applies_nothing() {
    let (dir, store) = open_store();
    let path = dir.path().join(DB_FILE);
    let strategy = store
        .create_strategy(&new_strategy("keep me", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(5))
        .unwrap();
    drop(store);
    let migrations_before = read_migration_rows(&path);

    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.schema_version().unwrap(), LATEST_SCHEMA_VERSION);
    assert_eq!(reopened.get_strategy(strategy.id).unwrap(), Some(strategy));
    assert_eq!(reopened.get_backtest(backtest.id).unwrap(), Some(backtest));
    let next = reopened
        .create_strategy(&new_strategy("after reopen", "trend", true))
        .unwrap();
    assert_eq!(next.id, 2, "the id sequence continues after a reopen");
    drop(reopened);

    assert_eq!(read_migration_rows(&path), migrations_before);
}

#[test]
fn strategy_create_and_get() {
    let (_dir, store) = open_store();
    let before = Utc::now() - Duration::milliseconds(1);
    let new = NewStrategy {
        name: "EMA cross".to_owned(),
        description: Some("Fast EMA crossing the slow EMA".to_owned()),
        strategy_type: "trend".to_owned(),
        config: json!({"fast": 9, "slow": 21, "filters": {"rsi": [30, 70]}}),
        is_active: true,
    };

    let created = store.create_strategy(&new).unwrap();
    let after = Utc::now();

    assert_eq!(created.id, 1);
    assert_eq!(created.name, "EMA cross");
    assert_eq!(
        created.description.as_deref(),
        Some("Fast EMA crossing the slow EMA")
    );
    assert_eq!(created.strategy_type, "trend");
    assert_eq!(created.config["filters"]["rsi"], json!([30, 70]));
    assert!(created.is_active);
    assert_eq!(created.created_at, created.updated_at);
    assert!(
        created.created_at >= before,
        "{} < {before}",
        created.created_at
    );
    assert!(
        created.created_at <= after,
        "{} > {after}",
        created.created_at
    );
    assert_eq!(store.get_strategy(created.id).unwrap(), Some(created));
    assert_eq!(store.get_strategy(99).unwrap(), None);
}

#[test]
fn strategy_config_must_be_object() {
    let (_dir, store) = open_store();
    let mut new = new_strategy("list config", "trend", true);
    new.config = json!([1, 2]);

    let error = store.create_strategy(&new).unwrap_err();

    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "config",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        store
            .list_strategies(&StrategyFilter::default())
            .unwrap()
            .total,
        0
    );
}

#[test]
fn strategy_list_filters_and_paging() {
    let (_dir, store) = open_store();
    let specs = [
        ("a", "trend", true),
        ("b", "mean_reversion", true),
        ("c", "trend", false),
        ("d", "trend", true),
        ("e", "mean_reversion", false),
        ("f", "trend", true),
        ("g", "grid", true),
    ];
    for (name, strategy_type, is_active) in specs {
        store
            .create_strategy(&new_strategy(name, strategy_type, is_active))
            .unwrap();
    }
    // Ids follow insertion order, starting at 1.
    let expected_names = |is_active: Option<bool>, strategy_type: Option<&str>| -> Vec<&str> {
        specs
            .iter()
            .filter(|(_, kind, active)| {
                is_active.is_none_or(|wanted| wanted == *active)
                    && strategy_type.is_none_or(|wanted| wanted == *kind)
            })
            .map(|(name, _, _)| *name)
            .collect()
    };

    let cases = [
        (None, None),
        (Some(true), None),
        (Some(false), None),
        (None, Some("trend")),
        (Some(true), Some("trend")),
        (Some(false), Some("grid")),
    ];
    for (is_active, strategy_type) in cases {
        let filter = StrategyFilter {
            is_active,
            strategy_type: strategy_type.map(str::to_owned),
            limit: 100,
            offset: 0,
        };
        let page = store.list_strategies(&filter).unwrap();
        let names: Vec<&str> = page.items.iter().map(|s| s.name.as_str()).collect();
        let expected = expected_names(is_active, strategy_type);
        assert_eq!(names, expected, "{filter:?}");
        assert_eq!(page.total, expected.len() as u64, "{filter:?}");
    }

    let active_trend = expected_names(Some(true), Some("trend"));
    assert_eq!(active_trend, ["a", "d", "f"]);
    let page = store
        .list_strategies(&StrategyFilter {
            is_active: Some(true),
            strategy_type: Some("trend".to_owned()),
            limit: 2,
            offset: 1,
        })
        .unwrap();
    let names: Vec<&str> = page.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["d", "f"]);
    assert_eq!(page.total, 3);

    let past_end = store
        .list_strategies(&StrategyFilter {
            offset: 50,
            ..StrategyFilter::default()
        })
        .unwrap();
    assert!(past_end.items.is_empty());
    assert_eq!(past_end.total, 7);

    let huge_limit = store
        .list_strategies(&StrategyFilter {
            limit: u64::MAX,
            ..StrategyFilter::default()
        })
        .unwrap();
    assert_eq!(huge_limit.items.len(), 7);
}

#[test]
fn backtest_missing_strategy_not_found() {
    let (_dir, store) = open_store();

    let error = store
        .create_backtest(&new_backtest(404, "BTCUSDT"), at(0))
        .unwrap_err();

    assert!(
        matches!(
            error,
            Error::NotFound {
                entity: "strategy",
                id: 404
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "strategy 404 not found");
    let page = store.list_backtests(&BacktestFilter::default()).unwrap();
    assert_eq!(page.total, 0);
}

#[test]
fn backtest_create_rejects_invalid_input() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let valid = new_backtest(strategy.id, "BTCUSDT");

    let mut reversed = valid.clone();
    reversed.end_date = reversed.start_date;
    let mut no_capital = valid.clone();
    no_capital.initial_capital = 0.0;
    let mut nan_leverage = valid.clone();
    nan_leverage.leverage = f64::NAN;
    let mut negative_commission = valid.clone();
    negative_commission.commission = -0.001;
    let mut string_config = valid.clone();
    string_config.config = json!("fast=12");

    let cases = [
        (reversed, "end_date"),
        (no_capital, "initial_capital"),
        (nan_leverage, "leverage"),
        (negative_commission, "commission"),
        (string_config, "config"),
    ];
    for (new, expected_field) in cases {
        let error = store.create_backtest(&new, at(0)).unwrap_err();
        match error {
            Error::InvalidValue { field, .. } => assert_eq!(field, expected_field),
            other => panic!("expected InvalidValue for {expected_field}, got {other:?}"),
        }
    }

    let mut zero_commission = valid;
    zero_commission.commission = 0.0;
    assert!(store.create_backtest(&zero_commission, at(0)).is_ok());
    let page = store.list_backtests(&BacktestFilter::default()).unwrap();
    assert_eq!(page.total, 1);
}

#[test]
fn backtest_create_and_get() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let new = new_backtest(strategy.id, "ETHUSDT");

    let created = store.create_backtest(&new, at(3)).unwrap();

    assert_eq!(created.id, 1);
    assert_eq!(created.strategy_id, strategy.id);
    assert_eq!(created.symbol, "ETHUSDT");
    assert_eq!(created.timeframe, "60");
    assert_eq!(created.start_date, at(0));
    assert_eq!(created.end_date, at(43_200));
    assert_eq!(created.initial_capital, 10_000.0);
    assert_eq!(created.leverage, 2.0);
    assert_eq!(created.commission, 0.00055);
    assert_eq!(created.config, json!({"fast": 12}));
    assert_eq!(created.status, BacktestStatus::Queued);
    assert_eq!(created.created_at, at(3));
    assert_eq!(created.error_message, None);
    assert_eq!(created.started_at, None);
    assert_eq!(created.completed_at, None);
    assert_eq!(created.final_capital, None);
    assert_eq!(created.total_trades, None);
    assert_eq!(created.metrics, None);
    assert_eq!(created.extended, ExtendedMetrics::default());
    assert_eq!(created.params, None);
    assert_eq!(created.engine_version, None);
    assert_eq!(created.data_start, None);
    assert_eq!(store.get_backtest(created.id).unwrap(), Some(created));
    assert_eq!(store.get_backtest(2).unwrap(), None);
}

#[test]
fn backtest_timestamps_keep_microseconds() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let precise = at(7) + Duration::microseconds(123_456);
    let with_nanos = precise + Duration::nanoseconds(789);

    let created = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), with_nanos)
        .unwrap();

    assert_eq!(created.created_at, precise);
}

#[test]
fn backtest_list_filters() {
    let (_dir, store) = open_store();
    let first = store
        .create_strategy(&new_strategy("first", "trend", true))
        .unwrap();
    let second = store
        .create_strategy(&new_strategy("second", "grid", true))
        .unwrap();
    // (strategy, symbol) of backtests 1..=6.
    let specs = [
        (first.id, "BTCUSDT"),
        (first.id, "ETHUSDT"),
        (second.id, "BTCUSDT"),
        (first.id, "BTCUSDT"),
        (second.id, "SOLUSDT"),
        (second.id, "BTCUSDT"),
    ];
    for (minute, (strategy_id, symbol)) in (0..).zip(specs) {
        store
            .create_backtest(&new_backtest(strategy_id, symbol), at(minute))
            .unwrap();
    }
    store.claim_backtest(3, at(10)).unwrap().unwrap();
    store.claim_backtest(4, at(11)).unwrap().unwrap();
    store.fail_backtest(4, "no data", at(12)).unwrap();
    let statuses = [
        BacktestStatus::Queued,
        BacktestStatus::Queued,
        BacktestStatus::Running,
        BacktestStatus::Failed,
        BacktestStatus::Queued,
        BacktestStatus::Queued,
    ];

    let cases = [
        (None, None, None),
        (Some(first.id), None, None),
        (Some(second.id), None, None),
        (None, Some("BTCUSDT"), None),
        (None, None, Some(BacktestStatus::Queued)),
        (None, None, Some(BacktestStatus::Completed)),
        (Some(second.id), Some("BTCUSDT"), None),
        (
            Some(first.id),
            Some("BTCUSDT"),
            Some(BacktestStatus::Failed),
        ),
        (
            Some(second.id),
            Some("BTCUSDT"),
            Some(BacktestStatus::Queued),
        ),
    ];
    for (strategy_id, symbol, status) in cases {
        let expected: Vec<i64> = (1..)
            .zip(specs.iter().zip(statuses))
            .filter(|(_, ((spec_strategy, spec_symbol), spec_status))| {
                strategy_id.is_none_or(|wanted| wanted == *spec_strategy)
                    && symbol.is_none_or(|wanted| wanted == *spec_symbol)
                    && status.is_none_or(|wanted| wanted == *spec_status)
            })
            .map(|(id, _)| id)
            .collect();
        let filter = BacktestFilter {
            strategy_id,
            symbol: symbol.map(str::to_owned),
            status,
            ..BacktestFilter::default()
        };
        let page = store.list_backtests(&filter).unwrap();
        assert_eq!(ids(&page.items), expected, "{filter:?}");
        assert_eq!(page.total, expected.len() as u64, "{filter:?}");
    }

    let page = store
        .list_backtests(&BacktestFilter {
            symbol: Some("BTCUSDT".to_owned()),
            limit: 2,
            offset: 1,
            ..BacktestFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&page.items), [3, 4]);
    assert_eq!(page.total, 4);
}

/// Sorts backtests the way `list_backtests` documents: NULLs last in both directions, and
/// ties broken by id in the same direction.
fn expected_order(backtests: &[Backtest], order: BacktestOrder, descending: bool) -> Vec<i64> {
    let directed = |ordering: Ordering| {
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    };
    let nullable = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => directed(a.total_cmp(&b)),
    };
    let mut sorted = backtests.to_vec();
    sorted.sort_by(|a, b| {
        let primary = match order {
            BacktestOrder::Id => directed(a.id.cmp(&b.id)),
            BacktestOrder::CreatedAt => directed(a.created_at.cmp(&b.created_at)),
            BacktestOrder::Symbol => directed(a.symbol.cmp(&b.symbol)),
            BacktestOrder::Status => directed(a.status.as_str().cmp(b.status.as_str())),
            BacktestOrder::TotalReturn => nullable(a.total_return, b.total_return),
            BacktestOrder::SharpeRatio => nullable(a.sharpe_ratio, b.sharpe_ratio),
            BacktestOrder::MaxDrawdown => nullable(a.max_drawdown, b.max_drawdown),
            BacktestOrder::WinRate => nullable(a.win_rate, b.win_rate),
            BacktestOrder::FinalCapital => nullable(a.final_capital, b.final_capital),
        };
        primary.then_with(|| directed(a.id.cmp(&b.id)))
    });
    ids(&sorted)
}

#[test]
fn backtest_list_every_order() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    // Created out of id order, with repeated times and symbols so that ties occur.
    let specs = [
        ("SOLUSDT", 30),
        ("BTCUSDT", 10),
        ("ETHUSDT", 20),
        ("BTCUSDT", 10),
        ("ADAUSDT", 40),
        ("ETHUSDT", 5),
        ("XRPUSDT", 25),
    ];
    for (symbol, minute) in specs {
        store
            .create_backtest(&new_backtest(strategy.id, symbol), at(minute))
            .unwrap();
    }
    // Complete 1, 3 and 5 with different metrics (5 without a Sharpe ratio), fail 2, leave 4
    // running and 6 and 7 queued.
    for id in [1, 3, 5, 2, 4] {
        store.claim_backtest(id, at(100)).unwrap().unwrap();
    }
    store
        .complete_backtest(1, &outcome(0.25, Some(1.5)), &[], &[], at(200))
        .unwrap();
    let mut same_return = outcome(0.25, Some(0.5));
    same_return.max_drawdown = Some(0.3);
    same_return.win_rate = Some(0.5);
    store
        .complete_backtest(3, &same_return, &[], &[], at(201))
        .unwrap();
    let mut losing = outcome(-0.1, None);
    losing.max_drawdown = None;
    store
        .complete_backtest(5, &losing, &[], &[], at(202))
        .unwrap();
    store.fail_backtest(2, "engine error", at(203)).unwrap();

    let all: Vec<Backtest> = (1..=7)
        .map(|id| store.get_backtest(id).unwrap().unwrap())
        .collect();
    for order in BacktestOrder::ALL {
        for descending in [false, true] {
            let filter = BacktestFilter {
                order_by: order,
                descending,
                ..BacktestFilter::default()
            };
            let expected = expected_order(&all, order, descending);
            let page = store.list_backtests(&filter).unwrap();
            assert_eq!(
                ids(&page.items),
                expected,
                "{order} descending={descending}"
            );
            assert_eq!(page.total, 7);

            let paged = store
                .list_backtests(&BacktestFilter {
                    limit: 3,
                    offset: 2,
                    ..filter
                })
                .unwrap();
            assert_eq!(
                ids(&paged.items),
                expected[2..5],
                "{order} descending={descending} page"
            );
        }
    }

    // Spot checks written out by hand.
    let by_created = store.list_backtests(&BacktestFilter::default()).unwrap();
    assert_eq!(ids(&by_created.items), [6, 2, 4, 3, 7, 1, 5]);
    let by_return = store
        .list_backtests(&BacktestFilter {
            order_by: BacktestOrder::TotalReturn,
            descending: true,
            ..BacktestFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&by_return.items), [3, 1, 5, 7, 6, 4, 2]);
}

#[test]
fn backtest_order_parses_names() {
    for order in BacktestOrder::ALL {
        assert_eq!(order.as_str().parse::<BacktestOrder>().unwrap(), order);
    }
    assert_eq!(BacktestOrder::default(), BacktestOrder::CreatedAt);

    let error = "name; DROP TABLE backtests"
        .parse::<BacktestOrder>()
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("name; DROP TABLE backtests"), "{message}");
    for order in BacktestOrder::ALL {
        assert!(message.contains(order.as_str()), "{message}");
    }
}

#[test]
fn backtest_status_text_forms() {
    let names = ["queued", "running", "completed", "failed", "cancelled"];
    for (status, name) in BacktestStatus::ALL.into_iter().zip(names) {
        assert_eq!(status.as_str(), name);
        assert_eq!(status.to_string(), name);
        assert_eq!(name.parse::<BacktestStatus>().unwrap(), status);
        assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
    }

    let error = "Done".parse::<BacktestStatus>().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("\"Done\""), "{message}");
    for name in names {
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn claim_next_takes_oldest_queued() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    for minute in [30, 10, 20, 10] {
        store
            .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(minute))
            .unwrap();
    }

    let claimed: Vec<i64> = (0..4)
        .map(|_| store.claim_next_backtest(at(99)).unwrap().unwrap().id)
        .collect();

    assert_eq!(claimed, [2, 4, 3, 1]);
    assert_eq!(store.claim_next_backtest(at(99)).unwrap(), None);
}

#[test]
fn claim_next_is_exclusive_across_threads() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let queued: HashSet<i64> = (0..20)
        .map(|minute| {
            store
                .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(minute))
                .unwrap()
                .id
        })
        .collect();
    let now = at(500);

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            thread::spawn(move || {
                let mut claimed = Vec::new();
                while let Some(backtest) = store.claim_next_backtest(now).unwrap() {
                    assert_eq!(backtest.status, BacktestStatus::Running);
                    assert_eq!(backtest.started_at, Some(now));
                    claimed.push(backtest.id);
                }
                claimed
            })
        })
        .collect();
    let mut claimed: Vec<i64> = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .collect();

    claimed.sort_unstable();
    let mut expected: Vec<i64> = queued.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(claimed, expected, "each backtest is claimed exactly once");
    let running = store
        .list_backtests(&BacktestFilter {
            status: Some(BacktestStatus::Running),
            ..BacktestFilter::default()
        })
        .unwrap();
    assert_eq!(running.total, 20);
}

#[test]
fn claim_backtest_only_when_queued() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();

    let claimed = store.claim_backtest(backtest.id, at(5)).unwrap().unwrap();
    assert_eq!(claimed.status, BacktestStatus::Running);
    assert_eq!(claimed.started_at, Some(at(5)));
    assert_eq!(store.claim_backtest(backtest.id, at(6)).unwrap(), None);
    assert_eq!(
        store.get_backtest(backtest.id).unwrap().unwrap().started_at,
        Some(at(5))
    );

    let error = store.claim_backtest(77, at(6)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                entity: "backtest",
                id: 77
            }
        ),
        "{error:?}"
    );
}

#[test]
fn complete_stores_metrics_and_trades() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    let queued_error = store
        .complete_backtest(backtest.id, &outcome(0.1, Some(1.0)), &[], &[], at(1))
        .unwrap_err();
    assert!(
        matches!(
            queued_error,
            Error::InvalidTransition {
                from: BacktestStatus::Queued,
                to: BacktestStatus::Completed,
                ..
            }
        ),
        "{queued_error:?}"
    );
    store.claim_backtest(backtest.id, at(2)).unwrap().unwrap();
    let trades = [
        new_trade(300, "long", 120.0),
        new_trade(60, "short", -40.0),
        new_trade(600, "long", 55.5),
        new_trade(180, "long", 9.25),
    ];
    let mut results = outcome(0.01447, Some(1.8));
    results.final_capital = 10_144.7;

    let completed = store
        .complete_backtest(backtest.id, &results, &trades, &[], at(9))
        .unwrap();

    assert_eq!(completed.status, BacktestStatus::Completed);
    assert_eq!(completed.started_at, Some(at(2)));
    assert_eq!(completed.completed_at, Some(at(9)));
    assert_eq!(completed.error_message, None);
    assert_eq!(completed.final_capital, Some(10_144.7));
    assert_eq!(completed.total_return, Some(0.01447));
    assert_eq!(completed.total_trades, Some(4));
    assert_eq!(completed.winning_trades, Some(3));
    assert_eq!(completed.losing_trades, Some(1));
    assert_eq!(completed.win_rate, Some(0.75));
    assert_eq!(completed.sharpe_ratio, Some(1.8));
    assert_eq!(completed.max_drawdown, Some(0.125));
    assert_eq!(
        completed.metrics,
        Some(json!({"profit_factor": 2.5, "avg_trade_pnl": 31.25}))
    );
    assert_eq!(
        completed.extended,
        ExtendedMetrics {
            profit_factor: Some(2.5),
            ..ExtendedMetrics::default()
        }
    );
    assert_eq!(completed.params, Some(json!({"fast": 12, "slow": 30})));
    assert_eq!(
        completed.engine_version.as_deref(),
        Some("bst-engine 0.1.0")
    );
    assert_eq!(completed.data_start, Some(at(0)));
    assert_eq!(completed.data_end, Some(at(43_140)));
    assert_eq!(
        store.get_backtest(backtest.id).unwrap(),
        Some(completed.clone())
    );

    assert_eq!(store.count_trades(backtest.id).unwrap(), 4);
    let stored = store
        .list_trades(backtest.id, &TradeFilter::default())
        .unwrap();
    let entry_minutes: Vec<DateTime<Utc>> = stored.iter().map(|t| t.entry_time).collect();
    assert_eq!(entry_minutes, [at(60), at(180), at(300), at(600)]);
    let by_entry = [&trades[1], &trades[3], &trades[0], &trades[2]];
    for (trade, input) in stored.iter().zip(by_entry) {
        assert_eq!(trade.backtest_id, backtest.id);
        assert_eq!(trade.exit_time, input.exit_time);
        assert_eq!(trade.side, input.side);
        assert_eq!(trade.entry_price, input.entry_price);
        assert_eq!(trade.exit_price, input.exit_price);
        assert_eq!(trade.quantity, input.quantity);
        assert_eq!(trade.pnl, input.pnl);
        assert_eq!(trade.pnl_pct, input.pnl_pct);
        assert_eq!(trade.commission, input.commission);
        assert_eq!(trade.funding, input.funding);
        assert_eq!(trade.exit_reason, input.exit_reason);
        assert_eq!(trade.created_at, at(9));
    }

    let again = store
        .complete_backtest(backtest.id, &results, &trades, &[], at(10))
        .unwrap_err();
    assert!(
        matches!(
            again,
            Error::InvalidTransition {
                from: BacktestStatus::Completed,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(store.count_trades(backtest.id).unwrap(), 4);
}

#[test]
fn complete_replaces_earlier_trades() {
    let (dir, store) = open_store();
    let path = dir.path().join(DB_FILE);
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    let first_attempt = [new_trade(60, "long", 1.0), new_trade(120, "long", 2.0)];
    store
        .complete_backtest(
            backtest.id,
            &outcome(0.1, None),
            &first_attempt,
            &equity_curve(0, 50),
            at(2),
        )
        .unwrap();
    drop(store);

    // Put the backtest back to running directly in the file, as if its results had been stored
    // by an attempt whose completion is being repeated.
    let connection = duckdb::Connection::open(&path).unwrap();
    connection
        .execute(
            "UPDATE backtests SET status = 'running' WHERE id = ?",
            [backtest.id],
        )
        .unwrap();
    drop(connection);

    let store = Store::open(&path).unwrap();
    let second_attempt = [new_trade(30, "short", -3.0)];
    let second_curve = equity_curve(10, 20);
    store
        .complete_backtest(
            backtest.id,
            &outcome(0.2, None),
            &second_attempt,
            &second_curve,
            at(3),
        )
        .unwrap();

    let stored = store
        .list_trades(backtest.id, &TradeFilter::default())
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].side, "short");
    assert_eq!(stored[0].pnl, -3.0);
    assert_eq!(store.count_trades(backtest.id).unwrap(), 1);
    assert_eq!(store.equity_curve(backtest.id).unwrap(), second_curve);
}

#[test]
fn complete_rejects_invalid_input() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();

    let bad_side = [new_trade(60, "long", 1.0), new_trade(90, "buy", 2.0)];
    let error = store
        .complete_backtest(backtest.id, &outcome(0.1, None), &bad_side, &[], at(2))
        .unwrap_err();
    assert!(
        matches!(error, Error::InvalidValue { field: "trade side", ref value, .. } if value == "buy"),
        "{error:?}"
    );

    let mut list_metrics = outcome(0.1, None);
    list_metrics.metrics = json!([1.0, 2.0]);
    let error = store
        .complete_backtest(backtest.id, &list_metrics, &[], &[], at(2))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "metrics",
                ..
            }
        ),
        "{error:?}"
    );

    let error = store
        .complete_backtest(55, &outcome(0.1, None), &[], &[], at(2))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                entity: "backtest",
                id: 55
            }
        ),
        "{error:?}"
    );

    let unchanged = store.get_backtest(backtest.id).unwrap().unwrap();
    assert_eq!(unchanged.status, BacktestStatus::Running);
    assert_eq!(unchanged.final_capital, None);
    assert_eq!(store.count_trades(backtest.id).unwrap(), 0);
}

#[test]
fn trade_filter_side_and_paging() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    let other = store
        .create_backtest(&new_backtest(strategy.id, "ETHUSDT"), at(1))
        .unwrap();
    store.claim_backtest(backtest.id, at(2)).unwrap().unwrap();
    store.claim_backtest(other.id, at(2)).unwrap().unwrap();
    // Two trades share an entry time, so the id decides their order.
    let trades = [
        new_trade(500, "long", 1.0),
        new_trade(100, "short", 2.0),
        new_trade(300, "long", 3.0),
        new_trade(200, "short", 4.0),
        new_trade(300, "short", 5.0),
        new_trade(50, "long", 6.0),
        new_trade(400, "long", 7.0),
    ];
    store
        .complete_backtest(backtest.id, &outcome(0.1, None), &trades, &[], at(3))
        .unwrap();
    store
        .complete_backtest(
            other.id,
            &outcome(0.1, None),
            &[new_trade(10, "long", 99.0)],
            &[],
            at(3),
        )
        .unwrap();
    // The pnl values identify the trades. Expected order: entry time, then insertion order.
    let mut ordered: Vec<&NewTrade> = trades.iter().collect();
    ordered.sort_by_key(|trade| trade.entry_time);
    let expected_pnl = |side: Option<&str>, limit: usize, offset: usize| -> Vec<f64> {
        ordered
            .iter()
            .filter(|trade| side.is_none_or(|wanted| wanted == trade.side))
            .skip(offset)
            .take(limit)
            .map(|trade| trade.pnl)
            .collect()
    };

    let cases = [
        (None, 100, 0),
        (Some("long"), 100, 0),
        (Some("short"), 100, 0),
        (Some("long"), 2, 1),
        (Some("short"), 2, 2),
        (None, 3, 3),
        (Some("long"), 10, 4),
    ];
    for (side, limit, offset) in cases {
        let filter = TradeFilter {
            side: side.map(str::to_owned),
            limit: limit as u64,
            offset: offset as u64,
        };
        let listed = store.list_trades(backtest.id, &filter).unwrap();
        let pnl: Vec<f64> = listed.iter().map(|trade| trade.pnl).collect();
        assert_eq!(pnl, expected_pnl(side, limit, offset), "{filter:?}");
        assert!(listed.iter().all(|trade| trade.backtest_id == backtest.id));
    }
    assert_eq!(expected_pnl(Some("long"), 2, 1), [3.0, 7.0]);
    assert_eq!(
        expected_pnl(None, 100, 0),
        [6.0, 2.0, 4.0, 3.0, 5.0, 7.0, 1.0]
    );

    let error = store
        .list_trades(
            backtest.id,
            &TradeFilter {
                side: Some("buy".to_owned()),
                ..TradeFilter::default()
            },
        )
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("\"buy\""), "{message}");
    assert!(
        message.contains("long") && message.contains("short"),
        "{message}"
    );

    let error = store.list_trades(999, &TradeFilter::default()).unwrap_err();
    assert!(
        matches!(error, Error::NotFound { id: 999, .. }),
        "{error:?}"
    );
    let error = store.count_trades(999).unwrap_err();
    assert!(
        matches!(error, Error::NotFound { id: 999, .. }),
        "{error:?}"
    );
}

#[test]
fn fail_sets_status_and_message() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let running = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    let queued = store
        .create_backtest(&new_backtest(strategy.id, "ETHUSDT"), at(1))
        .unwrap();
    store.claim_backtest(running.id, at(2)).unwrap().unwrap();

    let failed = store
        .fail_backtest(running.id, "no klines for BTCUSDT 60 in range", at(4))
        .unwrap();

    assert_eq!(failed.status, BacktestStatus::Failed);
    assert_eq!(
        failed.error_message.as_deref(),
        Some("no klines for BTCUSDT 60 in range")
    );
    assert_eq!(failed.started_at, Some(at(2)));
    assert_eq!(failed.completed_at, Some(at(4)));
    assert_eq!(failed.final_capital, None);
    assert_eq!(store.get_backtest(running.id).unwrap(), Some(failed));

    let failed_queued = store
        .fail_backtest(queued.id, "invalid config", at(5))
        .unwrap();
    assert_eq!(failed_queued.status, BacktestStatus::Failed);
    assert_eq!(failed_queued.started_at, None);

    let error = store.fail_backtest(running.id, "again", at(6)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidTransition {
                from: BacktestStatus::Failed,
                to: BacktestStatus::Failed,
                ..
            }
        ),
        "{error:?}"
    );
    let error = store.fail_backtest(123, "missing", at(6)).unwrap_err();
    assert!(
        matches!(error, Error::NotFound { id: 123, .. }),
        "{error:?}"
    );
}

#[test]
fn requeue_running_moves_back_to_queued() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    for minute in 0..4 {
        store
            .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(minute))
            .unwrap();
    }
    // 1 and 2 running, 3 completed, 4 queued.
    for id in [1, 2, 3] {
        store.claim_backtest(id, at(10)).unwrap().unwrap();
    }
    let completed = store
        .complete_backtest(
            3,
            &outcome(0.1, None),
            &[new_trade(5, "long", 1.0)],
            &[],
            at(11),
        )
        .unwrap();

    assert_eq!(store.requeue_running_backtests().unwrap(), 2);

    for id in [1, 2] {
        let backtest = store.get_backtest(id).unwrap().unwrap();
        assert_eq!(backtest.status, BacktestStatus::Queued);
        assert_eq!(backtest.started_at, None);
    }
    assert_eq!(store.get_backtest(3).unwrap(), Some(completed));
    assert_eq!(
        store.get_backtest(4).unwrap().unwrap().status,
        BacktestStatus::Queued
    );
    assert_eq!(store.requeue_running_backtests().unwrap(), 0);
    assert_eq!(store.claim_next_backtest(at(20)).unwrap().unwrap().id, 1);
}

#[test]
fn text_with_quotes_and_sql_stored_verbatim() {
    let (_dir, store) = open_store();
    let name = "Robert'); DROP TABLE strategies; --";
    let description = "say \"hi\" \\ $1 ? :name %s {}";
    let strategy_type = "x' OR '1'='1";
    let config = json!({"note": "it's \"quoted\"; DELETE FROM backtests;"});
    let strategy = store
        .create_strategy(&NewStrategy {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            strategy_type: strategy_type.to_owned(),
            config: config.clone(),
            is_active: true,
        })
        .unwrap();
    store
        .create_strategy(&new_strategy("plain", "trend", true))
        .unwrap();

    let stored = store.get_strategy(strategy.id).unwrap().unwrap();
    assert_eq!(stored.name, name);
    assert_eq!(stored.description.as_deref(), Some(description));
    assert_eq!(stored.strategy_type, strategy_type);
    assert_eq!(stored.config, config);

    let matching = store
        .list_strategies(&StrategyFilter {
            strategy_type: Some(strategy_type.to_owned()),
            ..StrategyFilter::default()
        })
        .unwrap();
    assert_eq!(matching.total, 1);
    assert_eq!(matching.items[0].id, strategy.id);

    let symbol = "BTC'USDT\"; --";
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, symbol), at(0))
        .unwrap();
    let by_symbol = store
        .list_backtests(&BacktestFilter {
            symbol: Some(symbol.to_owned()),
            ..BacktestFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&by_symbol.items), [backtest.id]);

    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    let mut trade = new_trade(10, "long", 1.0);
    trade.exit_reason = "stop'); DELETE FROM trades; --".to_owned();
    store
        .complete_backtest(
            backtest.id,
            &outcome(0.1, None),
            &[trade.clone()],
            &[],
            at(2),
        )
        .unwrap();
    let trades = store
        .list_trades(backtest.id, &TradeFilter::default())
        .unwrap();
    assert_eq!(trades[0].exit_reason, trade.exit_reason);

    let all = store.list_strategies(&StrategyFilter::default()).unwrap();
    assert_eq!(all.total, 2);
    let stored_backtest = store.get_backtest(backtest.id).unwrap().unwrap();
    assert_eq!(stored_backtest.symbol, symbol);
    let expected_config: Value = json!({"fast": 12});
    assert_eq!(stored_backtest.config, expected_config);
}

#[test]
fn page_serializes_items_and_total() {
    let (_dir, store) = open_store();
    store
        .create_strategy(&new_strategy("s", "trend", false))
        .unwrap();

    let page = store.list_strategies(&StrategyFilter::default()).unwrap();
    let value = serde_json::to_value(&page).unwrap();

    assert_eq!(value["total"], json!(1));
    assert_eq!(value["items"][0]["name"], json!("s"));
    assert_eq!(value["items"][0]["is_active"], json!(false));
    let created_at = value["items"][0]["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
}

#[test]
fn complete_stores_many_trades_in_chunks() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    // 1,000 trades span several multi-row statements and a partial last one.
    let trades: Vec<NewTrade> = (0..1_000)
        .map(|index| {
            new_trade(
                index,
                if index % 2 == 0 { "long" } else { "short" },
                index as f64,
            )
        })
        .collect();

    store
        .complete_backtest(backtest.id, &outcome(0.0, None), &trades, &[], at(2))
        .unwrap();

    assert_eq!(store.count_trades(backtest.id).unwrap(), 1_000);
    let stored = store
        .list_trades(
            backtest.id,
            &TradeFilter {
                side: None,
                limit: 1_000,
                offset: 0,
            },
        )
        .unwrap();
    assert_eq!(stored.len(), 1_000);
    for (index, (trade, expected)) in stored.iter().zip(&trades).enumerate() {
        assert_eq!(trade.entry_time, expected.entry_time, "trade {index}");
        assert_eq!(trade.side, expected.side, "trade {index}");
        assert_eq!(trade.pnl, expected.pnl, "trade {index}");
    }
}

#[test]
fn equity_curve_round_trips_a_year_of_minutes() {
    let (dir, store) = open_store();
    let path = dir.path().join(DB_FILE);
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    let other = store
        .create_backtest(&new_backtest(strategy.id, "ETHUSDT"), at(0))
        .unwrap();
    assert_eq!(store.equity_curve(backtest.id).unwrap(), []);
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();
    store.claim_backtest(other.id, at(1)).unwrap().unwrap();
    // 525,600 points: a year of 1-minute bars, the size the appender is for.
    let curve = equity_curve(0, 525_600);
    let other_curve = equity_curve(5, 3);

    let started = std::time::Instant::now();
    store
        .complete_backtest(backtest.id, &outcome(0.1, None), &[], &curve, at(2))
        .unwrap();
    let elapsed = started.elapsed();
    store
        .complete_backtest(other.id, &outcome(0.1, None), &[], &other_curve, at(2))
        .unwrap();
    // A generous bound that one INSERT per row would exceed many times over.
    assert!(
        elapsed < std::time::Duration::from_secs(60),
        "storing 525,600 points took {elapsed:?}"
    );
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.count_equity_points(backtest.id).unwrap(), 525_600);
    let stored = store.equity_curve(backtest.id).unwrap();
    assert_eq!(stored.len(), curve.len());
    assert_eq!(stored.first(), curve.first());
    assert_eq!(stored.last(), curve.last());
    assert!(stored == curve, "the stored curve differs from the input");
    assert_eq!(store.equity_curve(other.id).unwrap(), other_curve);
}

#[test]
fn equity_curve_of_unknown_backtest_not_found() {
    let (_dir, store) = open_store();
    let error = store.equity_curve(404).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                entity: "backtest",
                id: 404
            }
        ),
        "{error:?}"
    );
    let error = store.count_equity_points(404).unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
}

#[test]
fn complete_rejects_invalid_equity() {
    let (_dir, store) = open_store();
    let strategy = store
        .create_strategy(&new_strategy("s", "trend", true))
        .unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id, "BTCUSDT"), at(0))
        .unwrap();
    store.claim_backtest(backtest.id, at(1)).unwrap().unwrap();

    let mut not_finite = equity_curve(0, 5);
    not_finite[3].equity = f64::NAN;
    let error = store
        .complete_backtest(backtest.id, &outcome(0.1, None), &[], &not_finite, at(2))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "equity",
                ..
            }
        ),
        "{error:?}"
    );

    let mut infinite_drawdown = equity_curve(0, 5);
    infinite_drawdown[0].drawdown = f64::INFINITY;
    let error = store
        .complete_backtest(
            backtest.id,
            &outcome(0.1, None),
            &[],
            &infinite_drawdown,
            at(2),
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "drawdown",
                ..
            }
        ),
        "{error:?}"
    );

    let mut repeated_time = equity_curve(0, 5);
    repeated_time[2].open_time = repeated_time[1].open_time;
    let error = store
        .complete_backtest(backtest.id, &outcome(0.1, None), &[], &repeated_time, at(2))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidValue {
                field: "open_time",
                ..
            }
        ),
        "{error:?}"
    );

    let unchanged = store.get_backtest(backtest.id).unwrap().unwrap();
    assert_eq!(unchanged.status, BacktestStatus::Running);
    assert_eq!(store.count_equity_points(backtest.id).unwrap(), 0);
}
