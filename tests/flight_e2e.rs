//! End-to-end runs of the Arrow Flight and Flight SQL port of `bst serve`, driven by the
//! Python clients in `tests/flight_client.py` (pyarrow.flight, the ADBC Flight SQL driver
//! and polars). `BST_PYTHON` names a Python with the packages of
//! `tests/python-requirements.txt`.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bst_ingest::{Category, Kline, Timeframe};
use chrono::DateTime;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// Memory pool of the server in the streaming test: 32 MiB, about a fifth of the
/// 168 MB of Arrow data that the synthetic series streams.
const STREAMING_POOL: &str = "32MiB";

/// Largest growth of the server's peak resident memory while it streams the synthetic series.
/// It is below the 168 MB that the result takes in Arrow, so a server that collected the
/// result before sending it fails the test.
const MAX_STREAMING_GROWTH_BYTES: u64 = 128 * 1024 * 1024;

/// Bars of the synthetic 1-minute series of the memory test.
const SYNTHETIC_BARS: usize = 3_000_000;

fn python() -> PathBuf {
    match std::env::var_os("BST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "set BST_PYTHON to a Python with the packages of tests/python-requirements.txt \
             (pyarrow, adbc-driver-flightsql, polars); the Flight tests need it"
        ),
    }
}

fn btc_1m_file() -> PathBuf {
    bst_ingest::samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free loopback port")
        .port()
}

fn ingest_btc(data_dir: &Path) {
    let output = Command::new(BIN)
        .args(["ingest", "klines"])
        .arg(btc_1m_file())
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

/// A `bst serve` process with free REST and Flight ports, killed on drop.
struct Server {
    child: Child,
    flight_port: u16,
}

impl Server {
    fn start(data_dir: &Path, extra_args: &[&str], api_keys: Option<&str>) -> Self {
        let rest_port = free_port();
        let flight_port = free_port();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--workers", "0"])
            .arg("--addr")
            .arg(format!("127.0.0.1:{rest_port}"))
            .arg("--flight-addr")
            .arg(format!("127.0.0.1:{flight_port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env_remove("BST_DATASETS_DIR")
            .env_remove("BST_API_KEYS")
            .env_remove("BST_MEMORY_LIMIT")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(keys) = api_keys {
            command.env("BST_API_KEYS", keys);
        }
        let mut child = command.spawn().expect("failed to start bst serve");
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bst serve] {line}");
            }
        });

        let deadline = Instant::now() + Duration::from_secs(300);
        while TcpStream::connect(("127.0.0.1", flight_port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("bst serve exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the Flight port did not open in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, flight_port }
    }

    /// Returns the server's peak resident set size (`VmHWM`) in bytes.
    fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("failed to read /proc/PID/status of the server");
        let line = status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .expect("no VmHWM line in /proc/PID/status");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|value| value.parse().ok())
            .expect("VmHWM is not a number of kB");
        kib * 1024
    }

    /// Runs one check of `tests/flight_client.py` and returns its JSON output.
    fn run_client(&self, check: &str, args: &[&str]) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight_client.py");
        let output = Command::new(python())
            .arg(script)
            .arg(check)
            .arg(self.flight_port.to_string())
            .args(args)
            .output()
            .expect("failed to run BST_PYTHON");
        assert!(
            output.status.success(),
            "flight_client.py {check} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "flight_client.py {check} printed no JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Figures of the sample CSV computed without the engine.
#[derive(Debug)]
struct CsvFigures {
    rows: u64,
    sum_close: f64,
    min_low: f64,
    max_high: f64,
    first_open_ms: i64,
    last_open_ms: i64,
    closes_above_100k: u64,
}

fn csv_figures(path: &Path) -> CsvFigures {
    let file = std::fs::File::open(path).unwrap();
    let mut figures = CsvFigures {
        rows: 0,
        sum_close: 0.0,
        min_low: f64::INFINITY,
        max_high: f64::NEG_INFINITY,
        first_open_ms: i64::MAX,
        last_open_ms: i64::MIN,
        closes_above_100k: 0,
    };
    for line in BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .skip(1)
    {
        let fields: Vec<&str> = line.split(',').collect();
        let open_ms = DateTime::parse_from_str(fields[0], "%Y-%m-%d %H:%M:%S%:z")
            .unwrap()
            .timestamp_millis();
        let high: f64 = fields[2].parse().unwrap();
        let low: f64 = fields[3].parse().unwrap();
        let close: f64 = fields[4].parse().unwrap();
        figures.rows += 1;
        figures.sum_close += close;
        figures.min_low = figures.min_low.min(low);
        figures.max_high = figures.max_high.max(high);
        figures.first_open_ms = figures.first_open_ms.min(open_ms);
        figures.last_open_ms = figures.last_open_ms.max(open_ms);
        if close > 100_000.0 {
            figures.closes_above_100k += 1;
        }
    }
    figures
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = expected.abs() * 1e-12;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} differs from {expected}"
    );
}

fn start_btc_server() -> (tempfile::TempDir, Server) {
    let data_dir = tempfile::tempdir().unwrap();
    ingest_btc(data_dir.path());
    let server = Server::start(data_dir.path(), &[], None);
    (data_dir, server)
}

