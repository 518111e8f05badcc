//! Docker's Engine API for commits, served over [`commit_engine`].
//!
//! This crate is HTTP only: routes (`routes/`, one file per Docker area),
//! what handlers read from a request (`extract`), Docker's JSON answers
//! (`views/`), and the one mapping of failures to status codes (`error`).
//! Docker's formats themselves (bodies, `changes`, references, filters)
//! are `docker_format`'s; the work is `commit_engine`'s. It names no
//! containerd type: it cannot (see `tests/boundaries.rs`).
//!
//! Every route answers with and without a `/v{major}.{minor}` prefix; the
//! prefix is checked against [`MIN_API_VERSION`]..=[`API_VERSION`] and
//! stripped before routing (`version`).

mod error;
mod extract;
mod observe;
mod routes;
mod version;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use commit_engine::Engine;
use routes::{commit, containers, df, events, images, info, save, system};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::error::ApiError;
pub use crate::observe::{Events, Metrics};
/// `GET /metrics` alone, for a metrics listener of its own.
pub use crate::routes::metrics::metrics;

/// The highest Engine API version served (and the one assumed when a
/// request has no version prefix).
pub const API_VERSION: &str = "1.53";
/// The lowest Engine API version served: Docker's own floor.
pub const MIN_API_VERSION: &str = "1.24";

/// Bounds on what one request may ask of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body read (a container config is a few KiB).
    pub max_body: usize,
    /// Most `changes` one commit may carry.
    pub max_changes: usize,
    /// How long a client may take to send a request body.
    pub body_timeout: std::time::Duration,
}

/// What the API is configured with beyond the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub limits: Limits,
    /// Registries reached over plain HTTP besides loopback ones (Docker's
    /// `insecure-registries`).
    pub insecure_registries: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            max_changes: 256,
            body_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// What `/version` and the `Server` header say about this daemon.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub git_commit: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("COMMITD_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            os: std::env::consts::OS.to_string(),
            arch: docker_format::image::host_platform().architecture,
            kernel_version: kernel_version(),
        }
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Shared state of the API.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    info: ServerInfo,
    /// Commits run as tasks of their own, so a client that hangs up does
    /// not cancel a commit half-way; shutdown waits on this tracker.
    commits: TaskTracker,
    /// Cancelled when the daemon gives up waiting for commits at shutdown.
    abort: CancellationToken,
    metrics: Arc<Metrics>,
    events: Events,
    options: Options,
}

impl Api {
    pub fn new(engine: Engine, info: ServerInfo) -> Self {
        Self::with_options(engine, info, Options::default())
    }

    pub fn with_options(engine: Engine, info: ServerInfo, options: Options) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                info,
                commits: TaskTracker::new(),
                abort: CancellationToken::new(),
                metrics: Arc::default(),
                events: Events::default(),
                options,
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn info(&self) -> &ServerInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.options.limits
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The commits in flight (closed and waited on at shutdown).
    pub fn commits(&self) -> &TaskTracker {
        &self.inner.commits
    }

    /// Tells in-flight commits to roll back at their next step.
    pub fn abort_commits(&self) {
        self.inner.abort.cancel();
    }

    /// Cancelled when in-flight commits must roll back.
    fn abort_token(&self) -> &CancellationToken {
        &self.inner.abort
    }

    /// The router, without the version prefix handling; see [`app`].
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_ping", get(system::ping).head(system::ping))
            .route("/version", get(system::version))
            .route("/info", get(info::info))
            .route("/system/df", get(df::disk_usage))
            .route("/commit", post(commit::commit))
            .route("/pods/{namespace}/{pod}/commit", post(routes::pods::commit))
            .route(
                "/images/json",
                get(images::list).delete(images::delete_json),
            )
            .route(
                "/images/get",
                get(save::save_many).delete(images::delete_get),
            )
            .route(
                "/images/{*rest}",
                get(routes::images_get)
                    .post(routes::images_post)
                    .delete(images::delete),
            )
            .route("/containers/json", get(containers::list))
            .route("/containers/{*rest}", get(routes::containers_get))
            .route("/events", get(events::events))
            .route("/metrics", get(metrics))
            .fallback(system::not_found)
            .method_not_allowed_fallback(system::not_found)
            .layer(axum::extract::DefaultBodyLimit::max(self.limits().max_body))
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                self.limits().body_timeout,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                observe::track,
            ))
            .with_state(self.clone())
    }
}

/// Every route the router serves, as `api/openapi.yaml` names it (method,
/// path template; `{name}` may hold slashes). The OpenAPI test holds the
/// spec to this list, and this list to the router: it sends every Docker
/// Engine API endpoint to the router and fails when one answers that is
/// not here, or one here does not.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/version"),
    ("GET", "/info"),
    ("GET", "/system/df"),
    ("POST", "/commit"),
    ("POST", "/pods/{namespace}/{pod}/commit"),
    ("GET", "/images/json"),
    ("GET", "/images/get"),
    ("GET", "/images/{name}/json"),
    ("GET", "/images/{name}/history"),
    ("POST", "/images/{name}/tag"),
    ("POST", "/images/{name}/push"),
    ("POST", "/images/load"),
    ("POST", "/images/prune"),
    ("POST", "/images/create"),
    ("GET", "/images/{name}/get"),
    ("DELETE", "/images/{name}"),
    ("GET", "/containers/json"),
    ("GET", "/containers/{name}/json"),
    ("GET", "/containers/{name}/changes"),
    ("GET", "/containers/{name}/export"),
    ("GET", "/events"),
    ("GET", "/metrics"),
];

/// The complete service: version prefix handling and common headers around
/// the router.
pub fn app(api: &Api) -> Router {
    let server = format!("commitd/{} ({})", api.info().version, api.info().os);
    Router::new()
        .fallback_service(api.router())
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(server),
            version::middleware,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
}
