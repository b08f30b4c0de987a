//! Extractors whose rejections are 422 responses with a `detail` naming the problem, in place
//! of axum's plain-text defaults.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::unprocessable(
            "the request body must be JSON with the header Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::unprocessable(format!("malformed JSON body: {}", error.body_text()))
        }
        JsonRejection::JsonDataError(error) => {
            ApiError::unprocessable(format!("invalid JSON body: {}", error.body_text()))
        }
        other if other.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError {
            status: other.status(),
            detail: "the request body is larger than the 2 MB limit".to_string(),
        },
        other => ApiError::unprocessable(format!("unreadable JSON body: {}", other.body_text())),
    }
}

/// Query parameters; a missing or invalid parameter is a 422 that names it.
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
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::unprocessable(format!(
        "invalid query parameters: {}",
        rejection.body_text()
    ))
}

/// Path parameters; an id that is not an integer is a 422.
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
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::unprocessable(format!("invalid path: {}", rejection.body_text()))
}
