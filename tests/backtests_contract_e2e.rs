//! The strategy, backtest and trade routes of the REST contract against a real `bst serve` on
//! a loopback port: status codes and shapes, concurrent claims and creates, external workers,
//! cancel and delete, and what survives a SIGKILL of the server.

#[path = "support/server.rs"]
mod server;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use server::{Server, ServerOptions};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// A range inside the BTCUSDT 1-minute sample, which covers June 2025.
const START: &str = "2025-06-01T00:00:00Z";
const END: &str = "2025-06-03T00:00:00Z";

/// How long one of the concurrent creates may take.
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The server's default claim stale time, in seconds, which `bst serve` documents.
const DEFAULT_STALE_SECONDS: i64 = 600;

/// Returns a folder whose `klines` dataset contains the BTCUSDT 1-minute sample. The import runs
/// once per test binary, and each test copies the result into its own folder.
fn sample_klines() -> &'static Path {
    static TEMPLATE: OnceLock<TempDir> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let file: PathBuf =
                bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
            let dir = tempfile::tempdir().unwrap();
            let output = Command::new(BIN)
                .args(["ingest", "klines"])
                .arg(&file)
                .env("BST_DATA_DIR", dir.path())
                .env_remove("BST_DATASETS_DIR")
                .output()
                .expect("failed to run bst ingest klines");
            assert!(
                output.status.success(),
                "bst ingest klines failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            dir
        })
        .path()
}

/// Returns a new data folder with a copy of the sample klines and no metadata store.
fn data_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&sample_klines().join("klines"), &dir.path().join("klines"));
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// JSON calls against one server, each returning the status and the parsed body.
struct Api<'a> {
    server: &'a Server,
}

impl Api<'_> {
    fn get(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.server
                .client
                .get(self.server.url(path))
                .send()
                .unwrap(),
        )
    }

    fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        read(
            self.server
                .client
                .post(self.server.url(path))
                .json(body)
                .send()
                .unwrap(),
        )
    }

    fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        read(
            self.server
                .client
                .put(self.server.url(path))
                .json(body)
                .send()
                .unwrap(),
        )
    }

    fn delete(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.server
                .client
                .delete(self.server.url(path))
                .send()
                .unwrap(),
        )
    }

    fn create_strategy(&self, name: &str) -> Value {
        let (status, body) = self.post(
            "/strategies",
            &json!({
                "name": name,
                "strategy_type": "sma_crossover",
                "config": {"fast_period": 10, "slow_period": 30},
            }),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    fn create_backtest(&self, strategy_id: i64, initial_capital: f64) -> Value {
        let (status, body) = self.post("/backtests", &backtest_body(strategy_id, initial_capital));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    fn claim(&self, id: i64, now: &str) -> (StatusCode, Value) {
        self.post(&format!("/backtests/{id}/claim"), &json!({ "now": now }))
    }
}

fn read(response: reqwest::blocking::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!("body of a {status} response is not JSON ({error}): {text}")
    });
    (status, body)
}

fn backtest_body(strategy_id: i64, initial_capital: f64) -> Value {
    json!({
        "strategy_id": strategy_id,
        "symbol": "BTCUSDT",
        "timeframe": "1",
        "start_date": START,
        "end_date": END,
        "initial_capital": initial_capital,
    })
}

fn id_of(body: &Value) -> i64 {
    body["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {body}"))
}

fn time_of(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    assert!(text.ends_with('Z'), "{text} does not end with Z");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is not RFC 3339: {error}"))
        .with_timezone(&Utc)
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn later(text: &str, seconds: i64) -> String {
    (parse_time(text) + Duration::seconds(seconds)).to_rfc3339()
}

/// Asserts a 4xx status and that `detail` contains every fragment.
fn assert_detail(response: &(StatusCode, Value), status: StatusCode, fragments: &[&str]) {
    let (actual, body) = response;
    assert_eq!(*actual, status, "{body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"));
    for fragment in fragments {
        assert!(
            detail.contains(fragment),
            "detail {detail:?} does not contain {fragment:?}"
        );
    }
}

/// Asserts that two JSON numbers differ by at most one part in 10^12, because a number that
/// went through text may differ from its source in the last bit.
fn assert_close(actual: &Value, expected: &Value, field: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{field} {actual} is not a number"));
    let expected = expected.as_f64().unwrap();
    let tolerance = expected.abs().max(1.0) * 1e-12;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{field}: {actual} != {expected}"
    );
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(id_of)
        .collect()
}

