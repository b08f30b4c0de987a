//! Tests of the optimization rows of the metadata store on a DuckDB file in a temporary
//! folder.

use std::collections::HashSet;
use std::thread;

use bst_query::{
    Error, NewOptimization, NewStrategy, OptimizationFilter, OptimizationOutcome,
    OptimizationParams, OptimizationResult, OptimizationStatus, Store,
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

/// Returns 2025-06-01T00:00:00Z plus `minutes`.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn create_strategy(store: &Store) -> i64 {
    store
        .create_strategy(&NewStrategy {
            name: "SMA".to_owned(),
            description: None,
            strategy_type: "sma_crossover".to_owned(),
            config: json!({"fast_period": 10, "slow_period": 30}),
            is_active: true,
        })
        .unwrap()
        .id
}

fn new_optimization(strategy_id: i64, method: &str) -> NewOptimization {
    NewOptimization {
        strategy_id,
        symbol: "BTCUSDT".to_owned(),
        timeframe: "1".to_owned(),
        start_date: at(0),
        end_date: at(60 * 24 * 14),
        params: OptimizationParams {
            space: json!({"fast_period": [5, 10, 20], "slow_period": [20, 40]}),
            method: method.to_owned(),
            metric: "sharpe_ratio".to_owned(),
            trials: 100,
            seed: u64::MAX,
            top: 10,
            config: json!({"stop_loss": 0.02}),
            initial_capital: 10_000.0,
            leverage: 1.0,
            commission: 0.00055,
            train: (method == "walk_forward").then_some(5_000),
            test: (method == "walk_forward").then_some(1_000),
            step: None,
        },
        total: Some(5),
    }
}

fn outcome(count: u64) -> OptimizationOutcome {
    let results: Vec<OptimizationResult> = (1..=count)
        .map(|rank| OptimizationResult {
            rank,
            params: json!({"fast_period": rank * 5, "slow_period": 40}),
            metrics: json!({"sharpe_ratio": 2.0 / rank as f64, "total_trades": 12}),
        })
        .collect();
    OptimizationOutcome {
        best_params: results.first().map(|result| result.params.clone()),
        best_score: Some(2.0),
        results,
        tried: 6,
        skipped: 1,
        evaluated: count,
        deflated_sharpe_ratio: Some(0.93),
        folds: None,
        out_of_sample: None,
    }
}

#[test]
fn create_get_round_trips_every_field() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let new = new_optimization(strategy_id, "walk_forward");
    let created = store.create_optimization(&new, at(5)).unwrap();

    assert_eq!(created.status, OptimizationStatus::Queued);
    assert_eq!(created.params, new.params);
    assert_eq!(created.total, Some(5));
    assert_eq!(created.evaluated, 0);
    assert_eq!(created.progress, 0.0);
    assert_eq!(created.created_at, at(5));
    assert_eq!(created.started_at, None);
    assert_eq!(created.best_params, None);
    assert_eq!(store.get_optimization(created.id).unwrap(), Some(created));
    assert_eq!(store.get_optimization(999).unwrap(), None);
}

#[test]
fn create_rejects_unknown_strategy_and_invalid_fields() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);

    let missing = store.create_optimization(&new_optimization(strategy_id + 1, "grid"), at(0));
    assert!(matches!(
        missing,
        Err(Error::NotFound {
            entity: "strategy",
            ..
        })
    ));

    let mut bad_method = new_optimization(strategy_id, "grid");
    bad_method.params.method = "annealing".to_owned();
    let mut bad_space = new_optimization(strategy_id, "grid");
    bad_space.params.space = json!([1, 2]);
    let mut bad_capital = new_optimization(strategy_id, "grid");
    bad_capital.params.initial_capital = 0.0;
    let mut bad_range = new_optimization(strategy_id, "grid");
    bad_range.end_date = bad_range.start_date;
    for (new, field) in [
        (bad_method, "method"),
        (bad_space, "space"),
        (bad_capital, "initial_capital"),
        (bad_range, "end_date"),
    ] {
        match store.create_optimization(&new, at(0)) {
            Err(Error::InvalidValue { field: named, .. }) => assert_eq!(named, field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        }
    }
    assert_eq!(
        store
            .list_optimizations(&OptimizationFilter::default())
            .unwrap()
            .total,
        0
    );
}

