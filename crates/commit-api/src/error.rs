//! Docker's error responses: `{"message": "…"}` with the status code Docker
//! gives the same failure. Every engine error is mapped in one exhaustive
//! `match`, so a new variant forces a decision here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commit_engine::{Error as EngineError, Kind};
use tracing::error;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::ContainerNotFound(id) => {
                return Self::not_found(format!("No such container: {id}"));
            }
            EngineError::ImageNotFound(name) => {
                return Self::not_found(format!("No such image: {name}"));
            }
            EngineError::AmbiguousContainer { prefix, .. } => {
                return Self::bad_request(format!(
                    "multiple IDs found with provided prefix: {prefix}"
                ));
            }
            EngineError::InvalidArgument(_) | EngineError::Changes(_) => StatusCode::BAD_REQUEST,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Cancelled(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Containerd { kind, .. } => match kind {
                Kind::NotFound => StatusCode::NOT_FOUND,
                Kind::InvalidArgument => StatusCode::BAD_REQUEST,
                Kind::AlreadyExists | Kind::FailedPrecondition | Kind::Aborted => {
                    StatusCode::CONFLICT
                }
                Kind::PermissionDenied => StatusCode::FORBIDDEN,
                Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
                Kind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
                Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            EngineError::Io { .. } | EngineError::Malformed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

/// Docker's format errors are the client's: 400 with Docker's message.
macro_rules! bad_request_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                Self::bad_request(e.to_string())
            }
        }
    )*};
}

bad_request_from!(
    docker_format::body::BodyError,
    docker_format::changes::ChangeError,
    docker_format::filters::FilterError,
    docker_format::ports::PortError,
    docker_format::reference::ReferenceError,
    docker_format::registry::AuthError,
    docker_format::time::TimestampError,
);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            error!(status = self.status.as_u16(), message = %self.message, "request failed");
        }
        json_response(self.status, &serde_json::json!({ "message": self.message }))
    }
}

/// A JSON response written the way Go's `json.Encoder` writes it (with a
/// trailing newline), as Docker's API does.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