#[test]
fn strategy_routes_follow_contract() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };

    let (status, created) = api.post(
        "/strategies",
        &json!({
            "name": "  SMA 10/30  ",
            "description": "fast over slow",
            "strategy_type": "sma_crossover",
            "config": {"fast_period": 10, "slow_period": 30},
        }),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = id_of(&created);
    assert_eq!(created["name"], "SMA 10/30");
    assert_eq!(created["description"], "fast over slow");
    assert_eq!(created["strategy_type"], "sma_crossover");
    assert_eq!(
        created["config"],
        json!({"fast_period": 10, "slow_period": 30})
    );
    assert_eq!(created["is_active"], true);
    let created_at = time_of(&created["created_at"]);
    assert_eq!(time_of(&created["updated_at"]), created_at);

    let (status, fetched) = api.get(&format!("/strategies/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    // Invalid creates name the field.
    let invalid = [
        (
            json!({"name": "", "strategy_type": "sma_crossover"}),
            "name",
        ),
        (
            json!({"name": "x", "strategy_type": "sma_crossover", "config": [1]}),
            "config",
        ),
        (
            json!({"name": "x", "strategy_type": "no_such_type"}),
            "no_such_type",
        ),
        (
            json!({"name": "x", "strategy_type": "sma_crossover", "colour": "red"}),
            "colour",
        ),
        (json!({"strategy_type": "sma_crossover"}), "name"),
    ];
    for (body, fragment) in invalid {
        let response = api.post("/strategies", &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[fragment]);
    }
    assert_detail(
        &api.get("/strategies/999999"),
        StatusCode::NOT_FOUND,
        &["999999"],
    );
    assert_detail(
        &api.get("/strategies/abc"),
        StatusCode::UNPROCESSABLE_ENTITY,
        &[],
    );

    // Filters and paging: 2 active RSI, 1 inactive RSI, and the SMA strategy above.
    let mut rsi_ids = Vec::new();
    for (index, is_active) in [true, false, true].into_iter().enumerate() {
        let (status, body) = api.post(
            "/strategies",
            &json!({
                "name": format!("RSI {index}"),
                "strategy_type": "rsi",
                "is_active": is_active,
            }),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["config"], json!({}));
        rsi_ids.push((id_of(&body), is_active));
    }
    let (status, page) = api.get("/strategies");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 4);
    assert_eq!(
        ids(&page),
        vec![id, rsi_ids[0].0, rsi_ids[1].0, rsi_ids[2].0]
    );

    let (_, page) = api.get("/strategies?strategy_type=rsi&is_active=true");
    let expected: Vec<i64> = rsi_ids
        .iter()
        .filter(|(_, active)| *active)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids(&page), expected);
    assert_eq!(page["total"], 2);

    let (_, page) = api.get("/strategies?is_active=false");
    assert_eq!(ids(&page), vec![rsi_ids[1].0]);

    let (_, page) = api.get("/strategies?limit=2&offset=1");
    assert_eq!(ids(&page), vec![rsi_ids[0].0, rsi_ids[1].0]);
    assert_eq!(page["total"], 4);

    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "offset=-1",
        "is_active=maybe",
    ] {
        let response = api.get(&format!("/strategies?{query}"));
        let field = query.split('=').next().unwrap();
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[field]);
    }

    // A partial update changes only the fields it names.
    let (status, updated) = api.put(&format!("/strategies/{id}"), &json!({"name": "Renamed"}));
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["description"], "fast over slow");
    assert_eq!(
        updated["config"],
        json!({"fast_period": 10, "slow_period": 30})
    );
    assert_eq!(time_of(&updated["created_at"]), created_at);
    assert!(time_of(&updated["updated_at"]) >= created_at);

    let (status, updated) = api.put(
        &format!("/strategies/{id}"),
        &json!({
            "description": null,
            "is_active": false,
            "config": {"fast_period": 5, "slow_period": 20},
        }),
    );
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["is_active"], false);
    assert_eq!(
        updated["config"],
        json!({"fast_period": 5, "slow_period": 20})
    );
    assert_eq!(updated["name"], "Renamed");

    // Updates validate like creates and change nothing when they fail.
    let invalid_updates = [
        (json!({"name": "   "}), "name"),
        (json!({"config": "fast"}), "config"),
        (json!({"strategy_type": "no_such_type"}), "no_such_type"),
        (json!({"owner": "me"}), "owner"),
        (json!({"is_active": "yes"}), "is_active"),
    ];
    for (body, fragment) in invalid_updates {
        let response = api.put(&format!("/strategies/{id}"), &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[fragment]);
    }
    let (_, unchanged) = api.get(&format!("/strategies/{id}"));
    assert_eq!(unchanged, updated);
    assert_detail(
        &api.put("/strategies/999999", &json!({"name": "x"})),
        StatusCode::NOT_FOUND,
        &["999999"],
    );

    // A strategy that a backtest uses stays; an unused one goes.
    let backtest = api.create_backtest(id, 1_000.0);
    assert_detail(
        &api.delete(&format!("/strategies/{id}")),
        StatusCode::CONFLICT,
        &["1 backtests"],
    );
    let (status, body) = api.delete(&format!("/backtests/{}", id_of(&backtest)));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.delete(&format!("/strategies/{id}"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"success": true}));
    assert_detail(
        &api.get(&format!("/strategies/{id}")),
        StatusCode::NOT_FOUND,
        &[],
    );
    assert_detail(
        &api.delete(&format!("/strategies/{id}")),
        StatusCode::NOT_FOUND,
        &[],
    );
    let (_, page) = api.get("/strategies");
    assert_eq!(page["total"], 3);
}

