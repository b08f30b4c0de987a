//! End-to-end runs of the Arrow Flight and Flight SQL port of `bst serve`, driven by the
//! Python clients in `tests/flight_client.py` (pyarrow.flight, the ADBC Flight SQL driver
//! and polars). `BST_PYTHON` names a Python with the packages of
//! `tests/python-requirements.txt`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bst_ingest::{Category, Kline, Timeframe};
use chrono::DateTime;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// How long a backtest may stay queued or running before the test fails.
const BACKTEST_DEADLINE: Duration = Duration::from_secs(300);

/// Memory pool of the server in the streaming test: 32 MiB, about a fifth of the
/// 168 MB of Arrow data that the default synthetic series streams.
const STREAMING_POOL: &str = "32MiB";

/// Largest growth of the server's peak resident memory while it streams the synthetic series.
/// It is below the 168 MB that the default result takes in Arrow, so a server that collected
/// the result before sending it fails the test.
const MAX_STREAMING_GROWTH_BYTES: u64 = 128 * 1024 * 1024;

/// Bars of the synthetic 1-minute series of the memory test, unless `BST_FLIGHT_MEMORY_BARS`
/// sets another count. Below about 2.4 M bars the result fits in
/// [`MAX_STREAMING_GROWTH_BYTES`].
const DEFAULT_SYNTHETIC_BARS: usize = 3_000_000;

/// Arrow bytes of one synthetic bar: seven 8-byte columns without nulls.
const SYNTHETIC_BAR_BYTES: u64 = 7 * 8;

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

fn trade_dump_file() -> PathBuf {
    bst_ingest::samples::require_datasets_dir().join("bybit/trading/BTCUSD2019-10-01.csv.gz")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free loopback port")
        .port()
}

/// Runs `bst ingest KIND FILE` into `data_dir`.
fn ingest(data_dir: &Path, kind: &str, file: &Path) {
    let output = Command::new(BIN)
        .args(["ingest", kind])
        .arg(file)
        .env("BST_DATA_DIR", data_dir)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run bst ingest");
    assert!(
        output.status.success(),
        "bst ingest {kind} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ingest_btc(data_dir: &Path) {
    ingest(data_dir, "klines", &btc_1m_file());
}

/// A `bst serve` process with free REST and Flight ports, killed on drop.
struct Server {
    child: Child,
    rest_port: u16,
    flight_port: u16,
}

impl Server {
    /// Starts `bst serve` with `workers` backtest workers and waits until the Flight port
    /// accepts connections. The REST port is bound before the Flight port.
    fn start(data_dir: &Path, workers: usize, extra_args: &[&str], api_keys: Option<&str>) -> Self {
        let rest_port = free_port();
        let flight_port = free_port();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--workers", &workers.to_string()])
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
        Self {
            child,
            rest_port,
            flight_port,
        }
    }

    /// Returns the REST URL of `path` under `/api/v1`.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.rest_port)
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

/// One row of the sample kline CSV, parsed without the ingest code.
#[derive(Debug, Clone, Copy)]
struct CsvKline {
    open_ms: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
}

/// Reads the rows of a kline CSV (`timestamp,open,high,low,close,volume`) in file order.
fn read_csv_klines(path: &Path) -> Vec<CsvKline> {
    let file = std::fs::File::open(path).unwrap();
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header = lines.next().unwrap().unwrap();
    assert_eq!(header, "timestamp,open,high,low,close,volume");
    lines
        .map(|line| {
            let line = line.unwrap();
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 6, "{line}");
            let number = |index: usize| -> f64 { fields[index].parse().unwrap() };
            CsvKline {
                open_ms: DateTime::parse_from_str(fields[0], "%Y-%m-%d %H:%M:%S%:z")
                    .unwrap()
                    .timestamp_millis(),
                open: number(1),
                high: number(2),
                low: number(3),
                close: number(4),
                volume: number(5),
            }
        })
        .collect()
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
    let mut figures = CsvFigures {
        rows: 0,
        sum_close: 0.0,
        min_low: f64::INFINITY,
        max_high: f64::NEG_INFINITY,
        first_open_ms: i64::MAX,
        last_open_ms: i64::MIN,
        closes_above_100k: 0,
    };
    for row in read_csv_klines(path) {
        figures.rows += 1;
        figures.sum_close += row.close;
        figures.min_low = figures.min_low.min(row.low);
        figures.max_high = figures.max_high.max(row.high);
        figures.first_open_ms = figures.first_open_ms.min(row.open_ms);
        figures.last_open_ms = figures.last_open_ms.max(row.open_ms);
        if row.close > 100_000.0 {
            figures.closes_above_100k += 1;
        }
    }
    figures
}

/// One trade of the dump, parsed without the ingest code.
#[derive(Debug, Clone)]
struct DumpTrade {
    ts_us: i64,
    side: String,
    size: f64,
    price: f64,
    tick_direction: String,
    trade_id: String,
    foreign_notional: f64,
}

/// Parses a dump timestamp, Unix seconds with up to 6 fraction digits, into microseconds.
fn dump_time_us(text: &str) -> i64 {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= 6, "{text}");
    let seconds: i64 = seconds.parse().unwrap();
    let micros: i64 = format!("{fraction:0<6}").parse().unwrap();
    seconds * 1_000_000 + micros
}

