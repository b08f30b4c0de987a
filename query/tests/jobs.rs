//! Tests of the store methods behind the external-worker and editing routes: claims with
//! stale reclaim, cancel, delete, updates checked against an earlier read, and cached reads
//! that follow every write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use bst_query::{
    Backtest, BacktestFilter, BacktestOutcome, BacktestStatus, ClaimOutcome,
    DEFAULT_CLAIM_STALE_AFTER, EquityPoint, Error, NewBacktest, NewStrategy, NewTrade, Store,
    StrategyDeletion, TradeFilter, UpdateOutcome,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tempfile::TempDir;

const DB_FILE: &str = "metadata.duckdb";

fn open_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("create temporary folder");
    let store = Store::open(&dir.path().join(DB_FILE)).expect("open store");
    (dir, store)
}

/// Returns 2024-01-01T00:00:00Z plus `seconds`.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn new_strategy(name: &str) -> NewStrategy {
    NewStrategy {
        name: name.to_owned(),
        description: Some("test".to_owned()),
        strategy_type: "sma_crossover".to_owned(),
        config: json!({"fast": 10, "slow": 30}),
        is_active: true,
    }
}

fn new_backtest(strategy_id: i64) -> NewBacktest {
    NewBacktest {
        strategy_id,
        symbol: "BTCUSDT".to_owned(),
        timeframe: "60".to_owned(),
        start_date: at(0),
        end_date: at(86_400 * 30),
        initial_capital: 10_000.0,
        leverage: 1.0,
        commission: 0.00055,
        config: json!({}),
    }
}

fn outcome() -> BacktestOutcome {
    BacktestOutcome {
        final_capital: 11_000.0,
        total_return: 10.0,
        total_trades: 1,
        winning_trades: 1,
        losing_trades: 0,
        win_rate: Some(100.0),
        sharpe_ratio: Some(1.5),
        max_drawdown: Some(2.0),
        metrics: json!({}),
        params: json!({"fast": 10}),
        engine_version: "test".to_owned(),
        data_start: None,
        data_end: None,
    }
}

fn trade() -> NewTrade {
    NewTrade {
        entry_time: at(3_600),
        exit_time: at(7_200),
        side: "long".to_owned(),
        entry_price: 100.0,
        exit_price: 110.0,
        quantity: 1.0,
        pnl: 10.0,
        pnl_pct: 10.0,
        commission: 0.0,
        funding: 0.0,
        exit_reason: "signal".to_owned(),
    }
}

fn equity() -> Vec<EquityPoint> {
    vec![EquityPoint {
        open_time: at(0),
        equity: 10_000.0,
        drawdown: 0.0,
    }]
}

/// Returns a store with one strategy and one queued backtest of it.
fn store_with_backtest() -> (TempDir, Store, i64, i64) {
    let (dir, store) = open_store();
    let strategy = store.create_strategy(&new_strategy("s")).unwrap();
    let backtest = store
        .create_backtest(&new_backtest(strategy.id), at(0))
        .unwrap();
    (dir, store, strategy.id, backtest.id)
}

