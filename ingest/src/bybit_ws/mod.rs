//! A client of Bybit's v5 public WebSocket stream for trades and klines.
//!
//! [`run`] connects to the stream, subscribes to `publicTrade.SYMBOL` and
//! `kline.INTERVAL.SYMBOL` with `{"op":"subscribe","args":[...]}`, sends `{"op":"ping"}`
//! every `ping_interval`, and passes each normalized event to a channel. When the connection
//! drops or no frame arrives for `silence_timeout`, it reconnects with exponential backoff
//! and jitter between `reconnect_delay` and `reconnect_delay_max`, and subscribes again.
//! Confirmed bars that closed while it was disconnected are then fetched from the REST API
//! by [`crate::backfill::backfill`]. The range starts at the first unconfirmed bar seen
//! before the drop and ends at the bar open at the first frame after the reconnect, in
//! Bybit's own clock (the frames' `ts`).

pub mod normalize;
pub mod persist;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::backfill::backfill;
use crate::bybit_rest::BybitRestClient;
use crate::layout::{Category, Timeframe, validate_symbol};
use crate::{Error, Result};

pub use normalize::{Frame, LiveEvent, LiveKline, LiveTrade, parse_frame};

/// Bybit's mainnet public stream of linear contracts.
pub const DEFAULT_WS_URL: &str = "wss://stream.bybit.com/v5/public/linear";

/// Maximum topics in one subscribe request, because Bybit's spot stream rejects larger ones.
const MAX_ARGS_PER_SUBSCRIBE: usize = 10;

/// Settings of the stream client.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// `ws://` or `wss://` URL of a v5 public stream, such as [`DEFAULT_WS_URL`].
    pub url: String,
    /// Category of the stream, which names the dataset partition of its data.
    pub category: Category,
    pub symbols: Vec<String>,
    pub timeframes: Vec<Timeframe>,
    /// Time between two `{"op":"ping"}` requests; Bybit drops a client silent for 30 s or more.
    pub ping_interval: Duration,
    /// Time without any frame after which the connection counts as dropped.
    pub silence_timeout: Duration,
    /// Backoff before the first reconnect, doubled for each further attempt.
    pub reconnect_delay: Duration,
    /// Upper bound of the backoff.
    pub reconnect_delay_max: Duration,
    /// Timeout of the TCP, TLS and WebSocket handshakes together.
    pub connect_timeout: Duration,
}