#[test]
fn backtest_routes_follow_contract() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let other_strategy = id_of(&api.create_strategy("SMA 2"));

    let (status, created) = api.post(
        "/backtests",
        &json!({
            "strategy_id": strategy,
            "symbol": "BTCUSDT",
            "timeframe": "1m",
            "start_date": "2025-06-01T02:00:00+02:00",
            "end_date": "2025-06-02T00:00:00",
            "initial_capital": 5000.0,
            "leverage": 2.0,
            "commission": 0.001,
            "config": {"fast_period": 5},
        }),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = id_of(&created);
    assert_eq!(created["strategy_id"], strategy);
    assert_eq!(created["symbol"], "BTCUSDT");
    assert_eq!(created["timeframe"], "1");
    assert_eq!(time_of(&created["start_date"]), parse_time(START));
    assert_eq!(
        time_of(&created["end_date"]),
        parse_time("2025-06-02T00:00:00Z")
    );
    assert_eq!(created["initial_capital"], 5000.0);
    assert_eq!(created["leverage"], 2.0);
    assert_eq!(created["commission"], 0.001);
    assert_eq!(created["config"], json!({"fast_period": 5}));
    assert_eq!(created["status"], "queued");
    for metric in [
        "started_at",
        "completed_at",
        "final_capital",
        "total_return",
        "total_trades",
        "win_rate",
        "sharpe_ratio",
        "max_drawdown",
    ] {
        assert_eq!(created[metric], Value::Null, "{metric}");
    }
    let (status, fetched) = api.get(&format!("/backtests/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);
    assert_detail(
        &api.get("/backtests/999999"),
        StatusCode::NOT_FOUND,
        &["999999"],
    );

    let invalid_creates = [
        (
            json!({"strategy_id": strategy, "symbol": "BTCUSDT"}),
            "timeframe",
        ),
        (
            json!({"strategy_id": strategy, "symbol": "BTCUSDT", "timeframe": "7",
                   "start_date": START, "end_date": END}),
            "timeframe",
        ),
        (
            json!({"strategy_id": strategy, "symbol": "BTCUSDT", "timeframe": "1",
                   "start_date": END, "end_date": START}),
            "start_date",
        ),
        (
            json!({"strategy_id": strategy, "symbol": "BTCUSDT", "timeframe": "1",
                   "start_date": "yesterday", "end_date": END}),
            "start_date",
        ),
        (
            json!({"strategy_id": strategy, "symbol": "DOGEUSDT", "timeframe": "1",
                   "start_date": START, "end_date": END}),
            "DOGEUSDT",
        ),
        (
            json!({"strategy_id": strategy, "symbol": "BTCUSDT", "timeframe": "1",
                   "start_date": START, "end_date": END, "initial_capital": -5}),
            "initial_capital",
        ),
    ];
    for (body, fragment) in invalid_creates {
        let response = api.post("/backtests", &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[fragment]);
    }
    assert_detail(
        &api.post("/backtests", &backtest_body(999_999, 1_000.0)),
        StatusCode::NOT_FOUND,
        &["strategy 999999"],
    );

    // Four more backtests: capitals 3000, 1000 and 4000 on the first strategy, 2000 on the
    // second.
    let mut capitals = BTreeMap::from([(id, 5000.0)]);
    for (strategy_id, capital) in [
        (strategy, 3000.0),
        (strategy, 1000.0),
        (other_strategy, 2000.0),
        (strategy, 4000.0),
    ] {
        let backtest = api.create_backtest(strategy_id, capital);
        capitals.insert(id_of(&backtest), capital);
    }
    let all_ids: Vec<i64> = capitals.keys().copied().collect();

    let (status, page) = api.get("/backtests?order_by=id&order_dir=asc");
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 5);
    assert_eq!(ids(&page), all_ids);
    let (_, page) = api.get("/backtests?order_by=id&order_dir=desc&limit=2&offset=1");
    assert_eq!(ids(&page), vec![all_ids[3], all_ids[2]]);
    assert_eq!(page["total"], 5);
    let (_, page) = api.get(&format!("/backtests?strategy_id={other_strategy}"));
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["initial_capital"], 2000.0);
    let (_, page) = api.get("/backtests?symbol=ETHUSDT");
    assert_eq!(page["total"], 0);
    assert_eq!(page["items"], json!([]));

    // Every documented sort column is accepted.
    for column in [
        "id",
        "created_at",
        "symbol",
        "status",
        "total_return",
        "sharpe_ratio",
        "max_drawdown",
        "win_rate",
        "final_capital",
    ] {
        for direction in ["asc", "desc"] {
            let (status, page) = api.get(&format!(
                "/backtests?order_by={column}&order_dir={direction}"
            ));
            assert_eq!(status, StatusCode::OK, "{column} {direction}: {page}");
            assert_eq!(page["total"], 5, "{column} {direction}");
        }
    }
    let invalid_queries = [
        ("order_by=initial_capital", &["order_by", "created_at"][..]),
        (
            "order_by=id%3B%20DROP%20TABLE%20backtests",
            &["order_by", "DROP TABLE"][..],
        ),
        ("order_dir=sideways", &["order_dir", "asc", "desc"][..]),
        ("status=done", &["done", "queued", "cancelled"][..]),
        ("strategy_id=one", &["strategy_id"][..]),
        ("limit=100000", &["limit", "500"][..]),
    ];
    for (query, fragments) in invalid_queries {
        let response = api.get(&format!("/backtests?{query}"));
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, fragments);
    }
    let (_, page) = api.get("/backtests");
    assert_eq!(page["total"], 5, "the injection attempt changed the table");

    // A partial update of a queued backtest changes only what it names.
    let (status, updated) = api.put(
        &format!("/backtests/{id}"),
        &json!({"initial_capital": 7500.0, "end_date": "2025-06-03T00:00:00Z"}),
    );
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["initial_capital"], 7500.0);
    assert_eq!(time_of(&updated["end_date"]), parse_time(END));
    assert_eq!(updated["leverage"], 2.0);
    assert_eq!(updated["config"], json!({"fast_period": 5}));
    assert_eq!(updated["status"], "queued");
    let invalid_updates = [
        (json!({"end_date": "2025-05-01T00:00:00Z"}), "start_date"),
        (json!({"leverage": 0}), "leverage"),
        (json!({"config": [1, 2]}), "config"),
        (json!({"colour": "red"}), "colour"),
        (json!({"status": "completed"}), "failed or cancelled"),
        (json!({"error_message": "boom"}), "failed"),
        (json!({"status": "failed", "symbol": "ETHUSDT"}), "separate"),
    ];
    for (body, fragment) in invalid_updates {
        let response = api.put(&format!("/backtests/{id}"), &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[fragment]);
    }
    let (_, unchanged) = api.get(&format!("/backtests/{id}"));
    assert_eq!(unchanged, updated);
    assert_detail(
        &api.put(
            &format!("/backtests/{id}"),
            &json!({"strategy_id": 999_999}),
        ),
        StatusCode::NOT_FOUND,
        &["strategy 999999"],
    );
    assert_detail(
        &api.put("/backtests/999999", &json!({"initial_capital": 1.0})),
        StatusCode::NOT_FOUND,
        &["999999"],
    );

    // A claimed backtest keeps its request; a client may still mark it failed.
    let (status, claim) = api.claim(id, START);
    assert_eq!(status, StatusCode::OK, "{claim}");
    assert_detail(
        &api.put(
            &format!("/backtests/{id}"),
            &json!({"initial_capital": 1.0}),
        ),
        StatusCode::CONFLICT,
        &["running"],
    );
    let (status, failed) = api.put(
        &format!("/backtests/{id}"),
        &json!({"status": "failed", "error_message": "worker ran out of memory"}),
    );
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_message"], "worker ran out of memory");
    assert!(failed["completed_at"].is_string());
    let (_, page) = api.get("/backtests?status=failed");
    assert_eq!(ids(&page), vec![id]);
    let (_, page) = api.get("/backtests?status=queued&order_by=id&order_dir=asc");
    assert_eq!(ids(&page), all_ids[1..].to_vec());
}