#[test]
fn list_filters_and_pages_newest_first() {
    let (_dir, store) = open_store();
    let first = create_strategy(&store);
    let second = create_strategy(&store);
    let mut ids = Vec::new();
    for index in 0..5 {
        let strategy_id = if index % 2 == 0 { first } else { second };
        ids.push(
            store
                .create_optimization(&new_optimization(strategy_id, "grid"), at(index))
                .unwrap()
                .id,
        );
    }
    store.claim_next_optimization(at(10)).unwrap().unwrap();

    let page = store
        .list_optimizations(&OptimizationFilter {
            limit: 2,
            offset: 1,
            ..OptimizationFilter::default()
        })
        .unwrap();
    assert_eq!(page.total, 5);
    let page_ids: Vec<i64> = page.items.iter().map(|item| item.id).collect();
    assert_eq!(page_ids, [ids[3], ids[2]]);

    let of_first = store
        .list_optimizations(&OptimizationFilter {
            strategy_id: Some(first),
            ..OptimizationFilter::default()
        })
        .unwrap();
    assert_eq!(of_first.total, 3);
    assert!(of_first.items.iter().all(|item| item.strategy_id == first));

    let running = store
        .list_optimizations(&OptimizationFilter {
            status: Some(OptimizationStatus::Running),
            ..OptimizationFilter::default()
        })
        .unwrap();
    assert_eq!(running.total, 1);
    assert_eq!(running.items[0].id, ids[0]);
}

#[test]
fn concurrent_claims_take_each_optimization_once() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    for index in 0..12 {
        store
            .create_optimization(&new_optimization(strategy_id, "grid"), at(index))
            .unwrap();
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            thread::spawn(move || {
                let mut claimed = Vec::new();
                while let Some(optimization) = store.claim_next_optimization(at(100)).unwrap() {
                    assert_eq!(optimization.status, OptimizationStatus::Running);
                    assert_eq!(optimization.started_at, Some(at(100)));
                    claimed.push(optimization.id);
                }
                claimed
            })
        })
        .collect();
    let claimed: Vec<i64> = handles
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 12);
    assert_eq!(distinct.len(), 12);
}

#[test]
fn progress_is_stored_only_while_running() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(0))
        .unwrap()
        .id;
    assert!(!store.update_optimization_progress(id, 1, 5).unwrap());

    store.claim_next_optimization(at(1)).unwrap().unwrap();
    assert!(store.update_optimization_progress(id, 2, 8).unwrap());
    let running = store.get_optimization(id).unwrap().unwrap();
    assert_eq!(running.evaluated, 2);
    assert_eq!(running.total, Some(8));
    assert_eq!(running.progress, 0.25);
}

#[test]
fn complete_stores_ranked_results() {
    let (dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(0))
        .unwrap()
        .id;
    store.claim_next_optimization(at(1)).unwrap().unwrap();
    let stored = outcome(5);
    let completed = store.complete_optimization(id, &stored, at(2)).unwrap();
    assert_eq!(completed.status, OptimizationStatus::Completed);
    assert_eq!(completed.progress, 1.0);
    assert_eq!(completed.evaluated, 5);
    assert_eq!(completed.best_params, stored.best_params);
    assert_eq!(completed.best_score, Some(2.0));
    assert_eq!(completed.completed_at, Some(at(2)));

    drop(store);
    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    let report = store.optimization_report(id).unwrap();
    assert_eq!(report.status, OptimizationStatus::Completed);
    assert_eq!(report.outcome, stored);

    let again = store.complete_optimization(id, &stored, at(3));
    assert!(matches!(
        again,
        Err(Error::InvalidOptimizationTransition {
            from: OptimizationStatus::Completed,
            to: OptimizationStatus::Completed,
            ..
        })
    ));
    assert!(matches!(
        store.optimization_report(id + 1),
        Err(Error::NotFound {
            entity: "optimization",
            ..
        })
    ));
}

#[test]
fn complete_rejects_ranks_out_of_order() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(0))
        .unwrap()
        .id;
    store.claim_next_optimization(at(1)).unwrap().unwrap();
    let mut stored = outcome(3);
    stored.results[1].rank = 3;
    let result = store.complete_optimization(id, &stored, at(2));
    assert!(matches!(
        result,
        Err(Error::InvalidValue { field: "rank", .. })
    ));
    let unchanged = store.get_optimization(id).unwrap().unwrap();
    assert_eq!(unchanged.status, OptimizationStatus::Running);
}

