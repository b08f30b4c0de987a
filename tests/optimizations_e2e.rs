//! End-to-end runs of the optimization routes: the real `bst serve` on a free loopback port,
//! with a DuckDB file and the BTCUSDT 1-minute sample in a temporary data folder.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use tempfile::TempDir;

#[path = "support/deflated_sharpe.rs"]
mod deflated_sharpe;

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// How long an optimization may stay queued or running before a test fails.
const OPTIMIZATION_DEADLINE: Duration = Duration::from_secs(300);

/// How long a running optimization may take to end after a cancel request.
const CANCEL_DEADLINE: Duration = Duration::from_secs(3);

/// Combinations of the cancel test; `BST_CANCEL_COMBINATIONS` overrides it.
const DEFAULT_CANCEL_COMBINATIONS: u64 = 900;

const TWO_WEEKS: (&str, &str) = ("2025-06-01T00:00:00Z", "2025-06-15T00:00:00Z");
const THREE_DAYS: (&str, &str) = ("2025-06-01T00:00:00Z", "2025-06-04T00:00:00Z");
const WHOLE_MONTH: (&str, &str) = ("2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z");

fn run_bst(args: &[&str], data_dir: &Path) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .env("BST_DATA_DIR", data_dir)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run the bst binary");
    assert!(
        output.status.success(),
        "bst {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Returns a temporary data folder with the BTCUSDT 1-minute sample imported.
fn data_dir_with_sample() -> TempDir {
    let file: PathBuf =
        bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let data_dir = tempfile::tempdir().unwrap();
    run_bst(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );
    data_dir
}

/// A `bst serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    base_url: String,
    client: Client,
}

impl Server {
    fn start(data_dir: &Path, workers: usize) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--workers",
                &workers.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("BST_DATASETS_DIR")
            // Tests run servers side by side, so none may take the fixed default Flight port.
            .env("BST_FLIGHT_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start bst serve");
        let base_url = format!("http://127.0.0.1:{port}");

