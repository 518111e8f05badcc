//! `/_ping`, `/version`, and the answer to unknown routes.

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::views::{
    self,
    system::{Component, ComponentDetails, Platform, Version},
};
use crate::{API_VERSION, Api, MIN_API_VERSION};

/// `GET`/`HEAD /_ping`: `OK`, and the headers clients negotiate with. It
/// answers whether or not containerd does.
pub(crate) async fn ping(method: Method) -> Response {
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
pub(crate) async fn version(State(api): State<Api>) -> Response {
    let info = api.info();
    let mut components = vec![Component {
        name: "Engine",
        version: info.version.clone(),
        details: ComponentDetails::Engine {
            api_version: API_VERSION,
            min_api_version: MIN_API_VERSION,
            git_commit: info.git_commit.clone(),
            os: info.os.clone(),
            arch: info.arch.clone(),
            kernel_version: info.kernel_version.clone(),
        },
    }];
    let c = api.engine().containerd();
    let containerd_version = match c.server_version().await {
        Ok(v) => {
            components.push(Component {
                name: "containerd",
                version: v.clone(),
                details: ComponentDetails::Containerd {
                    address: c.socket().display().to_string(),
                    namespace: c.namespace().to_string(),
                },
            });
            Some(v)
        }
        Err(_) => None,
    };
    let body = Version {
        platform: Platform {
            name: format!("commitd {}", info.version),
        },
        components,
        version: info.version.clone(),
        api_version: API_VERSION,
        min_api_version: MIN_API_VERSION,
        git_commit: info.git_commit.clone(),
        go_version: "",
        os: info.os.clone(),
        arch: info.arch.clone(),
        kernel_version: info.kernel_version.clone(),
        containerd_version,
    };
    views::json(StatusCode::OK, &body)
}

/// Docker answers every unknown path and method with this.
pub(crate) async fn not_found() -> ApiError {
    ApiError::PageNotFound
}
