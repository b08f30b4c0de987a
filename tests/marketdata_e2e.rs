//! End-to-end checks of `GET /marketdata/bybit/klines/fetch` and `GET /marketdata/datasets`
//! against `bst serve` on a loopback port. The fetch route reads a local Bybit v5 REST server
//! that replays the real BTCUSDT 1-minute sample in Bybit's wire format.

#[path = "../ingest/tests/support/bybit_server.rs"]
mod bybit_server;
#[path = "support/server.rs"]
mod server;

use std::path::{Path, PathBuf};

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::writer::{read_series, write_klines};
use bst_ingest::{Category, Kline, Timeframe};
use bybit_server::{BybitServer, Faults};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::Value;
use server::{Server, ServerOptions};

/// Open time of the sample's first bar, 2025-05-30 16:39 UTC, in epoch milliseconds.
const FIRST_SAMPLE_OPEN_MS: i64 = 1_748_623_140_000;

/// Open time of the sample's last bar, 2025-06-29 16:38 UTC, in epoch milliseconds.
const LAST_SAMPLE_OPEN_MS: i64 = 1_751_215_080_000;

fn btc_1m_file() -> PathBuf {
    bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz")
}

/// A local Bybit server and the tokio runtime that serves it while the test blocks.
struct Replay {
    server: BybitServer,
    _runtime: tokio::runtime::Runtime,
}

/// Starts a local Bybit server of the BTCUSDT 1-minute sample whose clock reads `now_ms`.
fn start_replay(now_ms: i64, faults: Faults) -> Replay {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(BybitServer::start(&[btc_1m_file()], now_ms, faults));
    Replay {
        server,
        _runtime: runtime,
    }
}

/// Starts `bst serve` on `data_dir` with the fetch route aimed at `base_url`.
fn start_api(data_dir: &Path, base_url: &str) -> Server {
    Server::start_with(&ServerOptions::new(data_dir, 0).env("BYBIT_REST_URL", base_url))
}

fn get(server: &Server, path: &str) -> Response {
    server.client.get(server.url(path)).send().unwrap()
}

fn json_of(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, expected, "body: {body}");
    body
}

/// Checks the status and returns the `detail`.
fn detail_of(response: Response, expected: StatusCode) -> String {
    let body = json_of(response, expected);
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
        .to_string()
}

fn sample() -> Vec<Kline> {
    read_kline_csv(&btc_1m_file()).unwrap()
}

/// Checks that each row equals the sample bar with the same open time, bit for bit, and that
/// the rows are the newest first without gaps, ending at `newest_open_ms`.
fn assert_rows_match_sample(rows: &[Value], sample: &[Kline], newest_open_ms: i64) {
    for (index, row) in rows.iter().enumerate() {
        let open_time = row["open_time"].as_i64().unwrap();
        assert_eq!(
            open_time,
            newest_open_ms - index as i64 * 60_000,
            "row {index}"
        );
        let bar = sample
            .iter()
            .find(|bar| bar.open_time_ms == open_time)
            .unwrap_or_else(|| panic!("no sample bar opens at {open_time}"));
        for (field, expected) in [
            ("open", bar.open),
            ("high", bar.high),
            ("low", bar.low),
            ("close", bar.close),
            ("volume", bar.volume),
        ] {
            let actual = row[field].as_f64().unwrap();
            assert_eq!(
                actual.to_bits(),
                expected.to_bits(),
                "{field} of row {index}"
            );
        }
        // The replay server sends volume * close rounded to 4 decimals as turnover, because
        // the sample has no turnover column.
        let turnover: f64 = format!("{:.4}", bar.volume * bar.close).parse().unwrap();
        assert_eq!(row["turnover"].as_f64().unwrap(), turnover, "row {index}");
        let timestamp = chrono::DateTime::from_timestamp_millis(open_time)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        assert_eq!(row["timestamp"], timestamp.as_str(), "row {index}");
        assert_eq!(row["symbol"], "BTCUSDT");
        assert_eq!(row["interval"], "1");
    }
}

fn kline_series(data_dir: &Path) -> Vec<Kline> {
    read_series(data_dir, Category::Linear, "BTCUSDT", Timeframe::Minutes(1)).unwrap()
}