/// Reads every trade of a Bybit trade dump in file order.
fn read_dump(path: &Path) -> Vec<DumpTrade> {
    let file = std::fs::File::open(path).unwrap();
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header = lines.next().unwrap().unwrap();
    let names: Vec<&str> = header.split(',').collect();
    let index = |name: &str| {
        names
            .iter()
            .position(|column| *column == name)
            .unwrap_or_else(|| panic!("no {name} column in {header}"))
    };
    let columns = [
        index("timestamp"),
        index("side"),
        index("size"),
        index("price"),
        index("tickDirection"),
        index("trdMatchID"),
        index("foreignNotional"),
    ];
    lines
        .map(|line| {
            let line = line.unwrap();
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), names.len(), "{line}");
            let [ts, side, size, price, tick_direction, trade_id, notional] =
                columns.map(|column| fields[column]);
            DumpTrade {
                ts_us: dump_time_us(ts),
                side: side.to_string(),
                size: size.parse().unwrap(),
                price: price.parse().unwrap(),
                tick_direction: tick_direction.to_string(),
                trade_id: trade_id.to_string(),
                foreign_notional: notional.parse().unwrap(),
            }
        })
        .collect()
}

/// Formats epoch microseconds as ISO 8601 UTC with six fraction digits.
fn iso_micros(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Returns the values of one column of a `flight_client.py` table.
fn column<'a>(table: &'a Value, name: &str) -> &'a [Value] {
    table[name]
        .as_array()
        .unwrap_or_else(|| panic!("no column {name} in the Flight result"))
}

/// Returns a JSON number as `f64`. Python and the server both write the shortest decimal that
/// round-trips, so equal values parse to equal numbers.
fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

/// Returns the files below `dir`, as paths relative to it, with their sizes.
fn file_sizes(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                let relative = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                files.insert((relative, metadata.len()));
            }
        }
    }
    files
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
    let server = Server::start(data_dir.path(), 0, &[], None);
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
fn klines_do_get_equals_csv_rows() {
    let expected = read_csv_klines(&btc_1m_file());
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("klines", &[]);

    assert_eq!(
        result["names"],
        json!([
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "turnover"
        ])
    );
    let types = &result["types"];
    assert_eq!(types["open_time"], "timestamp[ms, tz=UTC]", "{types}");
    for name in ["open", "high", "low", "close", "volume", "turnover"] {
        assert_eq!(types[name], "double", "{name}: {types}");
    }
    let table = &result["columns"];
    let open_times = column(table, "open_time");
    assert_eq!(open_times.len(), expected.len());
    assert_eq!(open_times.len(), 43_200);
    let [open, high, low, close, volume, turnover] =
        ["open", "high", "low", "close", "volume", "turnover"].map(|name| column(table, name));
    for (index, row) in expected.iter().enumerate() {
        assert_eq!(open_times[index].as_i64(), Some(row.open_ms), "row {index}");
        assert_eq!(number(&open[index]), row.open, "open of row {index}");
        assert_eq!(number(&high[index]), row.high, "high of row {index}");
        assert_eq!(number(&low[index]), row.low, "low of row {index}");
        assert_eq!(number(&close[index]), row.close, "close of row {index}");
        assert_eq!(number(&volume[index]), row.volume, "volume of row {index}");
        // The CSV has no turnover column, so no bar has a turnover.
        assert!(turnover[index].is_null(), "turnover of row {index}");
    }
}