#[test]
fn claims_of_one_backtest_are_exclusive() {
    const CLAIMS: usize = 64;
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let id = id_of(&api.create_backtest(strategy, 1_000.0));

    let barrier = Arc::new(Barrier::new(CLAIMS));
    let url = server.url(&format!("/backtests/{id}/claim"));
    let handles: Vec<_> = (0..CLAIMS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let client = Client::new();
            let url = url.clone();
            thread::spawn(move || {
                barrier.wait();
                read(
                    client
                        .post(&url)
                        .json(&json!({"now": START}))
                        .send()
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut statuses = BTreeMap::<String, usize>::new();
    for handle in handles {
        let (code, body) = handle.join().unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["backtest"]["id"], id);
        *statuses
            .entry(body["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(statuses.get("claimed"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("running"), Some(&(CLAIMS - 1)), "{statuses:?}");
    assert_eq!(statuses.len(), 2, "{statuses:?}");

    let (_, backtest) = api.get(&format!("/backtests/{id}"));
    assert_eq!(backtest["status"], "running");
    assert_eq!(time_of(&backtest["started_at"]), parse_time(START));
}

#[test]
fn claim_results_and_stale_reclaim() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let id = id_of(&api.create_backtest(strategy, 1_000.0));

    let (status, body) = api.claim(999_999, START);
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["status"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("999999"));
    assert!(body.get("backtest").is_none());
    assert_detail(
        &api.claim(id, "soon"),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["now", "soon"],
    );
    assert_detail(
        &api.post(
            &format!("/backtests/{id}/claim"),
            &json!({"now": START, "x": 1}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["x"],
    );

    // Results before a claim are refused.
    assert_detail(
        &api.post(&format!("/backtests/{id}/results"), &results_body(&[])),
        StatusCode::CONFLICT,
        &["queued", "claim"],
    );

    let (status, claimed) = api.claim(id, START);
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["status"], "claimed");
    assert_eq!(claimed["backtest"]["status"], "running");
    assert!(claimed.get("message").is_none());

    // The claim holds until it is DEFAULT_STALE_SECONDS old by the claiming worker's clock.
    let almost_stale = later(START, DEFAULT_STALE_SECONDS - 1);
    let (status, body) = api.claim(id, &almost_stale);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "running");
    assert!(body["message"].is_string());
    assert_eq!(time_of(&body["backtest"]["started_at"]), parse_time(START));

    let stale = later(START, DEFAULT_STALE_SECONDS);
    let (status, body) = api.claim(id, &stale);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "claimed");
    assert_eq!(time_of(&body["backtest"]["started_at"]), parse_time(&stale));
    let (status, body) = api.claim(id, &later(&stale, 1));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "running");

    // An external worker posts metrics and trades; both read back as posted.
    let trades = [
        (
            "2025-06-01T01:00:00Z",
            "2025-06-01T03:00:00Z",
            "long",
            100.0,
            110.0,
            2.0,
            19.5,
        ),
        (
            "2025-06-01T04:00:00Z",
            "2025-06-01T05:30:00Z",
            "SHORT",
            112.0,
            115.0,
            1.5,
            -5.0,
        ),
        (
            "2025-06-01T06:00:00Z",
            "2025-06-01T09:00:00Z",
            "buy",
            114.0,
            120.0,
            1.0,
            5.5,
        ),
        (
            "2025-06-01T10:00:00Z",
            "2025-06-01T11:00:00Z",
            "sell",
            121.0,
            118.0,
            0.5,
            1.25,
        ),
    ];
    let body = results_body(&trades);
    let (status, completed) = api.post(&format!("/backtests/{id}/results"), &body);
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["status"], "completed");
    for field in ["total_trades", "winning_trades", "losing_trades", "bars"] {
        assert_eq!(completed[field], body[field], "{field}");
    }
    for field in [
        "final_capital",
        "total_return",
        "win_rate",
        "sharpe_ratio",
        "max_drawdown",
        "sortino_ratio",
        "profit_factor",
    ] {
        assert_close(&completed[field], &body[field], field);
    }
    assert_eq!(completed["engine_version"], "external-test 1.0");
    assert_eq!(
        completed["params"],
        json!({"fast_period": 10, "slow_period": 30})
    );
    assert_eq!(completed["calmar_ratio"], Value::Null);
    assert!(completed["completed_at"].is_string());
    let (_, fetched) = api.get(&format!("/backtests/{id}"));
    assert_eq!(fetched, completed);

    let (status, listed) = api.get(&format!("/backtests/{id}/trades"));
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), trades.len());
    for (trade, expected) in listed.iter().zip(&trades) {
        let (entry, exit, side, entry_price, exit_price, quantity, pnl) = *expected;
        let is_long = matches!(side, "long" | "LONG" | "buy");
        assert_eq!(trade["backtest_id"], id);
        assert_eq!(time_of(&trade["entry_time"]), parse_time(entry));
        assert_eq!(time_of(&trade["exit_time"]), parse_time(exit));
        assert_eq!(trade["price"], entry_price);
        assert_eq!(trade["entry_price"], entry_price);
        assert_eq!(trade["exit_price"], exit_price);
        assert_eq!(trade["qty"], quantity);
        assert_eq!(trade["quantity"], quantity);
        assert_eq!(trade["pnl"], pnl);
        assert_eq!(trade["side"], if is_long { "buy" } else { "sell" });
        assert_eq!(trade["position"], if is_long { "long" } else { "short" });
        assert!(trade["id"].is_i64());
        assert!(trade["created_at"].is_string());
    }

    // Side filters and paging, against the posted list.
    let longs: Vec<f64> = trades
        .iter()
        .filter(|trade| matches!(trade.2, "long" | "LONG" | "buy"))
        .map(|trade| trade.3)
        .collect();
    let shorts: Vec<f64> = trades
        .iter()
        .filter(|trade| matches!(trade.2, "short" | "SHORT" | "sell"))
        .map(|trade| trade.3)
        .collect();
    for (side, expected) in [
        ("buy", &longs),
        ("LONG", &longs),
        ("sell", &shorts),
        ("SHORT", &shorts),
    ] {
        let (status, page) = api.get(&format!("/backtests/{id}/trades?side={side}"));
        assert_eq!(status, StatusCode::OK, "{page}");
        let prices: Vec<f64> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|trade| trade["price"].as_f64().unwrap())
            .collect();
        assert_eq!(&prices, expected, "side {side}");
    }
    let (_, page) = api.get(&format!("/backtests/{id}/trades?limit=2&offset=1"));
    let prices: Vec<f64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|trade| trade["price"].as_f64().unwrap())
        .collect();
    assert_eq!(prices, vec![trades[1].3, trades[2].3]);
    assert_detail(
        &api.get(&format!("/backtests/{id}/trades?side=up")),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["up", "buy", "sell", "LONG", "SHORT"],
    );
    assert_detail(
        &api.get(&format!("/backtests/{id}/trades?limit=0")),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["limit"],
    );
    assert_detail(
        &api.get("/backtests/999999/trades"),
        StatusCode::NOT_FOUND,
        &["999999"],
    );

    // Further claims and results of a completed backtest get its status.
    let (status, body) = api.claim(id, &later(&stale, 10_000));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "completed");
    assert_detail(
        &api.post(&format!("/backtests/{id}/results"), &results_body(&[])),
        StatusCode::CONFLICT,
        &["completed"],
    );
}

