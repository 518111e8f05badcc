//! The routes, one file per Docker area. Each handler reads its request
//! with [`crate::extract`], asks the engine, and answers with a
//! [`crate::views`] type or an [`ApiError`].
//!
//! Image and container names may hold slashes (`team/app:1`,
//! `ns/pod/container`), so their routes are wildcards: the dispatch below
//! splits off the action (`/json`, `/history`, …), as Docker's `{name:.*}`
//! routes do.

pub(crate) mod changes;
pub(crate) mod commit;
pub(crate) mod containers;
pub(crate) mod df;
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod images;
pub(crate) mod import;
pub(crate) mod info;
pub(crate) mod load;
pub(crate) mod metrics;
pub(crate) mod pods;
pub(crate) mod prune;
pub(crate) mod push;
pub(crate) mod save;
pub(crate) mod system;

use crate::extract::ApiVersion;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use commit_engine::{Error as EngineError, Image};
use docker_format::changes::Changes;
use docker_format::reference::{ImageRef, familiar_name};

use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;

/// The request's `changes` values (commit, import), at most the
/// configured number.
pub(crate) fn changes(api: &Api, q: &Query) -> Result<Changes, ApiError> {
    let changes = Changes::new(q.all("changes"));
    if changes.len() > api.limits().max_changes {
        return Err(ApiError::InvalidRequest(format!(
            "too many changes: {} (at most {})",
            changes.len(),
            api.limits().max_changes
        )));
    }
    Ok(changes)
}

/// The image a user named, or 404 `No such image: …` naming it as Docker
/// does: a name with its tag (`app` → `app:latest`), a full ID as
/// `sha256:…`, anything else as typed.
pub(crate) async fn find_image(api: &Api, input: &str) -> Result<Image, ApiError> {
    let image = ImageRef::parse(input)?;
    api.engine()
        .images()
        .find(&image)
        .await
        .map_err(|e| match e {
            EngineError::ImageNotFound(_) => ApiError::NoSuchImage(match &image {
                ImageRef::Name { name, .. } => familiar_name(name).to_string(),
                ImageRef::Id(id) => id.clone(),
                ImageRef::IdPrefix(_) => input.to_string(),
            }),
            other => other.into(),
        })
}

/// `GET /images/{name}/json|history|get`.
pub(crate) async fn images_get(
    State(api): State<Api>,
    crate::extract::ApiVersion(version): crate::extract::ApiVersion,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    match rest.rsplit_once('/') {
        Some((name, "json")) => images::inspect(&api, name, &version).await,
        Some((name, "history")) => images::history(&api, name).await,
        Some((name, "get")) => save::save(&api, vec![name.to_string()]).await,
        _ => Err(ApiError::PageNotFound),
    }
}

/// `POST /images/{name}/tag|push`, and `POST /images/load|prune|create` (which
/// Docker's router matches before `{name}`).
pub(crate) async fn images_post(
    State(api): State<Api>,
    Path(rest): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    if rest == "load" {
        return load::load(&api, &q, body).await;
    }
    if rest == "create" {
        return import::create(&api, &q, body).await;
    }
    if rest == "prune" {
        return prune::prune(State(api), q).await;
    }
    match rest.rsplit_once('/') {
        Some((name, "tag")) => images::tag(&api, name, &q).await,
        Some((name, "push")) => push::push(&api, name, &q, &headers).await,
        _ => Err(ApiError::PageNotFound),
    }
}

/// `GET /containers/{name}/changes|export`, and the container routes of
/// `containers` (`{name}/json`).
pub(crate) async fn containers_get(
    State(api): State<Api>,
    version: ApiVersion,
    Path(rest): Path<String>,
    q: Query,
) -> Result<Response, ApiError> {
    match rest.rsplit_once('/') {
        Some((name, "changes")) if !name.is_empty() => changes::changes(&api, name).await,
        Some((name, "export")) if !name.is_empty() => export::export(&api, name, &q).await,
        _ => containers::get_route(State(api), version, Path(rest), q).await,
    }
}
