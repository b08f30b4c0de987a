//! End-to-end tests of the live stream with a real `bst serve` and `/live` clients.
//!
//! The Bybit stream client reads a local replay of a real WebSocket capture, and the REST
//! backfill reads the local REST server. Redis is a real `redis-server` on a free port.
//!
//! `BST_LIVE_REPLAY_SPEED` (default 10) divides the capture's own pacing of about 45 s.

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

    fn publish(&self, channel: &str, payload: &str) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut connection)
            .unwrap()
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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bst serve] {line}");
            }
        });
        let server = Self {
            child,
            port,
            data_path: data_dir.path().to_path_buf(),
            _data_dir: data_dir,
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
    let dropped_at = connections[0]
        .dropped_at
        .expect("the first connection was dropped");
    let delay = connections[1].accepted_at.duration_since(dropped_at);
    assert!(
        delay >= Duration::from_millis(450),
        "reconnected after {delay:?}"
    );
    assert!(
        delay <= Duration::from_secs(7),
        "reconnected after {delay:?}"
    );
    assert_eq!(connections[1].topics, expected_topics());

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_api_and_relay() {
    let mut redis = Redis::start();
    let port = redis.port;
    let server = Server::start(&[("REDIS_URL", redis.url())]).await;
    let (mut before, _) = server.connect("?channel=bybit:ticks").await;
    assert_eq!(redis.publish("bybit:ticks", r#"{"n":1}"#), 1);
    assert_eq!(next_text(&mut before).await.unwrap(), r#"{"n":1}"#);

    redis.kill();
    let closed = next_text(&mut before).await.unwrap_err();
    assert!(closed.starts_with("close 1011"), "{closed}");
    assert!(closed.contains("Redis"), "{closed}");
    assert_eq!(server.get("/healthz").await, Some(200));
    assert_eq!(server.get("/api/v1/strategies").await, Some(200));

    let redis = Redis::start_on(port);
    let deadline = Instant::now() + DEADLINE;
    let mut after = loop {
        let (mut client, _) =
            tokio_tungstenite::connect_async(server.live_url("?channel=bybit:ticks"))
                .await
                .expect("/live accepts connections while Redis is down");
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
    assert_eq!(redis.publish("bybit:ticks", r#"{"n":2}"#), 1);
    assert_eq!(next_text(&mut after).await.unwrap(), r#"{"n":2}"#);
    assert_eq!(server.get("/api/v1/strategies").await, Some(200));
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
