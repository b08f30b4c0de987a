//! Extractors whose rejections are JSON errors with a `detail` naming the field and what it
//! accepts, in place of axum's plain-text defaults, and the parsing of request datetimes.
//!
//! A body or parameter that does not validate is a 422. A body over the route's
//! `DefaultBodyLimit` (axum's 2 MiB unless the router sets another) is a 413.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, echoed, shorten_quoted};

/// Prefix of the text of axum's JSON data rejection, before the field path and the message.
const JSON_DATA_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";
/// Prefix of the text of axum's JSON syntax rejection.
const JSON_SYNTAX_PREFIX: &str = "Failed to parse the request body as JSON: ";
/// Prefix of the text of axum's query rejection.
const QUERY_PREFIX: &str = "Failed to deserialize query string: ";

/// A JSON body; a malformed body or a field of the wrong type is a 422.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::unprocessable(
            "the request body must be JSON with the header Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(error) => {
            let text = error.body_text();
            let message = text.strip_prefix(JSON_SYNTAX_PREFIX).unwrap_or(&text);
            ApiError::unprocessable(format!("malformed JSON body: {}", shorten_quoted(message)))
        }
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            let message = text.strip_prefix(JSON_DATA_PREFIX).unwrap_or(&text);
            ApiError::unprocessable(format!("invalid JSON body: {}", shorten_quoted(message)))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail:
                "the request body is larger than the limit of this route: 2 MiB on most routes, \
                     64 MiB on POST /api/v1/backtests/{id}/results"
                    .to_string(),
        },
        other => ApiError::unprocessable(format!("unreadable JSON body: {}", other.body_text())),
    }
}

/// Query parameters; a missing, unknown or invalid parameter is a 422 that names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(&rejection, &parts.uri)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection, uri: &axum::http::Uri) -> ApiError {
    let text = rejection.body_text();
    let text = shorten_quoted(text.strip_prefix(QUERY_PREFIX).unwrap_or(&text));
    let text = text.as_str();
    // serde_path_to_error writes `field: message` when the error has a field path.
    let (field, message) = match text.split_once(": ") {
        Some((field, message))
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
        {
            (Some(field), message)
        }
        _ => (None, text),
    };
    let Some(field) = field else {
        return ApiError::unprocessable(describe_fieldless_query_error(message));
    };
    let value = query_value(uri, field);
    let expected = expected_for(message, value.as_deref());
    let quoted = value.map_or_else(String::new, |value| format!(" {}", echoed(&value)));
    ApiError::unprocessable(format!(
        "invalid query parameter {field}{quoted}: {expected}"
    ))
}

/// Rewrites serde's messages that name no field path, such as `missing field `symbol``.
fn describe_fieldless_query_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing query parameter {}", rest.replace('`', ""));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let rest = rest.replace('`', "");
        return match rest.split_once(", expected one of ") {
            Some((field, accepted)) => {
                format!("unknown query parameter {field}; accepted parameters: {accepted}")
            }
            None => match rest.split_once(", there are no fields") {
                Some((field, _)) => {
                    format!("unknown query parameter {field}; this route takes none")
                }
                None => format!("unknown query parameter {rest}"),
            },
        };
    }
    if let Some(rest) = message.strip_prefix("duplicate field ") {
        return format!(
            "query parameter {} is given more than once; give it once",
            rest.replace('`', "")
        );
    }
    format!("invalid query string: {message}")
}

/// Returns the first value of query parameter `field`, decoded.
fn query_value(uri: &axum::http::Uri, field: &str) -> Option<String> {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .0
        .into_iter()
        .find(|(name, _)| name == field)
        .map(|(_, value)| value)
}

/// Turns a parse message of the standard library or serde into what the field accepts.
fn expected_for(message: &str, value: Option<&str>) -> String {
    let negative = value.is_some_and(|value| {
        value.starts_with('-') && value.len() > 1 && value[1..].chars().all(|c| c.is_ascii_digit())
    });
    match message {
        "invalid digit found in string" if negative => {
            "expected an integer of 0 or more".to_string()
        }
        "invalid digit found in string" => "expected an integer".to_string(),
        "cannot parse integer from empty string" => "expected an integer, got nothing".to_string(),
        "number too large to fit in target type" | "number too small to fit in target type" => {
            "the integer is out of range; expected a value that fits in 64 bits and the \
             parameter's documented bounds"
                .to_string()
        }
        "invalid float literal" => "expected a number".to_string(),
        "provided string was not `true` or `false`" => "expected true or false".to_string(),
        other => other.replace('`', ""),
    }
}

/// Path parameters; a value of the wrong type, such as an id that is not an integer, is a
/// 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                let names = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|params| {
                        params
                            .iter()
                            .map(|(name, value)| (name.to_string(), value.to_string()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                Err(path_rejection(&rejection, &names))
            }
        }
    }
}

fn path_rejection(rejection: &PathRejection, params: &[(String, String)]) -> ApiError {
    let PathRejection::FailedToDeserializePathParams(error) = rejection else {
        return ApiError::internal_message("path parameters", &rejection.body_text());
    };
    match error.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => invalid_path_value(key, value, expected_type),
        ErrorKind::ParseError {
            value,
            expected_type,
        } => {
            let key = params
                .iter()
                .find(|(_, raw)| raw == value)
                .map_or("value", |(name, _)| name.as_str());
            invalid_path_value(key, value, expected_type)
        }
        ErrorKind::InvalidUtf8InPathParam { key } => ApiError::unprocessable(format!(
            "invalid path parameter {key}: the value is not valid UTF-8"
        )),
        _ => ApiError::unprocessable(format!("invalid path: {}", error.body_text())),
    }
}

fn invalid_path_value(key: &str, value: &str, expected_type: &str) -> ApiError {
    let expected = match expected_type {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "an integer of 0 or more",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        other => other,
    };
    ApiError::unprocessable(format!(
        "invalid path parameter {key} {}: expected {expected}",
        echoed(value)
    ))
}

/// Parses the datetime of request field `field`: ISO 8601 with `Z` or an offset, without
/// offset (read as UTC), or a date. A 422 names the field and the accepted forms. When a
/// query string turned an offset's `+` into a space, its detail gives the fix: `%2B`.
///
/// # Errors
///
/// 422 when `text` is no accepted form.
pub fn parse_datetime(field: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    bst_engine::time::parse_utc_checked(text).map_err(|error| {
        ApiError::unprocessable(format!("invalid {field} {}: {error}", echoed(text)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_integers_get_their_own_hint() {
        assert_eq!(
            expected_for("invalid digit found in string", Some("-5")),
            "expected an integer of 0 or more"
        );
        assert_eq!(
            expected_for("invalid digit found in string", Some("ten")),
            "expected an integer"
        );
    }

    #[test]
    fn fieldless_errors_name_the_parameter() {
        assert_eq!(
            describe_fieldless_query_error(
                "unknown field `foo`, expected one of `limit`, `offset`"
            ),
            "unknown query parameter foo; accepted parameters: limit, offset"
        );
        assert_eq!(
            describe_fieldless_query_error("missing field `symbol`"),
            "missing query parameter symbol"
        );
    }

    #[test]
    fn datetime_detail_names_field_and_encoding() {
        let error = parse_datetime("now", "2025-05-01T00:00:00 02:00").unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.detail.starts_with("invalid now "), "{}", error.detail);
        assert!(error.detail.contains("%2B"), "{}", error.detail);
        let parsed = parse_datetime("now", "2025-05-01T02:00:00+02:00").unwrap();
        assert_eq!(parsed.to_rfc3339(), "2025-05-01T00:00:00+00:00");
    }
}
