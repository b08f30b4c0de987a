//! End-to-end tests of the live stream with a real `bst serve` and `/live` clients.
//!
//! The Bybit stream client reads a local replay of a real WebSocket capture, and the REST
//! backfill reads the local REST server. Redis is a real `redis-server` on a free port.
//!
//! `BST_LIVE_REPLAY_SPEED` (default 10) divides the capture's own pacing of about 45 s. The
//! server's log is kept, so tests also check the fields of logged lines.

#[path = "../ingest/tests/support/bybit_server.rs"]
mod bybit_server;
mod support {
    pub(crate) mod bybit_ws_replay;
}

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bst_ingest::decimal::Decimal;
use bst_ingest::layout::{Category, Kline, Timeframe};
use bst_ingest::tick_writer::read_ticks;
use bst_ingest::writer::read_series;
use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use bybit_server::{BybitServer, Faults};
use support::bybit_ws_replay::{DropPlan, ReplayFrame, WsReplay};

const BIN: &str = env!("CARGO_BIN_EXE_bst");
const CAPTURE: &str = "bybit/ws/linear_publicTrade_kline1_2026-08-09.jsonl";
const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"];
/// Open time of the 21:26 minute, the only minute the capture confirms.
const CONFIRMED_OPEN_MS: i64 = 1786310760000;
/// Open time of the 21:27 minute, which never closes in the capture.
const OPEN_MINUTE_MS: i64 = 1786310820000;
const REDIS_PASSWORD: &str = "live-test-secret";
/// Generous bound of every wait, for slow CI machines.
const DEADLINE: Duration = Duration::from_secs(90);
/// Time allowed for noticing a drop and opening a loopback TCP connection, on top of the
/// backoff delay.
const CONNECT_ALLOWANCE: Duration = Duration::from_secs(1);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free loopback port")
        .port()
}

