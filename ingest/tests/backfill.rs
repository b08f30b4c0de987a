//! Backfill from a local Bybit v5 REST server that replays the real kline CSV files.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bst_ingest::backfill::{BackfillReport, Gap, backfill};
use bst_ingest::bybit_rest::{BybitRestClient, ClientConfig};
use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::samples::require_datasets_dir;
use bst_ingest::writer::read_series;
use bst_ingest::{Category, Error, Kline, Timeframe};
use support::bybit_server::{BybitServer, Faults, PARAMS_ERROR};

const MINUTE_MS: i64 = 60_000;

fn btc_1m_path() -> PathBuf {
    let path = require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    assert!(path.is_file(), "sample file {} not found", path.display());
    path
}

/// Reads the bars of BTCUSDT_1m.csv.gz, ascending.
fn btc_1m() -> Vec<Kline> {
    read_kline_csv(&btc_1m_path()).unwrap()
}

/// Returns a server time just after the close of the file's last bar, so every bar is closed.
fn after_last_close(klines: &[Kline]) -> i64 {
    klines.last().unwrap().open_time_ms + MINUTE_MS + 5_000
}

async fn start_server(now_ms: i64, faults: Faults) -> BybitServer {
    BybitServer::start(&[btc_1m_path()], now_ms, faults).await
}

/// Creates a client with short backoffs, so that retries keep the tests fast.
fn fast_client(server: &BybitServer) -> BybitRestClient {
    BybitRestClient::new(ClientConfig {
        base_url: server.base_url(),
        request_timeout: Duration::from_secs(5),
        max_attempts: 6,
        retry_base_delay: Duration::from_millis(2),
        retry_max_delay: Duration::from_millis(100),
        page_limit: 1000,
    })
    .unwrap()
}

async fn run(
    client: &BybitRestClient,
    data_dir: &Path,
    start_ms: i64,
    end_ms: i64,
) -> bst_ingest::Result<BackfillReport> {
    backfill(
        client,
        data_dir,
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
        start_ms,
        end_ms,
        &|_, _| {},
    )
    .await
}

fn stored(data_dir: &Path) -> Vec<Kline> {
    read_series(data_dir, Category::Linear, "BTCUSDT", Timeframe::Minutes(1)).unwrap()
}

/// Asserts equal open times and OHLCV. The server makes up turnover, so it is not compared.
fn assert_same_ohlcv(stored: &[Kline], expected: &[Kline]) {
    assert_eq!(stored.len(), expected.len(), "number of bars");
    for (stored, expected) in stored.iter().zip(expected) {
        let ohlcv = |kline: &Kline| {
            (
                kline.open_time_ms,
                kline.open.to_bits(),
                kline.high.to_bits(),
                kline.low.to_bits(),
                kline.close.to_bits(),
                kline.volume.to_bits(),
            )
        };
        assert_eq!(ohlcv(stored), ohlcv(expected), "{stored:?} vs {expected:?}");
    }
}