#[test]
fn results_body_is_validated() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let id = id_of(&api.create_backtest(strategy, 1_000.0));
    let (status, body) = api.claim(id, START);
    assert_eq!(status, StatusCode::OK, "{body}");

    let trade = (
        "2025-06-01T01:00:00Z",
        "2025-06-01T03:00:00Z",
        "long",
        100.0,
        110.0,
        2.0,
        19.5,
    );
    let valid = results_body(&[trade]);
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let with_trade = |key: &str, value: Value| {
        let mut body = valid.clone();
        body["trades"][0][key] = value;
        body
    };
    let invalid = [
        (with("total_trades", json!(3)), "total_trades"),
        (with("winning_trades", json!(2)), "winning_trades"),
        (with("win_rate", json!(150.0)), "win_rate"),
        (with("final_capital", json!(-1.0)), "final_capital"),
        (with("total_trades", json!(-1)), "total_trades"),
        (with("data_start", json!("noon")), "data_start"),
        (with("params", json!([1])), "params"),
        (with("speed", json!(1)), "speed"),
        (with_trade("side", json!("up")), "trades[0].side"),
        (with_trade("price", json!(0)), "trades[0].entry_price"),
        (
            with_trade("exit_time", json!("2025-06-01T00:00:00Z")),
            "trades[0].exit_time",
        ),
        (
            with_trade("exit_reason", json!("boredom")),
            "trades[0].exit_reason",
        ),
    ];
    for (body, fragment) in invalid {
        let response = api.post(&format!("/backtests/{id}/results"), &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &[fragment]);
    }
    let (_, backtest) = api.get(&format!("/backtests/{id}"));
    assert_eq!(backtest["status"], "running");
    let (_, trades) = api.get(&format!("/backtests/{id}/trades"));
    assert_eq!(trades, json!([]));

    let (status, body) = api.post(&format!("/backtests/{id}/results"), &valid);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_detail(
        &api.post("/backtests/999999/results", &valid),
        StatusCode::NOT_FOUND,
        &["999999"],
    );
}

