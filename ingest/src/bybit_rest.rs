//! A client of Bybit's public v5 REST API for `GET /v5/market/kline`, with retries.
//!
//! Bybit's kline paging: `start` and `end` are inclusive bounds in epoch milliseconds, rows
//! come newest first, and a reply has at most `limit` rows (default 200, max 1000). With
//! both bounds set, Bybit returns the newest `limit` bars inside `[start, end]`, so a caller
//! pages backwards by setting the next `end` to the oldest open time received minus 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

use crate::layout::{Category, Timeframe, validate_symbol};
use crate::rest_body::{KlineBody, parse_kline_body};
use crate::{Error, Result};

/// Base URL of Bybit's mainnet REST API.
pub const DEFAULT_BASE_URL: &str = "https://api.bybit.com";

/// Environment variable that overrides [`DEFAULT_BASE_URL`] in the command-line tool.
pub const BASE_URL_ENV: &str = "BYBIT_REST_URL";

/// Path of the kline endpoint below the base URL.
pub const KLINE_PATH: &str = "/v5/market/kline";

/// Maximum `limit` that Bybit accepts for klines.
pub const MAX_KLINE_LIMIT: u32 = 1000;

/// Bybit's `retCode` for "too many visits" (rate limit exceeded).
pub const RATE_LIMIT_RET_CODE: i64 = 10006;

/// Response header with the epoch milliseconds at which Bybit's rate limit window resets.
pub const RATE_LIMIT_RESET_HEADER: &str = "X-Bapi-Limit-Reset-Timestamp";

/// Settings of a [`BybitRestClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Scheme, host and optional port, such as `https://api.bybit.com`.
    pub base_url: String,
    /// Timeout of one request, from sending it to reading the whole body.
    pub request_timeout: Duration,
    /// Attempts per request, the first one included, before giving up on retryable errors.
    pub max_attempts: u32,
    /// Backoff before the first retry, doubled for each further retry.
    pub retry_base_delay: Duration,
    /// Upper bound of any backoff, including a wait for the rate limit reset header.
    pub retry_max_delay: Duration,
    /// `limit` of each page that [`crate::backfill::backfill`] requests, 1 to 1000.
    pub page_limit: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            request_timeout: Duration::from_secs(10),
            max_attempts: 6,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            page_limit: MAX_KLINE_LIMIT,
        }
    }
}

/// Numbers of HTTP requests sent and of retries among them, since the client was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub requests: u64,
    pub retries: u64,
}

/// A Bybit v5 REST client that retries rate limits, 429 and 5xx replies, timeouts and
/// dropped connections with exponential backoff and jitter.
#[derive(Debug)]
pub struct BybitRestClient {
    http: reqwest::Client,
    config: ClientConfig,
    requests: AtomicU64,
    retries: AtomicU64,
    /// State of the xorshift generator of the backoff jitter.
    jitter_state: AtomicU64,
}

/// Outcome of one failed attempt.
enum Failure {
    /// A transient failure worth another attempt, with the rate limit reset time if known.
    Retryable {
        reason: String,
        reset_at_ms: Option<i64>,
    },
    /// A failure that another attempt would repeat.
    Fatal(Error),
}

