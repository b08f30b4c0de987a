//! End-to-end checks of paper bots and their deals against `bst serve` on a loopback port.
//!
//! The tests call every `/bots` and `/active-deals` route. They check the supervisor's status
//! changes, the 409s of transitions that are not allowed, and deal pnl at the newest stored
//! close of the real BTCUSDT 1-minute sample.

#[path = "support/server.rs"]
mod server;

use std::path::Path;
use std::time::{Duration, Instant};

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::writer::write_klines;
use bst_ingest::{Category, Kline, Timeframe};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::{Value, json};
use server::Server;

/// Maximum wait for the supervisor to finish a start or stop. The supervisor should take
/// about a second at most, and the rest leaves room for a loaded test machine.
const SUPERVISOR_DEADLINE: Duration = Duration::from_secs(5);

/// Stores the real BTCUSDT 1-minute sample in `data_dir` and returns its newest bar.
fn store_btc_sample(data_dir: &Path) -> Kline {
    let file = bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let klines = read_kline_csv(&file).unwrap();
    write_klines(
        data_dir,
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();
    *klines.last().unwrap()
}

fn post_json(server: &Server, path: &str, body: &Value) -> Response {
    server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .unwrap()
}

fn post_empty(server: &Server, path: &str) -> Response {
    server.client.post(server.url(path)).send().unwrap()
}

fn get(server: &Server, path: &str) -> Response {
    server.client.get(server.url(path)).send().unwrap()
}

/// Checks the status and returns the JSON body.
fn json_of(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, expected, "body: {body}");
    body
}

/// Checks a 4xx status and that the `detail` contains `needle`.
fn assert_detail(response: Response, expected: StatusCode, needle: &str) {
    let body = json_of(response, expected);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(needle),
        "detail {detail:?} does not contain {needle:?}"
    );
}

fn create_bot(server: &Server, name: &str, symbols: &[&str]) -> Value {
    let body = json!({
        "name": name,
        "strategy": "scalper_v1",
        "symbols": symbols,
        "capital_allocated": 1000.0,
    });
    json_of(post_json(server, "/bots", &body), StatusCode::CREATED)
}

fn bot_status(server: &Server, id: &str) -> String {
    let bot = json_of(get(server, &format!("/bots/{id}")), StatusCode::OK);
    bot["status"].as_str().unwrap().to_string()
}

/// Polls the bot until it has `status` and returns the time that took.
fn wait_for_status(server: &Server, id: &str, status: &str) -> Duration {
    let started = Instant::now();
    loop {
        if bot_status(server, id) == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SUPERVISOR_DEADLINE,
            "bot {id} did not become {status} within {SUPERVISOR_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_close(actual: &Value, expected: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{actual} is not a number"));
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} differs from {expected}"
    );
}

