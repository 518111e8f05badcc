//! `GET /containers/{name}/export` (`docker export`): the container's whole
//! filesystem as a tar, streamed as the engine reads it from a private
//! read-only mount (`commit_engine::Engine::export_container`). As
//! Docker's, the container is not paused; a failure after the first byte
//! ends the stream early.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Api;
use crate::error::ApiError;

/// `GET /containers/{name}/export`.
pub(crate) async fn export(api: &Api, name: &str) -> Result<Response, ApiError> {
    let tar = api.engine().export_container(name).await?;
    let mut resp = (StatusCode::OK, Body::from_stream(tar)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}
