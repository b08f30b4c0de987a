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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                detail: self.detail,
            }),
        )
            .into_response()
    }
}

impl From<bst_query::Error> for ApiError {
    fn from(error: bst_query::Error) -> Self {
        match error {
            bst_query::Error::NotFound { entity, id } => ApiError::not_found(entity, id),
            bst_query::Error::InvalidValue { .. } => ApiError::unprocessable(error.to_string()),
            bst_query::Error::InvalidTransition { .. }
            | bst_query::Error::InvalidOptimizationTransition { .. } => ApiError {
                status: StatusCode::CONFLICT,
                detail: error.to_string(),
            },
            other => ApiError::internal("metadata store", &other),
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