impl BybitRestClient {
    /// Creates a client.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidValue`] for a base URL that is not `http` or `https`, for zero
    /// `max_attempts` or for a `page_limit` outside 1 to 1000, and [`Error::Http`] when the
    /// HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self> {
        base_url(&config.base_url)?;
        if config.max_attempts == 0 {
            return Err(Error::InvalidValue {
                field: "max_attempts",
                value: "0".to_string(),
                expected: "at least 1",
            });
        }
        check_limit(config.page_limit)?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("bst/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Http {
                url: config.base_url.clone(),
                message: error_chain(&error),
            })?;
        Ok(Self {
            http,
            config,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            jitter_state: AtomicU64::new(clock_seed()),
        })
    }

    /// Returns the settings of this client.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Returns the requests sent and the retries made so far.
    pub fn counts(&self) -> RequestCounts {
        RequestCounts {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Fetches one page of klines with open times in `[start_ms, end_ms]` (both inclusive, as
    /// Bybit reads them) and returns its closed bars, parsed by [`parse_kline_body`].
    ///
    /// Retries HTTP 429 and 5xx, timeouts, failed or dropped connections and `retCode` 10006
    /// up to `max_attempts` in all. A rate limit reply that carries
    /// [`RATE_LIMIT_RESET_HEADER`] waits until that time, capped by `retry_max_delay`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::RetriesExhausted`] naming the URL and the last failure when every
    /// attempt failed, [`Error::Bybit`] at once for any other non-zero `retCode`,
    /// [`Error::Http`] for other HTTP error statuses, and the errors of
    /// [`parse_kline_body`]. Returns [`Error::InvalidBody`] when the reply is for another
    /// symbol or category, and [`Error::InvalidValue`] for an invalid symbol or limit.
    pub async fn fetch_klines(
        &self,
        category: Category,
        symbol: &str,
        timeframe: Timeframe,
        start_ms: i64,
        end_ms: i64,
        limit: u32,
    ) -> Result<KlineBody> {
        validate_symbol(symbol)?;
        check_limit(limit)?;
        let url = kline_url(
            &self.config.base_url,
            category,
            symbol,
            timeframe,
            start_ms,
            end_ms,
            limit,
        )?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (reason, reset_at_ms) = match self.request_once(&url, timeframe).await {
                Ok(body) => return check_series(&url, body, category, symbol),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retryable {
                    reason,
                    reset_at_ms,
                }) => (reason, reset_at_ms),
            };
            if attempt >= self.config.max_attempts {
                tracing::warn!(url = %url, attempts = attempt, reason = %reason, "giving up on Bybit request");
                return Err(Error::RetriesExhausted {
                    url: url.to_string(),
                    attempts: attempt,
                    last_failure: reason,
                });
            }
            let delay = self.retry_delay(attempt, reset_at_ms);
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                url = %url,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                reason = %reason,
                "retrying Bybit request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn request_once(
        &self,
        url: &Url,
        timeframe: Timeframe,
    ) -> std::result::Result<KlineBody, Failure> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|error| transport_failure(url, &error))?;
        let status = response.status();
        let reset_at_ms = reset_timestamp_ms(response.headers());
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Failure::Retryable {
                reason: format!("HTTP {status}"),
                reset_at_ms,
            });
        }
        let text = response
            .text()
            .await
            .map_err(|error| transport_failure(url, &error))?;
        if !status.is_success() {
            return Err(Failure::Fatal(Error::Http {
                url: url.to_string(),
                message: format!("HTTP {status}: {}", text_prefix(&text)),
            }));
        }

        match parse_kline_body(&text, timeframe) {
            Ok(body) => Ok(body),
            Err(Error::Bybit {
                code: RATE_LIMIT_RET_CODE,
                message,
            }) => Err(Failure::Retryable {
                reason: format!("retCode {RATE_LIMIT_RET_CODE}: {message}"),
                reset_at_ms,
            }),
            Err(error) => Err(Failure::Fatal(error)),
        }
    }

    /// Returns the backoff before retry number `attempt` (1 for the first retry): the
    /// exponential delay with equal jitter (half fixed, half random), raised to the rate
    /// limit reset time when known, and capped by `retry_max_delay`.
    fn retry_delay(&self, attempt: u32, reset_at_ms: Option<i64>) -> Duration {
        let max_delay = self.config.retry_max_delay;
        let exponent = attempt.saturating_sub(1).min(30);
        let exponential = self
            .config
            .retry_base_delay
            .saturating_mul(1_u32 << exponent)
            .min(max_delay);
        let half = exponential / 2;
        let mut delay = half + half.mul_f64(self.next_jitter_fraction());
        if let Some(reset_at_ms) = reset_at_ms {
            let until_reset_ms = reset_at_ms.saturating_sub(now_ms());
            if let Ok(until_reset_ms) = u64::try_from(until_reset_ms) {
                delay = delay.max(Duration::from_millis(until_reset_ms));
            }
        }
        delay.min(max_delay)
    }

    /// Returns a pseudo-random number in `[0, 1)` from a xorshift64 generator. Concurrent
    /// callers may draw the same number, which is harmless for jitter.
    fn next_jitter_fraction(&self) -> f64 {
        let mut state = self.jitter_state.load(Ordering::Relaxed);
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.jitter_state.store(state, Ordering::Relaxed);
        // The top 53 bits fill an f64 mantissa exactly.
        (state >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// Builds the kline URL with its query, such as
/// `https://api.bybit.com/v5/market/kline?category=linear&symbol=BTCUSDT&interval=1&...`.
fn kline_url(
    base: &str,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    start_ms: i64,
    end_ms: i64,
    limit: u32,
) -> Result<Url> {
    let mut url = base_url(base)?;
    url.set_path(KLINE_PATH);
    url.query_pairs_mut()
        .append_pair("category", category.as_str())
        .append_pair("symbol", symbol)
        .append_pair("interval", &timeframe.code())
        .append_pair("start", &start_ms.to_string())
        .append_pair("end", &end_ms.to_string())
        .append_pair("limit", &limit.to_string());
    Ok(url)
}

fn base_url(text: &str) -> Result<Url> {
    let invalid = || Error::InvalidValue {
        field: "base URL",
        value: text.to_string(),
        expected: "an http or https URL such as https://api.bybit.com",
    };
    let url = Url::parse(text).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid());
    }
    Ok(url)
}

