//! `docker push`: `POST /images/{name}/push?tag=`.

use axum::http::HeaderMap;
use axum::response::Response;

use crate::Api;
use crate::error::ApiError;

/// Pushes an image to its registry, streaming Docker's progress messages.
pub async fn push(
    _api: &Api,
    _name: &str,
    _raw: Option<&str>,
    _headers: &HeaderMap,
) -> Result<Response, ApiError> {
    Err(ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "image push is not implemented yet",
    ))
}
