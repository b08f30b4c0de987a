//! End-to-end checks of order options through the real `bst serve` on the sample data: an
//! expression strategy trading both sides with stops, slippage, funding and leverage, its flat
//! metrics and trades, and the 422 responses for invalid options.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Map, Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// How long a backtest may stay queued or running before the test fails.
const BACKTEST_DEADLINE: Duration = Duration::from_secs(300);

const START: &str = "2025-06-01T00:00:00Z";
const END: &str = "2025-06-04T00:00:00Z";
const INITIAL_CAPITAL: f64 = 10_000.0;
const LEVERAGE: f64 = 3.0;

/// The metrics that the Backtest JSON returns as flat fields, each equal to the field of the
/// same name that `bst backtest --json` prints.
const FLAT_METRICS: [&str; 22] = [
    "final_capital",
    "total_return",
    "total_trades",
    "winning_trades",
    "losing_trades",
    "win_rate",
    "sharpe_ratio",
    "max_drawdown",
    "sortino_ratio",
    "calmar_ratio",
    "profit_factor",
    "expectancy",
    "avg_trade_pct",
    "largest_win",
    "largest_loss",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_seconds",
    "exposure_pct",
    "buy_and_hold_return",
    "total_commission",
    "total_funding",
    "liquidations",
];

const EXIT_REASONS: [&str; 5] = [
    "signal",
    "stop_loss",
    "take_profit",
    "liquidation",
    "end_of_data",
];

fn strategy_config() -> Value {
    json!({
        "entry_long": "close > sma(close, 50)",
        "exit_long": "close < sma(close, 50)"
    })
}

fn backtest_overrides() -> Value {
    json!({
        "direction": "both",
        "entry_short": "close < sma(close, 50)",
        "exit_short": "close > sma(close, 50)",
        "stop_loss": 0.01,
        "take_profit": 0.02,
        "slippage": 0.0002,
        "funding_rate": 0.0001
    })
}