#[test]
fn results_out_of_range_are_rejected() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let id = id_of(&api.create_backtest(strategy, 1_000.0));
    let (status, body) = api.claim(id, START);
    assert_eq!(status, StatusCode::OK, "{body}");

    let valid = results_body(&[]);
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let with_point = |key: &str, value: f64| {
        let mut body = valid.clone();
        body["equity"][1][key] = json!(value);
        body
    };
    // Each case: the body and the fragments of its detail (field, value and range).
    let invalid = [
        (
            with("max_drawdown", json!(300.0)),
            ["max_drawdown 300", "0 to 100"],
        ),
        (
            with("max_drawdown", json!(-0.5)),
            ["max_drawdown -0.5", "0 to 100"],
        ),
        (
            with("total_return", json!(-150.0)),
            ["total_return -150", ">= -100"],
        ),
        (
            with("buy_and_hold_return", json!(-101.0)),
            ["buy_and_hold_return -101", ">= -100"],
        ),
        (
            with("exposure_pct", json!(100.5)),
            ["exposure_pct 100.5", "0 to 100"],
        ),
        (
            with("profit_factor", json!(-2.0)),
            ["profit_factor -2", ">= 0"],
        ),
        (with_point("equity", -1.0), ["equity[1].equity -1", ">= 0"]),
        (
            with_point("drawdown", 300.0),
            ["equity[1].drawdown 300", "0 to 100"],
        ),
        (
            with_point("drawdown", -3.0),
            ["equity[1].drawdown -3", "0 to 100"],
        ),
    ];
    for (body, fragments) in invalid {
        let response = api.post(&format!("/backtests/{id}/results"), &body);
        assert_detail(&response, StatusCode::UNPROCESSABLE_ENTITY, &fragments);
    }
    // serde_json rejects a number that overflows to infinity before the handler runs.
    let overflowing = valid
        .to_string()
        .replace("\"sharpe_ratio\":1.25", "\"sharpe_ratio\":1e400");
    assert!(overflowing.contains("1e400"), "{overflowing}");
    let response = server
        .client
        .post(server.url(&format!("/backtests/{id}/results")))
        .header("content-type", "application/json")
        .body(overflowing)
        .send()
        .unwrap();
    assert_detail(
        &read(response),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["sharpe_ratio"],
    );
    let (_, backtest) = api.get(&format!("/backtests/{id}"));
    assert_eq!(backtest["status"], "running", "{backtest}");

    let (status, body) = api.post(&format!("/backtests/{id}/results"), &valid);
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn claim_now_far_ahead_is_rejected() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let id = id_of(&api.create_backtest(strategy, 1_000.0));

    let far_ahead = (Utc::now() + Duration::days(3650)).to_rfc3339();
    assert_detail(
        &api.claim(id, &far_ahead),
        StatusCode::UNPROCESSABLE_ENTITY,
        &["invalid now", &far_ahead[..10], "24 hours"],
    );
    let (_, backtest) = api.get(&format!("/backtests/{id}"));
    assert_eq!(backtest["status"], "queued", "{backtest}");

    // A worker clock a few hours ahead of the server's, within the skew, is accepted.
    let slightly_ahead = (Utc::now() + Duration::hours(2)).to_rfc3339();
    let (status, body) = api.claim(id, &slightly_ahead);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "claimed", "{body}");
}

