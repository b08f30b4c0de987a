//! The message bus of the live stream: Redis pub/sub when `REDIS_URL` is set, an in-process
//! tokio broadcast channel otherwise.
//!
//! With Redis, each distinct `(channel, pattern)` that `/live` clients request gets one relay
//! task with its own pub/sub connection, which fans messages out to the clients through a
//! bounded broadcast channel. When the connection drops, the relay sends a loss notice to
//! its clients, which are then closed with a reason, and reconnects with backoff. A relay without clients stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bst_ingest::bybit_ws::Backoff;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, watch};

use crate::live::LiveError;

/// Time a client waits for a relay's Redis subscription before it gives up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between two checks of whether a relay still has clients.
const RELAY_IDLE_CHECK: Duration = Duration::from_secs(10);
/// Bounds of the relay's reconnect backoff.
const RELAY_RECONNECT_MIN: Duration = Duration::from_millis(500);
const RELAY_RECONNECT_MAX: Duration = Duration::from_secs(10);

/// One message of the in-process bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub channel: Arc<str>,
    pub payload: Arc<str>,
}

/// The next item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Message(Arc<str>),
    /// The client fell behind by this many messages, which were dropped.
    Lagged(u64),
    /// The bus connection was lost; the reason is sent to the client.
    Closed(String),
}

/// The bus that `/live` clients subscribe to.
#[derive(Debug, Clone)]
pub enum Bus {
    InProcess(broadcast::Sender<BusMessage>),
    Redis(Arc<RedisBus>),
}

impl Bus {
    /// Creates the in-process bus, whose broadcast channel buffers `capacity` messages.
    pub fn in_process(capacity: usize) -> Self {
        Bus::InProcess(broadcast::channel(capacity.max(1)).0)
    }

    /// Subscribes to a channel, or to every channel matching a glob pattern when `pattern`.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::RedisUnavailable`] when the Redis subscription is not active
    /// within a few seconds.
    pub async fn subscribe(&self, channel: &str, pattern: bool) -> Result<Subscription, LiveError> {
        match self {
            Bus::InProcess(sender) => Ok(Subscription::InProcess {
                receiver: sender.subscribe(),
                channel: channel.to_string(),
                pattern,
            }),
            Bus::Redis(bus) => bus.subscribe(channel, pattern).await,
        }
    }
}

/// A client's subscription to the bus.
#[derive(Debug)]
pub enum Subscription {
    InProcess {
        receiver: broadcast::Receiver<BusMessage>,
        channel: String,
        pattern: bool,
    },
    Redis {
        receiver: broadcast::Receiver<RelayItem>,
    },
}

impl Subscription {
    /// Waits for the next message of the subscribed channel or pattern.
    pub async fn next(&mut self) -> Delivery {
        match self {
            Subscription::InProcess {
                receiver,
                channel,
                pattern,
            } => loop {
                match receiver.recv().await {
                    Ok(message) => {
                        let matches = if *pattern {
                            glob_match(channel.as_bytes(), message.channel.as_bytes())
                        } else {
                            *channel == *message.channel
                        };
                        if matches {
                            return Delivery::Message(message.payload);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(count)) => {
                        return Delivery::Lagged(count);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Delivery::Closed("the bus stopped".to_string());
                    }
                }
            },
            Subscription::Redis { receiver } => match receiver.recv().await {
                Ok(RelayItem::Message(payload)) => Delivery::Message(payload),
                Ok(RelayItem::Lost(reason)) => Delivery::Closed(reason.to_string()),
                Err(broadcast::error::RecvError::Lagged(count)) => Delivery::Lagged(count),
                Err(broadcast::error::RecvError::Closed) => {
                    Delivery::Closed("the Redis relay stopped".to_string())
                }
            },
        }
    }
}

/// An item that a Redis relay sends to its clients.
#[derive(Debug, Clone)]
pub enum RelayItem {
    Message(Arc<str>),
    Lost(Arc<str>),
}

/// State of a relay's Redis subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RelayState {
    Connecting,
    Subscribed,
    Down(String),
}

#[derive(Debug)]
struct RelayHandle {
    sender: broadcast::Sender<RelayItem>,
    state: watch::Receiver<RelayState>,
}

type RelayKey = (String, bool);

/// Redis pub/sub relays, one per `(channel, pattern)`.
#[derive(Debug)]
pub struct RedisBus {
    client: redis::Client,
    /// The URL without its password, for logs and subscription confirmations.
    display_url: String,
    client_buffer: usize,
    relays: Mutex<HashMap<RelayKey, Arc<RelayHandle>>>,
}