fn btc_1m_file() -> PathBuf {
    bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz")
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

/// Returns a data folder with the sample BTCUSDT 1-minute klines imported.
fn imported_data_dir() -> tempfile::TempDir {
    let data_dir = tempfile::tempdir().unwrap();
    let file = btc_1m_file();
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
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--workers", "2"])
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

fn get_json(client: &Client, url: &str) -> Value {
    let response = client.get(url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().unwrap()
}

fn post_json(client: &Client, url: &str, body: &Value) -> Response {
    client.post(url).json(body).send().unwrap()
}

/// Checks a 422 whose detail contains every one of `texts`.
fn assert_unprocessable(response: Response, texts: &[&str]) {
    let status = response.status();
    let body: Value = response.json().expect("error body is JSON");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"]
        .as_str()
        .expect("error body has a detail string");
    for text in texts {
        assert!(
            detail.contains(text),
            "detail {detail:?} does not contain {text:?}"
        );
    }
}

fn create_strategy(client: &Client, server: &Server, config: Value) -> i64 {
    let response = post_json(
        client,
        &server.url("/strategies"),
        &json!({"name": "SMA 50 level", "strategy_type": "expression", "config": config}),
    );
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("strategy id")
}

fn backtest_body(strategy_id: i64, leverage: f64, config: Value) -> Value {
    json!({
        "strategy_id": strategy_id,
        "symbol": "BTCUSDT",
        "timeframe": "1",
        "start_date": START,
        "end_date": END,
        "initial_capital": INITIAL_CAPITAL,
        "leverage": leverage,
        "config": config
    })
}

fn wait_for_completion(client: &Client, server: &Server, backtest_id: i64) -> Value {
    let deadline = Instant::now() + BACKTEST_DEADLINE;
    loop {
        let backtest = get_json(client, &server.url(&format!("/backtests/{backtest_id}")));
        match backtest["status"].as_str() {
            Some("completed") => return backtest,
            Some("queued" | "running") => {}
            other => panic!("backtest ended as {other:?}: {backtest}"),
        }
        assert!(
            Instant::now() < deadline,
            "backtest not completed: {backtest}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `bst backtest --json` with the strategy config and the backtest overrides merged, as
/// the server merges them, and returns the printed metrics.
fn cli_metrics(data_dir: &Path) -> Value {
    let mut params: Map<String, Value> = strategy_config().as_object().unwrap().clone();
    params.extend(backtest_overrides().as_object().unwrap().clone());
    let params = Value::Object(params).to_string();
    let leverage = LEVERAGE.to_string();
    let initial_capital = INITIAL_CAPITAL.to_string();
    let output = run_bst(
        &[
            "backtest",
            "--symbol",
            "BTCUSDT",
            "--interval",
            "1",
            "--strategy",
            "expression",
            "--params",
            &params,
            "--leverage",
            &leverage,
            "--initial-capital",
            &initial_capital,
            "--start",
            START,
            "--end",
            END,
            "--json",
        ],
        data_dir,
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-6 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} vs {expected}"
    );
}

#[test]
fn expression_options_match_cli() {
    let data_dir = imported_data_dir();
    let cli = cli_metrics(data_dir.path());

    let server = Server::start(data_dir.path());
    let client = Client::new();
    let strategy_id = create_strategy(&client, &server, strategy_config());
    let response = post_json(
        &client,
        &server.url("/backtests"),
        &backtest_body(strategy_id, LEVERAGE, backtest_overrides()),
    );
    let status = response.status();
    let created: Value = response.json().unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "queued");
    for field in FLAT_METRICS.iter().chain(&["bars"]) {
        assert_eq!(
            created.get(*field),
            Some(&Value::Null),
            "{field} of a queued backtest"
        );
    }
    let backtest_id = created["id"].as_i64().expect("backtest id");

    let backtest = wait_for_completion(&client, &server, backtest_id);
    for field in FLAT_METRICS {
        assert_eq!(backtest[field], cli[field], "{field}");
    }
    assert_eq!(backtest["bars"], json!(3 * 24 * 60));
    assert_eq!(backtest["metrics"]["sortino_ratio"], cli["sortino_ratio"]);
    assert_eq!(backtest["params"]["direction"], "both");

    let listed = get_json(&client, &server.url("/backtests"));
    assert_eq!(listed["items"][0]["id"], backtest_id);
    for field in FLAT_METRICS {
        assert_eq!(listed["items"][0][field], cli[field], "listed {field}");
    }

    let trades: Vec<Value> = serde_json::from_value(get_json(
        &client,
        &server.url(&format!("/backtests/{backtest_id}/trades?limit=10000")),
    ))
    .unwrap();
    let total_trades = backtest["total_trades"].as_u64().unwrap();
    assert!(total_trades > 0);
    assert_eq!(trades.len() as u64, total_trades);

    let positions: Vec<&str> = trades
        .iter()
        .map(|trade| trade["position"].as_str().unwrap())
        .collect();
    assert!(positions.contains(&"long"), "no long trade");
    assert!(positions.contains(&"short"), "no short trade");
    for trade in &trades {
        let reason = trade["exit_reason"].as_str().unwrap();
        assert!(EXIT_REASONS.contains(&reason), "exit reason {reason:?}");
        let expected_side = if trade["position"] == "short" {
            "sell"
        } else {
            "buy"
        };
        assert_eq!(trade["side"], expected_side, "{trade}");
        assert!(trade["funding"].is_f64(), "{trade}");
    }

    // Equity changes only through trade pnl, so the pnl sum is the capital's change.
    let pnl_sum: f64 = trades
        .iter()
        .map(|trade| trade["pnl"].as_f64().unwrap())
        .sum();
    let final_capital = backtest["final_capital"].as_f64().unwrap();
    assert_close(pnl_sum, final_capital - INITIAL_CAPITAL, "pnl sum");

    let funding_sum: f64 = trades
        .iter()
        .map(|trade| trade["funding"].as_f64().unwrap())
        .sum();
    let total_funding = backtest["total_funding"].as_f64().unwrap();
    assert_close(funding_sum, total_funding, "funding sum");
    assert!(
        trades.iter().any(|trade| trade["funding"] != json!(0.0)),
        "no trade paid or received funding"
    );

    let liquidated = trades
        .iter()
        .filter(|trade| trade["exit_reason"] == "liquidation")
        .count();
    assert_eq!(backtest["liquidations"], json!(liquidated));
}

#[test]
fn invalid_options_are_422_naming_field() {
    let data_dir = imported_data_dir();
    let server = Server::start(data_dir.path());
    let client = Client::new();
    let strategies = server.url("/strategies");
    let backtests = server.url("/backtests");
    let expression =
        |config: Value| json!({"name": "invalid", "strategy_type": "expression", "config": config});

    let unknown_column = post_json(
        &client,
        &strategies,
        &expression(json!({"entry_long": "close > nonexistent"})),
    );
    assert_unprocessable(unknown_column, &["entry_long", "close > nonexistent"]);

    let lookahead = post_json(
        &client,
        &strategies,
        &expression(json!({"entry_long": "close > lead(close, 1)"})),
    );
    assert_unprocessable(lookahead, &["entry_long"]);

    let short_without_entry = post_json(
        &client,
        &strategies,
        &expression(json!({"entry_long": "close > open", "direction": "short"})),
    );
    assert_unprocessable(short_without_entry, &["entry_short"]);

    let strategy_id = create_strategy(&client, &server, strategy_config());
    let cases = [
        (1.0, json!({"direction": "sideways"}), "direction"),
        (1.0, json!({"stop_loss": 1.5}), "stop_loss"),
        (500.0, json!({}), "leverage"),
        (
            10.0,
            json!({"maintenance_margin_rate": 0.2}),
            "maintenance_margin_rate",
        ),
        (1.0, json!({"direction": "short"}), "entry_short"),
    ];
    for (leverage, config, field) in cases {
        let response = post_json(
            &client,
            &backtests,
            &backtest_body(strategy_id, leverage, config),
        );
        assert_unprocessable(response, &[field]);
    }

    let listed = get_json(&client, &server.url("/backtests"));
    assert_eq!(listed["total"], 0, "a rejected backtest was queued");
}