#[test]
fn claim_for_worker_reports_each_status() {
    let (_dir, store, _, id) = store_with_backtest();
    let stale = Duration::from_std(DEFAULT_CLAIM_STALE_AFTER).unwrap();

    let ClaimOutcome::Claimed(claimed) = store.claim_backtest_for_worker(id, at(100)).unwrap()
    else {
        panic!("a queued backtest was not claimed");
    };
    assert_eq!(claimed.status, BacktestStatus::Running);
    assert_eq!(claimed.started_at, Some(at(100)));

    let just_before = at(100) + stale - Duration::seconds(1);
    let ClaimOutcome::Running(running) = store.claim_backtest_for_worker(id, just_before).unwrap()
    else {
        panic!("a fresh claim was taken");
    };
    assert_eq!(running.started_at, Some(at(100)));

    // A clock behind the claim does not make it stale.
    let earlier = store.claim_backtest_for_worker(id, at(0)).unwrap();
    assert!(matches!(earlier, ClaimOutcome::Running(_)), "{earlier:?}");

    let stale_time = at(100) + stale;
    let ClaimOutcome::Claimed(reclaimed) = store.claim_backtest_for_worker(id, stale_time).unwrap()
    else {
        panic!("a stale claim was not taken");
    };
    assert_eq!(reclaimed.started_at, Some(stale_time));
    assert_eq!(reclaimed.status, BacktestStatus::Running);

    store
        .complete_backtest(id, &outcome(), &[trade()], &equity(), at(2_000))
        .unwrap();
    let completed = store.claim_backtest_for_worker(id, at(1_000_000)).unwrap();
    let ClaimOutcome::Completed(completed) = completed else {
        panic!("a completed backtest was claimed: {completed:?}");
    };
    assert_eq!(completed.status, BacktestStatus::Completed);

    let error = store.claim_backtest_for_worker(999, at(0)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                entity: "backtest",
                id: 999
            }
        ),
        "{error:?}"
    );
}

#[test]
fn claim_stale_time_is_configurable() {
    let (_dir, store, _, id) = store_with_backtest();
    let store = store.with_claim_stale_after(StdDuration::from_secs(30));
    assert_eq!(store.claim_stale_after(), StdDuration::from_secs(30));
    assert_eq!(
        Store::open_in_memory().unwrap().claim_stale_after(),
        DEFAULT_CLAIM_STALE_AFTER
    );

    store.claim_backtest_for_worker(id, at(0)).unwrap();
    let fresh = store.claim_backtest_for_worker(id, at(29)).unwrap();
    assert!(matches!(fresh, ClaimOutcome::Running(_)), "{fresh:?}");
    let stale = store.claim_backtest_for_worker(id, at(30)).unwrap();
    assert!(matches!(stale, ClaimOutcome::Claimed(_)), "{stale:?}");
}

#[test]
fn claim_for_worker_is_exclusive_across_threads() {
    const THREADS: usize = 32;
    let (_dir, store, _, id) = store_with_backtest();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store.claim_backtest_for_worker(id, at(5)).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<ClaimOutcome> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    let claimed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, ClaimOutcome::Claimed(_)))
        .count();
    let running = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, ClaimOutcome::Running(_)))
        .count();
    assert_eq!(claimed, 1);
    assert_eq!(running, THREADS - 1);
}

#[test]
fn cancel_blocks_later_outcomes() {
    let (_dir, store, strategy, queued) = store_with_backtest();
    let cancelled = store.cancel_backtest(queued, at(10)).unwrap();
    assert_eq!(cancelled.status, BacktestStatus::Cancelled);
    assert_eq!(cancelled.completed_at, Some(at(10)));
    let again = store.cancel_backtest(queued, at(11)).unwrap_err();
    assert!(
        matches!(
            again,
            Error::InvalidTransition {
                from: BacktestStatus::Cancelled,
                to: BacktestStatus::Cancelled,
                ..
            }
        ),
        "{again:?}"
    );
    let claim = store.claim_backtest_for_worker(queued, at(12)).unwrap();
    assert!(matches!(claim, ClaimOutcome::Ended(_)), "{claim:?}");
    assert_eq!(store.claim_next_backtest(at(12)).unwrap(), None);

    // A running backtest cancelled while its worker runs: neither outcome lands.
    let running = store
        .create_backtest(&new_backtest(strategy), at(20))
        .unwrap()
        .id;
    store.claim_backtest_for_worker(running, at(21)).unwrap();
    store.cancel_backtest(running, at(22)).unwrap();
    let completed = store
        .complete_backtest(running, &outcome(), &[trade()], &equity(), at(23))
        .unwrap_err();
    assert!(
        matches!(
            completed,
            Error::InvalidTransition {
                from: BacktestStatus::Cancelled,
                to: BacktestStatus::Completed,
                ..
            }
        ),
        "{completed:?}"
    );
    let failed = store.fail_backtest(running, "boom", at(24)).unwrap_err();
    assert!(
        matches!(failed, Error::InvalidTransition { .. }),
        "{failed:?}"
    );
    let stored = store.get_backtest(running).unwrap().unwrap();
    assert_eq!(stored.status, BacktestStatus::Cancelled);
    assert_eq!(stored.final_capital, None);
    assert_eq!(store.count_trades(running).unwrap(), 0);

    let error = store.cancel_backtest(999, at(0)).unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
}

