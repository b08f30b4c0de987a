//! End-to-end checks of the equity curve on the real sample data: `GET
//! /backtests/{id}/equity`, `GET /backtests/{id}/equity.svg` and `bst backtest --plot`.

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

const START: &str = "2025-06-01T00:00:00Z";
const END: &str = "2025-06-08T00:00:00Z";

fn btc_1m_file() -> PathBuf {
    bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz")
}

fn run_bst(args: &[&str], data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("BST_DATA_DIR", data_dir)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run the bst binary")
}

fn run_bst_ok(args: &[&str], data_dir: &Path) -> Output {
    let output = run_bst(args, data_dir);
    assert!(
        output.status.success(),
        "bst {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn backtest_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
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
        START,
        "--end",
        END,
    ];
    args.extend_from_slice(extra);
    args
}

/// Counts the sample CSV rows whose open time is in `[start, end)`, without the engine.
fn csv_bars_in_range(path: &Path, start_ms: i64, end_ms: i64) -> usize {
    let file = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .skip(1)
        .filter(|line| {
            let timestamp = line.split(',').next().unwrap();
            let open_time = DateTime::parse_from_str(timestamp, "%Y-%m-%d %H:%M:%S%:z")
                .unwrap()
                .timestamp_millis();
            (start_ms..end_ms).contains(&open_time)
        })
        .count()
}

fn millis(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// A `bst serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    base_url: String,
}

impl Server {
    fn start(data_dir: &Path, workers: usize) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--workers", &workers.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("BST_DATASETS_DIR")
            // A free Flight port, so that servers of parallel tests do not collide.
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

fn assert_detail_names(response: reqwest::blocking::Response, status: StatusCode, text: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().expect("error body is JSON");
    let detail = body["detail"]
        .as_str()
        .expect("error body has a detail string");
    assert!(
        detail.contains(text),
        "detail {detail:?} does not name {text}"
    );
}

fn get_json(client: &Client, url: &str) -> Value {
    let response = client.get(url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().unwrap()
}

/// Returns the trade marker groups of an equity chart, after checking that it is an SVG.
fn trade_markers(svg: &str) -> usize {
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "not an SVG: {}",
        &svg[..svg.len().min(80)]
    );
    let document = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    assert!(
        document
            .descendants()
            .any(|node| node.has_tag_name("polyline") || node.has_tag_name("path")),
        "the SVG has no line"
    );
    let group = document
        .descendants()
        .find(|node| node.attribute("id") == Some("trades"))
        .expect("the SVG has a trades group");
    let markers: Vec<_> = group
        .children()
        .filter(|node| node.has_tag_name("g"))
        .collect();
    for marker in &markers {
        let classes: Vec<&str> = marker
            .children()
            .filter_map(|child| child.attribute("class"))
            .collect();
        assert_eq!(classes, ["entry", "exit"], "markers of one trade");
    }
    markers.len()
}

/// Returns the largest drawdown of the points.
fn max_drawdown(points: &[Value]) -> f64 {
    points
        .iter()
        .map(|point| point["drawdown"].as_f64().unwrap())
        .fold(0.0, f64::max)
}

fn assert_close(label: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{label}: {actual} != {expected}"
    );
}