fn active_deal_ids(server: &Server) -> Vec<String> {
    let page = json_of(get(server, "/active-deals"), StatusCode::OK);
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|deal| deal["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bot_lifecycle_with_supervisor() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);

    let bot = create_bot(&server, "BTC Scalper", &["BTCUSDT"]);
    let id = bot["id"].as_str().unwrap().to_string();
    assert_eq!(id, "bot_1");
    assert_eq!(bot["name"], "BTC Scalper");
    assert_eq!(bot["strategy"], "scalper_v1");
    assert_eq!(bot["symbols"], json!(["BTCUSDT"]));
    assert_eq!(bot["capital_allocated"], 1000.0);
    assert_eq!(bot["status"], "stopped");
    assert!(bot["created_at"].as_str().unwrap().ends_with('Z'));

    let fetched = json_of(get(&server, &format!("/bots/{id}")), StatusCode::OK);
    assert_eq!(fetched, bot);

    // A stopped bot cannot stop.
    assert_detail(
        post_empty(&server, &format!("/bots/{id}/stop")),
        StatusCode::CONFLICT,
        "stopped",
    );

    let started = json_of(
        post_empty(&server, &format!("/bots/{id}/start")),
        StatusCode::OK,
    );
    assert_eq!(started["ok"], true);
    assert_eq!(started["status"], "awaiting_start");
    assert!(started["message"].is_string());
    let waited = wait_for_status(&server, &id, "running");
    assert!(waited < SUPERVISOR_DEADLINE, "start took {waited:?}");

    // A running bot cannot start again or be deleted.
    assert_detail(
        post_empty(&server, &format!("/bots/{id}/start")),
        StatusCode::CONFLICT,
        "running",
    );
    assert_detail(
        post_empty(&server, &format!("/bots/{id}/delete")),
        StatusCode::CONFLICT,
        "running",
    );

    let stopped = json_of(
        post_empty(&server, &format!("/bots/{id}/stop")),
        StatusCode::OK,
    );
    assert_eq!(stopped["ok"], true);
    assert_eq!(stopped["status"], "awaiting_stop");
    let waited = wait_for_status(&server, &id, "stopped");
    assert!(waited < SUPERVISOR_DEADLINE, "stop took {waited:?}");

    // A stop right after a start succeeds whether or not the supervisor has run the bot yet.
    json_of(
        post_empty(&server, &format!("/bots/{id}/start")),
        StatusCode::OK,
    );
    json_of(
        post_empty(&server, &format!("/bots/{id}/stop")),
        StatusCode::OK,
    );
    wait_for_status(&server, &id, "stopped");

    let deleted = json_of(
        post_empty(&server, &format!("/bots/{id}/delete")),
        StatusCode::OK,
    );
    assert_eq!(deleted["ok"], true);
    assert!(deleted["message"].is_string());
    assert_detail(
        get(&server, &format!("/bots/{id}")),
        StatusCode::NOT_FOUND,
        &id,
    );
    assert_detail(
        post_empty(&server, &format!("/bots/{id}/delete")),
        StatusCode::NOT_FOUND,
        &id,
    );
}

#[test]
fn bot_list_pages() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);
    for index in 0..3 {
        create_bot(&server, &format!("bot {index}"), &["BTCUSDT", "ETHUSDT"]);
    }

    let all = json_of(get(&server, "/bots"), StatusCode::OK);
    assert_eq!(all["total"], 3);
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bot| bot["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bot_1", "bot_2", "bot_3"]);

    let page = json_of(get(&server, "/bots?limit=1&offset=1"), StatusCode::OK);
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], "bot_2");

    let past_end = json_of(get(&server, "/bots?offset=10"), StatusCode::OK);
    assert_eq!(past_end["items"], json!([]));
    assert_eq!(past_end["total"], 3);

    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "offset=-1",
        "limit=ten",
        "page=2",
    ] {
        let response = get(&server, &format!("/bots?{query}"));
        let name = query.split('=').next().unwrap();
        assert_detail(response, StatusCode::UNPROCESSABLE_ENTITY, name);
    }
}