#[test]
fn delete_backtest_removes_trades_and_equity() {
    let (dir, store, strategy, id) = store_with_backtest();
    let other_backtest = store
        .create_backtest(&new_backtest(strategy), at(1))
        .unwrap()
        .id;
    store.claim_backtest_for_worker(id, at(2)).unwrap();
    store
        .complete_backtest(id, &outcome(), &[trade(), trade()], &equity(), at(3))
        .unwrap();
    store
        .claim_backtest_for_worker(other_backtest, at(2))
        .unwrap();
    store
        .complete_backtest(other_backtest, &outcome(), &[trade()], &equity(), at(3))
        .unwrap();

    store.delete_backtest(id).unwrap();
    assert_eq!(store.get_backtest(id).unwrap(), None);
    assert!(matches!(
        store.count_trades(id).unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        store.count_equity_points(id).unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        store.delete_backtest(id).unwrap_err(),
        Error::NotFound { .. }
    ));
    assert_eq!(store.count_trades(other_backtest).unwrap(), 1);
    assert_eq!(
        store
            .list_trades(other_backtest, &TradeFilter::default())
            .unwrap()
            .len(),
        1
    );

    // No orphan rows are left behind, as the database file itself shows.
    drop(store);
    let connection = duckdb::Connection::open(dir.path().join(DB_FILE)).unwrap();
    for table in ["trades", "equity_points"] {
        let rows: i64 = connection
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE backtest_id = ?"),
                [id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0, "{table} rows of the deleted backtest");
    }
}

#[test]
fn update_queued_backtest_checks_previous() {
    let (_dir, store, _, id) = store_with_backtest();
    let other = store.create_strategy(&new_strategy("other")).unwrap().id;
    let stored = store.get_backtest(id).unwrap().unwrap();
    let previous = NewBacktest::from(&stored);

    let mut updated = previous.clone();
    updated.strategy_id = other;
    updated.leverage = 3.0;
    updated.config = json!({"fast": 4});
    let UpdateOutcome::Updated(backtest) = store
        .update_queued_backtest(id, &previous, &updated)
        .unwrap()
    else {
        panic!("the update was not applied");
    };
    assert_eq!(backtest.strategy_id, other);
    assert_eq!(backtest.leverage, 3.0);
    assert_eq!(backtest.config, json!({"fast": 4}));
    assert_eq!(backtest.created_at, stored.created_at);
    assert_eq!(NewBacktest::from(&backtest), updated);

    // The caller's read is now out of date.
    let mut late = previous.clone();
    late.initial_capital = 1.0;
    assert_eq!(
        store.update_queued_backtest(id, &previous, &late).unwrap(),
        UpdateOutcome::Changed
    );

    let mut missing = updated.clone();
    missing.strategy_id = 999;
    assert!(matches!(
        store
            .update_queued_backtest(id, &updated, &missing)
            .unwrap_err(),
        Error::NotFound {
            entity: "strategy",
            id: 999
        }
    ));
    let mut invalid = updated.clone();
    invalid.end_date = invalid.start_date;
    assert!(matches!(
        store
            .update_queued_backtest(id, &updated, &invalid)
            .unwrap_err(),
        Error::InvalidValue {
            field: "end_date",
            ..
        }
    ));

    store.claim_backtest_for_worker(id, at(5)).unwrap();
    assert_eq!(
        store.update_queued_backtest(id, &updated, &late).unwrap(),
        UpdateOutcome::NotQueued(BacktestStatus::Running)
    );
    assert!(matches!(
        store
            .update_queued_backtest(999, &updated, &late)
            .unwrap_err(),
        Error::NotFound {
            entity: "backtest",
            ..
        }
    ));
    assert_eq!(store.get_backtest(id).unwrap().unwrap().strategy_id, other);
}