impl RedisBus {
    /// Creates the bus without connecting; relays connect when the first client subscribes.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::Redis`] when the URL is invalid.
    pub fn new(url: &str, client_buffer: usize) -> Result<Self, LiveError> {
        let display_url = redact_password(url);
        let client = redis::Client::open(url).map_err(|source| LiveError::Redis {
            url: display_url.clone(),
            source,
        })?;
        Ok(Self {
            client,
            display_url,
            client_buffer: client_buffer.max(1),
            relays: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the URL without its password.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Returns a publishing connection that connects on first use and reconnects by itself.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::Redis`] when the connection manager cannot be created.
    pub fn publisher(&self) -> Result<ConnectionManager, LiveError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(5));
        ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|source| {
            LiveError::Redis {
                url: self.display_url.clone(),
                source,
            }
        })
    }

    async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        pattern: bool,
    ) -> Result<Subscription, LiveError> {
        let (receiver, mut state) = {
            let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (channel.to_string(), pattern);
            let handle = relays
                .entry(key.clone())
                .or_insert_with(|| self.spawn_relay(key));
            (handle.sender.subscribe(), handle.state.clone())
        };
        let wait = state.wait_for(|state| *state != RelayState::Connecting);
        let reason = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, wait).await {
            Ok(Ok(current)) if *current == RelayState::Subscribed => {
                return Ok(Subscription::Redis { receiver });
            }
            Ok(Ok(current)) => match &*current {
                RelayState::Down(reason) => reason.clone(),
                _ => "the subscription is not active".to_string(),
            },
            Ok(Err(_)) => "the Redis relay stopped".to_string(),
            Err(_) => format!("no subscription within {SUBSCRIBE_TIMEOUT:?}"),
        };
        Err(LiveError::RedisUnavailable { reason })
    }

    fn spawn_relay(self: &Arc<Self>, key: RelayKey) -> Arc<RelayHandle> {
        let (sender, _) = broadcast::channel(self.client_buffer);
        let (state_sender, state) = watch::channel(RelayState::Connecting);
        let handle = Arc::new(RelayHandle {
            sender: sender.clone(),
            state,
        });
        tokio::spawn(run_relay(Arc::clone(self), key, sender, state_sender));
        handle
    }

    /// Removes the relay of `key` when it has no clients, and returns whether it did.
    fn remove_if_idle(&self, key: &RelayKey, sender: &broadcast::Sender<RelayItem>) -> bool {
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.receiver_count() > 0 {
            return false;
        }
        relays.remove(key);
        true
    }
}

async fn run_relay(
    bus: Arc<RedisBus>,
    key: RelayKey,
    sender: broadcast::Sender<RelayItem>,
    state: watch::Sender<RelayState>,
) {
    let (channel, pattern) = (key.0.as_str(), key.1);
    let url = bus.display_url.clone();
    let mut backoff = Backoff::new(RELAY_RECONNECT_MIN, RELAY_RECONNECT_MAX);
    let mut attempt: u32 = 0;
    let mut idle_check = tokio::time::interval(RELAY_IDLE_CHECK);
    idle_check.tick().await;
    loop {
        let reason = match connect_pubsub(&bus.client, channel, pattern).await {
            Ok(pubsub) => {
                attempt = 0;
                tracing::info!(url, channel, pattern, "Redis relay subscribed");
                state.send_replace(RelayState::Subscribed);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => {
                                let payload = String::from_utf8_lossy(message.get_payload_bytes());
                                // Sending fails only without clients, which the idle check handles.
                                let _ = sender.send(RelayItem::Message(Arc::from(payload.as_ref())));
                            }
                            None => break,
                        },
                        _ = idle_check.tick() => {
                            if bus.remove_if_idle(&key, &sender) {
                                tracing::info!(url, channel, pattern, "Redis relay has no clients; stopping it");
                                return;
                            }
                        }
                    }
                }
                "the Redis connection was lost".to_string()
            }
            Err(error) => format!("Redis is unavailable: {error}"),
        };
        tracing::warn!(url, channel, pattern, reason, "Redis relay is down");
        state.send_replace(RelayState::Down(reason.clone()));
        let _ = sender.send(RelayItem::Lost(Arc::from(reason.as_str())));
        attempt = attempt.saturating_add(1);
        let delay = backoff.delay(attempt);
        tracing::warn!(
            url,
            channel,
            attempt,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnecting the Redis relay"
        );
        tokio::time::sleep(delay).await;
        if bus.remove_if_idle(&key, &sender) {
            tracing::info!(
                url,
                channel,
                pattern,
                "Redis relay has no clients; stopping it"
            );
            return;
        }
    }
}

async fn connect_pubsub(
    client: &redis::Client,
    channel: &str,
    pattern: bool,
) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        if pattern {
            pubsub.psubscribe(channel).await?;
        } else {
            pubsub.subscribe(channel).await?;
        }
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("connect timed out after {SUBSCRIBE_TIMEOUT:?}")),
    }
}

/// Returns `url` without the password of its user information, such as
/// `redis://:secret@host:6379/0` as `redis://host:6379/0`, keeping a user name.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = user_info
        .split_once(':')
        .map_or(user_info, |(user, _)| user);
    if user.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{user}@{host}{path}")
    }
}

/// Matches `text` against a Redis glob pattern with `*`, `?`, `[...]` (with ranges and a
/// leading `^` for negation) and `\` escapes, as `PSUBSCRIBE` does.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&first, text_rest)) = text.split_first() else {
                return false;
            };
            let Some(close) = rest.iter().skip(1).position(|&byte| byte == b']') else {
                // An unclosed bracket matches itself literally.
                return first == b'[' && glob_match(rest, text_rest);
            };
            let class = &rest[..=close];
            let (negated, class) = match class.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, class),
            };
            let mut matched = false;
            let mut index = 0;
            while index < class.len() {
                if index + 2 < class.len() && class[index + 1] == b'-' {
                    let (low, high) = (class[index], class[index + 2]);
                    matched |= (low.min(high)..=low.max(high)).contains(&first);
                    index += 3;
                } else {
                    matched |= class[index] == first;
                    index += 1;
                }
            }
            matched != negated && glob_match(&rest[close + 2..], text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&byte, rest)) => text.first() == Some(&byte) && glob_match(rest, &text[1..]),
    }
}

