//! Settings of the live stream, read from environment variables.

use std::path::Path;
use std::time::Duration;

use bst_ingest::Timeframe;
use bst_ingest::bybit_ws::persist::PersistConfig;
use bst_ingest::bybit_ws::{DEFAULT_WS_URL, WsConfig};

use crate::live::LiveError;

/// Default channel of normalized trades.
pub const DEFAULT_CHANNEL_TICKS: &str = "bybit:ticks";
/// Default channel of normalized klines.
pub const DEFAULT_CHANNEL_KLINES: &str = "bybit:klines";
/// Default approximate length cap of the Redis streams (`XADD ... MAXLEN ~ N`).
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Default number of messages buffered per `/live` client before it counts as too slow.
pub const DEFAULT_CLIENT_BUFFER: usize = 1_024;

/// Settings of the bus, the `/live` route and the optional Bybit stream client.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// `REDIS_URL`; the in-process bus is used when unset.
    pub redis_url: Option<String>,
    /// `REDIS_CHANNEL_TICKS`.
    pub channel_ticks: String,
    /// `REDIS_CHANNEL_KLINES`.
    pub channel_klines: String,
    /// `REDIS_STREAM_TICKS`: a Redis stream that also receives every trade, when set.
    pub stream_ticks: Option<String>,
    /// `REDIS_STREAM_KLINES`: a Redis stream that also receives every kline update, when set.
    pub stream_klines: Option<String>,
    /// `REDIS_STREAM_MAXLEN`.
    pub stream_maxlen: u64,
    /// `BST_LIVE_CLIENT_BUFFER`: messages buffered per client before it is dropped.
    pub client_buffer: usize,
    /// `BST_API_KEYS`: comma-separated keys; when any is set, `/live` requires `?token=`.
    pub api_keys: Vec<String>,
    /// The Bybit stream client, when `BYBIT_WS_ENABLED=1`.
    pub bybit: Option<BybitStreamConfig>,
}

/// Settings of the Bybit stream client and of the writes of its events.
#[derive(Debug, Clone)]
pub struct BybitStreamConfig {
    pub ws: WsConfig,
    /// `BYBIT_REST_URL`: base URL of the REST API that backfills missed bars.
    pub rest_url: String,
    pub persist: PersistConfig,
}

impl LiveConfig {
    /// Returns the settings for the in-process bus, with no Bybit stream client.
    pub fn in_process() -> Self {
        Self {
            redis_url: None,
            channel_ticks: DEFAULT_CHANNEL_TICKS.to_string(),
            channel_klines: DEFAULT_CHANNEL_KLINES.to_string(),
            stream_ticks: None,
            stream_klines: None,
            stream_maxlen: DEFAULT_STREAM_MAXLEN,
            client_buffer: DEFAULT_CLIENT_BUFFER,
            api_keys: Vec::new(),
            bybit: None,
        }
    }

