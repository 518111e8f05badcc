//! `/_ping`, `/version`, and the answer to unknown routes.

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiError, json_response};
use crate::{API_VERSION, Api, MIN_API_VERSION};

/// `GET`/`HEAD /_ping`: `OK`, and the headers clients negotiate with. It
/// answers whether or not containerd does.
pub async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert("swarm", HeaderValue::from_static("inactive"));
    resp
}

/// `GET /version`: Docker's version object, with the containerd this
/// daemon talks to as a component (left out while containerd is down).
pub async fn version(State(api): State<Api>) -> Response {
    let info = api.info();
    let mut components = vec![json!({
        "Name": "Engine",
        "Version": info.version,
        "Details": {
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": info.git_commit,
            "Os": info.os,
            "Arch": info.arch,
            "KernelVersion": info.kernel_version,
        }
    })];
    let c = api.engine().containerd();
    let containerd_version = match c.server_version().await {
        Ok(v) => {
            components.push(json!({
                "Name": "containerd",
                "Version": v,
                "Details": { "Address": c.socket().display().to_string(), "Namespace": c.namespace() }
            }));
            Some(v)
        }
        Err(_) => None,
    };
    let body = json!({
        "Platform": { "Name": format!("commitd {}", info.version) },
        "Components": components,
        "Version": info.version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": info.git_commit,
        "GoVersion": "",
        "Os": info.os,
        "Arch": info.arch,
        "KernelVersion": info.kernel_version,
        "ContainerdVersion": containerd_version,
    });
    json_response(StatusCode::OK, &body)
}

/// Docker answers every unknown path and method with this.
pub async fn not_found() -> ApiError {
    ApiError::not_found("page not found")
}
