//! Docker's JSON, as `Serialize` types: one module per Docker area, each
//! type named after Docker's own (`ImageSummary`, `HistoryResponseItem`, …)
//! with its fields in Docker's order and Docker's spelling. Routes build
//! these; only [`json`] writes them.

pub(crate) mod changes;
pub(crate) mod commit;
pub(crate) mod containers;
pub(crate) mod df;
pub(crate) mod events;
pub(crate) mod images;
pub(crate) mod info;
pub(crate) mod push;
pub(crate) mod system;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A JSON response written the way Go's `json.Encoder` writes it (with a
/// trailing newline), as Docker's API does.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
