//! Malformed and hostile requests against a real `bst serve`: each gets its 4xx status and a
//! JSON `detail`, none gets a 5xx, and the server keeps serving. The `/metrics` counters of
//! the same run are checked afterwards.

#[path = "support/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;

use reqwest::blocking::RequestBuilder;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use server::{Server, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// Bybit REST URL of the test servers: a closed loopback port, so that no request leaves the
/// machine.
const OFFLINE_BYBIT_URL: &str = "http://127.0.0.1:9";

/// An id that no fixture creates.
const UNKNOWN_ID: i64 = 424_242;

/// Body of a request in the table.
#[derive(Debug, Clone)]
enum Body {
    None,
    /// Sent with `Content-Type: application/json`.
    Json(String),
    /// Sent with the given content type, or none.
    Raw(Option<&'static str>, Vec<u8>),
}

/// One row: a request and the status it must get. `detail_contains` is a text the `detail`
/// must contain, in lowercase.
#[derive(Debug, Clone)]
struct Case {
    method: Method,
    path: String,
    body: Body,
    status: u16,
    detail_contains: Option<&'static str>,
}

fn case(method: &str, path: &str, status: u16) -> Case {
    Case {
        method: Method::from_bytes(method.as_bytes()).expect("a valid method"),
        path: path.to_string(),
        body: Body::None,
        status,
        detail_contains: None,
    }
}

fn json_case(method: &str, path: &str, body: &str, status: u16) -> Case {
    Case {
        body: Body::Json(body.to_string()),
        ..case(method, path, status)
    }
}

impl Case {
    fn expecting(mut self, text: &'static str) -> Self {
        self.detail_contains = Some(text);
        self
    }
}

/// Imports the 60-minute BTCUSDT sample (May 30 to June 29, 2025) into `data_dir`.
fn ingest_sample(data_dir: &Path) {
    let file = bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_60m.csv.gz");
    let output = Command::new(BIN)
        .args(["ingest", "klines"])
        .arg(&file)
        .env("BST_DATA_DIR", data_dir)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run bst ingest");
    assert!(
        output.status.success(),
        "bst ingest klines failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds a valid backtest body for strategy `strategy_id` over the sample, with `changes` applied.
fn backtest_body(strategy_id: i64, changes: Value) -> String {
    let mut body = json!({
        "strategy_id": strategy_id,
        "symbol": "BTCUSDT",
        "timeframe": "60",
        "start_date": "2025-06-01T00:00:00Z",
        "end_date": "2025-06-20T00:00:00Z",
    });
    merge(&mut body, changes);
    body.to_string()
}

/// Builds a valid optimization body for strategy `strategy_id` over the sample, with `changes`.
fn optimization_body(strategy_id: i64, changes: Value) -> String {
    let mut body = json!({
        "strategy_id": strategy_id,
        "symbol": "BTCUSDT",
        "timeframe": "60",
        "start_date": "2025-06-01T00:00:00Z",
        "end_date": "2025-06-20T00:00:00Z",
        "space": {"fast_period": [5, 10], "slow_period": [20, 30]},
    });
    merge(&mut body, changes);
    body.to_string()
}

/// Sets or, for a null value, removes each key of `changes` in `body`.
fn merge(body: &mut Value, changes: Value) {
    let (Value::Object(body), Value::Object(changes)) = (body, changes) else {
        panic!("merge takes two objects");
    };
    for (key, value) in changes {
        if value.is_null() {
            body.remove(&key);
        } else {
            body.insert(key, value);
        }
    }
}

/// Builds the table. `strategy` is an existing sma_crossover strategy.
fn cases(strategy: i64) -> Vec<Case> {
    let unknown = UNKNOWN_ID;
    let huge_body = format!(
        "{{\"name\": \"{}\", \"strategy_type\": \"sma_crossover\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let long_name = format!(
        "{{\"name\": \"{}\", \"strategy_type\": \"sma_crossover\"}}",
        "n".repeat(201)
    );
    // 1,500 terms nest 1,499 levels deep, which overflowed a server thread's stack.
    let deep_expression = format!(
        "{{\"name\": \"deep\", \"strategy_type\": \"expression\", \"config\": \
         {{\"entry_long\": \"close > {}\", \"exit_long\": \"close < open\"}}}}",
        vec!["1"; 1_500].join("+")
    );
    let expression_with = |entry: &str| {
        format!(
            "{{\"name\": \"periods\", \"strategy_type\": \"expression\", \"config\": \
             {{\"entry_long\": \"{entry}\", \"exit_long\": \"close < open\"}}}}"
        )
    };
    let mut cases = vec![
        // Strategies: expressions that would crash the server or fail every backtest.
        json_case("POST", "/strategies", &deep_expression, 422).expecting("operators"),
        json_case("POST", "/strategies", &expression_with("sma(close, -5) > 1"), 422)
            .expecting("period"),
        json_case("POST", "/strategies", &expression_with("sma(close, 100000000000) > 1"), 422)
            .expecting("period"),
        // Strategies: bodies.
        json_case("POST", "/strategies", "{", 422).expecting("malformed json"),
        json_case("POST", "/strategies", "", 422),
        json_case("POST", "/strategies", "[]", 422),
        json_case("POST", "/strategies", "null", 422),
        json_case("POST", "/strategies", "\"sma_crossover\"", 422),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\",}", 422),
        json_case("POST", "/strategies", "{\"name\": 5, \"strategy_type\": \"sma_crossover\"}", 422)
            .expecting("name"),
        json_case("POST", "/strategies", "{\"strategy_type\": \"sma_crossover\"}", 422)
            .expecting("name"),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"martingale\"}", 422),
        json_case("POST", "/strategies", "{\"name\": \"   \", \"strategy_type\": \"sma_crossover\"}", 422)
            .expecting("name"),
        json_case("POST", "/strategies", &long_name, 422).expecting("name"),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\", \"config\": [1]}", 422)
            .expecting("config"),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\", \"is_active\": \"yes\"}", 422)
            .expecting("is_active"),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\", \"owner\": \"root\"}", 422)
            .expecting("owner"),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\", \"config\": {\"fast_period\": -5}}", 422),
        json_case("POST", "/strategies", "{\"name\": \"a\", \"strategy_type\": \"sma_crossover\", \"config\": {\"fast_period\": \"five\"}}", 422),
        Case {
            body: Body::Raw(Some("text/plain"), b"{\"name\": \"a\"}".to_vec()),
            ..case("POST", "/strategies", 422)
        }
        .expecting("content-type"),
        Case {
            body: Body::Raw(None, b"{\"name\": \"a\"}".to_vec()),
            ..case("POST", "/strategies", 422)
        }
        .expecting("content-type"),
        Case {
            body: Body::Raw(Some("application/json"), vec![0xff, 0xfe, 0x00, 0x7b]),
            ..case("POST", "/strategies", 422)
        },
        Case {
            body: Body::Json(huge_body),
            ..case("POST", "/strategies", 413)
        }
        .expecting("limit"),
        // Strategies: query and path.
        case("GET", "/strategies?limit=0", 422).expecting("limit"),
        case("GET", "/strategies?limit=-1", 422).expecting("limit"),
        case("GET", "/strategies?limit=501", 422).expecting("limit"),
        case("GET", "/strategies?limit=99999999999999999999999", 422).expecting("limit"),
        case("GET", "/strategies?limit=ten", 422).expecting("limit"),
        case("GET", "/strategies?limit=", 422).expecting("limit"),
        case("GET", "/strategies?offset=-5", 422).expecting("offset"),
        case("GET", "/strategies?is_active=maybe", 422).expecting("is_active"),
        case("GET", "/strategies?owner=root", 422).expecting("owner"),
        case("GET", "/strategies?limit=1&limit=2", 422).expecting("limit"),
        case("GET", "/strategies/abc", 422).expecting("id"),
        case("GET", "/strategies/1.5", 422).expecting("id"),
        case("GET", "/strategies/99999999999999999999", 422).expecting("id"),
        case("GET", "/strategies/1%20OR%201=1", 422).expecting("id"),
        case("GET", "/strategies/%27%3B%20DROP%20TABLE%20strategies%3B--", 422).expecting("id"),
        case("GET", &format!("/strategies/{unknown}"), 404).expecting("not found"),
        case("GET", "/strategies/-1", 404).expecting("not found"),
        case("GET", "/strategies/0", 404),
        case("PATCH", "/strategies", 405),
        case("DELETE", "/strategies", 405),
        case("PUT", "/strategies", 405),
        case("POST", &format!("/strategies/{strategy}"), 405),
        // Backtests: list filters and ordering.
        case("GET", "/backtests?order_by=id;DROP%20TABLE%20backtests", 422).expecting("order_by"),
        case("GET", "/backtests?order_by=created_at%20DESC", 422).expecting("order_by"),
        case("GET", "/backtests?order_by=1", 422).expecting("order_by"),
        case("GET", "/backtests?order_by=(SELECT%201)", 422).expecting("order_by"),
        case("GET", "/backtests?order_by=id%27%20OR%20%271%27=%271", 422).expecting("order_by"),
        case("GET", "/backtests?order_dir=sideways", 422).expecting("order_dir"),
        case("GET", "/backtests?order_dir=asc;--", 422).expecting("order_dir"),
        case("GET", "/backtests?status=done", 422).expecting("status"),
        case("GET", "/backtests?strategy_id=abc", 422).expecting("strategy_id"),
        case("GET", "/backtests?limit=0", 422).expecting("limit"),
        case("GET", "/backtests?limit=100000", 422).expecting("limit"),
        case("GET", "/backtests?limit=-3", 422).expecting("limit"),
        case("GET", "/backtests?offset=abc", 422).expecting("offset"),
        case("GET", "/backtests?sort=id", 422).expecting("sort"),
        // Backtests: path.
        case("GET", "/backtests/abc", 422).expecting("id"),
        case("GET", "/backtests/9223372036854775808", 422).expecting("id"),
        case("GET", &format!("/backtests/{unknown}"), 404).expecting("not found"),
        case("GET", "/backtests/-5", 404),
        case("GET", &format!("/backtests/{unknown}/trades"), 404),
        case("GET", "/backtests/abc/trades", 422).expecting("id"),
        case("GET", &format!("/backtests/{unknown}/trades?limit=-1"), 422).expecting("limit"),
        case("GET", &format!("/backtests/{unknown}/trades?limit=abc"), 422).expecting("limit"),
        case("GET", &format!("/backtests/{unknown}/trades?offset=-1"), 422).expecting("offset"),
        case("GET", &format!("/backtests/{unknown}/trades?bogus=1"), 422).expecting("bogus"),
        case("POST", &format!("/backtests/{unknown}/trades"), 405),
        case("PATCH", "/backtests", 405),
        // Backtests: bodies.
        json_case("POST", "/backtests", "{\"strategy_id\": ", 422).expecting("malformed json"),
        json_case("POST", "/backtests", "{}", 422),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"strategy_id": "1"})), 422)
            .expecting("strategy_id"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"strategy_id": 1.5})), 422)
            .expecting("strategy_id"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"symbol": null})), 422)
            .expecting("symbol"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"timeframe": "7"})), 422)
            .expecting("timeframe"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"timeframe": 60})), 422)
            .expecting("timeframe"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"start_date": "yesterday"})), 422)
            .expecting("start_date"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"start_date": "2025-13-01"})), 422)
            .expecting("start_date"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"start_date": 1748736000000_i64})), 422)
            .expecting("start_date"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"start_date": "2025-06-01T00:00:00 02:00"})), 422)
            .expecting("%2b"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"start_date": "2025-06-21T00:00:00Z"})), 422)
            .expecting("start_date"),
        json_case("POST", "/backtests", &backtest_body(unknown, json!({})), 404).expecting("strategy"),
        json_case("POST", "/backtests", &backtest_body(unknown, json!({"start_date": "2025-06-01T00:00:00"})), 404)
            .expecting("strategy"),
        json_case("POST", "/backtests", &backtest_body(unknown, json!({"start_date": "2025-06-01T02:00:00+02:00"})), 404)
            .expecting("strategy"),
        json_case("POST", "/backtests", &backtest_body(unknown, json!({"start_date": "2025-06-01"})), 404)
            .expecting("strategy"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"initial_capital": -1000})), 422)
            .expecting("initial_capital"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"leverage": 1000})), 422)
            .expecting("leverage"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"commission": -0.5})), 422)
            .expecting("commission"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"symbol": "BTCUSDT' OR '1'='1"})), 422)
            .expecting("symbol"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"symbol": "../../etc/passwd"})), 422)
            .expecting("symbol"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"config": "fast_period=5"})), 422)
            .expecting("config"),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"config": {"fast_period": "x"}})), 422),
        json_case("POST", "/backtests", &backtest_body(strategy, json!({"priority": 1})), 422)
            .expecting("priority"),
        // Equity curves.
        case("GET", "/backtests/abc/equity", 422).expecting("id"),
        case("GET", &format!("/backtests/{unknown}/equity"), 404),
        case("GET", &format!("/backtests/{unknown}/equity?max_points=1"), 422).expecting("max_points"),
        case("GET", &format!("/backtests/{unknown}/equity?max_points=-1"), 422).expecting("max_points"),
        case("GET", &format!("/backtests/{unknown}/equity?max_points=1e9"), 422).expecting("max_points"),
        case("GET", &format!("/backtests/{unknown}/equity?max_points=100001"), 422).expecting("max_points"),
        case("GET", &format!("/backtests/{unknown}/equity?points=5"), 422).expecting("points"),
        case("GET", &format!("/backtests/{unknown}/equity.svg"), 404),
        case("GET", "/backtests/x/equity.svg", 422).expecting("id"),
        case("POST", &format!("/backtests/{unknown}/equity"), 405),
        // Optimizations.
        case("GET", "/optimizations?status=bogus", 422).expecting("status"),
        case("GET", "/optimizations?limit=0", 422).expecting("limit"),
        case("GET", "/optimizations?limit=-1", 422).expecting("limit"),
        case("GET", "/optimizations?strategy_id=x", 422).expecting("strategy_id"),
        case("GET", "/optimizations?order_by=id", 422).expecting("order_by"),
        case("GET", "/optimizations/abc", 422).expecting("id"),
        case("GET", &format!("/optimizations/{unknown}"), 404).expecting("not found"),
        case("GET", &format!("/optimizations/{unknown}/results"), 404),
        case("GET", "/optimizations/abc/results", 422).expecting("id"),
        case("POST", &format!("/optimizations/{unknown}/cancel"), 404),
        case("POST", "/optimizations/abc/cancel", 422).expecting("id"),
        case("GET", &format!("/optimizations/{unknown}/cancel"), 405),
        case("DELETE", "/optimizations", 405),
        json_case("POST", "/optimizations", "{\"strategy_id\": 1,", 422).expecting("malformed json"),
        json_case("POST", "/optimizations", "{}", 422),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"method": "annealing"})), 422)
            .expecting("method"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"metric": "luck"})), 422)
            .expecting("metric"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"method": "random", "trials": 0})), 422)
            .expecting("trials"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"trials": 5})), 422)
            .expecting("trials"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"method": "walk_forward"})), 422)
            .expecting("train"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"space": "fast_period=5"})), 422)
            .expecting("space"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"space": {"fast_period": {"low": 1, "high": 1000000000, "step": 1}}})), 422)
            .expecting("space"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"config": [1]})), 422)
            .expecting("config"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"top": -1})), 422)
            .expecting("top"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"start_date": "2025-06-01T00:00:00 02:00"})), 422)
            .expecting("%2b"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"end_date": "2025-05-01T00:00:00Z"})), 422)
            .expecting("start_date"),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"timeframe": "2h"})), 422)
            .expecting("timeframe"),
        json_case("POST", "/optimizations", &optimization_body(unknown, json!({"start_date": "2025-06-01T00:00:00"})), 404)
            .expecting("strategy"),
        json_case("POST", "/optimizations", &optimization_body(unknown, json!({"start_date": "2025-06-01T05:30:00+05:30"})), 404)
            .expecting("strategy"),
        // Stored klines.
        case("GET", "/marketdata/bybit/klines", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT%27%20OR%20%271%27=%271", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT;DROP%20TABLE%20klines", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=../../etc/passwd", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=btcusdt", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&interval=7", 422).expecting("interval"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&limit=0", 422).expecting("limit"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&limit=1001", 422).expecting("limit"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&limit=-1", 422).expecting("limit"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&category=futures", 422).expecting("category"),
        case("GET", "/marketdata/bybit/klines?symbol=BTCUSDT&start_time=yesterday", 422).expecting("start_time"),
        case("POST", "/marketdata/bybit/klines?symbol=BTCUSDT", 405),
        json_case("POST", "/optimizations", &optimization_body(strategy, json!({"space": {"fast_period": {"low": i64::MIN, "high": i64::MAX, "step": 1}}})), 422)
            .expecting("fast_period"),
        // Strategy updates and deletes.
        json_case("PUT", &format!("/strategies/{unknown}"), "{\"name\": \"b\"}", 404),
        json_case("PUT", "/strategies/abc", "{\"name\": \"b\"}", 422).expecting("id"),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"name\": 5}", 422).expecting("name"),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"name\": \"\"}", 422).expecting("name"),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"is_active\": \"yes\"}", 422)
            .expecting("is_active"),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"strategy_type\": \"martingale\"}", 422),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"id\": 7}", 422).expecting("id"),
        json_case("PUT", &format!("/strategies/{strategy}"), "{\"config\": {\"fast_period\": \"x\"}}", 422),
        json_case("PUT", &format!("/strategies/{strategy}"), "[", 422).expecting("malformed json"),
        case("DELETE", &format!("/strategies/{unknown}"), 404),
        case("DELETE", "/strategies/abc", 422).expecting("id"),
        // Backtest updates, deletes, cancels, claims and results.
        json_case("PUT", &format!("/backtests/{unknown}"), "{}", 404),
        json_case("PUT", "/backtests/abc", "{}", 422).expecting("id"),
        json_case("PUT", &format!("/backtests/{unknown}"), "{\"leverage\": \"high\"}", 422)
            .expecting("leverage"),
        case("DELETE", &format!("/backtests/{unknown}"), 404),
        case("DELETE", "/backtests/abc", 422).expecting("id"),
        case("POST", &format!("/backtests/{unknown}/cancel"), 404),
        case("POST", "/backtests/abc/cancel", 422).expecting("id"),
        json_case("POST", "/backtests/abc/claim", "{}", 422).expecting("id"),
        json_case("POST", &format!("/backtests/{unknown}/claim"), "{\"now\": \"yesterday\"}", 422)
            .expecting("now"),
        json_case("POST", &format!("/backtests/{unknown}/claim"), "{\"now\": \"2025-06-01T00:00:00 02:00\"}", 422)
            .expecting("%2b"),
        json_case("POST", &format!("/backtests/{unknown}/claim"), "{\"now\": 5}", 422).expecting("now"),
        json_case("POST", &format!("/backtests/{unknown}/claim"), "{\"now\"", 422).expecting("malformed json"),
        json_case("POST", &format!("/backtests/{unknown}/claim"), "{\"now\": \"2999-01-01T00:00:00Z\"}", 422)
            .expecting("2999-01-01"),
        case("GET", &format!("/backtests/{unknown}/claim"), 405),
        json_case("POST", "/backtests/abc/results", "{}", 422).expecting("id"),
        json_case("POST", &format!("/backtests/{unknown}/results"), "{\"final_capital\": \"lots\"}", 422)
            .expecting("final_capital"),
        json_case("POST", &format!("/backtests/{unknown}/results"), "not json", 422).expecting("malformed json"),
        // Bots.
        case("GET", "/bots?limit=0", 422).expecting("limit"),
        case("GET", "/bots?limit=501", 422).expecting("limit"),
        case("GET", "/bots?limit=-1", 422).expecting("limit"),
        case("GET", "/bots?offset=x", 422).expecting("offset"),
        case("GET", "/bots/bot_999999", 404),
        case("GET", "/bots/%27%20OR%201=1--", 404),
        case("POST", "/bots/bot_999999/start", 404),
        case("POST", "/bots/bot_999999/stop", 404),
        case("POST", "/bots/bot_999999/delete", 404),
        case("GET", "/bots/bot_999999/start", 405),
        case("DELETE", "/bots/bot_999999", 405),
        json_case("POST", "/bots", "{\"name\": \"b\"}", 422),
        json_case("POST", "/bots", "{\"name\": \"b\", \"strategy\": \"s\", \"symbols\": \"BTCUSDT\", \"capital_allocated\": 100}", 422)
            .expecting("symbols"),
        json_case("POST", "/bots", "{\"name\": \"b\", \"strategy\": \"s\", \"symbols\": [\"BTCUSDT\"], \"capital_allocated\": -5}", 422)
            .expecting("capital_allocated"),
        json_case("POST", "/bots", "{\"name\": \"b\", \"strategy\": \"s\", \"symbols\": [\"BTC'; DROP TABLE bots;--\"], \"capital_allocated\": 100}", 422)
            .expecting("symbol"),
        json_case("POST", "/bots", "{\"name\": \"b\", \"strategy\": \"s\", \"symbols\": [], \"capital_allocated\": 100}", 422)
            .expecting("symbols"),
        // Active deals.
        case("GET", "/active-deals?limit=100000", 422).expecting("limit"),
        case("GET", "/active-deals?limit=abc", 422).expecting("limit"),
        case("GET", "/active-deals/deal_999999", 404),
        json_case("POST", "/active-deals", "{\"bot_id\": \"bot_999999\", \"symbol\": \"BTCUSDT\", \"entry_price\": 1, \"quantity\": 1}", 404)
            .expecting("bot_999999"),
        json_case("POST", "/active-deals", "{\"bot_id\": \"bot_999999\", \"symbol\": \"BTCUSDT\", \"entry_price\": \"1\", \"quantity\": 1}", 422)
            .expecting("entry_price"),
        json_case("POST", "/active-deals", "{\"bot_id\": \"bot_999999\"}", 422),
        json_case("POST", "/active-deals", "{\"bot_id\": \"bot_999999\", \"symbol\": \"BTCUSDT\", \"entry_price\": 1e308, \"quantity\": 10}", 422)
            .expecting("overflows"),
        json_case("POST", "/active-deals/deal_999999/average", "{\"quantity\": 1e300, \"price\": 1e300}", 422)
            .expecting("overflows"),
        case("POST", "/active-deals/deal_999999/close", 404),
        case("POST", "/active-deals/deal_999999/cancel", 404),
        json_case("POST", "/active-deals/deal_999999/average", "{\"quantity\": 1, \"price\": 1}", 404),
        json_case("POST", "/active-deals/deal_999999/average", "{\"quantity\": \"x\", \"price\": 1}", 422)
            .expecting("quantity"),
        case("GET", "/active-deals/deal_999999/close", 405),
        // Bybit fetches that fail validation, so that nothing reaches Bybit.
        case("GET", "/marketdata/bybit/klines/fetch", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT", 422).expecting("interval"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=7", 422).expecting("interval"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=1001", 422).expecting("limit"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=-1", 422).expecting("limit"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&persist=2", 422).expecting("persist"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTC%27--&interval=1", 422).expecting("symbol"),
        case("GET", "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&category=options", 422)
            .expecting("category"),
        case("POST", "/marketdata/datasets", 405),
        // The WebSocket without an upgrade, and unknown paths.
        case("GET", "/live", 400).expecting("websocket"),
        case("POST", "/live", 405),
        case("GET", "/nope", 404).expecting("/api/v1/nope"),
        case("GET", "/strategies/1/extra", 404),
        case("DELETE", "/openapi.json", 405),
    ];
    for case in &mut cases {
        case.path = format!("/api/v1{}", case.path);
    }
    cases.extend([
        case("GET", "/api/v2/strategies", 404),
        case("GET", "/", 404),
        case("PUT", "/healthz", 405),
        case("POST", "/metrics", 405),
    ]);
    cases
}

