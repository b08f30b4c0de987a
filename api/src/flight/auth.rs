//! API keys of the Flight port: a bearer token on every call, exchanged in `Handshake`.
//!
//! With keys configured, every call except `Handshake` needs the metadata
//! `authorization: Bearer <key>`. `Handshake` accepts the key as the password or the user
//! name of `authorization: Basic ...`, or as the payload of the first handshake message. It
//! returns the key as the bearer token, in the `authorization` response header and in the
//! response payload. Keys are compared in constant time by [`ApiKeys`], shared with the REST
//! API, and never logged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

pub use crate::auth::ApiKeys;

/// gRPC path of the Flight `Handshake` method, the one call that needs no bearer token.
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

impl ApiKeys {
    /// Returns the key of a handshake, taken from Basic credentials or the payload, when it
    /// is valid.
    pub fn handshake_key(&self, metadata: &MetadataMap, payload: &[u8]) -> Option<Vec<u8>> {
        let mut candidates = basic_credentials(metadata);
        candidates.push(payload.to_vec());
        candidates
            .into_iter()
            .find(|candidate| !candidate.is_empty() && self.contains(candidate))
    }
}

/// Returns the password and the user name of `authorization: Basic ...`, in that order.
fn basic_credentials(metadata: &MetadataMap) -> Vec<Vec<u8>> {
    let Some(encoded) = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    else {
        return Vec::new();
    };
    let Ok(decoded) = BASE64.decode(encoded.trim()) else {
        return Vec::new();
    };
    let Some(colon) = decoded.iter().position(|byte| *byte == b':') else {
        return vec![decoded];
    };
    let (user, password) = decoded.split_at(colon);
    vec![password[1..].to_vec(), user.to_vec()]
}

/// Marker that the request is a `Handshake` call, set from the HTTP path before the
/// interceptor runs, because a tonic interceptor does not see the path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandshakeCall;

/// Marks `Handshake` requests with [`HandshakeCall`].
pub(crate) fn mark_handshake<B>(mut request: http::Request<B>) -> http::Request<B> {
    if request.uri().path() == HANDSHAKE_PATH {
        request.extensions_mut().insert(HandshakeCall);
    }
    request
}

/// Builds the interceptor that requires a valid bearer token on every call but `Handshake`.
/// Without keys it lets every call through.
pub(crate) fn interceptor(
    keys: Option<ApiKeys>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let Some(keys) = &keys else {
            return Ok(request);
        };
        if request.extensions().get::<HandshakeCall>().is_some() {
            return Ok(request);
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match token {
            Some(token) if keys.contains(token.trim().as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "invalid API key in the authorization header",
            )),
            None => Err(Status::unauthenticated(
                "missing API key: send the metadata \"authorization: Bearer <key>\" or \
                 authenticate with Handshake",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_takes_basic_password_or_payload() {
        let keys = ApiKeys::parse("secret").unwrap();
        let mut metadata = MetadataMap::new();
        let header = format!("Basic {}", BASE64.encode("user:secret"));
        metadata.insert("authorization", header.parse().unwrap());
        assert_eq!(keys.handshake_key(&metadata, b""), Some(b"secret".to_vec()));
        assert_eq!(
            keys.handshake_key(&MetadataMap::new(), b"secret"),
            Some(b"secret".to_vec())
        );
        assert_eq!(keys.handshake_key(&MetadataMap::new(), b"wrong"), None);
    }
}