fn check_limit(limit: u32) -> Result<()> {
    if (1..=MAX_KLINE_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            field: "limit",
            value: limit.to_string(),
            expected: "1 to 1000",
        })
    }
}

/// Rejects a reply for another series than the one requested.
fn check_series(url: &Url, body: KlineBody, category: Category, symbol: &str) -> Result<KlineBody> {
    if body.category != category || body.symbol != symbol {
        return Err(Error::InvalidBody {
            message: format!(
                "{url} returned klines of {} {}, expected {category} {symbol}",
                body.category, body.symbol
            ),
        });
    }
    Ok(body)
}

/// Classifies an error of sending a request or reading its body. Every transport error is
/// retryable except one in building the request.
fn transport_failure(url: &Url, error: &reqwest::Error) -> Failure {
    if error.is_builder() {
        return Failure::Fatal(Error::Http {
            url: url.to_string(),
            message: error_chain(error),
        });
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "connection error"
    };
    Failure::Retryable {
        reason: format!("{kind}: {}", error_chain(error)),
        reset_at_ms: None,
    }
}

/// Joins an error's message with the messages of its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn reset_timestamp_ms(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(RATE_LIMIT_RESET_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Returns at most the first 200 characters of a response body, for error messages.
fn text_prefix(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Returns a non-zero xorshift seed from the clock's nanoseconds.
fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    (nanos as u64) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_delay_ms: u64, max_delay_ms: u64) -> BybitRestClient {
        BybitRestClient::new(ClientConfig {
            retry_base_delay: Duration::from_millis(base_delay_ms),
            retry_max_delay: Duration::from_millis(max_delay_ms),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn kline_url_has_bybit_query() {
        let url = kline_url(
            "http://127.0.0.1:9/",
            Category::Spot,
            "BTCUSDT",
            Timeframe::Day,
            1,
            2,
            1000,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v5/market/kline?category=spot&symbol=BTCUSDT&interval=D&\
             start=1&end=2&limit=1000"
        );
    }

    #[test]
    fn retry_delay_grows_within_bounds() {
        let client = client(100, 1_000);
        for attempt in 1..=8 {
            let full = Duration::from_millis((100_u64 << (attempt - 1)).min(1_000));
            let delay = client.retry_delay(attempt, None);
            assert!(delay >= full / 2, "attempt {attempt}: {delay:?}");
            assert!(delay <= full, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn retry_delay_waits_for_reset_capped() {
        let client = client(1, 2_000);
        let delay = client.retry_delay(1, Some(now_ms() + 1_000));
        assert!(delay >= Duration::from_millis(900), "{delay:?}");
        let capped = client.retry_delay(1, Some(now_ms() + 60_000));
        assert_eq!(capped, Duration::from_millis(2_000));
    }

    #[test]
    fn config_is_validated() {
        let bad_url = ClientConfig {
            base_url: "ftp://example".to_string(),
            ..ClientConfig::default()
        };
        assert!(BybitRestClient::new(bad_url).is_err());
        let bad_limit = ClientConfig {
            page_limit: 1001,
            ..ClientConfig::default()
        };
        assert!(BybitRestClient::new(bad_limit).is_err());
    }
}