#[test]
fn equity_routes_match_the_backtest() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    run_bst_ok(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );
    let bars = csv_bars_in_range(&file, millis(START), millis(END));
    assert_eq!(bars, 7 * 24 * 60, "the sample has every minute of the week");

    let plot_path = data_dir.path().join("cli-equity.svg");
    let cli = run_bst_ok(
        &backtest_args(&["--json", "--plot", plot_path.to_str().unwrap()]),
        data_dir.path(),
    );
    let cli_metrics: Value = serde_json::from_slice(&cli.stdout).expect("--json prints JSON");
    let cli_svg = std::fs::read_to_string(&plot_path).expect("--plot wrote the file");
    assert_eq!(
        trade_markers(&cli_svg) as i64,
        cli_metrics["total_trades"].as_i64().unwrap()
    );

    // Without workers the backtest stays queued, so its curve does not exist yet.
    let queued_server = Server::start(data_dir.path(), 0);
    let client = Client::new();
    let strategy: Value = client
        .post(queued_server.url("/strategies"))
        .json(
            &json!({"name": "SMA 10/30", "strategy_type": "sma_crossover",
                      "config": {"fast_period": 10, "slow_period": 30}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let created = client
        .post(queued_server.url("/backtests"))
        .json(&json!({
            "strategy_id": strategy["id"], "symbol": "BTCUSDT", "timeframe": "1",
            "start_date": START, "end_date": END, "initial_capital": 10000.0
        }))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let queued = client
        .get(queued_server.url(&format!("/backtests/{id}/equity")))
        .send()
        .unwrap();
    assert_detail_names(queued, StatusCode::CONFLICT, "queued");
    let queued_svg = client
        .get(queued_server.url(&format!("/backtests/{id}/equity.svg")))
        .send()
        .unwrap();
    assert_detail_names(queued_svg, StatusCode::CONFLICT, "queued");
    drop(queued_server);

    let server = Server::start(data_dir.path(), 2);
    let deadline = Instant::now() + BACKTEST_DEADLINE;
    let backtest = loop {
        let backtest = get_json(&client, &server.url(&format!("/backtests/{id}")));
        match backtest["status"].as_str() {
            Some("completed") => break backtest,
            Some("queued" | "running") => {}
            other => panic!("backtest ended as {other:?}: {backtest}"),
        }
        assert!(Instant::now() < deadline, "backtest not completed");
        std::thread::sleep(Duration::from_millis(200));
    };
    let final_capital = backtest["final_capital"].as_f64().unwrap();
    let stored_max_drawdown = backtest["max_drawdown"].as_f64().unwrap();
    assert_eq!(backtest["final_capital"], cli_metrics["final_capital"]);

    // The whole curve: one point per bar, ending at the final capital.
    let whole = get_json(
        &client,
        &server.url(&format!("/backtests/{id}/equity?max_points=100000")),
    );
    assert_eq!(whole["backtest_id"], id);
    assert_eq!(whole["total_points"].as_u64(), Some(bars as u64));
    let points = whole["points"].as_array().unwrap();
    assert_eq!(points.len(), bars);
    assert_eq!(points[0]["open_time"].as_i64(), Some(millis(START)));
    assert_eq!(points[0]["timestamp"], "2025-06-01T00:00:00.000Z");
    for pair in points.windows(2) {
        assert_eq!(
            pair[1]["open_time"].as_i64().unwrap() - pair[0]["open_time"].as_i64().unwrap(),
            60_000
        );
    }
    for point in points {
        let timestamp = point["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        assert_eq!(Some(millis(timestamp)), point["open_time"].as_i64());
    }
    let last_equity = points[bars - 1]["equity"].as_f64().unwrap();
    assert_close("last equity", last_equity, final_capital);
    assert_close("max drawdown", max_drawdown(points), stored_max_drawdown);

    // The default downsampling keeps the ends and the largest drawdown.
    let default = get_json(&client, &server.url(&format!("/backtests/{id}/equity")));
    assert_eq!(default["total_points"].as_u64(), Some(bars as u64));
    let sampled = default["points"].as_array().unwrap();
    assert!(sampled.len() <= 5_000, "{} points", sampled.len());
    assert_eq!(sampled[0], points[0]);
    assert_eq!(sampled[sampled.len() - 1], points[bars - 1]);
    assert_close(
        "sampled max drawdown",
        max_drawdown(sampled),
        stored_max_drawdown,
    );

    for max_points in [2, 3, 10] {
        let small = get_json(
            &client,
            &server.url(&format!("/backtests/{id}/equity?max_points={max_points}")),
        );
        let small = small["points"].as_array().unwrap();
        assert!(
            (2..=max_points).contains(&small.len()),
            "{} points for max_points={max_points}",
            small.len()
        );
        assert_eq!(small[0], points[0], "max_points={max_points}");
        assert_eq!(
            small[small.len() - 1],
            points[bars - 1],
            "max_points={max_points}"
        );
        let times: Vec<i64> = small
            .iter()
            .map(|point| point["open_time"].as_i64().unwrap())
            .collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
    }

    for bad in ["1", "100001", "-5", "many"] {
        let response = client
            .get(server.url(&format!("/backtests/{id}/equity?max_points={bad}")))
            .send()
            .unwrap();
        assert_detail_names(response, StatusCode::UNPROCESSABLE_ENTITY, "max_points");
    }
    let unknown = client
        .get(server.url("/backtests/424242/equity"))
        .send()
        .unwrap();
    assert_detail_names(unknown, StatusCode::NOT_FOUND, "424242");
    let unknown_svg = client
        .get(server.url("/backtests/424242/equity.svg"))
        .send()
        .unwrap();
    assert_detail_names(unknown_svg, StatusCode::NOT_FOUND, "424242");

    // The chart marks every trade.
    let trades: Vec<Value> = get_json(
        &client,
        &server.url(&format!("/backtests/{id}/trades?limit=10000")),
    )
    .as_array()
    .unwrap()
    .clone();
    assert_eq!(
        trades.len() as i64,
        backtest["total_trades"].as_i64().unwrap()
    );
    let response = client
        .get(server.url(&format!("/backtests/{id}/equity.svg")))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "image/svg+xml"
    );
    let svg = response.text().unwrap();
    assert_eq!(trade_markers(&svg), trades.len());
}

#[test]
fn plot_flag_reports_unwritable_path() {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
    run_bst_ok(
        &["ingest", "klines", file.to_str().unwrap()],
        data_dir.path(),
    );
    let missing = data_dir.path().join("no-such-folder").join("equity.svg");
    let output = run_bst(
        &backtest_args(&["--plot", missing.to_str().unwrap()]),
        data_dir.path(),
    );
    assert!(!output.status.success(), "bst backtest wrote {missing:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(missing.to_str().unwrap()),
        "the error does not name the path: {stderr}"
    );

    // An existing chart is replaced whole, and no temporary file is left behind.
    let path = data_dir.path().join("equity.svg");
    std::fs::write(&path, "old").unwrap();
    run_bst_ok(
        &backtest_args(&["--plot", path.to_str().unwrap()]),
        data_dir.path(),
    );
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(trade_markers(&svg) > 0);
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
