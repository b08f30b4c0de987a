//! Errors of the Flight services and their gRPC status codes.

use datafusion::error::DataFusionError;
use tonic::Status;

use crate::error::bounded_detail;

/// A failed Flight request. User errors carry a message for the client; internal errors are
/// logged once when converted to a [`Status`], and the client sees no internals.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A ticket, descriptor, SQL statement or parameter that does not validate.
    #[error("{0}")]
    InvalidArgument(String),
    /// A dataset, backtest or prepared statement that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request for something not ready yet, such as the results of a backtest that has
    /// not completed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A query that needs more memory than the session's pool allows.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A failure of the server, not of the request.
    #[error("{context} failed: {source}")]
    Internal {
        context: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result of a Flight request handler.
pub type RequestResult<T> = Result<T, RequestError>;

impl RequestError {
    /// Wraps a server-side failure with the step that failed.
    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }

    /// Classifies a DataFusion error: planning and SQL errors are the client's, an exhausted
    /// memory pool is `resource_exhausted`, and everything else is internal.
    pub fn from_datafusion(context: &'static str, error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Self::InvalidArgument(error.strip_backtrace()),
            DataFusionError::ResourcesExhausted(_) => {
                Self::ResourceExhausted(error.strip_backtrace())
            }
            DataFusionError::ArrowError(arrow_error, _) if is_user_arrow_error(arrow_error) => {
                Self::InvalidArgument(error.strip_backtrace())
            }
            _ => Self::internal(context, error),
        }
    }
}

/// Arrow errors that a query's own values cause, such as a failed cast or a division by zero.
fn is_user_arrow_error(error: &datafusion::arrow::error::ArrowError) -> bool {
    use datafusion::arrow::error::ArrowError;
    matches!(
        error,
        ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ComputeError(_)
    )
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::InvalidArgument(message) => {
                Status::invalid_argument(bounded_detail(message))
            }
            RequestError::NotFound(message) => Status::not_found(bounded_detail(message)),
            RequestError::FailedPrecondition(message) => {
                Status::failed_precondition(bounded_detail(message))
            }
            RequestError::ResourceExhausted(message) => {
                Status::resource_exhausted(bounded_detail(message))
            }
            RequestError::Internal { context, source } => {
                tracing::error!(error = %source, context, "flight request failed");
                Status::internal("internal error; the server log has the cause")
            }
        }
    }
}

impl From<bst_query::Error> for RequestError {
    fn from(error: bst_query::Error) -> Self {
        match error {
            bst_query::Error::NotFound { .. } => Self::NotFound(error.to_string()),
            bst_query::Error::InvalidValue { .. } => Self::InvalidArgument(error.to_string()),
            other => Self::internal("metadata store", other),
        }
    }
}

/// Converts a [`RequestError`] raised inside a result stream into the error type of the
/// Flight encoder, logging internal errors once.
pub(crate) fn stream_error(error: RequestError) -> arrow_flight::error::FlightError {
    arrow_flight::error::FlightError::Tonic(Box::new(Status::from(error)))
}