#[test]
fn bot_requests_are_validated() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);
    let valid = json!({
        "name": "BTC Scalper",
        "strategy": "scalper_v1",
        "symbols": ["BTCUSDT"],
        "capital_allocated": 1000.0,
    });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("x".repeat(201))), "name"),
        (with("name", json!(5)), "name"),
        (with("strategy", json!("")), "strategy"),
        (with("symbols", json!([])), "symbols"),
        (with("symbols", json!(["btcusdt"])), "symbol"),
        (with("symbols", json!(["BTCUSDT", "BTCUSDT"])), "symbols"),
        (with("symbols", json!("BTCUSDT")), "symbols"),
        (
            with("symbols", json!(["BTC/USDT'; DROP TABLE bots; --"])),
            "symbol",
        ),
        (with("capital_allocated", json!(0)), "capital_allocated"),
        (with("capital_allocated", json!(-5.0)), "capital_allocated"),
        (
            with("capital_allocated", json!("1000")),
            "capital_allocated",
        ),
        (with("status", json!("running")), "status"),
        (without("name"), "name"),
        (without("capital_allocated"), "capital_allocated"),
    ];
    for (body, needle) in cases {
        let response = post_json(&server, "/bots", &body);
        assert_detail(response, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    let malformed = server
        .client
        .post(server.url("/bots"))
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .unwrap();
    assert_detail(malformed, StatusCode::UNPROCESSABLE_ENTITY, "JSON");

    // Nothing was stored.
    let list = json_of(get(&server, "/bots"), StatusCode::OK);
    assert_eq!(list["total"], 0);

    for id in ["bot_99", "bot_0", "deal_1", "xyz", "bot_1%27%20OR%201=1"] {
        for path in [
            format!("/bots/{id}"),
            format!("/bots/{id}/start"),
            format!("/bots/{id}/stop"),
            format!("/bots/{id}/delete"),
        ] {
            let response = if path.ends_with(id) {
                get(&server, &path)
            } else {
                post_empty(&server, &path)
            };
            assert_detail(response, StatusCode::NOT_FOUND, "not found");
        }
    }
}

#[test]
fn deals_track_newest_stored_close() {
    let data_dir = tempfile::tempdir().unwrap();
    let newest = store_btc_sample(data_dir.path());
    let server = Server::start(data_dir.path(), 0);
    let bot = create_bot(&server, "BTC and ETH", &["BTCUSDT", "ETHUSDT"]);
    let bot_id = bot["id"].as_str().unwrap();

    let (entry_price, quantity) = (60_000.0, 0.02);
    let deal = json_of(
        post_json(
            &server,
            "/active-deals",
            &json!({"bot_id": bot_id, "symbol": "BTCUSDT", "entry_price": entry_price,
                    "quantity": quantity}),
        ),
        StatusCode::CREATED,
    );
    let deal_id = deal["id"].as_str().unwrap().to_string();
    assert_eq!(deal_id, "deal_1");
    assert_eq!(deal["bot_id"], bot_id);
    assert_eq!(deal["symbol"], "BTCUSDT");
    assert_eq!(deal["entry_price"], entry_price);
    assert_eq!(deal["quantity"], quantity);
    assert_eq!(deal["status"], "active");
    assert!(deal["opened_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(deal["next_open_price"], Value::Null);

    // The current price is the close of the sample's newest bar.
    let page = json_of(get(&server, "/active-deals"), StatusCode::OK);
    assert_eq!(page["total"], 1);
    let listed = &page["items"][0];
    assert_eq!(listed["id"], deal_id.as_str());
    assert_eq!(listed["current_price"], newest.close);
    assert_eq!(
        listed["current_price_time"], "2025-06-29T16:39:00Z",
        "the newest sample bar opens 2025-06-29 16:38 UTC and closes a minute later"
    );
    assert_close(&listed["pnl_abs"], (newest.close - entry_price) * quantity);
    assert_close(
        &listed["pnl_pct"],
        (newest.close - entry_price) / entry_price * 100.0,
    );

    // Averaging adds the quantity and weights the entry price by quantity.
    let (added_quantity, added_price) = (0.01, 57_000.0);
    let averaged = json_of(
        post_json(
            &server,
            &format!("/active-deals/{deal_id}/average"),
            &json!({"quantity": added_quantity, "price": added_price}),
        ),
        StatusCode::OK,
    );
    assert_eq!(averaged["ok"], true);
    assert_eq!(averaged["action"], "average");
    let total_quantity = quantity + added_quantity;
    let averaged_entry = (entry_price * quantity + added_price * added_quantity) / total_quantity;
    let after = json_of(
        get(&server, &format!("/active-deals/{deal_id}")),
        StatusCode::OK,
    );
    assert_close(&after["quantity"], total_quantity);
    assert_close(&after["entry_price"], averaged_entry);
    assert_close(
        &after["pnl_abs"],
        (newest.close - averaged_entry) * total_quantity,
    );

    // Closing realizes the pnl at the newest close and removes the deal from the list.
    let closed = json_of(
        post_empty(&server, &format!("/active-deals/{deal_id}/close")),
        StatusCode::OK,
    );
    assert_eq!(closed["ok"], true);
    assert_eq!(closed["action"], "close");
    assert!(closed["message"].is_string());
    assert!(active_deal_ids(&server).is_empty());
    let record = json_of(
        get(&server, &format!("/active-deals/{deal_id}")),
        StatusCode::OK,
    );
    assert_eq!(record["status"], "closed");
    assert_eq!(record["exit_price"], newest.close);
    assert_eq!(record["current_price"], Value::Null);
    assert!(record["closed_at"].as_str().unwrap().ends_with('Z'));
    assert_close(
        &record["pnl_abs"],
        (newest.close - averaged_entry) * total_quantity,
    );
    for action in ["close", "cancel"] {
        assert_detail(
            post_empty(&server, &format!("/active-deals/{deal_id}/{action}")),
            StatusCode::CONFLICT,
            "closed",
        );
    }
    assert_detail(
        post_json(
            &server,
            &format!("/active-deals/{deal_id}/average"),
            &json!({"quantity": 0.01, "price": 60_000.0}),
        ),
        StatusCode::CONFLICT,
        "closed",
    );

    // Cancelling removes a deal without pnl.
    let second = json_of(
        post_json(
            &server,
            "/active-deals",
            &json!({"bot_id": bot_id, "symbol": "BTCUSDT", "entry_price": 100_000.0,
                    "quantity": 1.5}),
        ),
        StatusCode::CREATED,
    );
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_eq!(active_deal_ids(&server), vec![second_id.clone()]);
    let cancelled = json_of(
        post_empty(&server, &format!("/active-deals/{second_id}/cancel")),
        StatusCode::OK,
    );
    assert_eq!(cancelled["ok"], true);
    assert_eq!(cancelled["action"], "cancel");
    assert!(active_deal_ids(&server).is_empty());
    let record = json_of(
        get(&server, &format!("/active-deals/{second_id}")),
        StatusCode::OK,
    );
    assert_eq!(record["status"], "cancelled");
    assert_eq!(record["pnl_abs"], Value::Null);
    assert_eq!(record["exit_price"], Value::Null);
    assert_detail(
        post_empty(&server, &format!("/active-deals/{second_id}/cancel")),
        StatusCode::CONFLICT,
        "cancelled",
    );

    // No ETHUSDT bar is stored, so that deal has no price and cannot close.
    let eth = json_of(
        post_json(
            &server,
            "/active-deals",
            &json!({"bot_id": bot_id, "symbol": "ETHUSDT", "entry_price": 2_500.0,
                    "quantity": 2.0}),
        ),
        StatusCode::CREATED,
    );
    let eth_id = eth["id"].as_str().unwrap();
    assert_eq!(eth["current_price"], Value::Null);
    assert_eq!(eth["pnl_abs"], Value::Null);
    assert_eq!(eth["pnl_pct"], Value::Null);
    assert_detail(
        post_empty(&server, &format!("/active-deals/{eth_id}/close")),
        StatusCode::CONFLICT,
        "ETHUSDT",
    );

    // A bot with an active deal cannot be deleted.
    assert_detail(
        post_empty(&server, &format!("/bots/{bot_id}/delete")),
        StatusCode::CONFLICT,
        "active deals",
    );
}

#[test]
fn deal_list_pages_and_filters() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);
    let first = create_bot(&server, "first", &["BTCUSDT"]);
    let second = create_bot(&server, "second", &["BTCUSDT"]);
    for bot in [&first, &second, &first] {
        json_of(
            post_json(
                &server,
                "/active-deals",
                &json!({"bot_id": bot["id"], "symbol": "BTCUSDT", "entry_price": 60_000.0,
                        "quantity": 0.1}),
            ),
            StatusCode::CREATED,
        );
    }

    let page = json_of(
        get(&server, "/active-deals?limit=2&offset=1"),
        StatusCode::OK,
    );
    assert_eq!(page["total"], 3);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|deal| deal["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["deal_2", "deal_3"]);

    let of_first = json_of(get(&server, "/active-deals?bot_id=bot_1"), StatusCode::OK);
    assert_eq!(of_first["total"], 2);
    assert_detail(
        get(&server, "/active-deals?bot_id=bot_9"),
        StatusCode::NOT_FOUND,
        "bot_9",
    );
    for query in ["limit=0", "limit=501", "offset=-3"] {
        let name = query.split('=').next().unwrap();
        assert_detail(
            get(&server, &format!("/active-deals?{query}")),
            StatusCode::UNPROCESSABLE_ENTITY,
            name,
        );
    }
}

#[test]
fn deal_requests_are_validated() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);
    let bot = create_bot(&server, "BTC", &["BTCUSDT"]);
    let bot_id = bot["id"].as_str().unwrap();
    let valid = json!({"bot_id": bot_id, "symbol": "BTCUSDT", "entry_price": 60_000.0,
                       "quantity": 0.02});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };

    assert_detail(
        post_json(&server, "/active-deals", &with("bot_id", json!("bot_42"))),
        StatusCode::NOT_FOUND,
        "bot_42",
    );
    let invalid = [
        (with("symbol", json!("ETHUSDT")), "ETHUSDT"),
        (with("symbol", json!("btcusdt")), "symbol"),
        (with("entry_price", json!(0)), "entry_price"),
        (with("entry_price", json!(-1.0)), "entry_price"),
        (with("entry_price", json!(null)), "entry_price"),
        (with("quantity", json!(0.0)), "quantity"),
        (with("quantity", json!("1")), "quantity"),
        (with("side", json!("short")), "side"),
    ];
    for (body, needle) in invalid {
        assert_detail(
            post_json(&server, "/active-deals", &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            needle,
        );
    }
    assert_eq!(
        json_of(get(&server, "/active-deals"), StatusCode::OK)["total"],
        0
    );

    let deal = json_of(
        post_json(&server, "/active-deals", &valid),
        StatusCode::CREATED,
    );
    let deal_id = deal["id"].as_str().unwrap();
    let average = format!("/active-deals/{deal_id}/average");
    for (body, needle) in [
        (json!({"quantity": 0, "price": 60_000.0}), "quantity"),
        (json!({"quantity": 0.1, "price": -2.0}), "price"),
        (json!({"quantity": 0.1}), "price"),
        (json!({"quantity": 0.1, "price": 1.0, "extra": 1}), "extra"),
    ] {
        assert_detail(
            post_json(&server, &average, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            needle,
        );
    }

    for id in ["deal_99", "deal_0", "bot_1", "42"] {
        assert_detail(
            get(&server, &format!("/active-deals/{id}")),
            StatusCode::NOT_FOUND,
            "not found",
        );
        for action in ["close", "cancel"] {
            assert_detail(
                post_empty(&server, &format!("/active-deals/{id}/{action}")),
                StatusCode::NOT_FOUND,
                "not found",
            );
        }
        assert_detail(
            post_json(
                &server,
                &format!("/active-deals/{id}/average"),
                &json!({"quantity": 0.1, "price": 1.0}),
            ),
            StatusCode::NOT_FOUND,
            "not found",
        );
    }
}

#[test]
fn deal_cost_overflow_is_rejected() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), 0);
    let bot = create_bot(&server, "BTC", &["BTCUSDT"]);
    let bot_id = bot["id"].as_str().unwrap();

    // 1e308 x 10 is past f64::MAX, about 1.8e308.
    let overflowing = json!({"bot_id": bot_id, "symbol": "BTCUSDT", "entry_price": 1e308,
                             "quantity": 10.0});
    let body = json_of(
        post_json(&server, "/active-deals", &overflowing),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("quantity 10"), "{detail}");
    assert!(detail.contains("entry_price 1"), "{detail}");
    assert!(detail.contains("overflows"), "{detail}");
    assert_eq!(
        json_of(get(&server, "/active-deals"), StatusCode::OK)["total"],
        0
    );

    // Each cost is finite, but their sum at averaging is not.
    let large = json!({"bot_id": bot_id, "symbol": "BTCUSDT", "entry_price": 1e307,
                       "quantity": 10.0});
    let deal = json_of(
        post_json(&server, "/active-deals", &large),
        StatusCode::CREATED,
    );
    let deal_id = deal["id"].as_str().unwrap();
    let average = format!("/active-deals/{deal_id}/average");
    assert_detail(
        post_json(
            &server,
            &average,
            &json!({"quantity": 10.0, "price": 1e308}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "price 1",
    );
    assert_detail(
        post_json(
            &server,
            &average,
            &json!({"quantity": 10.0, "price": 1e307}),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "quantity",
    );
    let stored = json_of(
        get(&server, &format!("/active-deals/{deal_id}")),
        StatusCode::OK,
    );
    assert_eq!(stored["entry_price"].as_f64(), Some(1e307), "{stored}");
    assert_eq!(stored["quantity"].as_f64(), Some(10.0), "{stored}");
}