fn replay_speed() -> f64 {
    std::env::var("BST_LIVE_REPLAY_SPEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|speed: &f64| *speed > 0.0)
        .unwrap_or(10.0)
}

/// The capture and what the test expects from it, parsed independently of `bst`.
struct Capture {
    frames: Vec<ReplayFrame>,
    /// Every trade in capture order: `(symbol, ts_ms, price text, qty text, side)`.
    trades: Vec<(String, i64, String, String, String)>,
    /// The trade ids (`i`) in the same order.
    trade_ids: Vec<String>,
    kline_updates: usize,
    /// The confirmed bars by symbol.
    confirmed: BTreeMap<String, Kline>,
    /// The volume text of each symbol's last update of the 21:27 minute.
    last_open_volume: HashMap<String, String>,
}

fn load_capture() -> Capture {
    let path = bst_ingest::samples::require_datasets_dir().join(CAPTURE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    let mut capture = Capture {
        frames: Vec::new(),
        trades: Vec::new(),
        trade_ids: Vec::new(),
        kline_updates: 0,
        confirmed: BTreeMap::new(),
        last_open_volume: HashMap::new(),
    };
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let frame = ReplayFrame::parse(line);
        let value: Value = serde_json::from_str(line).unwrap();
        for item in value["data"].as_array().expect("frame has a data list") {
            let field = |name: &str| item[name].as_str().unwrap().to_string();
            if frame.topic.starts_with("publicTrade.") {
                capture.trades.push((
                    field("s"),
                    item["T"].as_i64().unwrap(),
                    field("p"),
                    field("v"),
                    field("S").to_lowercase(),
                ));
                capture.trade_ids.push(field("i"));
            } else {
                capture.kline_updates += 1;
                let symbol = frame.topic.rsplit('.').next().unwrap().to_string();
                let number = |name: &str| field(name).parse::<f64>().unwrap();
                let start = item["start"].as_i64().unwrap();
                if item["confirm"].as_bool().unwrap() {
                    capture.confirmed.insert(
                        symbol.clone(),
                        Kline {
                            open_time_ms: start,
                            open: number("open"),
                            high: number("high"),
                            low: number("low"),
                            close: number("close"),
                            volume: number("volume"),
                            turnover: Some(number("turnover")),
                        },
                    );
                }
                if start == OPEN_MINUTE_MS {
                    capture.last_open_volume.insert(symbol, field("volume"));
                }
            }
        }
        capture.frames.push(frame);
    }
    capture
}

/// Writes the confirmed bars as `SYMBOL_1m.csv` files for the REST server.
fn write_rest_csvs(capture: &Capture, dir: &Path) -> Vec<PathBuf> {
    capture
        .confirmed
        .iter()
        .map(|(symbol, kline)| {
            let path = dir.join(format!("{symbol}_1m.csv"));
            let time = chrono::DateTime::from_timestamp_millis(kline.open_time_ms)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S+00:00");
            let body = format!(
                "timestamp,open,high,low,close,volume\n{time},{},{},{},{},{}\n",
                kline.open, kline.high, kline.low, kline.close, kline.volume
            );
            std::fs::write(&path, body).unwrap();
            path
        })
        .collect()
}

/// A `redis-server` on a free loopback port with a password, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start redis-server; install it with apt-get install redis-server");
        let redis = Self { child, port };
        let client = redis::Client::open(redis.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get_connection()
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if ready.is_ok() {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `bst serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _data_dir: tempfile::TempDir,
    data_path: PathBuf,
    /// Every line the server has logged so far, also forwarded to the test output.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(env: &[(&str, String)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "0",
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .env_remove("BST_DATASETS_DIR")
            // A free Flight port, so that servers of parallel tests do not collide.
            .env("BST_FLIGHT_ADDR", "127.0.0.1:0")
            .env_remove("REDIS_URL")
            .env_remove("BST_API_KEYS")
            .env_remove("BYBIT_WS_ENABLED")
            .env("RUST_LOG", "info,tower_http=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("failed to start bst serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bst serve] {line}");
                log_writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let server = Self {
            child,
            port,
            data_path: data_dir.path().to_path_buf(),
            _data_dir: data_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while server.get("/healthz").await != Some(200) {
            assert!(Instant::now() < deadline, "bst serve did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    async fn get(&self, path: &str) -> Option<u16> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await;
        response.ok().map(|response| response.status().as_u16())
    }

    /// Returns the logged lines that contain `text`.
    fn log_lines(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// Returns the server's resident memory in KiB, the `VmRSS` of `/proc/PID/status`.
    fn resident_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("failed to read {path}: {error}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no VmRSS line"))
    }

    fn live_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/api/v1/live{query}", self.port)
    }

    /// Connects to `/live` and returns the client with its subscription confirmation.
    async fn connect(&self, query: &str) -> (Client, Value) {
        let (mut client, _) = tokio_tungstenite::connect_async(self.live_url(query))
            .await
            .unwrap_or_else(|error| panic!("failed to connect to /live{query}: {error}"));
        let confirmation = match next_text(&mut client).await {
            Ok(text) => serde_json::from_str(&text).expect("confirmation is JSON"),
            Err(reason) => panic!("/live{query} sent no confirmation: {reason}"),
        };
        (client, confirmation)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the next text frame, or the close reason or error as `Err`.
async fn next_text(client: &mut Client) -> Result<String, String> {
    loop {
        match tokio::time::timeout(DEADLINE, client.next()).await {
            Err(_) => return Err("timed out".to_string()),
            Ok(None) => return Err("connection ended".to_string()),
            Ok(Some(Err(error))) => return Err(format!("error: {error}")),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!(
                    "close {}",
                    frame.map_or(String::new(), |frame| format!(
                        "{} {}",
                        frame.code, frame.reason
                    ))
                ));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads `count` JSON messages.
async fn read_messages(client: &mut Client, count: usize, name: &str) -> Vec<Value> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match next_text(client).await {
            Ok(text) => messages.push(serde_json::from_str(&text).expect("message is JSON")),
            Err(reason) => panic!(
                "{name} client got {} of {count} messages, then: {reason}",
                messages.len()
            ),
        }
    }
    messages
}

/// Returns the value of `name=VALUE` in a line of the server's log, which uses the default
/// `tracing` text format.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stored_bars(data_dir: &Path, symbol: &str) -> Vec<Kline> {
    read_series(data_dir, Category::Linear, symbol, Timeframe::Minutes(1)).unwrap_or_default()
}

fn stream_env(replay: &WsReplay, rest: &BybitServer) -> Vec<(&'static str, String)> {
    vec![
        ("BYBIT_WS_ENABLED", "1".to_string()),
        ("BYBIT_WS_SYMBOLS", SYMBOLS.join(",")),
        ("BYBIT_WS_INTERVALS", "1".to_string()),
        ("BYBIT_WS_URL", replay.url()),
        ("BYBIT_REST_URL", rest.base_url()),
        ("BST_LIVE_FLUSH_ROWS", "50".to_string()),
        ("BST_LIVE_FLUSH_SEC", "0.5".to_string()),
    ]
}

fn expected_topics() -> Vec<String> {
    SYMBOLS
        .iter()
        .flat_map(|symbol| [format!("publicTrade.{symbol}"), format!("kline.1.{symbol}")])
        .collect()
}

async fn stream_capture(redis: Option<&Redis>) {
    let capture = load_capture();
    let rest_dir = tempfile::tempdir().unwrap();
    let rest = BybitServer::start(
        &write_rest_csvs(&capture, rest_dir.path()),
        OPEN_MINUTE_MS + 60_000,
        Faults::default(),
    )
    .await;
    let replay = WsReplay::start_server(capture.frames.clone(), replay_speed(), None).await;
    let mut env = stream_env(&replay, &rest);
    if let Some(redis) = redis {
        env.push(("REDIS_URL", redis.url()));
        env.push(("REDIS_STREAM_TICKS", "bybit:ticks:stream".to_string()));
    }
    let server = Server::start(&env).await;

    let (mut ticks, ticks_confirmation) = server.connect("").await;
    let (mut klines, _) = server.connect("?channel=bybit:klines").await;
    let (mut all, all_confirmation) = server.connect("?channel=bybit:*&pattern=1").await;
    assert_eq!(ticks_confirmation["status"], "subscribed");
    assert_eq!(ticks_confirmation["channel"], "bybit:ticks");
    assert_eq!(all_confirmation["channel"], "bybit:*");
    assert_eq!(all_confirmation["pattern"], true);
    match redis {
        Some(redis) => {
            let url = ticks_confirmation["url"].as_str().expect("url is a string");
            assert_eq!(url, format!("redis://127.0.0.1:{}/0", redis.port));
        }
        None => assert!(ticks_confirmation["url"].is_null()),
    }

    wait_for("the stream client to subscribe", || {
        replay
            .connections()
            .first()
            .is_some_and(|connection| connection.topics.len() == expected_topics().len())
    })
    .await;
    assert_eq!(replay.connections()[0].topics, expected_topics());
    replay.start();

    let trades = read_messages(&mut ticks, capture.trades.len(), "ticks").await;
    let kline_messages = read_messages(&mut klines, capture.kline_updates, "klines").await;
    let everything = read_messages(
        &mut all,
        capture.trades.len() + capture.kline_updates,
        "pattern",
    )
    .await;

    // Every trade arrives in capture order with numeric values.
    for (index, (message, expected)) in trades.iter().zip(&capture.trades).enumerate() {
        let (symbol, ts_ms, price, qty, side) = expected;
        assert_eq!(message["v"], 1, "trade {index}");
        assert_eq!(message["type"], "trade", "trade {index}");
        assert_eq!(message["source"], "bybit", "trade {index}");
        assert_eq!(message["symbol"], symbol.as_str(), "trade {index}");
        assert_eq!(message["ts_ms"].as_i64(), Some(*ts_ms), "trade {index}");
        assert!(message["price"].is_number(), "trade {index}: {message}");
        assert_eq!(
            message["price"].as_f64(),
            price.parse().ok(),
            "trade {index}"
        );
        assert_eq!(message["qty"].as_f64(), qty.parse().ok(), "trade {index}");
        assert_eq!(message["side"], side.as_str(), "trade {index}");
    }
    let first_btc = trades
        .iter()
        .find(|message| message["symbol"] == "BTCUSDT")
        .unwrap();
    assert_eq!(first_btc["ts_ms"].as_i64(), Some(1786310819680));
    assert_eq!(first_btc["price"].as_f64(), Some(65114.2));
    assert_eq!(first_btc["qty"].as_f64(), Some(0.004));
    assert_eq!(first_btc["side"], "sell");

    // The pattern subscription receives both channels.
    let pattern_trades = everything.iter().filter(|m| m["type"] == "trade").count();
    let pattern_klines = everything.iter().filter(|m| m["type"] == "kline").count();
    assert_eq!(pattern_trades, capture.trades.len());
    assert_eq!(pattern_klines, capture.kline_updates);

    // The summed trade volume of the open minute equals its last kline update exactly.
    for symbol in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
        let mut sum = Decimal::parse("0").unwrap();
        for trade in trades.iter().filter(|trade| {
            trade["symbol"] == symbol && trade["ts_ms"].as_i64().unwrap() >= OPEN_MINUTE_MS
        }) {
            let qty = Decimal::parse(&trade["qty"].to_string()).unwrap();
            sum = sum.checked_add(qty).unwrap();
        }
        let last_update = kline_messages
            .iter()
            .rev()
            .find(|m| m["symbol"] == symbol && m["open_time"] == OPEN_MINUTE_MS)
            .unwrap_or_else(|| panic!("no kline update of {symbol} for the open minute"));
        assert_eq!(last_update["confirm"], false);
        let kline_volume = Decimal::parse(&last_update["volume"].to_string()).unwrap();
        assert_eq!(sum.to_f64(), kline_volume.to_f64(), "{symbol}");
        let captured = Decimal::parse(&capture.last_open_volume[symbol]).unwrap();
        assert_eq!(sum.to_f64(), captured.to_f64(), "{symbol}");
    }

    // The confirmed bars are stored once; the open minute never is.
    let data_dir = server.data_path.clone();
    wait_for("the confirmed bars to be stored", || {
        SYMBOLS
            .iter()
            .all(|symbol| !stored_bars(&data_dir, symbol).is_empty())
    })
    .await;
    wait_for("the trades to be stored", || {
        SYMBOLS.iter().all(|symbol| {
            let expected = capture.trades.iter().filter(|t| t.0 == *symbol).count();
            read_ticks(&data_dir, Category::Linear, symbol).map_or(0, |ticks| ticks.len())
                == expected
        })
    })
    .await;
    for symbol in SYMBOLS {
        let bars = stored_bars(&data_dir, symbol);
        assert_eq!(bars.len(), 1, "{symbol}: {bars:?}");
        assert_eq!(bars[0], capture.confirmed[symbol], "{symbol}");
        assert!(
            bars.iter().all(|bar| bar.open_time_ms != OPEN_MINUTE_MS),
            "{symbol}"
        );
    }
    assert_eq!(capture.confirmed.len(), 4);
    assert!(
        capture
            .confirmed
            .values()
            .all(|kline| kline.open_time_ms == CONFIRMED_OPEN_MS)
    );

    if let Some(redis) = redis {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let length: usize = redis::cmd("XLEN")
            .arg("bybit:ticks:stream")
            .query(&mut connection)
            .unwrap();
        assert_eq!(length, capture.trades.len());
    }
    // The REST API still answers.
    assert_eq!(server.get("/api/v1/strategies").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_streams_through_redis() {
    let redis = Redis::start();
    stream_capture(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_streams_in_process() {
    stream_capture(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_backfills_missed_bars() {
    let capture = load_capture();
    let rest_dir = tempfile::tempdir().unwrap();
    let rest = BybitServer::start(
        &write_rest_csvs(&capture, rest_dir.path()),
        OPEN_MINUTE_MS + 60_000,
        Faults::default(),
    )
    .await;
    // Drop before the first confirmed frame and resume after the last one, so the stream
    // never delivers a confirmation.
    let confirm_lines: Vec<usize> = capture
        .frames
        .iter()
        .enumerate()
        .filter(|(_, frame)| frame.text.contains("\"confirm\":true"))
        .map(|(index, _)| index)
        .collect();
    let plan = DropPlan {
        after: confirm_lines[0] - 1,
        resume_at: confirm_lines[confirm_lines.len() - 1] + 1,
    };
    let replay = WsReplay::start_server(capture.frames.clone(), replay_speed(), Some(plan)).await;
    let min_delay = Duration::from_millis(500);
    let max_delay = Duration::from_secs(2);
    let mut env = stream_env(&replay, &rest);
    env.push(("WS_RECONNECT_DELAY_SEC", "0.5".to_string()));
    env.push(("WS_RECONNECT_DELAY_MAX_SEC", "2".to_string()));
    let server = Server::start(&env).await;
    let (mut ticks, _) = server.connect("").await;
    wait_for("the stream client to subscribe", || {
        replay
            .connections()
            .first()
            .is_some_and(|connection| !connection.topics.is_empty())
    })
    .await;
    replay.start();

    wait_for("the reconnect", || {
        replay
            .connections()
            .get(1)
            .is_some_and(|connection| connection.topics.len() == expected_topics().len())
    })
    .await;
    let connections = replay.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    let dropped_at = connections[0]
        .dropped_at
        .expect("the first connection was dropped");
    let reconnect_time = connections[1].accepted_at.duration_since(dropped_at);
    assert!(
        reconnect_time >= min_delay,
        "reconnected {reconnect_time:?} after the drop, before the minimum backoff {min_delay:?}"
    );
    assert!(
        reconnect_time <= max_delay + CONNECT_ALLOWANCE,
        "reconnected {reconnect_time:?} after the drop, later than the maximum backoff \
         {max_delay:?} plus {CONNECT_ALLOWANCE:?}"
    );
    // The resubscription repeats the first connection's topics, each once.
    assert_eq!(connections[0].topics, expected_topics());
    assert_eq!(connections[1].topics, connections[0].topics);

    // The drop is logged with the retry number and the backoff, and so is the reconnect.
    wait_for("the log line of the reconnect", || {
        server.log_lines("connected to the Bybit stream").len() == 2
    })
    .await;
    let drops = server.log_lines("Bybit stream connection dropped");
    assert_eq!(drops.len(), 1, "{drops:?}");
    let drop_line = &drops[0];
    assert_eq!(log_field(drop_line, "attempt"), Some("1"), "{drop_line}");
    let logged_delay_ms: u64 = log_field(drop_line, "delay_ms")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no delay_ms in {drop_line}"));
    // The first retry waits the minimum raised by a jitter of at most 50 %.
    assert!(logged_delay_ms >= 500, "{drop_line}");
    assert!(logged_delay_ms <= 750, "{drop_line}");
    let logged_delay = Duration::from_millis(logged_delay_ms);
    assert!(
        reconnect_time >= logged_delay,
        "reconnected {reconnect_time:?} after the drop: {drop_line}"
    );
    assert!(
        reconnect_time <= logged_delay + CONNECT_ALLOWANCE,
        "reconnected {reconnect_time:?} after the drop: {drop_line}"
    );
    let connects = server.log_lines("connected to the Bybit stream");
    let delay_text = logged_delay_ms.to_string();
    let expected_fields = [("0", "0"), ("1", delay_text.as_str())];
    for (line, (attempt, delay_ms)) in connects.iter().zip(expected_fields) {
        assert_eq!(log_field(line, "attempt"), Some(attempt), "{line}");
        assert_eq!(log_field(line, "delay_ms"), Some(delay_ms), "{line}");
    }

    // Trades keep flowing after the reconnect.
    let after_reconnect = read_messages(&mut ticks, 5, "ticks").await;
    assert!(
        after_reconnect
            .iter()
            .all(|message| message["type"] == "trade")
    );

    let data_dir = server.data_path.clone();
    wait_for("the backfill of the missed bars", || {
        SYMBOLS
            .iter()
            .all(|symbol| !stored_bars(&data_dir, symbol).is_empty())
    })
    .await;
    for symbol in SYMBOLS {
        let bars = stored_bars(&data_dir, symbol);
        let open_times: Vec<i64> = bars.iter().map(|bar| bar.open_time_ms).collect();
        assert_eq!(open_times, [CONFIRMED_OPEN_MS], "{symbol}");
        assert_eq!(bars[0].volume, capture.confirmed[symbol].volume, "{symbol}");
        assert_eq!(bars[0].close, capture.confirmed[symbol].close, "{symbol}");
    }
    assert!(
        rest.kline_requests() >= 4,
        "{} REST requests",
        rest.kline_requests()
    );
}

/// Replay speed of the Redis restart test: the capture then lasts about 21 s, which outlasts
/// the outage and the reconnects.
const RESTART_REPLAY_SPEED: f64 = 2.0;

/// Returns the capture index of a normalized trade message, found by its trade id.
fn capture_index(capture: &Capture, message: &Value) -> usize {
    let id = message["trade_id"]
        .as_str()
        .unwrap_or_else(|| panic!("trade without a trade_id: {message}"));
    capture
        .trade_ids
        .iter()
        .position(|known| known == id)
        .unwrap_or_else(|| panic!("trade {id} is not in the capture: {message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_api_and_relay() {
    let capture = load_capture();
    let rest_dir = tempfile::tempdir().unwrap();
    let rest = BybitServer::start(
        &write_rest_csvs(&capture, rest_dir.path()),
        OPEN_MINUTE_MS + 60_000,
        Faults::default(),
    )
    .await;
    let replay = WsReplay::start_server(capture.frames.clone(), RESTART_REPLAY_SPEED, None).await;
    let mut redis = Redis::start();
    let port = redis.port;
    let mut env = stream_env(&replay, &rest);
    env.push(("REDIS_URL", redis.url()));
    let server = Server::start(&env).await;
    let (mut before, _) = server.connect("?channel=bybit:ticks").await;
    wait_for("the stream client to subscribe", || {
        replay
            .connections()
            .first()
            .is_some_and(|connection| connection.topics.len() == expected_topics().len())
    })
    .await;
    replay.start();

    let first = read_messages(&mut before, 3, "before the restart").await;
    let first_indexes: Vec<usize> = first
        .iter()
        .map(|message| capture_index(&capture, message))
        .collect();
    assert_eq!(first_indexes, [0, 1, 2]);

    redis.kill();
    let cursor_at_kill = replay.cursor();
    // Trades relayed before the kill may still be queued ahead of the close frame.
    let mut last_index = first_indexes[2];
    let closed = loop {
        match next_text(&mut before).await {
            Ok(text) => {
                let message: Value = serde_json::from_str(&text).expect("message is JSON");
                last_index = capture_index(&capture, &message);
            }
            Err(reason) => break reason,
        }
    };
    assert!(closed.starts_with("close 1011"), "{closed}");
    assert!(closed.contains("Redis"), "{closed}");

    // The stream keeps running and REST keeps responding while Redis is down.
    wait_for("frames streamed during the outage", || {
        replay.cursor() >= cursor_at_kill + 3
    })
    .await;
    assert_eq!(server.get("/healthz").await, Some(200));
    assert_eq!(server.get("/api/v1/strategies").await, Some(200));
    let (mut refused, _) = tokio_tungstenite::connect_async(server.live_url(""))
        .await
        .expect("/live accepts connections while Redis is down");
    let refusal = next_text(&mut refused).await.unwrap_err();
    assert!(refusal.starts_with("close 1011"), "{refusal}");

    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + DEADLINE;
    let mut after = loop {
        let (mut client, _) = tokio_tungstenite::connect_async(server.live_url(""))
            .await
            .expect("/live accepts connections after the restart");
        match next_text(&mut client).await {
            Ok(text) if text.contains("subscribed") => break client,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no subscription after the restart: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(
        !replay.finished(),
        "the replay ended before a client subscribed again; lower RESTART_REPLAY_SPEED"
    );

    // The stream publisher delivers new trades; the test itself publishes nothing.
    let new_trades = read_messages(&mut after, 5, "after the restart").await;
    for message in &new_trades {
        let index = capture_index(&capture, message);
        assert!(
            index > last_index,
            "trade {index} arrived after trade {last_index}: {message}"
        );
        last_index = index;
        let (symbol, ts_ms, price, ..) = &capture.trades[index];
        assert_eq!(message["type"], "trade", "{message}");
        assert_eq!(message["symbol"], symbol.as_str(), "{message}");
        assert_eq!(message["ts_ms"].as_i64(), Some(*ts_ms), "{message}");
        assert_eq!(message["price"].as_f64(), price.parse().ok(), "{message}");
    }
    assert_eq!(server.get("/api/v1/strategies").await, Some(200));

    // The outage lost no stored trade, because storing does not go through Redis.
    let data_dir = server.data_path.clone();
    wait_for("every trade to be stored", || {
        SYMBOLS.iter().all(|symbol| {
            let expected = capture.trades.iter().filter(|t| t.0 == *symbol).count();
            read_ticks(&data_dir, Category::Linear, symbol).map_or(0, |ticks| ticks.len())
                == expected
        })
    })
    .await;
}

/// Payload bytes of each message of the slow-client test.
const SLOW_TEST_PAYLOAD_BYTES: usize = 4_096;
/// Messages published at a time, below the default client buffer of 1,024 so that a client
/// that reads every batch never falls behind.
const SLOW_TEST_BATCH: u64 = 256;
/// Minimum bytes published in the slow-client test, which also runs until the slow client is
/// closed.
const SLOW_TEST_PUBLISHED_BYTES: u64 = 256 << 20;
/// Allowed growth of the server's resident memory while those bytes are published.
const SLOW_TEST_MEMORY_GROWTH_KIB: u64 = 64 << 10;
/// Receive buffer of the slow client's socket, so that its connection fills quickly.
const SLOW_CLIENT_RECEIVE_BUFFER: u32 = 64 << 10;
/// Time the slow client goes on not reading after the server logged that it closes it.
const SLOW_CLIENT_PAUSE_AFTER_CLOSE: Duration = Duration::from_secs(3);

/// Returns the `seq` of a slow-test message such as `{"seq":12,"pad":"xx..."}`.
fn sequence_number(text: &str) -> u64 {
    text.strip_prefix(r#"{"seq":"#)
        .and_then(|rest| rest.split(',').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message {:?}", &text[..text.len().min(40)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_closed_with_reason() {
    const CHANNEL: &str = "load";
    let redis = Redis::start();
    let server = Server::start(&[("REDIS_URL", redis.url())]).await;

    // The slow client subscribes, then reads nothing until the end.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .set_recv_buffer_size(SLOW_CLIENT_RECEIVE_BUFFER)
        .unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .expect("failed to connect the slow client");
    let (mut slow, _) = tokio_tungstenite::client_async(
        server.live_url(&format!("?channel={CHANNEL}")),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("failed to open the slow client's WebSocket");
    let confirmation = next_text(&mut slow).await.unwrap();
    assert!(confirmation.contains("subscribed"), "{confirmation}");
    let (mut fast, _) = server.connect(&format!("?channel={CHANNEL}")).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let pad = "x".repeat(SLOW_TEST_PAYLOAD_BYTES);
    let baseline_kib = server.resident_kib();
    let mut peak_kib = baseline_kib;
    let mut published: u64 = 0;
    let mut published_when_closed: Option<u64> = None;
    let deadline = Instant::now() + 2 * DEADLINE;
    // Publish in batches, and let the fast client read each batch before the next one.
    loop {
        let batch = published..published + SLOW_TEST_BATCH;
        let mut pipe = redis::pipe();
        for seq in batch.clone() {
            let payload = format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#);
            pipe.cmd("PUBLISH").arg(CHANNEL).arg(payload).ignore();
        }
        pipe.query_async::<()>(&mut connection).await.unwrap();
        for expected in batch {
            let text = next_text(&mut fast).await.unwrap_or_else(|reason| {
                panic!("the fast client stopped before message {expected}: {reason}")
            });
            assert_eq!(sequence_number(&text), expected);
        }
        published += SLOW_TEST_BATCH;
        peak_kib = peak_kib.max(server.resident_kib());
        if published_when_closed.is_none()
            && !server.log_lines("closing a slow /live client").is_empty()
        {
            published_when_closed = Some(published);
        }
        let published_bytes = published * SLOW_TEST_PAYLOAD_BYTES as u64;
        if published_bytes >= SLOW_TEST_PUBLISHED_BYTES
            && published_when_closed.is_some_and(|closed| published > closed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow client was not closed after {published} messages"
        );
    }

    // Reading again later, the slow client gets a prefix of the messages, then the close frame.
    tokio::time::sleep(SLOW_CLIENT_PAUSE_AFTER_CLOSE).await;
    let mut received: u64 = 0;
    let close = loop {
        match tokio::time::timeout(DEADLINE, slow.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                assert_eq!(sequence_number(text.as_str()), received);
                received += 1;
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "the slow client got {received} of {published} messages, then {other:?} in \
                 place of a close frame"
            ),
        }
    };
    let close = close.expect("the close frame has a code and a reason");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.starts_with("client too slow"), "{close:?}");
    assert!(
        received < published,
        "the slow client got all {published} messages"
    );

    // Had the server buffered the slow client's messages, its memory would have grown by most
    // of the at least 256 MiB published.
    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    eprintln!(
        "published {published} messages; the slow client got {received} and a close after \
         {published_when_closed:?}; resident memory {baseline_kib} KiB, peak {peak_kib} KiB"
    );
    assert!(
        growth_kib <= SLOW_TEST_MEMORY_GROWTH_KIB,
        "resident memory grew by {growth_kib} KiB, from {baseline_kib} KiB, while \
         {published} messages were published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_requires_token_when_keys_set() {
    let server = Server::start(&[("BST_API_KEYS", "key-one,key-two".to_string())]).await;
    for query in ["", "?token=wrong"] {
        let error = tokio_tungstenite::connect_async(server.live_url(query))
            .await
            .expect_err("connecting without a valid token fails");
        assert!(error.to_string().contains("401"), "{query}: {error}");
    }
    let (_client, confirmation) = server.connect("?token=key-two").await;
    assert_eq!(confirmation["status"], "subscribed");
    assert!(confirmation["url"].is_null());
}
