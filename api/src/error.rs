//! API errors: a status code and a `detail` message, rendered as `{"detail": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Result of a handler.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// An error response. Internal failures are logged once where they are converted and reach
/// the client only as a generic message.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

/// Body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Description of the failure: the field, the value and the fix.
    #[schema(example = "invalid limit 0: expected 1 to 500")]
    pub detail: String,
}

impl ApiError {
    /// 422: the request did not validate.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: detail.into(),
        }
    }

    /// 404: an id in the path or a referenced id does not exist.
    pub fn not_found(entity: &str, id: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            detail: format!("{entity} {id} not found"),
        }
    }

    /// 500 after logging the cause; the client sees no internals.
    pub fn internal(context: &str, error: &dyn std::error::Error) -> Self {
        Self::internal_message(context, &error.to_string())
    }

    /// 500 after logging `message`; the client sees no internals.
    pub fn internal_message(context: &str, message: &str) -> Self {
        tracing::error!(error = message, context, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: "internal error; the server log has the cause".to_string(),
        }
    }
}

/// Maximum length of the part of a request value that a detail echoes, in characters.
pub const MAX_ECHOED_CHARS: usize = 64;

/// Maximum length of a detail, in characters. Details that echo values through [`echoed`]
/// stay far below it, and it bounds the ones that quote a value from a library's message.
pub const MAX_DETAIL_CHARS: usize = 1_024;

/// Quotes a request value for a detail, like `{value:?}`. A value of more than
/// [`MAX_ECHOED_CHARS`] characters is cut to that many, followed by an ellipsis and its
/// length, such as `"aaaa"… (1048576 characters)`.
pub fn echoed(value: &str) -> String {
    let length = value.chars().count();
    if length <= MAX_ECHOED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_ECHOED_CHARS).collect();
    format!("{head:?}… ({length} characters)")
}

/// Shortens each span quoted with `"` or a backtick in a library's message, such as serde's
/// ``unknown variant `...` ``, to [`MAX_ECHOED_CHARS`] characters with an ellipsis and its
/// length. A quote without a closing one is left as it is.
pub fn shorten_quoted(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut shortened = String::with_capacity(message.len().min(MAX_DETAIL_CHARS));
    let mut index = 0;
    while index < chars.len() {
        let quote = chars[index];
        let closing = if quote == '"' || quote == '`' {
            closing_quote(&chars, index + 1, quote)
        } else {
            None
        };
        let Some(end) = closing else {
            shortened.push(quote);
            index += 1;
            continue;
        };
        let inner = &chars[index + 1..end];
        shortened.push(quote);
        if inner.len() > MAX_ECHOED_CHARS {
            let mut head = &inner[..MAX_ECHOED_CHARS];
            // A cut inside an escape such as `\"` would leave a dangling backslash.
            while let [rest @ .., '\\'] = head {
                head = rest;
            }
            shortened.extend(head);
            shortened.push(quote);
            shortened.push_str(&format!("… ({} characters)", inner.len()));
        } else {
            shortened.extend(inner);
            shortened.push(quote);
        }
        index = end + 1;
    }
    shortened
}

/// Returns the index of the quote that closes a span opened before `start`. Inside `"`, a
/// backslash escapes the next character, as in Rust's `{:?}` output.
fn closing_quote(chars: &[char], start: usize, quote: char) -> Option<usize> {
    let mut index = start;
    while index < chars.len() {
        match chars[index] {
            '\\' if quote == '"' => index += 2,
            c if c == quote => return Some(index),
            _ => index += 1,
        }
    }
    None
}