#[test]
fn update_strategy_checks_previous() {
    let (_dir, store) = open_store();
    let created = store.create_strategy(&new_strategy("first")).unwrap();
    let previous = NewStrategy::from(&created);
    let mut updated = previous.clone();
    updated.name = "renamed".to_owned();
    updated.description = None;
    updated.is_active = false;
    let later = created.updated_at + Duration::seconds(5);

    let UpdateOutcome::Updated(strategy) = store
        .update_strategy(created.id, &previous, &updated, later)
        .unwrap()
    else {
        panic!("the update was not applied");
    };
    assert_eq!(NewStrategy::from(&strategy), updated);
    assert_eq!(strategy.created_at, created.created_at);
    assert_eq!(strategy.updated_at, later);
    assert_eq!(store.get_strategy(created.id).unwrap(), Some(strategy));

    assert_eq!(
        store
            .update_strategy(created.id, &previous, &updated, later)
            .unwrap(),
        UpdateOutcome::Changed
    );
    let mut invalid = updated.clone();
    invalid.config = json!([1, 2]);
    assert!(matches!(
        store
            .update_strategy(created.id, &updated, &invalid, later)
            .unwrap_err(),
        Error::InvalidValue {
            field: "config",
            ..
        }
    ));
    assert!(matches!(
        store
            .update_strategy(999, &updated, &updated, later)
            .unwrap_err(),
        Error::NotFound {
            entity: "strategy",
            id: 999
        }
    ));
}

#[test]
fn delete_strategy_keeps_used_ones() {
    let (_dir, store, strategy, backtest) = store_with_backtest();
    assert_eq!(
        store.delete_strategy(strategy).unwrap(),
        StrategyDeletion::InUse {
            backtests: 1,
            optimizations: 0
        }
    );
    assert!(store.get_strategy(strategy).unwrap().is_some());

    store.delete_backtest(backtest).unwrap();
    assert_eq!(
        store.delete_strategy(strategy).unwrap(),
        StrategyDeletion::Deleted
    );
    assert_eq!(store.get_strategy(strategy).unwrap(), None);
    assert!(matches!(
        store.delete_strategy(strategy).unwrap_err(),
        Error::NotFound {
            entity: "strategy",
            ..
        }
    ));
}

/// Reads backtest `id` and the default list page, so that both are cached, and returns them.
fn read_twice(store: &Store, id: i64) -> (Option<Backtest>, u64) {
    let first = store.get_backtest(id).unwrap();
    let again = store.get_backtest(id).unwrap();
    assert_eq!(first, again, "a repeated read of backtest {id} differs");
    assert_eq!(
        store.cached_backtest(id),
        Some(first.clone()),
        "backtest {id} is not cached after a read"
    );
    let filter = BacktestFilter::default();
    let total = store.list_backtests(&filter).unwrap().total;
    assert_eq!(
        store.cached_backtests(&filter).map(|page| page.total),
        Some(total)
    );
    (first, total)
}

fn status_of(store: &Store, id: i64) -> BacktestStatus {
    read_twice(store, id).0.expect("backtest exists").status
}