#[test]
fn ticks_match_trade_dump() {
    let dump = read_dump(&trade_dump_file());
    let data_dir = tempfile::tempdir().unwrap();
    ingest(data_dir.path(), "trades", &trade_dump_file());
    let server = Server::start(data_dir.path(), 0, &[], None);
    let result = server.run_client("ticks", &[]);

    assert_eq!(dump.len(), 93_598);
    let first_us = dump.iter().map(|trade| trade.ts_us).min().unwrap();
    let last_us = dump.iter().map(|trade| trade.ts_us).max().unwrap();

    // The import also derives the 1-minute bars of the day, listed before the ticks.
    let datasets = result["datasets"].as_array().unwrap();
    let paths: Vec<&Value> = datasets.iter().map(|dataset| &dataset["path"]).collect();
    assert_eq!(
        paths,
        [
            &json!(["klines", "inverse", "BTCUSD", "1"]),
            &json!(["ticks", "inverse", "BTCUSD"])
        ]
    );
    let listed = &datasets[1];
    assert_eq!(listed["total_records"].as_u64(), Some(dump.len() as u64));
    let metadata = &listed["app_metadata"];
    assert_eq!(metadata["rows"].as_u64(), Some(dump.len() as u64));
    assert_eq!(metadata["first_open_time"], iso_micros(first_us).as_str());
    assert_eq!(metadata["last_open_time"], iso_micros(last_us).as_str());

    assert_eq!(
        result["names"],
        json!([
            "ts",
            "price",
            "size",
            "notional",
            "side",
            "trade_id",
            "tick_direction"
        ])
    );
    let types = &result["types"];
    assert_eq!(types["ts"], "timestamp[us, tz=UTC]", "{types}");
    for name in ["price", "size", "notional"] {
        assert_eq!(types[name], "double", "{name}: {types}");
    }
    for name in ["side", "trade_id", "tick_direction"] {
        assert_eq!(types[name], "string", "{name}: {types}");
    }

    let table = &result["columns"];
    let [ts, price, size, notional, side, trade_id, tick_direction] = [
        "ts",
        "price",
        "size",
        "notional",
        "side",
        "trade_id",
        "tick_direction",
    ]
    .map(|name| column(table, name));
    assert_eq!(ts.len(), dump.len());
    let dump_size: f64 = dump.iter().map(|trade| trade.size).sum();
    assert_eq!(dump_size, 933_178_345.0);
    assert_eq!(result["sum_size"].as_f64(), Some(dump_size));

    // Trades with equal timestamps may come in any order, so rows are matched by trade id.
    let by_id: HashMap<&str, &DumpTrade> = dump
        .iter()
        .map(|trade| (trade.trade_id.as_str(), trade))
        .collect();
    assert_eq!(by_id.len(), dump.len(), "trade ids of the dump repeat");
    let mut seen = BTreeSet::new();
    let mut previous_us = i64::MIN;
    for (index, id) in trade_id.iter().enumerate() {
        let id = id.as_str().unwrap();
        let trade = by_id
            .get(id)
            .unwrap_or_else(|| panic!("row {index}: trade {id} is not in the dump"));
        assert!(seen.insert(id), "row {index}: trade {id} repeats");
        let row_us = ts[index].as_i64().unwrap();
        assert_eq!(row_us, trade.ts_us, "ts of trade {id}");
        assert!(row_us >= previous_us, "row {index} is before the row above");
        previous_us = row_us;
        assert_eq!(number(&price[index]), trade.price, "price of trade {id}");
        assert_eq!(number(&size[index]), trade.size, "size of trade {id}");
        assert_eq!(
            number(&notional[index]),
            trade.foreign_notional,
            "notional of trade {id}"
        );
        assert_eq!(
            side[index].as_str(),
            Some(trade.side.to_lowercase().as_str()),
            "side of trade {id}"
        );
        assert_eq!(
            tick_direction[index].as_str(),
            Some(trade.tick_direction.as_str()),
            "tick direction of trade {id}"
        );
    }

    // 12:00 (included) to 13:00 (excluded) UTC on 2019-10-01.
    let (hour_start, hour_end) = (1_569_931_200_000_000, 1_569_934_800_000_000);
    let in_hour: Vec<i64> = dump
        .iter()
        .map(|trade| trade.ts_us)
        .filter(|us| (hour_start..hour_end).contains(us))
        .collect();
    assert!(!in_hour.is_empty());
    assert_eq!(result["hour_rows"].as_u64(), Some(in_hour.len() as u64));
    assert_eq!(
        result["hour_first_us"].as_i64(),
        in_hour.iter().min().copied()
    );
    assert_eq!(
        result["hour_last_us"].as_i64(),
        in_hour.iter().max().copied()
    );
}