#[test]
fn fetch_returns_real_rows() {
    let sample = sample();
    // The newest sample bar closed 5 seconds before the replay server's clock.
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, Faults::default());
    let data_dir = tempfile::tempdir().unwrap();
    let api = start_api(data_dir.path(), &replay.server.base_url());

    let rows = json_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=5",
        ),
        StatusCode::OK,
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_rows_match_sample(rows, &sample, LAST_SAMPLE_OPEN_MS);

    let default_limit = json_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1m",
        ),
        StatusCode::OK,
    );
    let default_limit = default_limit.as_array().unwrap();
    assert_eq!(default_limit.len(), 200);
    assert_rows_match_sample(default_limit, &sample, LAST_SAMPLE_OPEN_MS);

    let max_rows = json_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=1000&persist=0",
        ),
        StatusCode::OK,
    );
    assert_eq!(max_rows.as_array().unwrap().len(), 1000);
    assert_rows_match_sample(max_rows.as_array().unwrap(), &sample, LAST_SAMPLE_OPEN_MS);

    // Without persist=1 nothing is stored.
    assert!(kline_series(data_dir.path()).is_empty());
    let datasets = json_of(get(&api, "/marketdata/datasets"), StatusCode::OK);
    assert_eq!(datasets, Value::Array(Vec::new()));
}

#[test]
fn fetch_leaves_out_open_bar() {
    let sample = sample();
    // The newest sample bar opened 30 seconds before the clock, so it is still open.
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 30_000, Faults::default());
    let data_dir = tempfile::tempdir().unwrap();
    let api = start_api(data_dir.path(), &replay.server.base_url());

    let rows = json_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=3&persist=1",
        ),
        StatusCode::OK,
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_rows_match_sample(rows, &sample, LAST_SAMPLE_OPEN_MS - 60_000);
    let stored = kline_series(data_dir.path());
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|bar| bar.open_time_ms < LAST_SAMPLE_OPEN_MS)
    );
}

#[test]
fn fetch_persist_stores_once() {
    let sample = sample();
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, Faults::default());
    let data_dir = tempfile::tempdir().unwrap();
    let api = start_api(data_dir.path(), &replay.server.base_url());
    let path = "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=300&persist=1";

    let rows = json_of(get(&api, path), StatusCode::OK);
    assert_eq!(rows.as_array().unwrap().len(), 300);
    let stored = kline_series(data_dir.path());
    assert_eq!(stored.len(), 300);
    let first_open_ms = LAST_SAMPLE_OPEN_MS - 299 * 60_000;
    assert_eq!(stored[0].open_time_ms, first_open_ms);
    assert_eq!(stored[299].open_time_ms, LAST_SAMPLE_OPEN_MS);
    for bar in &stored {
        let expected = sample
            .iter()
            .find(|expected| expected.open_time_ms == bar.open_time_ms)
            .unwrap();
        assert_eq!(bar.close.to_bits(), expected.close.to_bits());
        assert_eq!(bar.volume.to_bits(), expected.volume.to_bits());
    }

    // A second fetch of the same bars leaves the dataset as it was.
    let again = json_of(get(&api, path), StatusCode::OK);
    assert_eq!(again, rows);
    assert_eq!(kline_series(data_dir.path()), stored);

    let datasets = json_of(get(&api, "/marketdata/datasets"), StatusCode::OK);
    let datasets = datasets.as_array().unwrap();
    assert_eq!(datasets.len(), 1);
    let series = &datasets[0];
    assert_eq!(series["category"], "linear");
    assert_eq!(series["symbol"], "BTCUSDT");
    assert_eq!(series["interval"], "1");
    assert_eq!(series["rows"], 300);
    assert_eq!(series["first_open_time_ms"], first_open_ms);
    assert_eq!(series["last_open_time_ms"], LAST_SAMPLE_OPEN_MS);
    assert_eq!(series["last_open_time"], "2025-06-29T16:38:00.000Z");

    // The stored bars read back through the klines route equal the fetched rows.
    let stored_rows = json_of(
        get(
            &api,
            "/marketdata/bybit/klines?symbol=BTCUSDT&interval=1&limit=300",
        ),
        StatusCode::OK,
    );
    assert_eq!(stored_rows, rows);
}

