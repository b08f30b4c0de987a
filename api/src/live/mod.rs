//! The live market stream: `GET /api/v1/live` relays bus messages to WebSocket clients, and
//! the optional Bybit stream client publishes normalized trades and klines on the bus and
//! stores them in the dataset.
//!
//! Normalized messages (schema `v` 1) are JSON text: a trade is
//! `{"v":1,"type":"trade","source":"bybit","symbol":"BTCUSDT","ts_ms":...,"price":...,
//! "qty":...,"side":"buy","trade_id":"..."}` on the ticks channel, and a kline update is
//! `{"v":1,"type":"kline","source":"bybit","symbol":"BTCUSDT","interval":"1","open_time":...,
//! "open":...,"high":...,"low":...,"close":...,"volume":...,"turnover":...,"confirm":false}` on
//! the klines channel.

pub mod bus;
pub mod config;
pub(crate) mod route;

use std::sync::Arc;

use bst_ingest::bybit_rest::{BybitRestClient, ClientConfig};
use bst_ingest::bybit_ws::persist::run_batch_writer;
use bst_ingest::bybit_ws::{self, BackfillTarget, LiveEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::state::AppState;
pub use bus::{Bus, Delivery, Publisher, RedisBus};
pub use config::LiveConfig;

/// Events buffered between the Bybit stream client and the publisher, and between the
/// publisher and the batch writer.
const EVENT_QUEUE: usize = 10_000;

/// Errors of the live stream's set-up and subscriptions.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("invalid {variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },
    #[error("Redis at {url} failed: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis is unavailable: {reason}")]
    RedisUnavailable { reason: String },
    #[error(transparent)]
    Ingest(#[from] bst_ingest::Error),
}

/// The bus and the access settings of `/live`, shared by its handlers.
#[derive(Debug, Clone)]
pub struct LiveHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    bus: Bus,
    config: LiveConfig,
}

impl LiveHub {
    /// Creates the hub of `config`: Redis relays when `redis_url` is set, the in-process bus
    /// otherwise. Nothing connects yet.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::Redis`] for an invalid Redis URL.
    pub fn new(config: LiveConfig) -> Result<Self, LiveError> {
        let bus = match &config.redis_url {
            Some(url) => Bus::Redis(Arc::new(RedisBus::new(url, config.client_buffer)?)),
            None => Bus::in_process(config.client_buffer),
        };
        Ok(Self {
            inner: Arc::new(HubInner { bus, config }),
        })
    }

    /// Returns a hub on the in-process bus with default settings.
    pub fn in_process() -> Self {
        Self::new(LiveConfig::in_process()).expect("the in-process bus needs no connection")
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    /// Returns the Redis URL without its password, or `None` for the in-process bus.
    pub fn display_url(&self) -> Option<&str> {
        match &self.inner.bus {
            Bus::Redis(bus) => Some(bus.display_url()),
            Bus::InProcess(_) => None,
        }
    }

    fn publisher(&self) -> Result<Publisher, LiveError> {
        Ok(match &self.inner.bus {
            Bus::InProcess(sender) => Publisher::InProcess(sender.clone()),
            Bus::Redis(bus) => Publisher::Redis {
                connection: bus.publisher()?,
                stream_maxlen: self.inner.config.stream_maxlen,
                failures: 0,
            },
        })
    }
}

/// Reads the live settings from the environment, puts the hub into `state`, and starts the
/// Bybit stream client with its publisher and batch writer when `BYBIT_WS_ENABLED=1`.
/// Returns the state and the started tasks.
///
/// # Errors
///
/// Returns [`LiveError::Config`] for an invalid variable, [`LiveError::Redis`] for an invalid
/// Redis URL and [`LiveError::Ingest`] when the REST client cannot be built.
pub fn start_from_env(mut state: AppState) -> Result<(AppState, Vec<JoinHandle<()>>), LiveError> {
    let config = LiveConfig::from_env(state.engine.data_dir())?;
    let hub = LiveHub::new(config)?;
    let mut tasks = Vec::new();
    if let Some(bybit) = hub.config().bybit.clone() {
        let client = BybitRestClient::new(ClientConfig {
            base_url: bybit.rest_url.clone(),
            ..ClientConfig::default()
        })?;
        let target = Arc::new(BackfillTarget {
            client,
            data_dir: bybit.persist.data_dir.clone(),
        });
        let (event_sender, event_receiver) = mpsc::channel(EVENT_QUEUE);
        let (persist_sender, persist_receiver) = mpsc::channel(EVENT_QUEUE);
        tracing::info!(
            url = %bybit.ws.url,
            symbols = ?bybit.ws.symbols,
            bus = hub.display_url().unwrap_or("in-process"),
            "starting the Bybit stream client"
        );
        tasks.push(tokio::spawn(run_batch_writer(
            bybit.persist.clone(),
            persist_receiver,
        )));
        tasks.push(tokio::spawn(run_dispatcher(
            hub.clone(),
            hub.publisher()?,
            event_receiver,
            persist_sender,
        )));
        tasks.push(tokio::spawn(bybit_ws::run(
            bybit.ws,
            event_sender,
            Some(target),
        )));
    }
    state.live = hub;
    Ok((state, tasks))
}

/// Publishes every event on its channel and passes it on to the batch writer, in order.
async fn run_dispatcher(
    hub: LiveHub,
    mut publisher: Publisher,
    mut events: mpsc::Receiver<LiveEvent>,
    persist: mpsc::Sender<LiveEvent>,
) {
    let config = hub.config();
    while let Some(event) = events.recv().await {
        let (channel, stream) = match &event {
            LiveEvent::Trade(_) => (&config.channel_ticks, config.stream_ticks.as_deref()),
            LiveEvent::Kline(_) => (&config.channel_klines, config.stream_klines.as_deref()),
        };
        publisher.publish(channel, stream, &event.to_json()).await;
        if persist.send(event).await.is_err() {
            tracing::error!("the live batch writer stopped; live events are no longer stored");
            return;
        }
    }
}
