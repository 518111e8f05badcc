//! `GET /metrics`: the daemon's Prometheus metrics (OpenMetrics text).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Api;

/// `GET /metrics`.
pub async fn metrics(State(api): State<Api>) -> Response {
    let body = api
        .metrics()
        .render(api.engine().containerd().connections());
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
