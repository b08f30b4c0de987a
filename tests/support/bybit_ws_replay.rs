//! A local Bybit v5 public WebSocket server for tests, on a random loopback port, that
//! replays captured frames.
//!
//! It speaks Bybit's wire format: a client subscribes with
//! `{"op":"subscribe","args":["publicTrade.BTCUSDT",...]}` and gets
//! `{"success":true,"ret_msg":"","conn_id":"...","req_id":"","op":"subscribe"}`, and
//! `{"op":"ping"}` gets `{"success":true,"ret_msg":"pong","conn_id":"...","req_id":"","op":"ping"}`.
//! Frames are sent unchanged, in file order, only for subscribed topics, paced by the
//! differences of their `ts` divided by a speed factor. Streaming starts when the test calls
//! [`WsReplay::start`]. A planned drop closes the TCP connection without a close frame after
//! one frame and resumes at a later frame on the next connection, so the frames between are
//! never delivered.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// One captured frame.
#[derive(Debug, Clone)]
pub(crate) struct ReplayFrame {
    pub(crate) text: String,
    pub(crate) topic: String,
    pub(crate) ts_ms: i64,
}

impl ReplayFrame {
    /// Parses one line of a capture file.
    pub(crate) fn parse(line: &str) -> Self {
        let value: Value = serde_json::from_str(line).expect("capture line is JSON");
        Self {
            text: line.to_string(),
            topic: value["topic"]
                .as_str()
                .expect("frame has a topic")
                .to_string(),
            ts_ms: value["ts"].as_i64().expect("frame has a ts"),
        }
    }
}

/// A connection drop: after sending frame `after`, close; the next connection resumes at
/// frame `resume_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropPlan {
    pub(crate) after: usize,
    pub(crate) resume_at: usize,
}

/// What happened on one accepted connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionRecord {
    /// When the TCP connection was accepted, before the WebSocket handshake.
    pub(crate) accepted_at: Instant,
    /// When the first subscribe request arrived.
    pub(crate) subscribed_at: Option<Instant>,
    /// Topics of every subscribe request, in order, with repeats kept.
    pub(crate) topics: Vec<String>,
    /// When the planned drop closed this connection.
    pub(crate) dropped_at: Option<Instant>,
    pub(crate) pings: u64,
}

#[derive(Debug)]
struct Shared {
    frames: Vec<ReplayFrame>,
    speed: f64,
    drop_plan: Option<DropPlan>,
    started: watch::Receiver<bool>,
    /// Index of the next frame to send, shared across connections.
    cursor: Mutex<usize>,
    dropped: Mutex<bool>,
    connections: Mutex<Vec<ConnectionRecord>>,
}

/// A running replay server. Dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct WsReplay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    start: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl WsReplay {
    pub(crate) async fn start_server(
        frames: Vec<ReplayFrame>,
        speed: f64,
        drop_plan: Option<DropPlan>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("failed to bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener has an address");
        let (start, started) = watch::channel(false);
        let shared = Arc::new(Shared {
            frames,
            speed,
            drop_plan,
            started,
            cursor: Mutex::new(0),
            dropped: Mutex::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let accepted_at = Instant::now();
                tokio::spawn(serve_connection(
                    stream,
                    accepted_at,
                    Arc::clone(&accept_shared),
                ));
            }
        });
        Self {
            addr,
            shared,
            start,
            accept_task,
        }
    }

    /// Returns the URL, such as `ws://127.0.0.1:41234/v5/public/linear`.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/v5/public/linear", self.addr)
    }

    /// Starts streaming to subscribed connections.
    pub(crate) fn start(&self) {
        self.start.send_replace(true);
    }

    pub(crate) fn connections(&self) -> Vec<ConnectionRecord> {
        lock(&self.shared.connections).clone()
    }

    /// Returns true when every frame was sent.
    pub(crate) fn finished(&self) -> bool {
        self.cursor() >= self.shared.frames.len()
    }

    /// Returns the index of the next frame to send, which counts the frames sent or skipped.
    pub(crate) fn cursor(&self) -> usize {
        *lock(&self.shared.cursor)
    }
}

impl Drop for WsReplay {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve_connection(stream: TcpStream, accepted_at: Instant, shared: Arc<Shared>) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let index = {
        let mut connections = lock(&shared.connections);
        connections.push(ConnectionRecord {
            accepted_at,
            subscribed_at: None,
            topics: Vec::new(),
            dropped_at: None,
            pings: 0,
        });
        connections.len() - 1
    };
    let conn_id = format!("replay-{index}");
    let mut started = shared.started.clone();
    let mut previous_ts: Option<i64> = None;
    let mut next_send = tokio::time::Instant::now();
    loop {
        let subscribed = !lock(&shared.connections)[index].topics.is_empty();
        let ready = *started.borrow() && subscribed && {
            let cursor = *lock(&shared.cursor);
            cursor < shared.frames.len()
        };
        let send_frame = async {
            if ready {
                tokio::time::sleep_until(next_send).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            incoming = socket.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let request: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let op = request["op"].as_str().unwrap_or("").to_string();
                let reply = match op.as_str() {
                    "subscribe" => {
                        let topics: Vec<String> = request["args"]
                            .as_array()
                            .map(|args| args.iter().filter_map(|arg| arg.as_str().map(str::to_string)).collect())
                            .unwrap_or_default();
                        let mut connections = lock(&shared.connections);
                        let record = &mut connections[index];
                        record.subscribed_at.get_or_insert_with(Instant::now);
                        record.topics.extend(topics);
                        drop(connections);
                        format!(r#"{{"success":true,"ret_msg":"","conn_id":"{conn_id}","req_id":"","op":"subscribe"}}"#)
                    }
                    "ping" => {
                        lock(&shared.connections)[index].pings += 1;
                        format!(r#"{{"success":true,"ret_msg":"pong","conn_id":"{conn_id}","req_id":"","op":"ping"}}"#)
                    }
                    other => format!(
                        r#"{{"success":false,"ret_msg":"error:handler not found, op:{other}","conn_id":"{conn_id}","req_id":"","op":"{other}"}}"#
                    ),
                };
                if socket.send(Message::text(reply)).await.is_err() {
                    return;
                }
            }
            _ = started.changed() => {}
            () = send_frame => {
                let frame_index = *lock(&shared.cursor);
                let frame = &shared.frames[frame_index];
                let topics = lock(&shared.connections)[index].topics.clone();
                if topics.contains(&frame.topic)
                    && socket.send(Message::text(frame.text.clone())).await.is_err()
                {
                    return;
                }
                let plan = shared.drop_plan.filter(|plan| plan.after == frame_index);
                let mut dropped = lock(&shared.dropped);
                match plan {
                    Some(plan) if !*dropped => {
                        *dropped = true;
                        *lock(&shared.cursor) = plan.resume_at;
                        lock(&shared.connections)[index].dropped_at = Some(Instant::now());
                        // Dropping the socket closes TCP without a WebSocket close frame.
                        return;
                    }
                    _ => *lock(&shared.cursor) = frame_index + 1,
                }
                drop(dropped);
                if let Some(next) = shared.frames.get(frame_index + 1) {
                    let gap_ms = (next.ts_ms - previous_ts.unwrap_or(frame.ts_ms).max(frame.ts_ms)).max(0);
                    let delay = Duration::from_secs_f64(gap_ms as f64 / 1_000.0 / shared.speed)
                        .min(Duration::from_secs(2));
                    next_send = tokio::time::Instant::now() + delay;
                }
                previous_ts = Some(previous_ts.map_or(frame.ts_ms, |last| last.max(frame.ts_ms)));
            }
        }
    }
}