#[test]
fn pyarrow_lists_and_reads_klines() {
    let expected = csv_figures(&btc_1m_file());
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("datasets", &[]);

    let datasets = result["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 1, "{datasets:?}");
    let dataset = &datasets[0];
    assert_eq!(
        dataset["path"],
        serde_json::json!(["klines", "linear", "BTCUSDT", "1"])
    );
    assert_eq!(dataset["total_records"].as_u64(), Some(expected.rows));
    assert_eq!(
        dataset["app_metadata"]["first_open_time"],
        "2025-05-30T16:39:00.000Z"
    );
    assert_eq!(
        dataset["app_metadata"]["last_open_time"],
        "2025-06-29T16:38:00.000Z"
    );

    assert_eq!(result["rows"].as_u64(), Some(expected.rows));
    assert_eq!(result["rows"].as_u64(), Some(43_200));
    assert_close(
        result["sum_close"].as_f64().unwrap(),
        expected.sum_close,
        "sum of close",
    );
    assert_eq!(
        result["first_open_ms"].as_i64(),
        Some(expected.first_open_ms)
    );
    assert_eq!(result["last_open_ms"].as_i64(), Some(expected.last_open_ms));
    assert_eq!(result["ranged_rows"].as_u64(), Some(1_440));
    assert_eq!(
        result["ranged_columns"],
        serde_json::json!(["open_time", "close"])
    );
    assert_eq!(result["schema_columns"][0], "open_time");
    assert_eq!(result["info_records"].as_u64(), Some(expected.rows));
}

#[test]
fn adbc_queries_match_csv() {
    let expected = csv_figures(&btc_1m_file());
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("adbc", &[]);

    assert_eq!(result["count"].as_u64(), Some(expected.rows));
    assert_eq!(result["min_low"].as_f64(), Some(expected.min_low));
    assert_eq!(result["max_high"].as_f64(), Some(expected.max_high));
    assert_eq!(result["above"].as_u64(), Some(expected.closes_above_100k));
    assert_eq!(result["polars_rows"].as_u64(), Some(expected.rows));
    assert_close(
        result["polars_sum_close"].as_f64().unwrap(),
        expected.sum_close,
        "polars sum of close",
    );
    assert_eq!(result["tables"], serde_json::json!(["klines", "ticks"]));
}

#[test]
fn errors_get_their_status_codes() {
    let (_data_dir, server) = start_btc_server();
    let codes = server.run_client("errors", &[]);

    let cases = [
        ("bad_ticket", "INVALID_ARGUMENT"),
        ("unknown_dataset", "NOT_FOUND"),
        ("unknown_backtest", "NOT_FOUND"),
        ("bad_sql", "INVALID_ARGUMENT"),
        ("copy", "INVALID_ARGUMENT"),
        ("create_table", "INVALID_ARGUMENT"),
    ];
    for (case, code) in cases {
        assert_eq!(codes[case], code, "{case}: {codes}");
    }
    let copy_message = codes["copy_message"].as_str().unwrap();
    assert!(copy_message.contains("COPY"), "{copy_message}");
    let create_message = codes["create_table_message"].as_str().unwrap();
    assert!(create_message.contains("CREATE TABLE"), "{create_message}");
    assert!(
        !Path::new("/tmp/bst_flight_copy.csv").exists(),
        "COPY wrote its file"
    );
}

#[test]
fn api_keys_are_required() {
    let data_dir = tempfile::tempdir().unwrap();
    ingest_btc(data_dir.path());
    let server = Server::start(data_dir.path(), &[], Some("flight-test-key,other-key"));
    let result = server.run_client("auth", &["flight-test-key"]);

    assert_eq!(result["missing_key"], "UNAUTHENTICATED", "{result}");
    assert_eq!(result["wrong_key"], "UNAUTHENTICATED", "{result}");
    assert_eq!(result["bearer_rows"].as_u64(), Some(43_200));
    assert_eq!(result["handshake_rows"].as_u64(), Some(43_200));
}

/// Writes a seeded random walk of 1-minute bars from 2020-01-01.
fn write_synthetic_klines(data_dir: &Path, symbol: &str, bars: usize) {
    const START_MS: i64 = 1_577_836_800_000;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut price = 10_000.0_f64;
    let klines: Vec<Kline> = (0..bars)
        .map(|index| {
            // xorshift64: a fixed seed gives the same series on every run.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let step = (state % 2_001) as f64 / 1_000.0 - 1.0;
            let open = price;
            price = (price + step).max(1.0);
            Kline {
                open_time_ms: START_MS + index as i64 * 60_000,
                open,
                high: open.max(price) + 0.5,
                low: open.min(price) - 0.5,
                close: price,
                volume: 1.0 + (state % 100) as f64,
                turnover: Some(price * 10.0),
            }
        })
        .collect();
    bst_ingest::writer::write_klines(
        data_dir,
        Category::Linear,
        symbol,
        Timeframe::Minutes(1),
        &klines,
    )
    .expect("failed to write the synthetic klines");
}

#[test]
fn do_get_streams_with_bounded_memory() {
    let data_dir = tempfile::tempdir().unwrap();
    write_synthetic_klines(data_dir.path(), "SYNTHUSDT", SYNTHETIC_BARS);
    let server = Server::start(data_dir.path(), &["--memory-limit", STREAMING_POOL], None);
    let before = server.peak_rss_bytes();
    let result = server.run_client("stream", &["SYNTHUSDT"]);

    assert_eq!(result["rows"].as_u64(), Some(SYNTHETIC_BARS as u64));
    assert!(result["batches"].as_u64().unwrap() > 1, "{result}");
    let peak = server.peak_rss_bytes();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "server VmHWM {before} bytes before and {peak} bytes after streaming {SYNTHETIC_BARS} bars"
    );
    assert!(
        growth < MAX_STREAMING_GROWTH_BYTES,
        "server peak RSS grew by {growth} bytes, above {MAX_STREAMING_GROWTH_BYTES}"
    );
}