#[test]
fn cached_reads_follow_every_backtest_write() {
    let (_dir, store, strategy_id, first) = store_with_backtest();
    let (first_row, total) = read_twice(&store, first);
    assert_eq!(total, 1);
    // The id that the next create takes, read while no backtest has it.
    assert_eq!(read_twice(&store, first + 1).0, None);

    let second = store
        .create_backtest(&new_backtest(strategy_id), at(1))
        .unwrap()
        .id;
    assert_eq!(second, first + 1, "ids are not sequential");
    assert_eq!(store.cached_backtest(second), None, "create kept the miss");
    assert_eq!(
        store.cached_backtests(&BacktestFilter::default()),
        None,
        "create kept the list page"
    );
    assert_eq!(
        store.cached_backtest(first),
        Some(first_row),
        "a create dropped an unchanged row"
    );
    assert_eq!(read_twice(&store, second).0.unwrap().id, second);
    assert_eq!(read_twice(&store, first).1, 2);

    let previous = NewBacktest::from(&store.get_backtest(first).unwrap().unwrap());
    let mut updated = previous.clone();
    updated.initial_capital = 777.0;
    let update = store
        .update_queued_backtest(first, &previous, &updated)
        .unwrap();
    assert!(matches!(update, UpdateOutcome::Updated(_)), "{update:?}");
    let capital = read_twice(&store, first).0.unwrap().initial_capital;
    assert_eq!(capital, 777.0);

    store.claim_backtest_for_worker(first, at(10)).unwrap();
    assert_eq!(status_of(&store, first), BacktestStatus::Running);
    store
        .complete_backtest(first, &outcome(), &[trade()], &equity(), at(20))
        .unwrap();
    assert_eq!(status_of(&store, first), BacktestStatus::Completed);

    assert_eq!(status_of(&store, second), BacktestStatus::Queued);
    store.claim_next_backtest(at(30)).unwrap().unwrap();
    assert_eq!(status_of(&store, second), BacktestStatus::Running);
    store.requeue_running_backtests().unwrap();
    assert_eq!(status_of(&store, second), BacktestStatus::Queued);
    store.claim_backtest(second, at(40)).unwrap().unwrap();
    assert_eq!(status_of(&store, second), BacktestStatus::Running);
    store.fail_backtest(second, "boom", at(50)).unwrap();
    assert_eq!(status_of(&store, second), BacktestStatus::Failed);

    let third = store
        .create_backtest(&new_backtest(strategy_id), at(60))
        .unwrap()
        .id;
    assert_eq!(read_twice(&store, third).1, 3);
    store.cancel_backtest(third, at(70)).unwrap();
    assert_eq!(status_of(&store, third), BacktestStatus::Cancelled);
    store.delete_backtest(third).unwrap();
    let (deleted, total) = read_twice(&store, third);
    assert_eq!(deleted, None);
    assert_eq!(total, 2);
    assert_eq!(store.cached_backtest(third), Some(None));
}

