//! A local Bybit v5 REST server for tests, on a random loopback port.
//!
//! It serves `GET /v5/market/kline` from real kline CSV files, following Bybit's paging:
//! `start` and `end` are inclusive epoch milliseconds, rows come newest first with every
//! field a string, and `limit` defaults to 200 with a maximum of 1000. A bad `category`,
//! `symbol`, `interval`, `start`, `end` or `limit` gets `retCode` 10001. The CSV files have
//! no turnover, so the server sends `volume * close` rounded to 4 decimals. The response
//! `time` is a configured clock, so the newest bar may still be open at it.
//!
//! [`Faults`] injects rate limit replies, 5xx replies, stalls, dropped connections and
//! misbehaving pages. The server speaks a minimal HTTP/1.1 over a raw TCP listener, reading
//! one request per connection and replying with `Connection: close`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bst_ingest::csv_klines::{read_kline_csv, series_from_file_name};
use bst_ingest::{Kline, Timeframe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bybit's `retCode` for invalid request parameters.
pub(crate) const PARAMS_ERROR: i64 = 10001;

/// Maximum size of a request head that the server reads.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Failures to inject. Request numbers count every request the server reads, from 1.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// Every Nth request (N, 2N, ...) gets a rate limit reply.
    pub(crate) rate_limit_every: Option<u64>,
    /// Rate limit replies are HTTP 429 rather than HTTP 200 with `retCode` 10006.
    pub(crate) rate_limit_http_429: bool,
    /// Rate limit replies carry `X-Bapi-Limit-Reset-Timestamp`, 50 ms after the real clock.
    pub(crate) rate_limit_reset_header: bool,
    /// This request gets HTTP 503.
    pub(crate) server_error_at: Option<u64>,
    /// This request's connection is closed after reading the request, without a reply.
    pub(crate) drop_connection_at: Option<u64>,
    /// This request's reply is sent only after the given delay.
    pub(crate) stall_at: Option<(u64, Duration)>,
    /// Pages ignore `start`, so they may contain rows older than it.
    pub(crate) ignore_start: bool,
    /// Pages contain the `limit` rows that end just before `start`, none of those requested.
    pub(crate) page_before_start: bool,
    /// Pages read `end` one bar later, so each page repeats the oldest bar of the previous one.
    pub(crate) overlap_one_bar: bool,
    /// Every request from this number on gets this `retCode` and `retMsg`.
    pub(crate) error_from: Option<(u64, i64, String)>,
}

/// Bars of one symbol and interval, ascending by open time.
type SeriesMap = HashMap<(String, String), Vec<Kline>>;

/// State shared by the connection tasks.
#[derive(Debug)]
struct Shared {
    series: SeriesMap,
    now_ms: i64,
    faults: Faults,
    requests: AtomicU64,
    kline_requests: AtomicU64,
    /// Kline rows sent in successful replies, overlapping rows counted each time.
    rows_sent: AtomicU64,
    rate_limited: AtomicU64,
}

/// A running local Bybit server. Dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct BybitServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl BybitServer {
    /// Starts a server on `127.0.0.1:0` that serves the `linear` klines of the given CSV
    /// files, named `SYMBOL_<interval>.csv[.gz]`, with `now_ms` as the response time.
    pub(crate) async fn start(files: &[PathBuf], now_ms: i64, faults: Faults) -> Self {
        let mut series = SeriesMap::new();
        for file in files {
            let (symbol, timeframe) = series_from_file_name(file)
                .unwrap_or_else(|| panic!("{}: no SYMBOL_<interval> in the name", file.display()));
            let klines = read_kline_csv(file).unwrap_or_else(|error| panic!("{error}"));
            series.insert((symbol, timeframe.code()), klines);
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("failed to bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener has an address");
        let shared = Arc::new(Shared {
            series,
            now_ms,
            faults,
            requests: AtomicU64::new(0),
            kline_requests: AtomicU64::new(0),
            rows_sent: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(handle_connection(stream, Arc::clone(&accept_shared)));
            }
        });
        Self {
            addr,
            shared,
            accept_task,
        }
    }

    /// Returns the base URL, such as `http://127.0.0.1:41234`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the number of requests read, faulty replies included.
    pub(crate) fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Returns the number of kline rows sent, counting a row again each time a page repeats it.
    pub(crate) fn rows_sent(&self) -> u64 {
        self.shared.rows_sent.load(Ordering::SeqCst)
    }

    /// Returns the number of requests for `/v5/market/kline`.
    pub(crate) fn kline_requests(&self) -> u64 {
        self.shared.kline_requests.load(Ordering::SeqCst)
    }

    /// Returns the number of rate limit replies sent.
    pub(crate) fn rate_limited(&self) -> u64 {
        self.shared.rate_limited.load(Ordering::SeqCst)
    }
}

impl Drop for BybitServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One HTTP response to send.
struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(body: String) -> Self {
        Self {
            status: "200 OK",
            headers: Vec::new(),
            body,
        }
    }
}

async fn handle_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(target) = read_request_target(&mut stream).await else {
        return;
    };
    let number = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let faults = &shared.faults;

    if faults.drop_connection_at == Some(number) {
        // Dropping the stream closes the socket without a reply.
        return;
    }
    if let Some((at, delay)) = faults.stall_at
        && at == number
    {
        tokio::time::sleep(delay).await;
    }
    let reply = if faults.server_error_at == Some(number) {
        Reply {
            status: "503 Service Unavailable",
            headers: Vec::new(),
            body: "service unavailable".to_string(),
        }
    } else if faults
        .rate_limit_every
        .is_some_and(|every| number.is_multiple_of(every))
    {
        shared.rate_limited.fetch_add(1, Ordering::SeqCst);
        rate_limit_reply(&shared)
    } else {
        route(&target, number, &shared)
    };

    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // A client that hung up (after a timeout) makes these writes fail, which is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(reply.body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the request head and returns the request target of a `GET`, such as