/// Publishes normalized events to the bus, and to Redis streams when configured.
#[derive(Debug)]
pub enum Publisher {
    InProcess(broadcast::Sender<BusMessage>),
    Redis {
        connection: ConnectionManager,
        stream_maxlen: u64,
        /// Consecutive failed publishes, for rate-limited logging.
        failures: u64,
    },
}

impl Publisher {
    /// Publishes `payload` on `channel` and appends it to `stream` when given. A failure is
    /// logged (the first and every 1000th of a run) and the message is dropped.
    pub async fn publish(&mut self, channel: &str, stream: Option<&str>, payload: &str) {
        match self {
            Publisher::InProcess(sender) => {
                // Sending fails only when no client listens, which is not an error.
                let _ = sender.send(BusMessage {
                    channel: Arc::from(channel),
                    payload: Arc::from(payload),
                });
            }
            Publisher::Redis {
                connection,
                stream_maxlen,
                failures,
            } => {
                let mut pipe = redis::pipe();
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                if let Some(stream) = stream {
                    pipe.cmd("XADD")
                        .arg(stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(*stream_maxlen)
                        .arg("*")
                        .arg("data")
                        .arg(payload)
                        .ignore();
                }
                match pipe.query_async::<()>(connection).await {
                    Ok(()) => {
                        if *failures > 0 {
                            tracing::info!(dropped = *failures, "publishing to Redis works again");
                            *failures = 0;
                        }
                    }
                    Err(error) => {
                        *failures += 1;
                        if *failures == 1 || failures.is_multiple_of(1_000) {
                            tracing::warn!(%error, channel, dropped = *failures, "failed to publish to Redis; dropping the message");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_removed() {
        assert_eq!(
            redact_password("redis://:secret@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_password("redis://user:secret@host/1"),
            "redis://user@host/1"
        );
        assert_eq!(
            redact_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match(b"bybit:*", b"bybit:ticks"));
        assert!(glob_match(b"bybit:*", b"bybit:"));
        assert!(!glob_match(b"bybit:*", b"other:ticks"));
        assert!(glob_match(b"bybit:?licks", b"bybit:klicks"));
        assert!(glob_match(b"bybit:[kt]*", b"bybit:klines"));
        assert!(!glob_match(b"bybit:[^kt]*", b"bybit:klines"));
        assert!(glob_match(b"a[a-c]z", b"abz"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
    }

    #[tokio::test]
    async fn in_process_pattern_filters_channels() {
        let bus = Bus::in_process(16);
        let mut all = bus.subscribe("bybit:*", true).await.unwrap();
        let mut ticks = bus.subscribe("bybit:ticks", false).await.unwrap();
        let Bus::InProcess(sender) = &bus else {
            unreachable!()
        };
        let mut publisher = Publisher::InProcess(sender.clone());
        publisher.publish("bybit:klines", None, "k").await;
        publisher.publish("bybit:ticks", None, "t").await;
        assert_eq!(all.next().await, Delivery::Message(Arc::from("k")));
        assert_eq!(all.next().await, Delivery::Message(Arc::from("t")));
        assert_eq!(ticks.next().await, Delivery::Message(Arc::from("t")));
    }

    #[tokio::test]
    async fn slow_subscriber_lags() {
        let bus = Bus::in_process(2);
        let mut slow = bus.subscribe("c", false).await.unwrap();
        let Bus::InProcess(sender) = &bus else {
            unreachable!()
        };
        let mut publisher = Publisher::InProcess(sender.clone());
        for index in 0..5 {
            publisher.publish("c", None, &index.to_string()).await;
        }
        assert_eq!(slow.next().await, Delivery::Lagged(3));
    }
}
