//! `GET /api/v1/live`: a WebSocket that relays one bus channel or pattern to the client.
//!
//! The first text frame confirms the subscription:
//! `{"status":"subscribed","channel":"bybit:ticks","pattern":false,"url":"redis://host:6379/0"}`
//! (`"url": null` on the in-process bus). Each bus message follows as one text frame. A
//! client that falls more than the buffer behind, or that does not take a frame within
//! [`SEND_TIMEOUT`], is closed with code 1008 and a reason. A lost Redis connection closes
//! clients with code 1011 and a reason; they may reconnect once Redis is back.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::live::bus::{Delivery, Subscription};
use crate::live::config::DEFAULT_CHANNEL_TICKS;
use crate::state::AppState;

/// Maximum time one frame may take to reach the client's socket.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum length of a channel or pattern, in bytes.
const MAX_CHANNEL_BYTES: usize = 256;
/// WebSocket close codes (RFC 6455, section 7.4.1).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Query parameters of `/live`.
#[derive(Debug, Deserialize)]
pub(crate) struct LiveParams {
    channel: Option<String>,
    pattern: Option<String>,
    token: Option<String>,
}

/// Checks the token and the parameters, then upgrades to a WebSocket.
pub(crate) async fn live(
    State(state): State<AppState>,
    Query(params): Query<LiveParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let keys = &state.live.config().api_keys;
    if !keys.is_empty() {
        let token = params.token.as_deref().unwrap_or("");
        if !keys
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, token))
        {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                detail: "missing or invalid token: pass one of BST_API_KEYS as ?token=".to_string(),
            }
            .into_response();
        }
    }
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
    if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(1), send).await {
        tracing::debug!(%error, "failed to send a close frame to a /live client");
    }
}

/// Compares two strings in time that depends only on their lengths, not on where they differ.
fn constant_time_eq(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    let mut difference = expected.len() ^ given.len();
    for (index, &byte) in expected.iter().enumerate() {
        let other = given.get(index).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("key-1", "key-1"));
        assert!(!constant_time_eq("key-1", "key-2"));
        assert!(!constant_time_eq("key-1", "key-1x"));
        assert!(!constant_time_eq("key-1", ""));
        assert!(!constant_time_eq("", "x"));
    }
}