type TradeRow = (&'static str, &'static str, &'static str, f64, f64, f64, f64);

/// Builds a results body for `trades`, with metrics counted from them.
fn results_body(trades: &[TradeRow]) -> Value {
    let winning = trades.iter().filter(|trade| trade.6 > 0.0).count();
    let losing = trades.iter().filter(|trade| trade.6 < 0.0).count();
    let pnl: f64 = trades.iter().map(|trade| trade.6).sum();
    let win_rate = if trades.is_empty() {
        Value::Null
    } else {
        json!(winning as f64 * 100.0 / trades.len() as f64)
    };
    json!({
        "final_capital": 1_000.0 + pnl,
        "total_return": pnl / 1_000.0 * 100.0,
        "total_trades": trades.len(),
        "winning_trades": winning,
        "losing_trades": losing,
        "win_rate": win_rate,
        "sharpe_ratio": 1.25,
        "max_drawdown": 0.5,
        "sortino_ratio": 2.5,
        "profit_factor": 6.05,
        "bars": 2880,
        "engine_version": "external-test 1.0",
        "data_start": START,
        "data_end": "2025-06-02T23:59:00Z",
        "trades": trades
            .iter()
            .map(|(entry, exit, side, entry_price, exit_price, quantity, pnl)| {
                json!({
                    "entry_time": entry,
                    "exit_time": exit,
                    "side": side,
                    "price": entry_price,
                    "exit_price": exit_price,
                    "qty": quantity,
                    "pnl": pnl,
                    "pnl_pct": pnl / 10.0,
                    "commission": 0.1,
                })
            })
            .collect::<Vec<_>>(),
        "equity": [
            {"open_time": "2025-06-01T00:00:00Z", "equity": 1000.0, "drawdown": 0.0},
            {"open_time": "2025-06-01T00:01:00Z", "equity": 1001.0, "drawdown": 0.0},
        ],
    })
}

#[test]
fn cancel_and_delete() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));

    // A queued backtest.
    let queued = id_of(&api.create_backtest(strategy, 1_000.0));
    let (status, cancelled) = api.post(&format!("/backtests/{queued}/cancel"), &json!({}));
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["completed_at"].is_string());
    assert_detail(
        &api.post(&format!("/backtests/{queued}/cancel"), &json!({})),
        StatusCode::CONFLICT,
        &["cancelled"],
    );
    let (status, body) = api.claim(queued, START);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["backtest"]["status"], "cancelled");

    // A running backtest: the worker's results no longer land.
    let running = id_of(&api.create_backtest(strategy, 2_000.0));
    api.claim(running, START);
    let (status, cancelled) = api.put(
        &format!("/backtests/{running}"),
        &json!({"status": "cancelled"}),
    );
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let trade = (
        "2025-06-01T01:00:00Z",
        "2025-06-01T03:00:00Z",
        "long",
        100.0,
        110.0,
        2.0,
        19.5,
    );
    assert_detail(
        &api.post(
            &format!("/backtests/{running}/results"),
            &results_body(&[trade]),
        ),
        StatusCode::CONFLICT,
        &["cancelled"],
    );
    let (_, after) = api.get(&format!("/backtests/{running}"));
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["final_capital"], Value::Null);
    let (_, trades) = api.get(&format!("/backtests/{running}/trades"));
    assert_eq!(trades, json!([]));

    // A completed backtest cannot be cancelled, but can be deleted with its trades.
    let completed = id_of(&api.create_backtest(strategy, 3_000.0));
    api.claim(completed, START);
    let (status, body) = api.post(
        &format!("/backtests/{completed}/results"),
        &results_body(&[trade]),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_detail(
        &api.post(&format!("/backtests/{completed}/cancel"), &json!({})),
        StatusCode::CONFLICT,
        &["completed"],
    );
    assert_detail(
        &api.post("/backtests/999999/cancel", &json!({})),
        StatusCode::NOT_FOUND,
        &["999999"],
    );

    let (status, body) = api.delete(&format!("/backtests/{completed}"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"success": true}));
    assert_detail(
        &api.get(&format!("/backtests/{completed}")),
        StatusCode::NOT_FOUND,
        &[],
    );
    assert_detail(
        &api.get(&format!("/backtests/{completed}/trades")),
        StatusCode::NOT_FOUND,
        &[],
    );
    assert_detail(
        &api.delete(&format!("/backtests/{completed}")),
        StatusCode::NOT_FOUND,
        &[],
    );
    let (_, page) = api.get("/backtests?order_by=id&order_dir=asc");
    assert_eq!(ids(&page), vec![queued, running]);
}

#[test]
fn concurrent_creates_all_stored() {
    const CREATES: usize = 500;
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));

    // Each create plans a DataFusion query to find the klines, so 500 of them on a debug
    // build take far longer than reqwest's default 30 s timeout.
    let client = Client::builder().timeout(CREATE_TIMEOUT).build().unwrap();
    let barrier = Arc::new(Barrier::new(CREATES));
    let url = server.url("/backtests");
    let started = Instant::now();
    let handles: Vec<_> = (0..CREATES)
        .map(|index| {
            let barrier = Arc::clone(&barrier);
            let client = client.clone();
            let url = url.clone();
            // Each request carries its own capital, so every stored row names its request.
            let capital = 1_000.0 + index as f64;
            thread::spawn(move || {
                barrier.wait();
                let response = client
                    .post(&url)
                    .json(&backtest_body(strategy, capital))
                    .send()
                    .unwrap();
                let (status, body) = read(response);
                assert_eq!(status, StatusCode::CREATED, "{body}");
                (id_of(&body), capital)
            })
        })
        .collect();
    let created: BTreeMap<i64, f64> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert_eq!(created.len(), CREATES, "two creates got the same id");
    eprintln!("{CREATES} concurrent creates took {:?}", started.elapsed());

    let (status, page) = api.get("/backtests?limit=500&order_by=id&order_dir=asc");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], CREATES);
    let listed: BTreeMap<i64, f64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (id_of(item), item["initial_capital"].as_f64().unwrap()))
        .collect();
    assert_eq!(listed, created);
    let capitals: HashSet<u64> = listed.values().map(|capital| *capital as u64).collect();
    let expected: HashSet<u64> = (0..CREATES as u64).map(|index| 1_000 + index).collect();
    assert_eq!(capitals, expected);
}