#[test]
fn walk_forward_folds_round_trip() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "walk_forward"), at(0))
        .unwrap()
        .id;
    store.claim_next_optimization(at(1)).unwrap().unwrap();
    let stored = OptimizationOutcome {
        folds: Some(json!([{"params": {"fast_period": 5}, "test_bars": 1000}])),
        out_of_sample: Some(json!({"total_return": 1.5, "total_trades": 3})),
        evaluated: 5,
        ..OptimizationOutcome::default()
    };
    store.complete_optimization(id, &stored, at(2)).unwrap();
    assert_eq!(store.optimization_report(id).unwrap().outcome, stored);
}

#[test]
fn cancel_queued_and_running_keeps_partial_results() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let running_id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(0))
        .unwrap()
        .id;
    let queued_id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(1))
        .unwrap()
        .id;
    store.claim_next_optimization(at(2)).unwrap().unwrap();

    let queued = store.cancel_optimization(queued_id, None, at(3)).unwrap();
    assert_eq!(queued.status, OptimizationStatus::Cancelled);
    assert_eq!(queued.completed_at, Some(at(3)));
    assert!(store.claim_next_optimization(at(4)).unwrap().is_none());

    let partial = outcome(2);
    let running = store
        .cancel_optimization(running_id, Some(&partial), at(5))
        .unwrap();
    assert_eq!(running.status, OptimizationStatus::Cancelled);
    assert_eq!(running.evaluated, 2);
    assert_eq!(running.progress, 0.4);
    let report = store.optimization_report(running_id).unwrap();
    assert_eq!(report.status, OptimizationStatus::Cancelled);
    assert_eq!(report.outcome.results.len(), 2);

    for id in [queued_id, running_id] {
        let again = store.cancel_optimization(id, None, at(6));
        assert!(matches!(
            again,
            Err(Error::InvalidOptimizationTransition {
                from: OptimizationStatus::Cancelled,
                ..
            })
        ));
    }
}

#[test]
fn fail_records_message_once() {
    let (_dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "grid"), at(0))
        .unwrap()
        .id;
    store.claim_next_optimization(at(1)).unwrap().unwrap();
    let failed = store.fail_optimization(id, "no bars", at(2)).unwrap();
    assert_eq!(failed.status, OptimizationStatus::Failed);
    assert_eq!(failed.error_message.as_deref(), Some("no bars"));
    let again = store.fail_optimization(id, "no bars", at(3));
    assert!(matches!(
        again,
        Err(Error::InvalidOptimizationTransition {
            from: OptimizationStatus::Failed,
            to: OptimizationStatus::Failed,
            ..
        })
    ));
    assert!(matches!(
        store.fail_optimization(id + 1, "x", at(3)),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn requeue_running_resets_progress() {
    let (dir, store) = open_store();
    let strategy_id = create_strategy(&store);
    let id = store
        .create_optimization(&new_optimization(strategy_id, "random"), at(0))
        .unwrap()
        .id;
    store.claim_next_optimization(at(1)).unwrap().unwrap();
    store.update_optimization_progress(id, 3, 5).unwrap();
    drop(store);

    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    assert_eq!(store.requeue_running_optimizations().unwrap(), 1);
    let requeued = store.get_optimization(id).unwrap().unwrap();
    assert_eq!(requeued.status, OptimizationStatus::Queued);
    assert_eq!(requeued.started_at, None);
    assert_eq!(requeued.evaluated, 0);
    assert_eq!(requeued.progress, 0.0);
    assert_eq!(store.requeue_running_optimizations().unwrap(), 0);
    let claimed = store.claim_next_optimization(at(2)).unwrap().unwrap();
    assert_eq!(claimed.id, id);
}

#[test]
fn status_parses_every_name() {
    for status in OptimizationStatus::ALL {
        assert_eq!(
            status.as_str().parse::<OptimizationStatus>().unwrap(),
            status
        );
    }
    assert!(matches!(
        "done".parse::<OptimizationStatus>(),
        Err(Error::InvalidValue {
            field: "optimization status",
            ..
        })
    ));
}