        // Forward the server's log to the test output so that failures show it.
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bst serve] {line}");
            }
        });

        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let health = client.get(format!("{base_url}/healthz")).send();
            if health.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("bst serve exited early with {status}");
            }
            assert!(Instant::now() < deadline, "bst serve did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            base_url,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }

    fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).json(body).send().unwrap()
    }

    /// Stops the server at once, as a crash would.
    fn kill(mut self) {
        self.child.kill().expect("kill bst serve");
        self.child.wait().expect("wait for bst serve");
    }

    fn create_strategy(&self, strategy_type: &str, config: Value) -> i64 {
        let response = self.post(
            "/strategies",
            &json!({"name": "swept", "strategy_type": strategy_type, "config": config}),
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let strategy: Value = response.json().unwrap();
        strategy["id"].as_i64().expect("strategy id")
    }

    /// Queues an optimization and returns it.
    fn create_optimization(&self, body: &Value) -> Value {
        let response = self.post("/optimizations", body);
        let status = response.status();
        let created: Value = response.json().unwrap();
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["status"], "queued");
        created
    }

    fn optimization(&self, id: i64) -> Value {
        let response = self.get(&format!("/optimizations/{id}"));
        assert_eq!(response.status(), StatusCode::OK);
        response.json().unwrap()
    }

    /// Polls an optimization until `done` accepts it, failing on `failed` or the deadline.
    fn wait_for(&self, id: i64, deadline: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + deadline;
        loop {
            let optimization = self.optimization(id);
            if done(&optimization) {
                return optimization;
            }
            assert_ne!(optimization["status"], "failed", "{optimization}");
            assert!(
                Instant::now() < deadline,
                "optimization {id} did not reach the expected state: {optimization}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_status(&self, id: i64, status: &str) -> Value {
        self.wait_for(id, OPTIMIZATION_DEADLINE, |optimization| {
            optimization["status"] == status
        })
    }

    fn results(&self, id: i64) -> Value {
        let response = self.get(&format!("/optimizations/{id}/results"));
        let status = response.status();
        let results: Value = response.json().unwrap();
        assert_eq!(status, StatusCode::OK, "{results}");
        results
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn optimization_body(strategy_id: i64, range: (&str, &str), space: Value) -> Value {
    json!({
        "strategy_id": strategy_id,
        "symbol": "BTCUSDT",
        "timeframe": "1",
        "start_date": range.0,
        "end_date": range.1,
        "space": space,
    })
}

fn id_of(optimization: &Value) -> i64 {
    optimization["id"].as_i64().expect("optimization id")
}

fn assert_detail_names(response: Response, status: StatusCode, named: &str) {
    let actual = response.status();
    let body: Value = response.json().expect("error body is JSON");
    assert_eq!(actual, status, "{body}");
    let detail = body["detail"]
        .as_str()
        .expect("error body has a detail string");
    assert!(
        detail.contains(named),
        "detail {detail:?} does not name {named}"
    );
}

/// Asserts that two metric objects agree to 1e-9 relative, with nulls in the same places.
fn assert_metrics_match(actual: &Value, expected: &Value) {
    let expected = expected.as_object().expect("metrics object");
    assert!(!expected.is_empty());
    for (name, expected_value) in expected {
        let actual_value = &actual[name];
        match (expected_value.as_f64(), actual_value.as_f64()) {
            (Some(expected_number), Some(actual_number)) => {
                let tolerance = 1e-9 * expected_number.abs().max(actual_number.abs());
                assert!(
                    (actual_number - expected_number).abs() <= tolerance,
                    "{name}: optimization {actual_number}, backtest {expected_number}"
                );
            }
            _ => assert_eq!(actual_value, expected_value, "{name}"),
        }
    }
}

#[test]
fn grid_search_matches_cli_backtest() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 2);
    let strategy_id = server.create_strategy(
        "sma_crossover",
        json!({"fast_period": 10, "slow_period": 30}),
    );
    let created = server.create_optimization(&optimization_body(
        strategy_id,
        TWO_WEEKS,
        json!({"fast_period": [5, 10, 20], "slow_period": [20, 40]}),
    ));
    let id = id_of(&created);
    // fast_period 20 with slow_period 20 is not a valid crossover, so 5 of 6 run.
    assert_eq!(created["total"], 5);
    assert_eq!(created["evaluated"], 0);
    assert_eq!(created["progress"], 0.0);
    assert_eq!(created["params"]["method"], "grid");
    assert_eq!(created["params"]["metric"], "sharpe_ratio");
    assert_eq!(created["params"]["top"], 10);

    let completed = server.wait_for_status(id, "completed");
    assert_eq!(completed["progress"], 1.0);
    assert_eq!(completed["evaluated"], 5);
    assert_eq!(completed["total"], 5);
    assert!(completed["started_at"].is_string());
    assert!(completed["completed_at"].is_string());
    assert!(completed["error_message"].is_null());

    let report = server.results(id);
    assert_eq!(report["optimization_id"], id);
    assert_eq!(report["status"], "completed");
    assert_eq!(report["metric"], "sharpe_ratio");
    assert_eq!(report["tried"], 6);
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["evaluated"], 5);
    assert!(report.get("folds").is_none());
    let results = report["results"].as_array().expect("results array");
    assert_eq!(results.len(), 5);
    let ranks: Vec<i64> = results
        .iter()
        .map(|result| result["rank"].as_i64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5]);
    let scores: Vec<f64> = results
        .iter()
        .map(|result| result["metrics"]["sharpe_ratio"].as_f64().expect("sharpe"))
        .collect();
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "results are not ranked by sharpe_ratio: {scores:?}"
    );
    assert_eq!(report["best_params"], results[0]["params"]);
    assert_eq!(report["best_score"], results[0]["metrics"]["sharpe_ratio"]);
    assert_eq!(completed["best_params"], results[0]["params"]);
    // Recomputed from all five Sharpe ratios and the oracle's returns of the best
    // combination over the same two weeks (2025-06-01 to 2025-06-15 in epoch milliseconds).
    let period = |name: &str| results[0]["params"][name].as_u64().unwrap() as usize;
    let sharpe_ratios: Vec<Option<f64>> = scores.iter().copied().map(Some).collect();
    let expected = deflated_sharpe::sma_crossover_deflated_sharpe(
        &sharpe_ratios,
        scores[0],
        (period("fast_period"), period("slow_period")),
        (1_748_736_000_000, 1_749_945_600_000),
        0.000_55,
    );
    let reported = report["deflated_sharpe_ratio"]
        .as_f64()
        .expect("deflated Sharpe ratio");
    assert!(
        (reported - expected).abs() <= 1e-9,
        "deflated Sharpe ratio: reported {reported}, recomputed {expected}"
    );

    let best_params = results[0]["params"].to_string();
    let cli = run_bst(
        &[
            "backtest",
            "--symbol",
            "BTCUSDT",
            "--interval",
            "1",
            "--strategy",
            "sma_crossover",
            "--params",
            &best_params,
            "--start",
            TWO_WEEKS.0,
            "--end",
            TWO_WEEKS.1,
            "--json",
        ],
        data_dir.path(),
    );
    let cli_metrics: Value = serde_json::from_slice(&cli.stdout).expect("--json prints JSON");
    assert_metrics_match(&results[0]["metrics"], &cli_metrics);

    let listed: Value = server
        .get(&format!(
            "/optimizations?strategy_id={strategy_id}&status=completed"
        ))
        .json()
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id);
    let none: Value = server
        .get("/optimizations?status=running&limit=1&offset=0")
        .json()
        .unwrap();
    assert_eq!(none["total"], 0);
    assert_eq!(none["items"], json!([]));

    let cancel = server.post(&format!("/optimizations/{id}/cancel"), &json!({}));
    assert_detail_names(cancel, StatusCode::CONFLICT, "completed");
}