/// Parses a REST timestamp (RFC 3339) into epoch milliseconds.
fn rest_millis(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a timestamp string"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is not RFC 3339: {error}"))
        .timestamp_millis()
}

/// Creates a strategy and a backtest over the whole BTCUSDT 1m month through REST, waits
/// until it completes, and returns its id.
fn run_rest_backtest(server: &Server, client: &Client) -> i64 {
    let response = client
        .post(server.url("/strategies"))
        .json(&json!({
            "name": "SMA 10/30 both ways",
            "strategy_type": "sma_crossover",
            "config": {"fast_period": 10, "slow_period": 30},
            "is_active": true
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let strategy: Value = response.json().unwrap();

    // Shorts, a stop loss and funding give trades of both sides, several exit reasons and
    // non-zero funding.
    let response = client
        .post(server.url("/backtests"))
        .json(&json!({
            "strategy_id": strategy["id"],
            "symbol": "BTCUSDT",
            "timeframe": "1",
            "start_date": "2025-05-30T16:39:00Z",
            "end_date": "2025-06-29T16:39:00Z",
            "initial_capital": 10000.0,
            "config": {"direction": "both", "stop_loss": 0.005, "funding_rate": 0.0001}
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().unwrap();
    let backtest_id = created["id"].as_i64().expect("backtest id");

    let deadline = Instant::now() + BACKTEST_DEADLINE;
    loop {
        let backtest: Value = client
            .get(server.url(&format!("/backtests/{backtest_id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        match backtest["status"].as_str() {
            Some("completed") => return backtest_id,
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

/// Reads every trade of a backtest through REST, one page of 1,000 at a time.
fn rest_trades(server: &Server, client: &Client, backtest_id: i64) -> Vec<Value> {
    let mut trades = Vec::new();
    loop {
        let url = server.url(&format!(
            "/backtests/{backtest_id}/trades?limit=1000&offset={}",
            trades.len()
        ));
        let response = client.get(url).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page: Vec<Value> = response.json().unwrap();
        let full = page.len() == 1_000;
        trades.extend(page);
        if !full {
            return trades;
        }
    }
}

#[test]
fn backtest_results_match_rest() {
    let data_dir = tempfile::tempdir().unwrap();
    ingest_btc(data_dir.path());
    let server = Server::start(data_dir.path(), 1, &[], None);
    let client = Client::new();
    let backtest_id = run_rest_backtest(&server, &client);

    let trades = rest_trades(&server, &client, backtest_id);
    let response = client
        .get(server.url(&format!(
            "/backtests/{backtest_id}/equity?max_points=100000"
        )))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let equity: Value = response.json().unwrap();
    let points = equity["points"].as_array().unwrap();
    // One point per bar of the month, all of them below max_points.
    assert_eq!(equity["total_points"].as_u64(), Some(43_200));
    assert_eq!(points.len(), 43_200);

    let result = server.run_client("backtest", &[&backtest_id.to_string()]);

    let types = &result["trade_types"];
    for name in ["entry_time", "exit_time"] {
        assert_eq!(types[name], "timestamp[ms, tz=UTC]", "{name}: {types}");
    }
    let flight_trades = &result["trades"];
    let ids = column(flight_trades, "id");
    assert_eq!(ids.len(), trades.len());
    let sides: BTreeSet<&str> = trades
        .iter()
        .map(|trade| trade["position"].as_str().unwrap())
        .collect();
    assert_eq!(sides, BTreeSet::from(["long", "short"]), "both sides trade");
    let exit_reasons: BTreeSet<&str> = trades
        .iter()
        .map(|trade| trade["exit_reason"].as_str().unwrap())
        .collect();
    assert!(exit_reasons.contains("stop_loss"), "{exit_reasons:?}");
    assert!(
        trades.iter().any(|trade| number(&trade["funding"]) != 0.0),
        "no trade paid funding"
    );
    for (index, trade) in trades.iter().enumerate() {
        let value = |name: &str| &column(flight_trades, name)[index];
        assert_eq!(value("id"), &trade["id"], "id of trade {index}");
        assert_eq!(value("backtest_id").as_i64(), Some(backtest_id));
        for name in ["entry_time", "exit_time"] {
            assert_eq!(
                value(name).as_i64(),
                Some(rest_millis(&trade[name])),
                "{name} of trade {index}"
            );
        }
        // REST `side` is the entry order's side (buy or sell), so Flight's `side` is compared
        // with REST `position`.
        assert_eq!(value("side"), &trade["position"], "side of trade {index}");
        assert_eq!(value("exit_reason"), &trade["exit_reason"]);
        for name in [
            "entry_price",
            "exit_price",
            "quantity",
            "pnl",
            "pnl_pct",
            "commission",
            "funding",
        ] {
            assert_eq!(
                number(value(name)),
                number(&trade[name]),
                "{name} of trade {index}"
            );
        }
    }

    assert_eq!(result["equity_types"]["open_time"], "timestamp[ms, tz=UTC]");
    assert_eq!(
        result["equity_schema"],
        json!(["open_time", "equity", "drawdown"])
    );
    let flight_equity = &result["equity"];
    let open_times = column(flight_equity, "open_time");
    let [equity_values, drawdowns] = ["equity", "drawdown"].map(|name| column(flight_equity, name));
    assert_eq!(open_times.len(), points.len());
    for (index, point) in points.iter().enumerate() {
        assert_eq!(
            open_times[index], point["open_time"],
            "open_time of point {index}"
        );
        assert_eq!(
            number(&equity_values[index]),
            number(&point["equity"]),
            "equity of point {index}"
        );
        assert_eq!(
            number(&drawdowns[index]),
            number(&point["drawdown"]),
            "drawdown of point {index}"
        );
    }

    let unknown = &result["unknown"];
    for case in ["trades", "equity", "schema"] {
        assert_eq!(unknown[case], "NOT_FOUND", "{case}: {unknown}");
    }
}

#[test]
fn sql_info_reports_server() {
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("sql_info", &[]);

    let values = &result["values"];
    assert_eq!(result["rows"].as_u64(), Some(6), "{result}");
    assert_eq!(values["FLIGHT_SQL_SERVER_NAME"], "bst");
    assert_eq!(
        values["FLIGHT_SQL_SERVER_VERSION"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(values["FLIGHT_SQL_SERVER_READ_ONLY"], true);
    assert_eq!(values["FLIGHT_SQL_SERVER_SQL"], true);
    assert_eq!(values["FLIGHT_SQL_SERVER_SUBSTRAIT"], false);

    let adbc = &result["adbc"];
    assert_eq!(adbc["vendor_name"], "bst", "{adbc}");
    assert_eq!(adbc["vendor_version"], env!("CARGO_PKG_VERSION"), "{adbc}");
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
    let (data_dir, server) = start_btc_server();
    let files_before = file_sizes(data_dir.path());
    let codes = server.run_client("errors", &[]);

    let cases = [
        ("bad_ticket", "INVALID_ARGUMENT"),
        ("unknown_dataset", "NOT_FOUND"),
        ("unknown_backtest", "NOT_FOUND"),
        ("bad_sql", "INVALID_ARGUMENT"),
    ];
    for (case, code) in cases {
        assert_eq!(codes[case], code, "{case}: {codes}");
    }

    // Each statement is sent as a query, as an update and as a prepared statement.
    let statements = [
        ("copy", "COPY"),
        ("create_table", "CREATE TABLE"),
        ("insert", "INSERT"),
        ("update", "UPDATE"),
        ("delete", "DELETE"),
        ("drop_table", "DROP TABLE"),
    ];
    for (statement, kind) in statements {
        for path in ["", "_update", "_prepared"] {
            let case = format!("{statement}{path}");
            assert_eq!(codes[&case], "INVALID_ARGUMENT", "{case}: {codes}");
            let message = codes[format!("{case}_message")].as_str().unwrap();
            assert!(
                message.contains(&format!("{kind} statements are not allowed")),
                "{case}: {message}"
            );
        }
    }
    // A deeply nested query is rejected before planning, and the server keeps serving. The
    // update path rejects every statement without planning it.
    assert_eq!(codes["deep_sql_update"], "INVALID_ARGUMENT", "{codes}");
    for path in ["", "_prepared"] {
        let case = format!("deep_sql{path}");
        assert_eq!(codes[&case], "INVALID_ARGUMENT", "{case}: {codes}");
        let message = codes[format!("{case}_message")].as_str().unwrap();
        assert!(
            message.contains("1999 operators and parentheses"),
            "{case}: {message}"
        );
    }
    assert_eq!(codes["rows_after"].as_u64(), Some(43_200), "{codes}");
    assert!(
        !Path::new("/tmp/bst_flight_copy.csv").exists(),
        "COPY wrote its file"
    );
    assert_eq!(
        file_sizes(data_dir.path()),
        files_before,
        "a rejected statement changed the data folder"
    );
}

/// Returns the status name and message that the Python client recorded for `case`.
fn case_error(result: &Value, case: &str) -> (String, String) {
    let pair = result[case]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no result in {result}"));
    (
        pair[0].as_str().unwrap_or_default().to_string(),
        pair[1].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn bad_tickets_name_accepted_kinds() {
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("ticket_errors", &[]);
    let detail = |case: &str| case_error(&result, case);

    // Bytes that are neither JSON nor a Flight SQL ticket get the accepted ticket kinds.
    for case in ["text", "empty", "unknown_any", "truncated_protobuf"] {
        let (code, message) = detail(case);
        assert_eq!(code, "INVALID_ARGUMENT", "{case}: {message}");
        assert!(message.contains("invalid ticket"), "{case}: {message}");
        assert!(message.contains("\"backtest_id\""), "{case}: {message}");
        assert!(message.contains("\"dataset\""), "{case}: {message}");
        assert!(message.contains("Flight SQL"), "{case}: {message}");
        assert!(!message.contains("DecodeError"), "{case}: {message}");
        assert!(
            !message.contains("The defined request"),
            "{case}: {message}"
        );
    }
    for case in ["descriptor_text", "descriptor_unknown_any"] {
        let (code, message) = detail(case);
        assert_eq!(code, "INVALID_ARGUMENT", "{case}: {message}");
        assert!(message.contains("invalid descriptor"), "{case}: {message}");
        assert!(message.contains("PATH descriptor"), "{case}: {message}");
        assert!(
            message.contains("CommandStatementQuery"),
            "{case}: {message}"
        );
        assert!(!message.contains("DecodeError"), "{case}: {message}");
        assert!(
            !message.contains("The defined request"),
            "{case}: {message}"
        );
    }

    // JSON tickets that do not validate name the problem and the ticket's form.
    let (code, message) = detail("malformed_json");
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("malformed JSON at line 1"), "{message}");
    assert!(message.contains("\"backtest_id\": INTEGER"), "{message}");
    let (code, message) = detail("backtest_id_text");
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("expected an integer"), "{message}");
    assert!(!message.contains("i64"), "{message}");
    let (code, message) = detail("start_object");
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("invalid start"), "{message}");
    assert!(!message.contains("untagged"), "{message}");
    assert!(!message.contains("TimeBound"), "{message}");
    let (code, message) = detail("long_table");
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("(100000 characters)"), "{message}");
    assert!(message.len() < 2_000, "{} bytes: {message}", message.len());
}

#[test]
fn bad_puts_and_actions_name_accepted_kinds() {
    let (_data_dir, server) = start_btc_server();
    let result = server.run_client("put_action_errors", &[]);
    let detail = |case: &str| case_error(&result, case);

    for case in [
        "action_text_body",
        "action_truncated_body",
        "action_unknown_any",
    ] {
        let (code, message) = detail(case);
        assert_eq!(code, "INVALID_ARGUMENT", "{case}: {message}");
        assert!(
            message.contains("invalid body of action"),
            "{case}: {message}"
        );
        assert!(
            message.contains("PreparedStatementRequest"),
            "{case}: {message}"
        );
        assert!(!message.contains("DecodeError"), "{case}: {message}");
    }
    let (code, message) = detail("action_unknown_type");
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains("unknown action \"Explode"), "{message}");
    assert!(message.contains("(140 characters)"), "{message}");
    assert!(message.contains("CreatePreparedStatement"), "{message}");
    let (code, message) = detail("action_transaction");
    assert_eq!(code, "UNIMPLEMENTED", "{message}");
    assert!(
        message.contains("BeginTransaction is not supported"),
        "{message}"
    );
    assert_eq!(
        result["action_types"],
        json!(["ClosePreparedStatement", "CreatePreparedStatement"])
    );

    for case in ["put_text", "put_truncated", "put_unknown_any", "put_path"] {
        let (code, message) = detail(case);
        assert_eq!(code, "INVALID_ARGUMENT", "{case}: {message}");
        assert!(
            message.contains("invalid DoPut descriptor"),
            "{case}: {message}"
        );
        assert!(
            message.contains("CommandPreparedStatementQuery"),
            "{case}: {message}"
        );
        assert!(!message.contains("DecodeError"), "{case}: {message}");
        assert!(
            !message.contains("The defined request"),
            "{case}: {message}"
        );
    }
    let (_, message) = detail("put_unknown_any");
    assert!(message.contains("bst.Nothing"), "{message}");
}

#[test]
fn unfinished_backtest_fails_precondition() {
    let (_data_dir, server) = start_btc_server();
    let client = Client::new();
    let response = client
        .post(server.url("/strategies"))
        .json(&json!({
            "name": "SMA 10/30",
            "strategy_type": "sma_crossover",
            "config": {"fast_period": 10, "slow_period": 30}
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let strategy: Value = response.json().unwrap();
    // The server runs no workers, so the backtest stays queued until it is claimed.
    let response = client
        .post(server.url("/backtests"))
        .json(&json!({
            "strategy_id": strategy["id"],
            "symbol": "BTCUSDT",
            "timeframe": "1",
            "start_date": "2025-06-01T00:00:00Z",
            "end_date": "2025-06-02T00:00:00Z",
            "initial_capital": 10000.0
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let backtest: Value = response.json().unwrap();
    let id = backtest["id"].as_i64().expect("backtest id");
    let id_text = id.to_string();

    for status in ["queued", "running"] {
        if status == "running" {
            let response = client
                .post(server.url(&format!("/backtests/{id}/claim")))
                .json(&json!({}))
                .send()
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let result = server.run_client("unfinished_backtest", &[&id_text]);
        for case in ["trades", "equity", "flight_info"] {
            let code = result[case][0].as_str().unwrap_or_default();
            let message = result[case][1].as_str().unwrap_or_default();
            assert_eq!(code, "FAILED_PRECONDITION", "{status} {case}: {message}");
            assert!(
                message.contains(&format!("backtest {id} is {status}")),
                "{status} {case}: {message}"
            );
        }
    }
}

#[test]
fn api_keys_are_required() {
    let data_dir = tempfile::tempdir().unwrap();
    ingest_btc(data_dir.path());
    let server = Server::start(data_dir.path(), 0, &[], Some("flight-test-key,other-key"));
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

/// Returns the bar count of the memory test: `BST_FLIGHT_MEMORY_BARS` or the default.
fn synthetic_bars() -> usize {
    let Ok(text) = std::env::var("BST_FLIGHT_MEMORY_BARS") else {
        return DEFAULT_SYNTHETIC_BARS;
    };
    match text.parse() {
        Ok(bars) if bars > 0 => bars,
        _ => panic!("invalid BST_FLIGHT_MEMORY_BARS {text:?}: expected a positive number of bars"),
    }
}

#[test]
fn do_get_streams_with_bounded_memory() {
    let bars = synthetic_bars();
    let arrow_bytes = bars as u64 * SYNTHETIC_BAR_BYTES;
    if arrow_bytes <= MAX_STREAMING_GROWTH_BYTES {
        // NOTE: the result then fits in the bound, so a server that collected it before
        // sending it would pass too.
        eprintln!(
            "warning: {bars} bars take {arrow_bytes} bytes in Arrow, not more than the bound \
             of {MAX_STREAMING_GROWTH_BYTES} bytes, so this run cannot detect a collected result"
        );
    }
    let data_dir = tempfile::tempdir().unwrap();
    write_synthetic_klines(data_dir.path(), "SYNTHUSDT", bars);
    let server = Server::start(
        data_dir.path(),
        0,
        &["--memory-limit", STREAMING_POOL],
        None,
    );
    let before = server.peak_rss_bytes();
    let result = server.run_client("stream", &["SYNTHUSDT"]);

    assert_eq!(result["rows"].as_u64(), Some(bars as u64));
    assert!(result["batches"].as_u64().unwrap() > 1, "{result}");
    let peak = server.peak_rss_bytes();
    let growth = peak.saturating_sub(before);
    eprintln!("server VmHWM {before} bytes before and {peak} bytes after streaming {bars} bars");
    assert!(
        growth < MAX_STREAMING_GROWTH_BYTES,
        "server peak RSS grew by {growth} bytes, above {MAX_STREAMING_GROWTH_BYTES}"
    );
}