impl WsConfig {
    /// Returns a configuration with Bybit's defaults for the given URL and series.
    pub fn new(url: String, symbols: Vec<String>, timeframes: Vec<Timeframe>) -> Self {
        Self {
            category: category_from_url(&url),
            url,
            symbols,
            timeframes,
            ping_interval: Duration::from_secs(20),
            silence_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_millis(1_500),
            reconnect_delay_max: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the URL scheme, the symbols, the timeframes and the delays.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidValue`] naming the first invalid setting.
    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(Error::InvalidValue {
                field: "WebSocket URL",
                value: self.url.clone(),
                expected: "a ws:// or wss:// URL such as wss://stream.bybit.com/v5/public/linear",
            });
        }
        if self.symbols.is_empty() {
            return Err(Error::InvalidValue {
                field: "symbols",
                value: String::new(),
                expected: "at least one symbol such as BTCUSDT",
            });
        }
        for symbol in &self.symbols {
            validate_symbol(symbol)?;
        }
        if let Some(timeframe) = self
            .timeframes
            .iter()
            .find(|timeframe| timeframe.fixed_duration_ms().is_none())
        {
            return Err(Error::InvalidValue {
                field: "interval",
                value: timeframe.code(),
                expected: "minutes, D or W: monthly bars cannot be backfilled",
            });
        }
        if self.reconnect_delay.is_zero() || self.reconnect_delay > self.reconnect_delay_max {
            return Err(Error::InvalidValue {
                field: "reconnect delays",
                value: format!(
                    "{:?} to {:?}",
                    self.reconnect_delay, self.reconnect_delay_max
                ),
                expected: "a minimum above 0 and not above the maximum",
            });
        }
        if self.ping_interval.is_zero() || self.silence_timeout.is_zero() {
            return Err(Error::InvalidValue {
                field: "ping interval or silence timeout",
                value: format!("{:?}, {:?}", self.ping_interval, self.silence_timeout),
                expected: "durations above 0",
            });
        }
        Ok(())
    }

    /// Returns the subscription topics: every symbol's trades, then its klines.
    pub fn topics(&self) -> Vec<String> {
        let mut topics = Vec::new();
        for symbol in &self.symbols {
            topics.push(format!("publicTrade.{symbol}"));
            for timeframe in &self.timeframes {
                topics.push(format!("kline.{}.{symbol}", timeframe.code()));
            }
        }
        topics
    }
}

/// Returns the category that a stream URL's last path segment names, such as `linear` for
/// `.../v5/public/linear`, and `linear` when it names none.
pub fn category_from_url(url: &str) -> Category {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|segment| segment.parse().ok())
        .unwrap_or(Category::Linear)
}

/// The REST client and dataset that missed bars are backfilled into.
#[derive(Debug)]
pub struct BackfillTarget {
    pub client: BybitRestClient,
    pub data_dir: PathBuf,
}

/// Exponential backoff with jitter, always between a minimum and a maximum delay.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter_state: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        Self {
            min,
            max: max.max(min),
            jitter_state: (nanos as u64) | 1,
        }
    }

    /// Returns the delay before retry number `attempt` (1 for the first): `min * 2^(attempt
    /// - 1)`, raised by a random 0 to 50 %, and capped by the maximum.
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let exponential = self.min.saturating_mul(1_u32 << exponent).min(self.max);
        let jittered = exponential + exponential.mul_f64(0.5 * self.next_fraction());
        jittered.clamp(self.min, self.max)
    }

    /// Returns a pseudo-random number in `[0, 1)` from a xorshift64 generator.
    fn next_fraction(&mut self) -> f64 {
        let mut state = self.jitter_state;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.jitter_state = state;
        (state >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// Open times of one series seen on the stream.
#[derive(Debug, Clone, Copy, Default)]
struct SeriesSeen {
    /// Open time of the newest bar update, confirmed or not.
    last_open_ms: Option<i64>,
    /// Open time of the newest confirmed bar.
    last_confirmed_ms: Option<i64>,
}

/// Client state kept across connections.
#[derive(Debug, Default)]
struct StreamState {
    series: HashMap<(String, Timeframe), SeriesSeen>,
    /// Set by a drop after data arrived, cleared by the first data frame after a reconnect.
    backfill_pending: bool,
}

/// The outcome of one connection.
#[derive(Debug)]
struct SessionEnd {
    reason: String,
    received_data: bool,
    /// The event channel closed, so the client stops.
    stop: bool,
}

/// Streams normalized events into `events` until its receiver is dropped, reconnecting
/// forever.
///
/// Every connect, drop and failed connect is logged with `url`, `attempt` and `delay_ms`.
/// `attempt` counts the connect attempts since the last connection that received data (0 for
/// the first connection), and `delay_ms` is the backoff waited before a connect, or the one
/// to wait before the next attempt after a drop or failure.
pub async fn run(
    config: WsConfig,
    events: mpsc::Sender<LiveEvent>,
    backfill_target: Option<Arc<BackfillTarget>>,
) {
    let mut backoff = Backoff::new(config.reconnect_delay, config.reconnect_delay_max);
    let mut state = StreamState::default();
    let mut attempt: u32 = 0;
    let mut delay = Duration::ZERO;
    loop {
        let connect = tokio::time::timeout(
            config.connect_timeout,
            tokio_tungstenite::connect_async(config.url.as_str()),
        )
        .await;
        match connect {
            Ok(Ok((stream, _response))) => {
                tracing::info!(
                    url = %config.url,
                    attempt,
                    delay_ms = millis(delay),
                    "connected to the Bybit stream"
                );
                let end = session(&config, stream, &mut state, &events, &backfill_target).await;
                if end.stop {
                    return;
                }
                if end.received_data {
                    attempt = 0;
                    state.backfill_pending = true;
                }
                attempt = attempt.saturating_add(1);
                delay = backoff.delay(attempt);
                tracing::warn!(
                    url = %config.url,
                    attempt,
                    delay_ms = millis(delay),
                    reason = %end.reason,
                    "Bybit stream connection dropped; reconnecting"
                );
            }
            Ok(Err(error)) => {
                attempt = attempt.saturating_add(1);
                delay = backoff.delay(attempt);
                tracing::warn!(
                    url = %config.url,
                    attempt,
                    delay_ms = millis(delay),
                    %error,
                    "failed to connect to the Bybit stream; retrying"
                );
            }
            Err(_) => {
                attempt = attempt.saturating_add(1);
                delay = backoff.delay(attempt);
                tracing::warn!(
                    url = %config.url,
                    attempt,
                    delay_ms = millis(delay),
                    timeout_ms = millis(config.connect_timeout),
                    "connecting to the Bybit stream timed out; retrying"
                );
            }
        }
        tokio::time::sleep(delay).await;
        if events.is_closed() {
            return;
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes and forwards events until the connection drops or falls silent.
async fn session(
    config: &WsConfig,
    mut stream: WsStream,
    state: &mut StreamState,
    events: &mpsc::Sender<LiveEvent>,
    backfill_target: &Option<Arc<BackfillTarget>>,
) -> SessionEnd {
    let mut end = SessionEnd {
        reason: String::new(),
        received_data: false,
        stop: false,
    };
    let topics = config.topics();
    for chunk in topics.chunks(MAX_ARGS_PER_SUBSCRIBE) {
        let request = serde_json::json!({"op": "subscribe", "args": chunk}).to_string();
        if let Err(error) = stream.send(Message::text(request)).await {
            end.reason = format!("subscribe failed: {error}");
            return end;
        }
    }
    tracing::info!(url = %config.url, topics = topics.len(), "subscribed to the Bybit stream");

    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let silence = tokio::time::sleep(config.silence_timeout);
    tokio::pin!(silence);
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = ping.tick() => {
                let request = serde_json::json!({"op": "ping"}).to_string();
                if let Err(error) = stream.send(Message::text(request)).await {
                    end.reason = format!("ping failed: {error}");
                    return end;
                }
                continue;
            }
            () = &mut silence => {
                end.reason = format!("no frame for {:?}", config.silence_timeout);
                return end;
            }
        };
        silence
            .as_mut()
            .reset(tokio::time::Instant::now() + config.silence_timeout);
        let text = match message {
            None => {
                end.reason = "the server closed the connection".to_string();
                return end;
            }
            Some(Err(error)) => {
                end.reason = format!("read failed: {error}");
                return end;
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                end.reason = format!("close frame {frame:?}");
                return end;
            }
            Some(Ok(_)) => continue,
        };
        let frame = match parse_frame(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "skipping an invalid Bybit frame");
                continue;
            }
        };
        match frame {
            Frame::Data {
                ts_ms,
                events: batch,
            } => {
                end.received_data = true;
                if state.backfill_pending {
                    state.backfill_pending = false;
                    start_backfill(config, state, ts_ms, backfill_target);
                }
                for event in batch {
                    note_kline(state, &event);
                    if events.send(event).await.is_err() {
                        end.reason = "the event receiver was dropped".to_string();
                        end.stop = true;
                        return end;
                    }
                }
            }
            Frame::OpReply {
                op,
                success,
                message,
            } => {
                if !success {
                    tracing::warn!(url = %config.url, op, message, "Bybit rejected a request");
                }
            }
            Frame::Other => {}
        }
    }
}

fn note_kline(state: &mut StreamState, event: &LiveEvent) {
    let LiveEvent::Kline(update) = event else {
        return;
    };
    let seen = state
        .series
        .entry((update.symbol.clone(), update.timeframe))
        .or_default();
    let open_ms = update.kline.open_time_ms;
    seen.last_open_ms = Some(seen.last_open_ms.map_or(open_ms, |last| last.max(open_ms)));
    if update.confirm {
        seen.last_confirmed_ms = Some(
            seen.last_confirmed_ms
                .map_or(open_ms, |last| last.max(open_ms)),
        );
    }
}

/// Returns the `[start, end)` open-time ranges of the bars that may have closed while the
/// client was disconnected, given the first frame time after the reconnect.
fn missed_ranges(
    config: &WsConfig,
    state: &StreamState,
    now_ms: i64,
) -> Vec<(String, Timeframe, i64, i64)> {
    let mut ranges = Vec::new();
    for symbol in &config.symbols {
        for &timeframe in &config.timeframes {
            let Some(duration_ms) = timeframe.fixed_duration_ms() else {
                continue;
            };
            let Some(seen) = state.series.get(&(symbol.clone(), timeframe)) else {
                continue;
            };
            let start_ms = match (seen.last_confirmed_ms, seen.last_open_ms) {
                (Some(confirmed), _) => confirmed + duration_ms,
                (None, Some(open)) => open,
                (None, None) => continue,
            };
            // NOTE: weekly bars open on Mondays, so flooring to the duration misplaces the end
            // for them. The backfill aligns its own grid, so it only requests a wider range.
            let end_ms = now_ms - now_ms.rem_euclid(duration_ms);
            if start_ms < end_ms {
                ranges.push((symbol.clone(), timeframe, start_ms, end_ms));
            }
        }
    }
    ranges
}

fn start_backfill(
    config: &WsConfig,
    state: &StreamState,
    now_ms: i64,
    target: &Option<Arc<BackfillTarget>>,
) {
    let ranges = missed_ranges(config, state, now_ms);
    let Some(target) = target.clone() else {
        if !ranges.is_empty() {
            tracing::warn!(
                series = ranges.len(),
                "bars may be missing after the reconnect, but no REST backfill is configured"
            );
        }
        return;
    };
    if ranges.is_empty() {
        return;
    }
    let category = config.category;
    // NOTE: the backfill writes with blocking file I/O on a runtime worker thread.
    tokio::spawn(async move {
        for (symbol, timeframe, start_ms, end_ms) in ranges {
            tracing::info!(symbol, timeframe = %timeframe, start_ms, end_ms, "backfilling bars missed while disconnected");
            let result = backfill(
                &target.client,
                &target.data_dir,
                category,
                &symbol,
                timeframe,
                start_ms,
                end_ms,
                &|_, _| {},
            )
            .await;
            match result {
                Ok(report) if report.missing_bars() > 0 => tracing::warn!(
                    symbol,
                    timeframe = %timeframe,
                    missing_bars = report.missing_bars(),
                    "backfill after the reconnect left bars missing"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, symbol, timeframe = %timeframe, "backfill after the reconnect failed");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WsConfig {
        WsConfig::new(
            "ws://127.0.0.1:9/v5/public/linear".to_string(),
            vec!["BTCUSDT".to_string(), "ETHUSDT".to_string()],
            vec![Timeframe::Minutes(1)],
        )
    }

    #[test]
    fn topics_cover_trades_and_klines() {
        assert_eq!(
            config().topics(),
            [
                "publicTrade.BTCUSDT",
                "kline.1.BTCUSDT",
                "publicTrade.ETHUSDT",
                "kline.1.ETHUSDT"
            ]
        );
    }

    #[test]
    fn category_comes_from_url() {
        assert_eq!(
            category_from_url("wss://stream.bybit.com/v5/public/spot"),
            Category::Spot
        );
        assert_eq!(category_from_url("ws://127.0.0.1:1"), Category::Linear);
    }

    #[test]
    fn backoff_stays_within_bounds() {
        let min = Duration::from_millis(1_500);
        let max = Duration::from_secs(15);
        let mut backoff = Backoff::new(min, max);
        for attempt in 1..=12 {
            let delay = backoff.delay(attempt);
            assert!(delay >= min, "attempt {attempt}: {delay:?}");
            assert!(delay <= max, "attempt {attempt}: {delay:?}");
        }
        assert!(backoff.delay(1) <= min.mul_f64(1.5));
        assert_eq!(backoff.delay(10), max);
    }

    #[test]
    fn missed_range_starts_after_last_confirmed() {
        let config = config();
        let mut state = StreamState::default();
        state.series.insert(
            ("BTCUSDT".to_string(), Timeframe::Minutes(1)),
            SeriesSeen {
                last_open_ms: Some(180_000),
                last_confirmed_ms: Some(120_000),
            },
        );
        state.series.insert(
            ("ETHUSDT".to_string(), Timeframe::Minutes(1)),
            SeriesSeen {
                last_open_ms: Some(180_000),
                last_confirmed_ms: None,
            },
        );
        let ranges = missed_ranges(&config, &state, 300_500);
        assert_eq!(
            ranges,
            [
                (
                    "BTCUSDT".to_string(),
                    Timeframe::Minutes(1),
                    180_000,
                    300_000
                ),
                (
                    "ETHUSDT".to_string(),
                    Timeframe::Minutes(1),
                    180_000,
                    300_000
                ),
            ]
        );
        assert!(missed_ranges(&config, &state, 180_500).is_empty());
    }

    #[test]
    fn invalid_url_is_rejected() {
        let mut config = config();
        config.url = "http://127.0.0.1:9".to_string();
        assert!(config.validate().is_err());
    }
}