/// Shortens a detail of more than [`MAX_DETAIL_CHARS`] characters to its start and its end,
/// which name the field and the accepted values, around a note of the characters left out.
pub(crate) fn bounded_detail(detail: String) -> String {
    let length = detail.chars().count();
    if length <= MAX_DETAIL_CHARS {
        return detail;
    }
    let kept_end = MAX_DETAIL_CHARS / 4;
    let kept_start = MAX_DETAIL_CHARS - kept_end;
    let start: String = detail.chars().take(kept_start).collect();
    let end: String = detail.chars().skip(length - kept_end).collect();
    format!(
        "{start}… ({} characters left out) …{end}",
        length - kept_start - kept_end
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                detail: bounded_detail(self.detail),
            }),
        )
            .into_response()
    }
}

impl From<bst_query::Error> for ApiError {
    fn from(error: bst_query::Error) -> Self {
        match error {
            bst_query::Error::NotFound { entity, id } => ApiError::not_found(entity, id),
            bst_query::Error::InvalidValue {
                field,
                value,
                expected,
            } => ApiError::unprocessable(format!(
                "invalid {field} {}: expected {expected}",
                echoed(&value)
            )),
            bst_query::Error::InvalidTransition { .. }
            | bst_query::Error::InvalidOptimizationTransition { .. } => ApiError {
                status: StatusCode::CONFLICT,
                detail: error.to_string(),
            },
            other => ApiError::internal("metadata store", &other),
        }
    }
}

impl ApiError {
    /// 422 for an input value that the ingest crate rejected, such as a symbol, with the value
    /// cut by [`echoed`].
    pub fn invalid_input(error: &bst_ingest::Error) -> Self {
        match error {
            bst_ingest::Error::InvalidValue {
                field,
                value,
                expected,
            } => ApiError::unprocessable(format!(
                "invalid {field} {}: expected {expected}",
                echoed(value)
            )),
            other => ApiError::unprocessable(other.to_string()),
        }
    }
}

impl From<bst_engine::Error> for ApiError {
    fn from(error: bst_engine::Error) -> Self {
        if error.is_user_error() {
            ApiError::unprocessable(error.to_string())
        } else {
            ApiError::internal("engine", &error)
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::internal("blocking task", &error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_with_their_length() {
        assert_eq!(echoed("BTCUSDT"), "\"BTCUSDT\"");
        let long = "a".repeat(1_000_000);
        let quoted = echoed(&long);
        assert!(quoted.starts_with(&format!("\"{}\"…", "a".repeat(MAX_ECHOED_CHARS))));
        assert!(quoted.ends_with("(1000000 characters)"), "{quoted}");
    }

    #[test]
    fn long_details_keep_start_and_end() {
        let detail = format!(
            "invalid name {}: expected 1 to 200 characters",
            "x".repeat(5_000)
        );
        let bounded = bounded_detail(detail);
        assert!(
            bounded.chars().count() < MAX_DETAIL_CHARS + 100,
            "{bounded}"
        );
        assert!(bounded.starts_with("invalid name x"), "{bounded}");
        assert!(
            bounded.ends_with(": expected 1 to 200 characters"),
            "{bounded}"
        );
        assert_eq!(bounded_detail("short".to_string()), "short");
    }

    #[test]
    fn quoted_spans_are_shortened() {
        let long = "b".repeat(500);
        let message = format!("unknown variant `{long}`, expected `sma` at line 1 column 9");
        let shortened = shorten_quoted(&message);
        assert!(
            shortened.starts_with(&format!(
                "unknown variant `{}`… (500 characters)",
                &long[..64]
            )),
            "{shortened}"
        );
        assert!(
            shortened.ends_with(", expected `sma` at line 1 column 9"),
            "{shortened}"
        );
        let escaped = format!(
            "invalid type: string \"{}\\\"{long}\", expected f64",
            "c".repeat(10)
        );
        let shortened = shorten_quoted(&escaped);
        assert!(shortened.contains("characters)"), "{shortened}");
        assert!(shortened.ends_with(", expected f64"), "{shortened}");
        assert_eq!(
            shorten_quoted("a \"short\" `one` and a \" stray"),
            "a \"short\" `one` and a \" stray"
        );
    }
}