fn request(server: &Server, case: &Case) -> RequestBuilder {
    let url = format!("{}{}", server.base_url, case.path);
    // The server responds to an oversized body before reading it and closes the connection, so
    // no request may reuse it.
    let builder = server
        .client
        .request(case.method.clone(), url)
        .header("connection", "close");
    match &case.body {
        Body::None => builder,
        Body::Json(text) => builder
            .header("content-type", "application/json")
            .body(text.clone()),
        Body::Raw(content_type, bytes) => {
            let builder = match content_type {
                Some(content_type) => builder.header("content-type", *content_type),
                None => builder,
            };
            builder.body(bytes.clone())
        }
    }
}

fn create_strategy(server: &Server) -> i64 {
    let response = server
        .client
        .post(server.url("/strategies"))
        .json(&json!({
            "name": "hostile requests fixture",
            "strategy_type": "sma_crossover",
            "config": {"fast_period": 5, "slow_period": 20},
        }))
        .send()
        .expect("POST /strategies");
    assert_eq!(response.status(), StatusCode::CREATED);
    let strategy: Value = response.json().expect("a strategy");
    strategy["id"].as_i64().expect("an integer id")
}

/// Returns the value of the sample `series{labels}` in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[test]
fn hostile_requests_get_4xx_with_detail() {
    let data = tempfile::tempdir().expect("a temporary folder");
    ingest_sample(data.path());
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0).env("BYBIT_REST_URL", OFFLINE_BYBIT_URL),
    );
    let strategy = create_strategy(&server);

    let cases = cases(strategy);
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let response = match request(&server, case).send() {
            Ok(response) => response,
            Err(error) => {
                failures.push(format!(
                    "{} {}: request failed: {error}",
                    case.method, case.path
                ));
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| body["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let shown_path: String = case.path.chars().take(120).collect();
        if status != case.status {
            failures.push(format!(
                "{} {shown_path}: status {status}, expected {}; body {}",
                case.method,
                case.status,
                text.chars().take(300).collect::<String>()
            ));
        } else if detail.trim().is_empty() {
            failures.push(format!(
                "{} {shown_path}: no detail in {}",
                case.method,
                text.chars().take(300).collect::<String>()
            ));
        } else if let Some(expected) = case.detail_contains
            && !detail.to_lowercase().contains(expected)
        {
            failures.push(format!(
                "{} {shown_path}: detail {detail:?} does not mention {expected:?}",
                case.method
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let health = server
        .client
        .get(format!("{}/healthz", server.base_url))
        .send()
        .expect("GET /healthz after the table");
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "the server stopped serving"
    );
}

#[test]
fn long_values_are_cut_in_details() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Server::start(data.path(), 0);
    let strategy = create_strategy(&server);
    let long = "q".repeat(1_000_000);
    let long_path = "7".repeat(10_000);
    let long_query = "x".repeat(10_000);

    let bot = json!({"name": long, "strategy": "s", "symbols": ["BTCUSDT"],
                     "capital_allocated": 100});
    let deal = json!({"bot_id": "bot_1", "symbol": long, "entry_price": 1, "quantity": 1});
    let claim = json!({"now": long});
    let unknown_key = format!("{{\"{long}\": 1}}");
    let strategy_type = json!({"name": "a", "strategy_type": long});
    let is_active = json!({"is_active": long});
    let claim_path = format!("/backtests/{UNKNOWN_ID}/claim");
    let strategy_path = format!("/strategies/{strategy}");

    // Each case: a request whose detail quotes a value of 1,000,000 or 10,000 characters,
    // and that value's length as the detail must state it.
    let cases = [
        (
            json_case("POST", "/bots", &bot.to_string(), 422),
            Some(1_000_000),
        ),
        (
            json_case("POST", "/active-deals", &deal.to_string(), 422),
            Some(1_000_000),
        ),
        (
            json_case("POST", &claim_path, &claim.to_string(), 422),
            Some(1_000_000),
        ),
        (
            json_case("POST", "/bots", &unknown_key, 422),
            Some(1_000_000),
        ),
        (
            json_case("POST", "/strategies", &strategy_type.to_string(), 422),
            None,
        ),
        (
            json_case("PUT", &strategy_path, &is_active.to_string(), 422),
            Some(1_000_000),
        ),
        (
            case("GET", &format!("/strategies/{long_path}"), 422),
            Some(10_000),
        ),
        (
            case("GET", &format!("/strategies?limit={long_query}"), 422),
            Some(10_000),
        ),
    ];
    for (mut case, length) in cases {
        case.path = format!("/api/v1{}", case.path);
        let shown_path: String = case.path.chars().take(60).collect();
        let response = request(&server, &case).send().expect("a response");
        assert_eq!(response.status().as_u16(), case.status, "{shown_path}");
        let body: Value = response.json().expect("a JSON body");
        let detail = body["detail"].as_str().unwrap_or_default();
        let shown_detail: String = detail.chars().take(2_000).collect();
        assert!(
            detail.chars().count() <= 1_100,
            "{shown_path}: detail of {} characters: {shown_detail}",
            detail.chars().count()
        );
        if let Some(length) = length {
            assert!(
                detail.contains(&format!("… ({length} characters)")),
                "{shown_path}: {shown_detail}"
            );
        }
    }
}

#[test]
fn metrics_count_requests_by_route_template() {
    let data = tempfile::tempdir().expect("a temporary folder");
    ingest_sample(data.path());
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0).env("BYBIT_REST_URL", OFFLINE_BYBIT_URL),
    );
    let strategy = create_strategy(&server);

    for id in ["abc", "def", "1.5"] {
        let response = server
            .client
            .get(server.url(&format!("/strategies/{id}")))
            .send()
            .expect("GET /strategies/{id}");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let response = server
        .client
        .get(server.url("/no/such/route"))
        .send()
        .expect("GET an unknown route");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = server
        .client
        .post(server.url("/backtests"))
        .body(backtest_body(strategy, json!({})))
        .header("content-type", "application/json")
        .send()
        .expect("POST /backtests");
    assert_eq!(response.status(), StatusCode::CREATED, "queue one backtest");

    let response = server
        .client
        .get(format!("{}/metrics", server.base_url))
        .send()
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let metrics = response.text().expect("a text body");

    let by_template =
        "bst_http_requests_total{method=\"GET\",route=\"/api/v1/strategies/{id}\",status=\"422\"}";
    assert_eq!(sample(&metrics, by_template), Some(3.0), "{metrics}");
    let created =
        "bst_http_requests_total{method=\"POST\",route=\"/api/v1/strategies\",status=\"201\"}";
    assert_eq!(sample(&metrics, created), Some(1.0), "{metrics}");
    let unmatched = "bst_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}";
    assert_eq!(sample(&metrics, unmatched), Some(1.0), "{metrics}");
    assert!(
        !metrics.contains("/strategies/abc") && !metrics.contains("/no/such/route"),
        "a raw path became a label:\n{metrics}"
    );
    let histogram_count =
        "bst_http_request_duration_seconds_count{route=\"/api/v1/strategies/{id}\"}";
    assert_eq!(sample(&metrics, histogram_count), Some(3.0), "{metrics}");
    let infinite_bucket =
        "bst_http_request_duration_seconds_bucket{route=\"/api/v1/strategies/{id}\",le=\"+Inf\"}";
    assert_eq!(sample(&metrics, infinite_bucket), Some(3.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "bst_jobs_queued{kind=\"backtest\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "bst_jobs_queued{kind=\"optimization\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "bst_workers_busy"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "bst_workers"), Some(0.0), "{metrics}");
}

#[test]
fn datetimes_with_offsets_return_utc() {
    let data = tempfile::tempdir().expect("a temporary folder");
    ingest_sample(data.path());
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0).env("BYBIT_REST_URL", OFFLINE_BYBIT_URL),
    );
    let strategy = create_strategy(&server);
    let body = backtest_body(
        strategy,
        json!({
            "start_date": "2025-06-01T02:00:00+02:00",
            "end_date": "2025-06-20T00:00:00",
        }),
    );
    let response = server
        .client
        .post(server.url("/backtests"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("POST /backtests");
    assert_eq!(response.status(), StatusCode::CREATED);
    let backtest: Value = response.json().expect("a backtest");
    assert_eq!(backtest["start_date"], "2025-06-01T00:00:00Z", "{backtest}");
    assert_eq!(backtest["end_date"], "2025-06-20T00:00:00Z", "{backtest}");
    let created_at = backtest["created_at"].as_str().unwrap_or_default();
    assert!(created_at.ends_with('Z'), "{backtest}");
}