#[test]
fn random_search_repeats_with_same_seed() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 2);
    let strategy_id = server.create_strategy("sma_crossover", json!({}));
    let space = json!({
        "fast_period": {"low": 2, "high": 30, "step": 2},
        "slow_period": {"low": 20, "high": 60, "step": 10},
    });
    let mut body = optimization_body(strategy_id, THREE_DAYS, space);
    body["method"] = json!("random");
    body["trials"] = json!(6);
    body["seed"] = json!(7);
    body["metric"] = json!("total_return");
    body["top"] = json!(0);

    let first = id_of(&server.create_optimization(&body));
    let second = id_of(&server.create_optimization(&body));
    server.wait_for_status(first, "completed");
    server.wait_for_status(second, "completed");
    let (first, second) = (server.results(first), server.results(second));

    assert_eq!(first["tried"], 6);
    assert_eq!(first["metric"], "total_return");
    let params = |report: &Value| -> Vec<Value> {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| result["params"].clone())
            .collect()
    };
    let first_params = params(&first);
    assert!(!first_params.is_empty());
    assert_eq!(
        first_params.len() as u64,
        first["evaluated"].as_u64().unwrap()
    );
    assert_eq!(first_params, params(&second));
    assert_eq!(first["best_params"], second["best_params"]);
}

#[test]
fn walk_forward_reports_folds() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 2);
    let strategy_id = server.create_strategy("sma_crossover", json!({}));
    let mut body = optimization_body(
        strategy_id,
        THREE_DAYS,
        json!({"fast_period": [5, 10], "slow_period": [30, 60]}),
    );
    body["method"] = json!("walk_forward");
    body["train"] = json!(2000);
    body["test"] = json!(1000);
    let created = server.create_optimization(&body);
    // 4,320 bars give folds starting at bars 0, 1,000 and 2,000, each sweeping 4 combinations.
    assert_eq!(created["total"], 12);
    let id = id_of(&created);
    let completed = server.wait_for_status(id, "completed");
    assert_eq!(completed["evaluated"], 12);

    let report = server.results(id);
    let folds = report["folds"].as_array().expect("folds array");
    assert_eq!(folds.len(), 3);
    assert_eq!(folds[0]["train_bars"], 2000);
    assert_eq!(folds[0]["test_bars"], 1000);
    assert_eq!(folds[2]["test_bars"], 320);
    assert!(report["out_of_sample"]["total_return"].is_number());
    assert_eq!(report["results"], json!([]));
    assert_eq!(report["best_params"], folds[2]["params"]);
    assert_eq!(report["tried"], 12);
}

