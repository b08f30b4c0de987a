//! API keys of the REST API, the `/api/v1/live` WebSocket and the Flight port, and the CORS
//! origins of the REST API.
//!
//! With keys configured (`BST_API_KEYS`), every REST request but `GET /healthz` needs the
//! header `Authorization: Bearer <key>`, and the WebSocket may pass `?token=<key>` instead,
//! because browsers cannot set headers on it. Other requests get 401 with a `detail`. Keys
//! are compared in constant time and never logged. `/healthz` stays open so that load
//! balancers and orchestrators can probe the process without a key.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Route template of the health probe, which needs no key.
pub(crate) const HEALTH_ROUTE: &str = "/healthz";

/// Route template of the WebSocket, which also accepts the key as `?token=`.
pub(crate) const LIVE_ROUTE: &str = "/api/v1/live";

/// The accepted API keys. Its `Debug` output shows only how many there are.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

impl ApiKeys {
    /// Parses a comma-separated key list, such as the value of `BST_API_KEYS`. Whitespace
    /// around keys is dropped; a list without any key returns `None`.
    pub fn parse(list: &str) -> Option<Self> {
        let keys: Vec<Vec<u8>> = list
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| key.as_bytes().to_vec())
            .collect();
        (!keys.is_empty()).then(|| Self {
            keys: Arc::new(keys),
        })
    }

    /// Returns true when `candidate` equals one of the keys. Every key is compared, each in
    /// constant time, so the time taken does not depend on which key matched.
    pub fn contains(&self, candidate: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for key in self.keys.iter() {
            found |= key.as_slice().ct_eq(candidate);
        }
        found.into()
    }
}

/// An origin that browsers may call the API from, a value of `BST_CORS_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(pub HeaderValue);

impl CorsOrigin {
    /// Parses `*` (any origin) or `SCHEME://HOST[:PORT]` with scheme http or https and no
    /// path, as browsers send it in the `Origin` header.
    ///
    /// # Errors
    ///
    /// A message naming the value and the accepted form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let invalid = || {
            format!(
                "invalid CORS origin {text:?}: expected * or SCHEME://HOST[:PORT] such as \
                 https://app.example.com, with scheme http or https and no path"
            )
        };
        let host = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"));
        let valid = text == "*"
            || host.is_some_and(|host| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            });
        if !valid {
            return Err(invalid());
        }
        HeaderValue::from_str(text).map(Self).map_err(|_| invalid())
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header. The scheme name is
/// case-insensitive (RFC 7235, section 2.1).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The `token` query parameter of the WebSocket route.
#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Middleware that rejects a request without a valid key with 401, when keys are configured.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(keys) = &state.api_keys else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if route == Some(HEALTH_ROUTE) {
        return next.run(request).await;
    }
    let accepts_token = route == Some(LIVE_ROUTE);
    let query_token = if accepts_token {
        axum::extract::Query::<TokenQuery>::try_from_uri(request.uri())
            .ok()
            .and_then(|query| query.0.token)
    } else {
        None
    };
    let candidate = bearer_token(request.headers())
        .map(str::to_owned)
        .or(query_token);
    match candidate {
        Some(key) if keys.contains(key.as_bytes()) => next.run(request).await,
        Some(_) => {
            unauthorized("invalid API key: send one of the keys of the server's BST_API_KEYS")
        }
        None if accepts_token => unauthorized(
            "missing API key: send the header \"Authorization: Bearer <key>\" or the query \
             parameter ?token=<key>",
        ),
        None => unauthorized("missing API key: send the header \"Authorization: Bearer <key>\""),
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        detail: detail.to_string(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_match() {
        let keys = ApiKeys::parse(" alpha, beta ,,").unwrap();
        assert!(keys.contains(b"alpha"));
        assert!(keys.contains(b"beta"));
        assert!(!keys.contains(b"alph"));
        assert!(!keys.contains(b"alphax"));
        assert!(!keys.contains(b""));
        assert!(ApiKeys::parse(" , ").is_none());
        assert_eq!(format!("{keys:?}"), "ApiKeys { count: 2 }");
    }

    #[test]
    fn cors_origins_parse() {
        assert!(CorsOrigin::parse("https://app.example.com").is_ok());
        assert!(CorsOrigin::parse("http://localhost:5173").is_ok());
        assert!(CorsOrigin::parse("*").is_ok());
        for text in [
            "app.example.com",
            "https://",
            "https://a.example/path",
            "ftp://a",
        ] {
            let error = CorsOrigin::parse(text).unwrap_err();
            assert!(error.contains(text), "{error}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer  key-1 ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("key-1"));
        headers.insert(header::AUTHORIZATION, "Basic a2V5".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
