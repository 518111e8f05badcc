//! `GET /containers/{name}/export` (`docker export`): the container's whole
//! filesystem as a tar, streamed as the engine reads it from a private
//! read-only mount (`commit_engine::Engine::export_container`). As
//! Docker's, the container is not paused — unless asked with `pause=1`
//! (commitd's own parameter, read as commit's `pause`): then it is paused
//! for the whole stream and resumed after it, also when the client hangs
//! up. A failure after the first byte ends the stream early.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Api;
use crate::error::ApiError;
use crate::extract::{Query, bool_value};

/// `GET /containers/{name}/export[?pause=1]`.
pub(crate) async fn export(api: &Api, name: &str, q: &Query) -> Result<Response, ApiError> {
    let pause = bool_value(q.get("pause"));
    let tar = api.engine().export_container(name, pause).await?;
    let mut resp = (StatusCode::OK, Body::from_stream(tar)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}
