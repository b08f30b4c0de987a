//! End-to-end runs of the `bst` binary on the real sample data: import, CLI backtest, and the
//! REST server on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// How long a backtest may stay queued or running before the test fails.
const BACKTEST_DEADLINE: Duration = Duration::from_secs(300);

fn datasets_dir() -> PathBuf {
    bst_ingest::samples::require_datasets_dir()
}

fn btc_1m_file() -> PathBuf {
    datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz")
}

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

/// A `bst serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    base_url: String,
}

impl Server {
    fn start(data_dir: &Path, datasets_dir: Option<&Path>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "2",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("BST_DATASETS_DIR")
            // A free Flight port, so that servers of parallel tests do not collide.
            .env("BST_FLIGHT_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(dir) = datasets_dir {
            command.env("BST_DATASETS_DIR", dir);
        }
        let mut child = command.spawn().expect("failed to start bst serve");
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
        Self { child, base_url }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_detail_names(response: reqwest::blocking::Response, status: StatusCode, field: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().expect("error body is JSON");
    let detail = body["detail"]
        .as_str()
        .expect("error body has a detail string");
    assert!(
        detail.contains(field),
        "detail {detail:?} does not name {field}"
    );
}

#[test]
fn ingest_cli_reports_counts_and_is_idempotent() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    let file_arg = file.to_str().unwrap();

    let first = run_bst(&["ingest", "klines", file_arg], data_dir.path());
    let first = String::from_utf8(first.stdout).unwrap();
    assert!(first.contains("rows read 43200"), "{first}");
    assert!(first.contains("rows written 43200"), "{first}");
    assert!(first.contains("partitions touched 2"), "{first}");

    let second = run_bst(&["ingest", "klines", file_arg], data_dir.path());
    let second = String::from_utf8(second.stdout).unwrap();
    assert!(second.contains("rows written 0"), "{second}");
    assert!(second.contains("duplicates skipped 43200"), "{second}");
    assert!(second.contains("partitions touched 0"), "{second}");
}

#[test]
fn server_runs_backtest_equal_to_cli() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    run_bst(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );

