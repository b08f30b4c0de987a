//! `GET /api/v1/live`: a WebSocket that relays one bus channel or pattern to the client.
//!
//! The first text frame confirms the subscription:
//! `{"status":"subscribed","channel":"bybit:ticks","pattern":false,"url":"redis://host:6379/0"}`
//! (`"url": null` on the in-process bus). Each bus message follows as one text frame. A
//! client that falls more than the buffer behind, or that does not take a frame within
//! [`SEND_TIMEOUT`], is closed with code 1008 and a reason. A lost Redis connection closes
//! clients with code 1011 and a reason; they may reconnect once Redis is back.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::live::bus::{Delivery, Subscription};
use crate::live::config::DEFAULT_CHANNEL_TICKS;
use crate::state::AppState;

/// Maximum time one frame may take to reach the client's socket.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time a close frame may wait behind frames the client has not read yet. Nothing else
/// is queued meanwhile, so a client that stopped reading keeps no more than its unsent frames.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Maximum length of a channel or pattern, in bytes.
const MAX_CHANNEL_BYTES: usize = 256;
/// WebSocket close codes (RFC 6455, section 7.4.1).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Query parameters of `/live`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveParams {
    /// Bus channel to relay, or a glob pattern when `pattern` is 1. Default: `bybit:ticks`.
    channel: Option<String>,
    /// `1` (or `true`) subscribes to a pattern, `0` (or `false`, the default) to one channel.
    pattern: Option<String>,
}

/// Checks the parameters, then upgrades to a WebSocket. The API key, when the server
/// requires one, was checked before this handler runs, from the header or `?token=`.
#[utoipa::path(
    get,
    path = "/api/v1/live",
    tag = "live",
    params(
        LiveParams,
        ("token" = Option<String>, Query, description = "An API key, for WebSocket clients \
            that cannot send the header `Authorization: Bearer <key>`"),
    ),
    description = "Upgrades to a WebSocket. The first text frame confirms the subscription: \
        `{\"status\":\"subscribed\",\"channel\":\"bybit:ticks\",\"pattern\":false,\"url\":null}`; \
        each bus message follows as one text frame. Normalized events have `v`, `type` \
        (`trade` or `kline`), `source`, `symbol`, `ts_ms` or `open_time` in epoch ms, and \
        prices and quantities as numbers.",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 405, description = "Not a GET request", body = crate::error::ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid channel or pattern", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn live(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LiveParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError {
                status: rejection.status(),
                detail: format!(
                    "not a WebSocket upgrade request ({}); connect with a WebSocket client \
                     to ws://HOST:PORT/api/v1/live",
                    rejection.body_text()
                ),
            }
            .into_response();
        }
    };
    let channel = params
        .channel
        .unwrap_or_else(|| DEFAULT_CHANNEL_TICKS.to_string());
    if channel.is_empty() || channel.len() > MAX_CHANNEL_BYTES {
        return ApiError::unprocessable(format!(
            "invalid channel {channel:?}: expected 1 to {MAX_CHANNEL_BYTES} bytes"
        ))
        .into_response();
    }
    let pattern = match params.pattern.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return ApiError::unprocessable(format!(
                "invalid pattern {other:?}: expected 1 (pattern subscription) or 0"
            ))
            .into_response();
        }
    };
    upgrade.on_upgrade(move |socket| relay(state, socket, channel, pattern))
}

async fn relay(state: AppState, mut socket: WebSocket, channel: String, pattern: bool) {
    let hub = state.live;
    let mut subscription = match hub.bus().subscribe(&channel, pattern).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(%error, channel, pattern, "closing a /live client: subscription failed");
            close(&mut socket, CLOSE_INTERNAL_ERROR, &error.to_string()).await;
            return;
        }
    };
    let confirmation = serde_json::json!({
        "status": "subscribed",
        "channel": channel,
        "pattern": pattern,
        "url": hub.display_url(),
    });
    if send(&mut socket, confirmation.to_string()).await.is_err() {
        return;
    }
    tracing::debug!(channel, pattern, "a /live client subscribed");
    forward(&mut socket, &mut subscription, &channel).await;
}

/// Sends bus messages to the client until either side ends.
async fn forward(socket: &mut WebSocket, subscription: &mut Subscription, channel: &str) {
    loop {
        tokio::select! {
            delivery = subscription.next() => match delivery {
                Delivery::Message(payload) => {
                    if let Err(reason) = send(socket, payload.to_string()).await {
                        tracing::warn!(channel, reason, "closing a slow /live client");
                        close(socket, CLOSE_POLICY, &reason).await;
                        return;
                    }
                }
                Delivery::Lagged(dropped) => {
                    let reason = format!("client too slow: {dropped} messages dropped");
                    tracing::warn!(channel, dropped, "closing a slow /live client");
                    close(socket, CLOSE_POLICY, &reason).await;
                    return;
                }
                Delivery::Closed(reason) => {
                    tracing::info!(channel, reason, "closing a /live client: the bus connection was lost");
                    close(socket, CLOSE_INTERNAL_ERROR, &reason).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // The WebSocket layer replies to pings, and other client frames are ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends one text frame, failing with a reason when the client is gone or too slow.
async fn send(socket: &mut WebSocket, text: String) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("send failed: {error}")),
        Err(_) => Err(format!("client too slow: a frame waited {SEND_TIMEOUT:?}")),
    }
}

/// Sends a close frame; the reason is cut to the 123 bytes that a close frame can carry.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    };
    let send = socket.send(Message::Close(Some(frame)));
    match tokio::time::timeout(CLOSE_TIMEOUT, send).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "failed to send a close frame to a /live client");
        }
        Err(_) => tracing::debug!(
            "timed out after {CLOSE_TIMEOUT:?} sending a close frame to a /live client"
        ),
    }
}