/// Returns every file below `dir` with its bytes.
fn file_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Backfills the file's whole range and checks that the dataset equals the file.
async fn backfill_whole_file(faults: Faults) -> (BackfillReport, BybitServer) {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), faults).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[0].open_time_ms;
    let end_ms = klines.last().unwrap().open_time_ms + MINUTE_MS;

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_same_ohlcv(&stored(data_dir.path()), &klines);
    assert_eq!(report.bars_expected, 43_200);
    assert_eq!(report.bars_fetched, 43_200);
    assert_eq!(report.bars_written, 43_200);
    assert_eq!(report.rows_outside_range, 0);
    assert_eq!(report.gaps, Vec::<Gap>::new());
    (report, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_matches_csv() {
    let (report, server) = backfill_whole_file(Faults::default()).await;
    // 43,200 bars in pages of 1,000.
    assert_eq!(report.requests, 44);
    assert_eq!(report.retries, 0);
    assert_eq!(server.kline_requests(), 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried() {
    let faults = Faults {
        rate_limit_every: Some(3),
        rate_limit_reset_header: true,
        ..Faults::default()
    };
    let (report, server) = backfill_whole_file(faults).await;
    assert!(server.rate_limited() > 0);
    assert_eq!(report.retries, server.rate_limited());
    assert_eq!(report.requests, 44 + report.retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_retried() {
    let faults = Faults {
        drop_connection_at: Some(2),
        ..Faults::default()
    };
    let (report, server) = backfill_whole_file(faults).await;
    assert_eq!(report.retries, 1);
    assert_eq!(report.requests, 45);
    assert_eq!(server.requests(), 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_pages_give_no_duplicates() {
    let faults = Faults {
        overlap_one_bar: true,
        ..Faults::default()
    };
    let (report, server) = backfill_whole_file(faults).await;
    assert_eq!(report.retries, 0);
    // The overlap reached the client: more rows arrived than the 43,200 stored.
    assert!(
        server.rows_sent() > 43_200,
        "the server sent only {} rows, so no page overlapped",
        server.rows_sent()
    );
}

/// Backfills 3,000 bars from the middle of the file with one fault and checks the result.
async fn backfill_middle_with(faults: Faults) -> BackfillReport {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), faults).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let expected = &klines[10_000..13_000];
    let start_ms = expected[0].open_time_ms;
    let end_ms = expected.last().unwrap().open_time_ms + MINUTE_MS;

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_same_ohlcv(&stored(data_dir.path()), expected);
    assert_eq!(report.bars_written, 3_000);
    assert_eq!(report.gaps, Vec::<Gap>::new());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_is_retried() {
    let report = backfill_middle_with(Faults {
        rate_limit_every: Some(2),
        rate_limit_http_429: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(report.retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_without_header_is_retried() {
    let report = backfill_middle_with(Faults {
        rate_limit_every: Some(2),
        ..Faults::default()
    })
    .await;
    assert_eq!(report.retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_retried() {
    let report = backfill_middle_with(Faults {
        server_error_at: Some(1),
        ..Faults::default()
    })
    .await;
    assert_eq!(report.retries, 1);
    assert_eq!(report.requests, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_retried() {
    let klines = btc_1m();
    let server = start_server(
        after_last_close(&klines),
        Faults {
            stall_at: Some((1, Duration::from_secs(2))),
            ..Faults::default()
        },
    )
    .await;
    let client = BybitRestClient::new(ClientConfig {
        base_url: server.base_url(),
        request_timeout: Duration::from_millis(300),
        retry_base_delay: Duration::from_millis(2),
        retry_max_delay: Duration::from_millis(10),
        ..ClientConfig::default()
    })
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[0].open_time_ms;
    let end_ms = klines[100].open_time_ms;

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_eq!(report.retries, 1);
    assert_eq!(report.bars_written, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_fetches_nothing() {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), Faults::default()).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[0].open_time_ms;
    let end_ms = klines.last().unwrap().open_time_ms + MINUTE_MS;
    run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();
    let requests_after_first = server.requests();
    let bytes_after_first = file_bytes(data_dir.path());

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_eq!(server.requests(), requests_after_first);
    assert_eq!(report.requests, 0);
    assert_eq!(report.bars_expected, 0);
    assert_eq!(report.bars_written, 0);
    assert_eq!(file_bytes(data_dir.path()), bytes_after_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gaps_are_fetched() {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), Faults::default()).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[0].open_time_ms;
    let end_ms = klines[5_000].open_time_ms;
    // Store bars 1,000 to 3,999 first, leaving gaps of 1,000 and 1,000 bars around them.
    run(
        &client,
        data_dir.path(),
        klines[1_000].open_time_ms,
        klines[4_000].open_time_ms,
    )
    .await
    .unwrap();

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_eq!(report.bars_expected, 2_000);
    assert_eq!(report.bars_written, 2_000);
    assert_eq!(report.requests, 2);
    assert_same_ohlcv(&stored(data_dir.path()), &klines[..5_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_bar_is_not_stored() {
    let klines = btc_1m();
    let last = klines.last().unwrap().open_time_ms;
    // The server's clock is 30 s into the last bar, which is therefore still open.
    let server = start_server(last + 30_000, Faults::default()).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();

    let report = run(
        &client,
        data_dir.path(),
        klines[0].open_time_ms,
        last + MINUTE_MS,
    )
    .await
    .unwrap();

    assert_same_ohlcv(&stored(data_dir.path()), &klines[..klines.len() - 1]);
    assert_eq!(report.open_bars_dropped, 1);
    assert_eq!(report.bars_written, 43_199);
    let expected_gap = Gap {
        first_open_ms: last,
        last_open_ms: last,
        bars: 1,
    };
    assert_eq!(report.gaps, vec![expected_gap]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_before_start_are_not_written() {
    let klines = btc_1m();
    let server = start_server(
        after_last_close(&klines),
        Faults {
            ignore_start: true,
            ..Faults::default()
        },
    )
    .await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let expected = &klines[20_000..20_010];

    let report = run(
        &client,
        data_dir.path(),
        expected[0].open_time_ms,
        expected[9].open_time_ms + MINUTE_MS,
    )
    .await
    .unwrap();

    assert_same_ohlcv(&stored(data_dir.path()), expected);
    assert_eq!(report.requests, 1);
    assert_eq!(report.rows_outside_range, 990);
    assert_eq!(report.bars_written, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_outside_range_writes_nothing() {
    let klines = btc_1m();
    let server = start_server(
        after_last_close(&klines),
        Faults {
            page_before_start: true,
            ..Faults::default()
        },
    )
    .await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[20_000].open_time_ms;
    let end_ms = klines[20_010].open_time_ms;

    let report = run(&client, data_dir.path(), start_ms, end_ms)
        .await
        .unwrap();

    assert_eq!(report.rows_outside_range, 1_000);
    assert_eq!(report.bars_fetched, 0);
    assert_eq!(report.bars_written, 0);
    let expected_gap = Gap {
        first_open_ms: start_ms,
        last_open_ms: end_ms - MINUTE_MS,
        bars: 10,
    };
    assert_eq!(report.gaps, vec![expected_gap]);
    assert!(stored(data_dir.path()).is_empty());
    assert!(file_bytes(data_dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_keeps_files() {
    let klines = btc_1m();
    let message = "invalid request, please check your server timestamp or recv_window param";
    let server = start_server(
        after_last_close(&klines),
        Faults {
            // The first backfill sends 2 requests; every later one is rejected.
            error_from: Some((3, 10002, message.to_string())),
            ..Faults::default()
        },
    )
    .await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();
    let start_ms = klines[0].open_time_ms;
    run(
        &client,
        data_dir.path(),
        start_ms,
        klines[2_000].open_time_ms,
    )
    .await
    .unwrap();
    let bytes_before = file_bytes(data_dir.path());
    assert!(!bytes_before.is_empty());

    let error = run(
        &client,
        data_dir.path(),
        start_ms,
        klines[5_000].open_time_ms,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(&error, Error::Bybit { code: 10002, message: text } if text == message),
        "{error}"
    );
    assert!(error.to_string().contains("10002"), "{error}");
    assert_eq!(server.requests(), 3, "a rejected request is not retried");
    assert_eq!(file_bytes(data_dir.path()), bytes_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_name_url() {
    let klines = btc_1m();
    let server = start_server(
        after_last_close(&klines),
        Faults {
            rate_limit_every: Some(1),
            ..Faults::default()
        },
    )
    .await;
    let client = BybitRestClient::new(ClientConfig {
        base_url: server.base_url(),
        max_attempts: 3,
        retry_base_delay: Duration::from_millis(1),
        retry_max_delay: Duration::from_millis(5),
        ..ClientConfig::default()
    })
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();

    let error = run(
        &client,
        data_dir.path(),
        klines[0].open_time_ms,
        klines[10].open_time_ms,
    )
    .await
    .unwrap_err();

    let text = error.to_string();
    assert!(
        matches!(error, Error::RetriesExhausted { attempts: 3, .. }),
        "{text}"
    );
    assert!(text.contains(&server.base_url()), "{text}");
    assert!(text.contains("/v5/market/kline?category=linear"), "{text}");
    assert!(text.contains("retCode 10006"), "{text}");
    assert_eq!(server.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_backfill_is_rejected() {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), Faults::default()).await;
    let client = fast_client(&server);
    let data_dir = tempfile::tempdir().unwrap();

    let error = backfill(
        &client,
        data_dir.path(),
        Category::Linear,
        "BTCUSDT",
        Timeframe::Month,
        0,
        1,
        &|_, _| {},
    )
    .await
    .unwrap_err();

    assert!(error.to_string().contains("monthly bars"), "{error}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pages_like_bybit() {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), Faults::default()).await;
    let client = fast_client(&server);
    let start_ms = klines[100].open_time_ms;
    let end_ms = klines[199].open_time_ms;

    // With both bounds, the newest `limit` bars inside [start, end] come back.
    let page = client
        .fetch_klines(
            Category::Linear,
            "BTCUSDT",
            Timeframe::Minutes(1),
            start_ms,
            end_ms,
            5,
        )
        .await
        .unwrap();
    let open_times: Vec<i64> = page.klines.iter().map(|kline| kline.open_time_ms).collect();
    let expected: Vec<i64> = klines[195..200]
        .iter()
        .map(|kline| kline.open_time_ms)
        .collect();
    assert_eq!(open_times, expected);

    // Without a limit, Bybit sends 200 rows, newest first and every field a string.
    let url = format!(
        "{}/v5/market/kline?category=linear&symbol=BTCUSDT&interval=1&end={end_ms}",
        server.base_url()
    );
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let list = body["result"]["list"].as_array().unwrap();
    assert_eq!(list.len(), 200);
    assert_eq!(list[0][0], end_ms.to_string());
    assert!(
        list[0]
            .as_array()
            .unwrap()
            .iter()
            .all(serde_json::Value::is_string)
    );
    assert_eq!(body["retCode"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejects_bad_params() {
    let klines = btc_1m();
    let server = start_server(after_last_close(&klines), Faults::default()).await;
    let cases = [
        "category=futures&symbol=BTCUSDT&interval=1",
        "symbol=BTCUSDT&interval=1",
        "category=linear&interval=1",
        "category=linear&symbol=BTCUSDT&interval=2",
        "category=linear&symbol=BTCUSDT&interval=1m",
        "category=linear&symbol=XRPUSDT&interval=1",
        "category=linear&symbol=BTCUSDT&interval=1&start=abc",
    ];
    for query in cases {
        let url = format!("{}/v5/market/kline?{query}", server.base_url());
        let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(body["retCode"], PARAMS_ERROR, "{query}: {body}");
    }

    let client = fast_client(&server);
    let error = client
        .fetch_klines(Category::Linear, "XRPUSDT", Timeframe::Minutes(1), 0, 1, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Bybit {
                code: PARAMS_ERROR,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        server.requests(),
        cases.len() as u64 + 1,
        "a params error is not retried"
    );
}