/// Returns `BST_CANCEL_COMBINATIONS`, or 900 when it is unset. Panics unless the value is a
/// positive multiple of 30, the number of fast periods in the grid.
fn cancel_combinations() -> u64 {
    let Ok(text) = std::env::var("BST_CANCEL_COMBINATIONS") else {
        return DEFAULT_CANCEL_COMBINATIONS;
    };
    text.trim()
        .parse()
        .ok()
        .filter(|count: &u64| *count > 0 && count.is_multiple_of(30))
        .unwrap_or_else(|| {
            panic!(
                "invalid BST_CANCEL_COMBINATIONS {text:?}: expected a multiple of 30 such as 900"
            )
        })
}

#[test]
fn cancel_running_keeps_partial_results() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 2);
    let strategy_id = server.create_strategy("sma_crossover", json!({}));
    // 30 fast periods times `combinations / 30` slow periods. The default 30 x 30 over a month
    // takes tens of seconds in a debug build.
    let combinations = cancel_combinations();
    let created = server.create_optimization(&optimization_body(
        strategy_id,
        WHOLE_MONTH,
        json!({
            "fast_period": {"low": 2, "high": 60, "step": 2},
            "slow_period": {"low": 70, "high": 70 + 10 * (combinations / 30 - 1), "step": 10},
        }),
    ));
    let id = id_of(&created);
    assert_eq!(created["total"], combinations);
    let running = server.wait_for(id, OPTIMIZATION_DEADLINE, |optimization| {
        optimization["status"] == "running" && optimization["evaluated"].as_u64() > Some(0)
    });
    let progress = running["progress"].as_f64().unwrap();
    assert!(progress > 0.0, "{running}");
    assert!(progress < 1.0, "{running}");

    let requested = Instant::now();
    let response = server.post(&format!("/optimizations/{id}/cancel"), &json!({}));
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let cancelled = server.wait_for_status(id, "cancelled");
    let elapsed = requested.elapsed();
    assert!(
        elapsed <= CANCEL_DEADLINE,
        "cancel took {elapsed:?}: {cancelled}"
    );
    let evaluated = cancelled["evaluated"].as_u64().unwrap();
    assert!(evaluated > 0, "{cancelled}");
    assert!(evaluated < combinations, "{cancelled}");
    assert!(cancelled["completed_at"].is_string());

    let report = server.results(id);
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["evaluated"], evaluated);
    assert_eq!(report["total"], combinations);
    let result_count = report["results"].as_array().unwrap().len() as u64;
    assert_eq!(result_count, evaluated.min(10));
    assert_eq!(report["best_params"], report["results"][0]["params"]);

    let again = server.post(&format!("/optimizations/{id}/cancel"), &json!({}));
    assert_detail_names(again, StatusCode::CONFLICT, "cancelled");
}