    let (start, end) = ("2025-06-01T00:00:00Z", "2025-06-15T00:00:00Z");
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
            r#"{"fast_period":10,"slow_period":30}"#,
            "--start",
            start,
            "--end",
            end,
            "--json",
        ],
        data_dir.path(),
    );
    let cli_metrics: Value = serde_json::from_slice(&cli.stdout).expect("--json prints JSON");

    let server = Server::start(data_dir.path(), None);
    let client = Client::new();
    let strategy: Value = {
        let response = client
            .post(server.url("/strategies"))
            .json(&json!({
                "name": "SMA 10/30",
                "description": "fast and slow moving averages of closes",
                "strategy_type": "sma_crossover",
                "config": {"fast_period": 10, "slow_period": 30},
                "is_active": true
            }))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().unwrap()
    };
    let strategy_id = strategy["id"].as_i64().expect("strategy id");

    let created: Value = {
        let response = client
            .post(server.url("/backtests"))
            .json(&json!({
                "strategy_id": strategy_id,
                "symbol": "BTCUSDT",
                "timeframe": "1",
                "start_date": start,
                "end_date": end,
                "initial_capital": 10000.0
            }))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().unwrap()
    };
    assert_eq!(created["status"], "queued");
    let backtest_id = created["id"].as_i64().expect("backtest id");

    let deadline = Instant::now() + BACKTEST_DEADLINE;
    let backtest: Value = loop {
        let backtest: Value = client
            .get(server.url(&format!("/backtests/{backtest_id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        match backtest["status"].as_str() {
            Some("completed") => break backtest,
            Some("queued" | "running") => {}
            other => panic!("backtest ended as {other:?}: {backtest}"),
        }
        assert!(
            Instant::now() < deadline,
            "backtest not completed: {backtest}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    for field in [
        "final_capital",
        "total_return",
        "total_trades",
        "winning_trades",
        "losing_trades",
        "win_rate",
        "sharpe_ratio",
        "max_drawdown",
    ] {
        assert_eq!(backtest[field], cli_metrics[field], "{field}");
    }
    assert!(backtest["total_trades"].as_i64().unwrap() > 0);
    assert_eq!(backtest["start_date"], "2025-06-01T00:00:00Z");

    let trades: Vec<Value> = client
        .get(server.url(&format!("/backtests/{backtest_id}/trades")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        trades.len() as i64,
        backtest["total_trades"].as_i64().unwrap()
    );
    let start_ms = DateTime::parse_from_rfc3339(start)
        .unwrap()
        .timestamp_millis();
    let end_ms = DateTime::parse_from_rfc3339(end)
        .unwrap()
        .timestamp_millis();
    let mut pnl_sum = 0.0;
    for trade in &trades {
        assert_eq!(trade["side"], "buy");
        assert_eq!(trade["price"], trade["entry_price"]);
        assert_eq!(trade["qty"], trade["quantity"]);
        let entry = DateTime::parse_from_rfc3339(trade["entry_time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let exit = DateTime::parse_from_rfc3339(trade["exit_time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert!(
            start_ms < entry && entry <= exit && exit < end_ms,
            "{trade}"
        );
        pnl_sum += trade["pnl"].as_f64().unwrap();
    }
    // Equity changes only through trade pnl, so the pnl sum is the capital's change.
    let final_capital = backtest["final_capital"].as_f64().unwrap();
    assert!(
        ((10_000.0 + pnl_sum) - final_capital).abs() < 1e-6,
        "pnl sum {pnl_sum} vs final capital {final_capital}"
    );

    let listed: Value = client
        .get(server.url("/backtests"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], backtest_id);
}

#[test]
fn server_rejects_bad_requests_with_named_fields() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    run_bst(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );
    let server = Server::start(data_dir.path(), None);
    let client = Client::new();

    let unknown_type = client
        .post(server.url("/strategies"))
        .json(&json!({"name": "x", "strategy_type": "martingale", "config": {}}))
        .send()
        .unwrap();
    assert_detail_names(
        unknown_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "strategy_type",
    );

    let bad_param = client
        .post(server.url("/strategies"))
        .json(&json!({"name": "x", "strategy_type": "sma_crossover",
                      "config": {"fast_period": 50, "slow_period": 20}}))
        .send()
        .unwrap();
    assert_detail_names(bad_param, StatusCode::UNPROCESSABLE_ENTITY, "fast_period");

    let long_description = client
        .post(server.url("/strategies"))
        .json(&json!({"name": "x", "strategy_type": "sma_crossover",
                      "description": "d".repeat(10_001)}))
        .send()
        .unwrap();
    assert_detail_names(
        long_description,
        StatusCode::UNPROCESSABLE_ENTITY,
        "description",
    );

    let strategy: Value = client
        .post(server.url("/strategies"))
        .json(&json!({"name": "ok", "strategy_type": "sma_crossover"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let strategy_id = strategy["id"].as_i64().unwrap();
    let backtest = |body: Value| {
        client
            .post(server.url("/backtests"))
            .json(&body)
            .send()
            .unwrap()
    };
    let base = json!({
        "strategy_id": strategy_id, "symbol": "BTCUSDT", "timeframe": "1",
        "start_date": "2025-06-01T00:00:00Z", "end_date": "2025-06-02T00:00:00Z",
        "initial_capital": 10000.0
    });
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };

    let no_data = backtest(with("symbol", json!("XRPUSDT")));
    assert_detail_names(no_data, StatusCode::UNPROCESSABLE_ENTITY, "symbol");
    let reversed = backtest(with("start_date", json!("2025-06-03T00:00:00Z")));
    assert_detail_names(reversed, StatusCode::UNPROCESSABLE_ENTITY, "start_date");
    let bad_timeframe = backtest(with("timeframe", json!("7m")));
    assert_detail_names(bad_timeframe, StatusCode::UNPROCESSABLE_ENTITY, "timeframe");
    let bad_date = backtest(with("end_date", json!("June 2nd")));
    assert_detail_names(bad_date, StatusCode::UNPROCESSABLE_ENTITY, "end_date");
    let missing_strategy = backtest(with("strategy_id", json!(999_999)));
    assert_detail_names(missing_strategy, StatusCode::NOT_FOUND, "strategy");
    let wrong_type = backtest(with("initial_capital", json!("lots")));
    assert_detail_names(
        wrong_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "initial_capital",
    );
    let negative_capital = backtest(with("initial_capital", json!(-5)));
    assert_detail_names(
        negative_capital,
        StatusCode::UNPROCESSABLE_ENTITY,
        "initial_capital",
    );

    let malformed = client
        .post(server.url("/backtests"))
        .header("content-type", "application/json")
        .body("{\"strategy_id\": ")
        .send()
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let wrong_method = client
        .patch(server.url(&format!("/strategies/{strategy_id}")))
        .send()
        .unwrap();
    assert_detail_names(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "PATCH");
    // The server responds before reading the whole body and closes that connection, so the
    // oversized request goes through a client of its own.
    let oversized = Client::new()
        .post(server.url("/strategies"))
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20)))
        .send()
        .unwrap();
    assert_detail_names(oversized, StatusCode::PAYLOAD_TOO_LARGE, "limit");

    let missing_backtest = client.get(server.url("/backtests/424242")).send().unwrap();
    assert_detail_names(missing_backtest, StatusCode::NOT_FOUND, "backtest");
    let missing_trades = client
        .get(server.url("/backtests/424242/trades"))
        .send()
        .unwrap();
    assert_detail_names(missing_trades, StatusCode::NOT_FOUND, "backtest");
}

/// Parses the last `count` rows of a kline CSV (gzip) as (open time ms, open, close).
fn last_csv_rows(path: &Path, count: usize) -> Vec<(i64, f64, f64)> {
    let file = std::fs::File::open(path).unwrap();
    let lines: Vec<String> = BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .skip(1)
        .collect();
    lines[lines.len() - count..]
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let open_time = DateTime::parse_from_str(fields[0], "%Y-%m-%d %H:%M:%S%:z")
                .unwrap()
                .timestamp_millis();
            (
                open_time,
                fields[1].parse().unwrap(),
                fields[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn serve_imports_samples_into_empty_data_dir() {
    let data_dir = tempfile::tempdir().unwrap();
    let datasets = datasets_dir();
    let server = Server::start(data_dir.path(), Some(&datasets));
    let client = Client::new();

    let rows: Vec<Value> = client
        .get(server.url("/marketdata/bybit/klines?symbol=BTCUSDT&interval=1&limit=5"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut expected = last_csv_rows(&btc_1m_file(), 5);
    expected.reverse();
    assert_eq!(rows.len(), 5);
    for (row, (open_time, open, close)) in rows.iter().zip(&expected) {
        assert_eq!(row["open_time"].as_i64(), Some(*open_time));
        assert_eq!(row["open"].as_f64(), Some(*open));
        assert_eq!(row["close"].as_f64(), Some(*close));
        let timestamp = DateTime::parse_from_rfc3339(row["timestamp"].as_str().unwrap()).unwrap();
        assert_eq!(timestamp.timestamp_millis(), *open_time);
    }

    // start_time is the newest open time returned.
    let newest = expected[2].0;
    let older: Vec<Value> = client
        .get(server.url(&format!(
            "/marketdata/bybit/klines?symbol=BTCUSDT&interval=1m&limit=2&start_time={newest}"
        )))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let open_times: Vec<i64> = older
        .iter()
        .map(|row| row["open_time"].as_i64().unwrap())
        .collect();
    assert_eq!(open_times, vec![expected[2].0, expected[3].0]);

    // The 5-minute sample was imported too.
    let five: Vec<Value> = client
        .get(server.url("/marketdata/bybit/klines?symbol=ETHUSDT&interval=5&limit=1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(five.len(), 1);

    let unknown = client
        .get(server.url("/marketdata/bybit/klines?symbol=BTCUSDT&interval=2"))
        .send()
        .unwrap();
    assert_detail_names(unknown, StatusCode::UNPROCESSABLE_ENTITY, "timeframe");
}

#[test]
fn resample_cli_stores_complete_hours() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    run_bst(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );
    let args = [
        "resample", "--symbol", "BTCUSDT", "--from", "1", "--to", "60",
    ];

    // The 1-minute sample starts at 16:39 and ends at 16:38 thirty days later, so the first
    // and last hours are incomplete: 720 hours touched, 719 complete.
    let first = String::from_utf8(run_bst(&args, data_dir.path()).stdout).unwrap();
    assert!(first.contains("bars built 719"), "{first}");
    assert!(first.contains("rows written 719"), "{first}");
    let second = String::from_utf8(run_bst(&args, data_dir.path()).stdout).unwrap();
    assert!(second.contains("rows written 0"), "{second}");

    let stored = bst_ingest::writer::read_series(
        data_dir.path(),
        bst_ingest::Category::Linear,
        "BTCUSDT",
        bst_ingest::Timeframe::Minutes(60),
    )
    .unwrap();
    assert_eq!(stored.len(), 719);
}