/// `/v5/market/kline?category=linear&...`.
async fn read_request_target(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    while !buffer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || buffer.len() > MAX_REQUEST_BYTES {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&buffer);
    let request_line = head.lines().next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    (method == "GET").then(|| target.to_string())
}

fn rate_limit_reply(shared: &Shared) -> Reply {
    let faults = &shared.faults;
    let mut headers = vec![
        ("X-Bapi-Limit".to_string(), "600".to_string()),
        ("X-Bapi-Limit-Status".to_string(), "0".to_string()),
    ];
    if faults.rate_limit_reset_header {
        headers.push((
            "X-Bapi-Limit-Reset-Timestamp".to_string(),
            (real_now_ms() + 50).to_string(),
        ));
    }
    if faults.rate_limit_http_429 {
        return Reply {
            status: "429 Too Many Requests",
            headers,
            body: "too many requests".to_string(),
        };
    }
    let mut reply = Reply::json(error_body(
        10006,
        "Too many visits. Exceeded the API Rate Limit.",
        shared.now_ms,
    ));
    reply.headers = headers;
    reply
}

fn route(target: &str, number: u64, shared: &Shared) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/v5/market/kline" {
        return Reply {
            status: "404 Not Found",
            headers: Vec::new(),
            body: String::new(),
        };
    }
    shared.kline_requests.fetch_add(1, Ordering::SeqCst);
    if let Some((from, code, message)) = &shared.faults.error_from
        && number >= *from
    {
        return Reply::json(error_body(*code, message, shared.now_ms));
    }
    let body = match kline_page(query, shared) {
        Ok(body) => body,
        Err(message) => error_body(PARAMS_ERROR, &message, shared.now_ms),
    };
    Reply::json(body)
}

/// Builds a successful kline body, or returns the `retMsg` of a parameter error.
fn kline_page(query: &str, shared: &Shared) -> Result<String, String> {
    let params: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let category = params.get("category").copied().unwrap_or("");
    if !matches!(category, "linear" | "spot" | "inverse") {
        return Err("Illegal category".to_string());
    }
    let symbol = params
        .get("symbol")
        .copied()
        .ok_or_else(|| "params error: symbol is required".to_string())?;
    let interval = params
        .get("interval")
        .copied()
        .ok_or_else(|| "params error: interval is required".to_string())?;
    let timeframe = interval
        .parse::<Timeframe>()
        .ok()
        .filter(|timeframe| timeframe.code() == interval)
        .ok_or_else(|| "Invalid period!".to_string())?;
    let number = |name: &str| -> Result<Option<i64>, String> {
        params
            .get(name)
            .map(|text| {
                text.parse::<i64>()
                    .map_err(|_| format!("params error: {name} invalid"))
            })
            .transpose()
    };
    let start_ms = number("start")?;
    let end_ms = number("end")?.unwrap_or(shared.now_ms);
    let limit = number("limit")?.unwrap_or(200).clamp(1, 1000) as usize;
    // Only the linear category is loaded; other categories have no such symbol.
    let klines = if category == "linear" {
        shared
            .series
            .get(&(symbol.to_string(), interval.to_string()))
    } else {
        None
    }
    .ok_or_else(|| "Not supported symbols".to_string())?;

    let faults = &shared.faults;
    let duration_ms = timeframe.fixed_duration_ms().unwrap_or(0);
    let (low_ms, high_ms) = if faults.page_before_start {
        (i64::MIN, start_ms.unwrap_or(end_ms) - 1)
    } else if faults.overlap_one_bar {
        (start_ms.unwrap_or(i64::MIN), end_ms + duration_ms)
    } else if faults.ignore_start {
        (i64::MIN, end_ms)
    } else {
        (start_ms.unwrap_or(i64::MIN), end_ms)
    };
    // Bars that open after the server's clock do not exist yet.
    let high_ms = high_ms.min(shared.now_ms);
    let first = klines.partition_point(|kline| kline.open_time_ms < low_ms);
    let end = klines.partition_point(|kline| kline.open_time_ms <= high_ms);
    let selected = if first < end {
        &klines[first..end]
    } else {
        &[]
    };
    let newest = &selected[selected.len().saturating_sub(limit)..];

    let rows: Vec<String> = newest.iter().rev().map(wire_row).collect();
    shared
        .rows_sent
        .fetch_add(rows.len() as u64, Ordering::SeqCst);
    Ok(format!(
        r#"{{"retCode":0,"retMsg":"OK","result":{{"symbol":"{symbol}","category":"{category}","list":[{}]}},"retExtInfo":{{}},"time":{}}}"#,
        rows.join(","),
        shared.now_ms
    ))
}

/// Formats one bar as Bybit's `[startTime, open, high, low, close, volume, turnover]`, every
/// field a string. Rust's shortest round-trip formatting keeps every value exact.
fn wire_row(kline: &Kline) -> String {
    let turnover = kline.volume * kline.close;
    format!(
        r#"["{}","{}","{}","{}","{}","{}","{:.4}"]"#,
        kline.open_time_ms, kline.open, kline.high, kline.low, kline.close, kline.volume, turnover
    )
}

fn error_body(code: i64, message: &str, now_ms: i64) -> String {
    let message = serde_json::to_string(message).expect("a string serializes");
    format!(
        r#"{{"retCode":{code},"retMsg":{message},"result":{{}},"retExtInfo":{{}},"time":{now_ms}}}"#
    )
}

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