#[test]
fn queued_optimization_survives_restart() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 0);
    let strategy_id = server.create_strategy("ema_crossover", json!({}));
    let body = optimization_body(
        strategy_id,
        THREE_DAYS,
        json!({"fast_period": [8, 12], "slow_period": [26, 40]}),
    );
    let survivor = id_of(&server.create_optimization(&body));
    let cancelled = id_of(&server.create_optimization(&body));

    let response = server.post(&format!("/optimizations/{cancelled}/cancel"), &json!({}));
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().unwrap();
    assert_eq!(body["status"], "cancelled");
    let report = server.results(cancelled);
    assert_eq!(report["results"], json!([]));
    assert_eq!(report["evaluated"], 0);

    assert_detail_names(
        server.get(&format!("/optimizations/{survivor}/results")),
        StatusCode::CONFLICT,
        "queued",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.optimization(survivor)["status"], "queued");
    server.kill();

    let server = Server::start(data_dir.path(), 2);
    let completed = server.wait_for_status(survivor, "completed");
    assert_eq!(completed["evaluated"], 4);
    assert_eq!(
        server.results(survivor)["results"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(server.optimization(cancelled)["status"], "cancelled");
}

#[test]
fn bad_requests_get_named_errors() {
    let data_dir = data_dir_with_sample();
    let server = Server::start(data_dir.path(), 0);
    let strategy_id = server.create_strategy("sma_crossover", json!({}));
    let expression_id = server.create_strategy(
        "expression",
        json!({"entry_long": "close > sma(close, 50)", "exit_long": "close < sma(close, 50)"}),
    );
    let valid = optimization_body(
        strategy_id,
        THREE_DAYS,
        json!({"fast_period": [5, 10], "slow_period": [20, 40]}),
    );
    let with = |changes: Value| {
        let mut body = valid.clone();
        for (key, value) in changes.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };

    let unprocessable = [
        (
            json!({"space": {"fast_period": {"low": 10, "high": 5, "step": 1}}}),
            "fast_period",
        ),
        (json!({"space": [5, 10]}), "space"),
        (json!({"space": {}}), "space"),
        (
            json!({"space": {"fast_period": [50], "slow_period": [20]}}),
            "space",
        ),
        (
            json!({"space": {"fast_period": {"low": 1, "high": 400, "step": 1},
                          "slow_period": {"low": 1, "high": 400, "step": 1}}}),
            "space",
        ),
        (json!({"metric": "alpha"}), "metric"),
        (json!({"method": "annealing"}), "method"),
        (json!({"method": "walk_forward", "test": 100}), "train"),
        (json!({"method": "walk_forward", "train": 100}), "test"),
        (
            json!({"method": "walk_forward", "train": 0, "test": 100}),
            "train",
        ),
        (
            json!({"method": "walk_forward", "train": 100000, "test": 100}),
            "train",
        ),
        (
            json!({"method": "walk_forward", "train": 500, "test": 200, "step": 100}),
            "step",
        ),
        (json!({"trials": 5}), "trials"),
        (json!({"method": "random", "trials": 0}), "trials"),
        (json!({"train": 100}), "train"),
        (json!({"config": [1]}), "config"),
        (json!({"config": {"stop_loss": 5}}), "stop_loss"),
        (json!({"config": {"period": 5}}), "period"),
        (json!({"leverage": 500}), "leverage"),
        (json!({"symbol": "ETHUSDT"}), "ETHUSDT"),
        (json!({"timeframe": "7"}), "timeframe"),
        (json!({"start_date": "yesterday"}), "start_date"),
        (json!({"end_date": "2025-05-01T00:00:00Z"}), "start_date"),
        (json!({"strategy_id": expression_id}), "expression"),
        (json!({"budget": 5}), "budget"),
    ];
    for (changes, named) in unprocessable {
        let response = server.post("/optimizations", &with(changes.clone()));
        let status = response.status();
        let body: Value = response.json().expect("error body is JSON");
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{changes}: {body}"
        );
        let detail = body["detail"].as_str().expect("detail string");
        assert!(
            detail.contains(named),
            "{changes}: detail {detail:?} does not name {named}"
        );
    }

    let mut missing_space = valid.clone();
    missing_space.as_object_mut().unwrap().remove("space");
    assert_detail_names(
        server.post("/optimizations", &missing_space),
        StatusCode::UNPROCESSABLE_ENTITY,
        "space",
    );
    assert_detail_names(
        server.post("/optimizations", &with(json!({"strategy_id": 999}))),
        StatusCode::NOT_FOUND,
        "strategy 999",
    );
    let listed: Value = server.get("/optimizations").json().unwrap();
    assert_eq!(listed["total"], 0, "a rejected request stored a row");

    for path in ["/optimizations/999", "/optimizations/999/results"] {
        assert_detail_names(server.get(path), StatusCode::NOT_FOUND, "optimization 999");
    }
    assert_detail_names(
        server.post("/optimizations/999/cancel", &json!({})),
        StatusCode::NOT_FOUND,
        "optimization 999",
    );
    assert_detail_names(
        server.get("/optimizations/abc"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "path",
    );
    assert_detail_names(
        server.get("/optimizations?status=done"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "done",
    );
    assert_detail_names(
        server.get("/optimizations?limit=0"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "limit",
    );

    // No worker runs here, so the optimization stays queued.
    let queued = id_of(&server.create_optimization(&valid));
    assert_detail_names(
        server.get(&format!("/optimizations/{queued}/results")),
        StatusCode::CONFLICT,
        "queued",
    );
    let listed: Value = server.get("/optimizations?status=queued").json().unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], queued);
}