#[test]
fn fetch_reports_bybit_failures_as_502() {
    let data_dir = tempfile::tempdir().unwrap();

    // Bybit replies with a non-zero retCode.
    let message = "params error: symbol invalid";
    let faults = Faults {
        error_from: Some((1, 10001, message.to_string())),
        ..Faults::default()
    };
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, faults);
    let api = start_api(data_dir.path(), &replay.server.base_url());
    let detail = detail_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&persist=1",
        ),
        StatusCode::BAD_GATEWAY,
    );
    assert!(detail.contains("10001"), "{detail}");
    assert!(detail.contains(message), "{detail}");
    assert!(detail.contains("BTCUSDT"), "{detail}");
    assert!(kline_series(data_dir.path()).is_empty());
    drop(api);

    // A symbol that the replay server does not serve gets Bybit's retCode 10001 as well.
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, Faults::default());
    let api = start_api(data_dir.path(), &replay.server.base_url());
    let detail = detail_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=XRPUSDT&interval=1",
        ),
        StatusCode::BAD_GATEWAY,
    );
    assert!(detail.contains("Not supported symbols"), "{detail}");
    drop(api);

    // Nothing listens on the port: every attempt fails to connect.
    let closed_port = server::free_port();
    let api = start_api(data_dir.path(), &format!("http://127.0.0.1:{closed_port}"));
    let detail = detail_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1",
        ),
        StatusCode::BAD_GATEWAY,
    );
    assert!(detail.contains("attempts"), "{detail}");
}

#[test]
fn fetch_rejects_bad_parameters() {
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, Faults::default());
    let data_dir = tempfile::tempdir().unwrap();
    let api = start_api(data_dir.path(), &replay.server.base_url());
    let cases = [
        ("interval=1", "symbol"),
        ("symbol=BTCUSDT", "interval"),
        ("symbol=btcusdt&interval=1", "symbol"),
        ("symbol=BTC%27%20OR%201%3D1&interval=1", "symbol"),
        ("symbol=BTCUSDT&interval=2", "interval"),
        ("symbol=BTCUSDT&interval=1s", "interval"),
        ("symbol=BTCUSDT&interval=1&limit=0", "limit"),
        ("symbol=BTCUSDT&interval=1&limit=1001", "limit"),
        ("symbol=BTCUSDT&interval=1&limit=-1", "limit"),
        ("symbol=BTCUSDT&interval=1&persist=2", "persist"),
        ("symbol=BTCUSDT&interval=1&persist=true", "persist"),
        ("symbol=BTCUSDT&interval=1&category=futures", "category"),
        ("symbol=BTCUSDT&interval=1&start=0", "start"),
    ];
    for (query, needle) in cases {
        let detail = detail_of(
            get(&api, &format!("/marketdata/bybit/klines/fetch?{query}")),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert!(detail.contains(needle), "{query}: {detail}");
    }
    assert_eq!(
        replay.server.kline_requests(),
        0,
        "invalid requests reached Bybit"
    );
}

#[test]
fn datasets_count_real_sample() {
    let sample = sample();
    let data_dir = tempfile::tempdir().unwrap();
    write_klines(
        data_dir.path(),
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
        &sample,
    )
    .unwrap();
    let replay = start_replay(LAST_SAMPLE_OPEN_MS + 65_000, Faults::default());
    let api = start_api(data_dir.path(), &replay.server.base_url());

    let datasets = json_of(get(&api, "/marketdata/datasets"), StatusCode::OK);
    let datasets = datasets.as_array().unwrap();
    assert_eq!(datasets.len(), 1, "{datasets:?}");
    let series = &datasets[0];
    assert_eq!(series["category"], "linear");
    assert_eq!(series["symbol"], "BTCUSDT");
    assert_eq!(series["interval"], "1");
    assert_eq!(series["rows"], 43_200);
    assert_eq!(series["rows"], sample.len());
    assert_eq!(series["first_open_time_ms"], FIRST_SAMPLE_OPEN_MS);
    assert_eq!(series["first_open_time"], "2025-05-30T16:39:00.000Z");
    assert_eq!(series["last_open_time_ms"], LAST_SAMPLE_OPEN_MS);
    assert_eq!(series["last_open_time"], "2025-06-29T16:38:00.000Z");

    // Fetched bars replace stored ones with the same open time, so the count stays.
    json_of(
        get(
            &api,
            "/marketdata/bybit/klines/fetch?symbol=BTCUSDT&interval=1&limit=10&persist=1",
        ),
        StatusCode::OK,
    );
    let datasets = json_of(get(&api, "/marketdata/datasets"), StatusCode::OK);
    assert_eq!(datasets[0]["rows"], 43_200);
}