    /// Reads the settings from the environment; `data_dir` is where stream events are stored.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::Config`] naming the variable with an invalid value.
    pub fn from_env(data_dir: &Path) -> Result<Self, LiveError> {
        Self::from_lookup(data_dir, |name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, which returns a variable's value.
    ///
    /// # Errors
    ///
    /// Returns [`LiveError::Config`] naming the variable with an invalid value.
    pub fn from_lookup(
        data_dir: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LiveError> {
        let text = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::in_process();
        config.redis_url = text("REDIS_URL");
        if let Some(channel) = text("REDIS_CHANNEL_TICKS") {
            config.channel_ticks = channel;
        }
        if let Some(channel) = text("REDIS_CHANNEL_KLINES") {
            config.channel_klines = channel;
        }
        config.stream_ticks = text("REDIS_STREAM_TICKS");
        config.stream_klines = text("REDIS_STREAM_KLINES");
        if let Some(value) = text("REDIS_STREAM_MAXLEN") {
            config.stream_maxlen = parse_number("REDIS_STREAM_MAXLEN", &value, 1)?;
        }
        if let Some(value) = text("BST_LIVE_CLIENT_BUFFER") {
            config.client_buffer = parse_number("BST_LIVE_CLIENT_BUFFER", &value, 1)?;
        }
        config.api_keys = text("BST_API_KEYS")
            .map(|keys| split_list(&keys))
            .unwrap_or_default();
        if text("BYBIT_WS_ENABLED").is_some_and(|value| is_enabled(&value)) {
            config.bybit = Some(bybit_config(data_dir, &text)?);
        }
        Ok(config)
    }
}

fn bybit_config(
    data_dir: &Path,
    text: &impl Fn(&str) -> Option<String>,
) -> Result<BybitStreamConfig, LiveError> {
    let symbols = text("BYBIT_WS_SYMBOLS")
        .map(|symbols| split_list(&symbols))
        .unwrap_or_default();
    if symbols.is_empty() {
        return Err(LiveError::Config {
            variable: "BYBIT_WS_SYMBOLS",
            message: "missing: set it to comma-separated symbols such as BTCUSDT,ETHUSDT \
                      when BYBIT_WS_ENABLED=1"
                .to_string(),
        });
    }
    let intervals = text("BYBIT_WS_INTERVALS").unwrap_or_else(|| "1".to_string());
    let timeframes = split_list(&intervals)
        .iter()
        .map(|code| {
            code.parse::<Timeframe>()
                .map_err(|error| LiveError::Config {
                    variable: "BYBIT_WS_INTERVALS",
                    message: error.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let url = text("BYBIT_WS_URL").unwrap_or_else(|| DEFAULT_WS_URL.to_string());
    let mut ws = WsConfig::new(url, symbols, timeframes);
    if let Some(value) = text("WS_RECONNECT_DELAY_SEC") {
        ws.reconnect_delay = parse_seconds("WS_RECONNECT_DELAY_SEC", &value)?;
    }
    if let Some(value) = text("WS_RECONNECT_DELAY_MAX_SEC") {
        ws.reconnect_delay_max = parse_seconds("WS_RECONNECT_DELAY_MAX_SEC", &value)?;
    }
    if let Some(value) = text("BYBIT_WS_PING_SEC") {
        ws.ping_interval = parse_seconds("BYBIT_WS_PING_SEC", &value)?;
    }
    if let Some(value) = text("BYBIT_WS_SILENCE_SEC") {
        ws.silence_timeout = parse_seconds("BYBIT_WS_SILENCE_SEC", &value)?;
    }
    ws.validate().map_err(|error| LiveError::Config {
        variable: "BYBIT_WS_*",
        message: error.to_string(),
    })?;

    let mut persist = PersistConfig {
        data_dir: data_dir.to_path_buf(),
        category: ws.category,
        flush_rows: 1_000,
        flush_interval: Duration::from_secs(5),
    };
    if let Some(value) = text("BST_LIVE_FLUSH_ROWS") {
        persist.flush_rows = parse_number("BST_LIVE_FLUSH_ROWS", &value, 1)?;
    }
    if let Some(value) = text("BST_LIVE_FLUSH_SEC") {
        persist.flush_interval = parse_seconds("BST_LIVE_FLUSH_SEC", &value)?;
    }
    let rest_url = text(bst_ingest::bybit_rest::BASE_URL_ENV)
        .unwrap_or_else(|| bst_ingest::bybit_rest::DEFAULT_BASE_URL.to_string());
    Ok(BybitStreamConfig {
        ws,
        rest_url,
        persist,
    })
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn is_enabled(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn parse_number<T: std::str::FromStr + PartialOrd>(
    variable: &'static str,
    value: &str,
    minimum: T,
) -> Result<T, LiveError> {
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|number| *number >= minimum)
        .ok_or_else(|| LiveError::Config {
            variable,
            message: format!("invalid value {value:?}: expected a positive integer"),
        })
}

fn parse_seconds(variable: &'static str, value: &str) -> Result<Duration, LiveError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds < 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| LiveError::Config {
            variable,
            message: format!("invalid value {value:?}: expected seconds above 0, such as 1.5"),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<LiveConfig, LiveError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        LiveConfig::from_lookup(Path::new("data"), |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_use_in_process_bus() {
        let config = config(&[]).unwrap();
        assert!(config.redis_url.is_none());
        assert_eq!(config.channel_ticks, "bybit:ticks");
        assert_eq!(config.channel_klines, "bybit:klines");
        assert!(config.bybit.is_none());
    }

    #[test]
    fn bybit_settings_are_read() {
        let config = config(&[
            ("BYBIT_WS_ENABLED", "1"),
            ("BYBIT_WS_SYMBOLS", "BTCUSDT, ETHUSDT"),
            ("WS_RECONNECT_DELAY_SEC", "0.5"),
            ("BST_API_KEYS", "a,b"),
        ])
        .unwrap();
        let bybit = config.bybit.unwrap();
        assert_eq!(bybit.ws.url, DEFAULT_WS_URL);
        assert_eq!(bybit.ws.symbols, ["BTCUSDT", "ETHUSDT"]);
        assert_eq!(bybit.ws.timeframes, [Timeframe::Minutes(1)]);
        assert_eq!(bybit.ws.reconnect_delay, Duration::from_millis(500));
        assert_eq!(bybit.ws.reconnect_delay_max, Duration::from_secs(15));
        assert_eq!(config.api_keys, ["a", "b"]);
    }

    #[test]
    fn missing_symbols_name_variable() {
        let error = config(&[("BYBIT_WS_ENABLED", "1")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("BYBIT_WS_SYMBOLS"), "{error}");
    }

    #[test]
    fn bad_delay_names_variable() {
        let error = config(&[
            ("BYBIT_WS_ENABLED", "1"),
            ("BYBIT_WS_SYMBOLS", "BTCUSDT"),
            ("WS_RECONNECT_DELAY_MAX_SEC", "soon"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("WS_RECONNECT_DELAY_MAX_SEC"), "{error}");
    }
}