#[test]
fn running_job_requeued_after_kill() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let port = server.port;
    let api = Api { server: &server };
    let strategy = id_of(&api.create_strategy("SMA"));
    let claimed = id_of(&api.create_backtest(strategy, 1_000.0));
    let waiting = id_of(&api.create_backtest(strategy, 2_000.0));
    let (status, body) = api.claim(claimed, START);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "claimed");
    server.kill();

    let mut options = ServerOptions::new(dir.path(), 0);
    options.port = Some(port);
    let server = Server::start_with(&options);
    let api = Api { server: &server };
    let (_, backtest) = api.get(&format!("/backtests/{claimed}"));
    assert_eq!(backtest["status"], "queued");
    assert_eq!(backtest["started_at"], Value::Null);
    let (_, backtest) = api.get(&format!("/backtests/{waiting}"));
    assert_eq!(backtest["status"], "queued");
    let (status, body) = api.claim(claimed, START);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "claimed");
}

#[test]
fn writes_survive_kill_9() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 0);
    let api = Api { server: &server };

    let first = id_of(&api.create_strategy("first"));
    let second = id_of(&api.create_strategy("second"));
    let retired = id_of(&api.create_strategy("retired"));
    let (status, body) = api.put(
        &format!("/strategies/{second}"),
        &json!({"description": "changed", "is_active": false}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.delete(&format!("/strategies/{retired}"));
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut backtests = Vec::new();
    for (index, strategy) in [first, first, second, second, first]
        .into_iter()
        .enumerate()
    {
        backtests.push(id_of(
            &api.create_backtest(strategy, 1_000.0 * (index + 1) as f64),
        ));
    }
    let trade = (
        "2025-06-01T01:00:00Z",
        "2025-06-01T03:00:00Z",
        "short",
        100.0,
        90.0,
        2.0,
        19.5,
    );
    api.claim(backtests[0], START);
    let (status, body) = api.post(
        &format!("/backtests/{}/results", backtests[0]),
        &results_body(&[trade, trade]),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.post(&format!("/backtests/{}/cancel", backtests[1]), &json!({}));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.delete(&format!("/backtests/{}", backtests[2]));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.put(
        &format!("/backtests/{}", backtests[3]),
        &json!({"leverage": 3.0}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");

    let completed = backtests[0];
    let snapshot = |api: &Api<'_>| {
        let strategies = api.get("/strategies?limit=500").1;
        let backtest_page = api.get("/backtests?limit=500&order_by=id").1;
        let trades = api.get(&format!("/backtests/{completed}/trades")).1;
        (strategies, backtest_page, trades)
    };
    let before = snapshot(&api);
    assert_eq!(before.0["total"], 2);
    assert_eq!(before.1["total"], 4);
    assert_eq!(before.2.as_array().map(Vec::len), Some(2));
    let port = server.port;
    server.kill();

    let mut options = ServerOptions::new(dir.path(), 0);
    options.port = Some(port);
    let server = Server::start_with(&options);
    let api = Api { server: &server };
    let after = snapshot(&api);
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2, before.2);
}

#[test]
fn claim_stale_time_flag_and_variable() {
    let dir = data_dir();
    let by_flag = ServerOptions::new(dir.path(), 0).args(&["--claim-stale-secs", "30"]);
    let other_dir = data_dir();
    let by_variable = ServerOptions::new(other_dir.path(), 0).env("BST_CLAIM_STALE_SECS", "45");
    for (options, stale_seconds) in [(by_flag, 30), (by_variable, 45)] {
        let server = Server::start_with(&options);
        let api = Api { server: &server };
        let strategy = id_of(&api.create_strategy("SMA"));
        let id = id_of(&api.create_backtest(strategy, 1_000.0));
        assert_eq!(api.claim(id, START).1["status"], "claimed");
        let (_, body) = api.claim(id, &later(START, stale_seconds - 1));
        assert_eq!(body["status"], "running", "{stale_seconds} s: {body}");
        let (_, body) = api.claim(id, &later(START, stale_seconds));
        assert_eq!(body["status"], "claimed", "{stale_seconds} s: {body}");
    }
}

#[test]
fn unstorable_result_marks_backtest_failed() {
    let dir = data_dir();
    let server = Server::start(dir.path(), 1);
    let api = Api { server: &server };
    let strategy_id = id_of(&api.create_strategy("overflow"));
    // Equity near f64::MAX at leverage 100 overflows to infinity, which the store rejects.
    let mut body = backtest_body(strategy_id, 1e308);
    body["leverage"] = json!(100);
    let (status, created) = api.post("/backtests", &body);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = id_of(&created);

    let started = Instant::now();
    let backtest = loop {
        let (_, backtest) = api.get(&format!("/backtests/{id}"));
        if backtest["status"] != "queued" && backtest["status"] != "running" {
            break backtest;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "backtest {id} is still {} after 120 s",
            backtest["status"]
        );
        thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(backtest["status"], "failed", "{backtest}");
    let message = backtest["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not be stored"),
        "error_message {message:?}"
    );
}