#[test]
fn cached_read_sees_every_returned_write() {
    let updates: u64 = std::env::var("BST_CACHE_RACE_UPDATES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let (_dir, store, strategy_id, first) = store_with_backtest();
    let second = store
        .create_backtest(&new_backtest(strategy_id), at(1))
        .unwrap()
        .id;
    let ids = [first, second];
    // The capital that the last returned update of each backtest wrote. Reads must never see
    // less. The writer alternates between the two, so a write to one lands while a read of
    // the other runs.
    let returned: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(10_000), AtomicU64::new(10_000)]);
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, returned, done) = (store.clone(), Arc::clone(&returned), Arc::clone(&done));
            thread::spawn(move || {
                let mut reads = 0_u64;
                while !done.load(Ordering::Acquire) {
                    for (slot, id) in ids.into_iter().enumerate() {
                        let floor = returned[slot].load(Ordering::Acquire);
                        let capital = store.get_backtest(id).unwrap().unwrap().initial_capital;
                        assert!(
                            capital >= floor as f64,
                            "read capital {capital} of backtest {id} after an update to {floor} \
                             had returned"
                        );
                    }
                    let floors = returned
                        .each_ref()
                        .map(|floor| floor.load(Ordering::Acquire));
                    let listed = store.list_backtests(&BacktestFilter::default()).unwrap();
                    for (slot, id) in ids.into_iter().enumerate() {
                        let row = listed.items.iter().find(|row| row.id == id).unwrap();
                        assert!(
                            row.initial_capital >= floors[slot] as f64,
                            "listed capital {} of backtest {id} after an update to {} had \
                             returned",
                            row.initial_capital,
                            floors[slot]
                        );
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    for step in 0..2 * updates {
        let slot = (step % 2) as usize;
        let (id, capital) = (ids[slot], 10_001 + step / 2);
        let previous = NewBacktest::from(&store.get_backtest(id).unwrap().unwrap());
        let mut updated = previous.clone();
        updated.initial_capital = capital as f64;
        let outcome = store
            .update_queued_backtest(id, &previous, &updated)
            .unwrap();
        assert!(
            matches!(outcome, UpdateOutcome::Updated(_)),
            "update of backtest {id} to {capital} found a stale previous read: {outcome:?}"
        );
        returned[slot].store(capital, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let reads: u64 = readers
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .sum();
    assert!(reads > 0, "the readers made no read");
    for id in ids {
        let last = store.get_backtest(id).unwrap().unwrap().initial_capital;
        assert_eq!(last, (10_000 + updates) as f64, "backtest {id}");
    }
}

#[test]
fn bot_writes_run_beside_long_backtest_write() {
    let trade_count: usize = std::env::var("BST_LONG_WRITE_TRADES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000);
    let (_dir, store, _, id) = store_with_backtest();
    store.claim_backtest_for_worker(id, at(10)).unwrap();
    let mut long_outcome = outcome();
    long_outcome.total_trades = trade_count as i64;
    long_outcome.winning_trades = trade_count as i64;
    let trades: Vec<NewTrade> = (0..trade_count)
        .map(|index| {
            let mut trade = trade();
            trade.entry_time = at(index as i64 * 10);
            trade.exit_time = at(index as i64 * 10 + 5);
            trade
        })
        .collect();

    let started = Arc::new(Barrier::new(2));
    let writer = {
        let (store, started) = (store.clone(), Arc::clone(&started));
        thread::spawn(move || {
            started.wait();
            let begin = Instant::now();
            store
                .complete_backtest(id, &long_outcome, &trades, &equity(), at(20))
                .unwrap();
            begin.elapsed()
        })
    };
    started.wait();
    thread::sleep(StdDuration::from_millis(100));
    let begin = Instant::now();
    store.advance_bots().unwrap();
    let bot_write = begin.elapsed();
    let backtest_write = writer.join().unwrap();

    assert!(
        backtest_write > StdDuration::from_millis(400),
        "the write of {trade_count} trades took only {backtest_write:?}, too short to show \
         anything; raise BST_LONG_WRITE_TRADES"
    );
    assert!(
        bot_write * 4 < backtest_write,
        "advance_bots took {bot_write:?} beside a backtest write of {backtest_write:?}, so it \
         waited for that write"
    );
}

#[test]
fn delete_race_gives_all_rows_or_not_found() {
    let rounds: usize = std::env::var("BST_DELETE_RACE_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let (_dir, store) = open_store();
    let strategy = store.create_strategy(&new_strategy("s")).unwrap().id;
    let trades = vec![trade(); 5];
    let points: Vec<EquityPoint> = (0..50)
        .map(|index| EquityPoint {
            open_time: at(index * 60),
            equity: 10_000.0,
            drawdown: 0.0,
        })
        .collect();
    let mut full_outcome = outcome();
    full_outcome.total_trades = 5;
    full_outcome.winning_trades = 5;

    for round in 0..rounds {
        let id = store
            .create_backtest(&new_backtest(strategy), at(0))
            .unwrap()
            .id;
        store.claim_backtest_for_worker(id, at(10)).unwrap();
        store
            .complete_backtest(id, &full_outcome, &trades, &points, at(20))
            .unwrap();

        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                thread::spawn(move || {
                    loop {
                        match store.list_trades(id, &TradeFilter::default()) {
                            Ok(rows) => assert_eq!(rows.len(), 5, "round {round}: trades"),
                            Err(Error::NotFound { .. }) => return,
                            Err(error) => panic!("round {round}: {error}"),
                        }
                        match store.equity_curve(id) {
                            Ok(rows) => assert_eq!(rows.len(), 50, "round {round}: equity"),
                            Err(Error::NotFound { .. }) => return,
                            Err(error) => panic!("round {round}: {error}"),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(StdDuration::from_millis(30));
        store.delete_backtest(id).unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
    }
}
