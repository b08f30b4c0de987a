//! `bst ingest bybit` end to end: the binary backfills from a local Bybit v5 REST server.

#[path = "../ingest/tests/support/bybit_server.rs"]
mod bybit_server;

use std::path::Path;
use std::process::{Command, Output};

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::samples::require_datasets_dir;
use bst_ingest::writer::read_series;
use bst_ingest::{Category, Timeframe};
use bybit_server::{BybitServer, Faults};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// Runs a command on a blocking thread, so the server keeps serving meanwhile.
async fn output_of(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("failed to run bst"))
        .await
        .unwrap()
}

/// Runs `bst ingest bybit` for BTCUSDT 1m.
async fn run_cli(base_url: &str, data_dir: &Path, start: &str, end: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["ingest", "bybit", "--symbol", "BTCUSDT", "--interval", "1m"])
        .args(["--start", start, "--end", end, "--base-url", base_url])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("BYBIT_REST_URL")
        .env("RUST_LOG", "warn");
    output_of(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_backfills_from_local_server() {
    let file = require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let klines = read_kline_csv(&file).unwrap();
    let now_ms = klines.last().unwrap().open_time_ms + 65_000;
    let server = BybitServer::start(
        std::slice::from_ref(&file),
        now_ms,
        Faults {
            rate_limit_every: Some(4),
            ..Faults::default()
        },
    )
    .await;
    let data_dir = tempfile::tempdir().unwrap();
    // 2025-06-01 00:00 to 06:00 UTC: 360 bars in one page, plus rate limit retries.
    let (start, end) = ("2025-06-01T00:00:00Z", "2025-06-01T06:00:00Z");

    let output = run_cli(&server.base_url(), data_dir.path(), start, end).await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("bars written 360"), "{stdout}");
    assert!(stdout.contains("gaps: none"), "{stdout}");
    let stored = read_series(
        data_dir.path(),
        Category::Linear,
        "BTCUSDT",
        Timeframe::Minutes(1),
    )
    .unwrap();
    assert_eq!(stored.len(), 360);
    let first_ms = 1_748_736_000_000; // 2025-06-01 00:00 UTC
    let expected: Vec<_> = klines
        .iter()
        .filter(|kline| (first_ms..first_ms + 360 * 60_000).contains(&kline.open_time_ms))
        .collect();
    for (stored, expected) in stored.iter().zip(expected) {
        assert_eq!(stored.open_time_ms, expected.open_time_ms);
        assert_eq!(stored.close.to_bits(), expected.close.to_bits());
        assert_eq!(stored.volume.to_bits(), expected.volume.to_bits());
    }

    // A second run finds nothing missing and sends no request.
    let requests = server.requests();
    let output = run_cli(&server.base_url(), data_dir.path(), start, end).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("requests 0"), "{stdout}");
    assert_eq!(server.requests(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_bybit_error() {
    let file = require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let server = BybitServer::start(
        std::slice::from_ref(&file),
        1_751_215_200_000,
        Faults::default(),
    )
    .await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["ingest", "bybit", "--symbol", "XRPUSDT", "--interval", "1"])
        .args([
            "--start",
            "2025-06-01T00:00:00Z",
            "--end",
            "2025-06-01T01:00:00Z",
        ])
        .args(["--base-url", &server.base_url()])
        .arg("--data-dir")
        .arg(data_dir.path());

    let output = output_of(command).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("retCode 10001"), "{stderr}");
    assert!(stderr.contains("Not supported symbols"), "{stderr}");
}
