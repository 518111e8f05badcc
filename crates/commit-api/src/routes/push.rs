//! `docker push`: `POST /images/{name}/push?tag=` with `X-Registry-Auth`.
//!
//! Which tags, whose credentials, and whether every blob is here are read
//! and checked here (an image with a blob that is neither here nor known
//! to be anywhere fails before anything is pushed); the push itself
//! is the engine's ([`commit_engine::Engine::push`]), its events written
//! out as Docker's JSON progress lines.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commit_engine::{Image as ImageEntry, PushEvent, PushRequest};
use docker_format::reference::{familiar_name, parse_normalized_named, valid_tag};
use docker_format::registry;
use futures::StreamExt;

use super::find_image;
use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::views::push::lines;

/// Pushes an image to its registry, streaming Docker's progress messages.
pub(crate) async fn push(
    api: &Api,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut named = parse_normalized_named(name)?;
    if named.digest.is_some() {
        return Err(ApiError::InvalidRequest(format!(
            "cannot push a digest reference: {name}"
        )));
    }
    // The credentials are read before the image is looked up, as Docker
    // does; one it cannot decode is ignored (anonymous), as Docker ignores
    // it "to increase compatibility with the existing API".
    let auth = registry_auth(headers);
    let tag = q.get("tag");
    if !tag.is_empty() {
        if !valid_tag(tag) {
            return Err(docker_format::reference::ReferenceError::Tag.into());
        }
        named.tag = Some(tag.to_string());
    }
    // No tag: every tag of the repository (Docker's `push --all-tags`; the
    // CLI itself asks for `latest` when the user gave no tag).
    let mut targets: Vec<(String, ImageEntry)> = Vec::new();
    match &named.tag {
        Some(t) => match find_image(api, &named.familiar()).await {
            Ok(entry) => targets.push((t.clone(), entry)),
            // As Docker: the stream has begun when the tag is looked up.
            Err(ApiError::NoSuchImage(_)) => {
                return Ok(failed_stream(
                    &named.name(),
                    format!("tag does not exist: {}", named.familiar()),
                ));
            }
            Err(e) => return Err(e),
        },
        None => {
            let prefix = format!("{}:", named.name());
            for e in api.engine().images().list().await? {
                for n in e.names() {
                    if let Some(t) = n.strip_prefix(&prefix).filter(|t| !t.contains('@')) {
                        targets.push((t.to_string(), e.clone()));
                    }
                }
            }
            if targets.is_empty() {
                return Ok(failed_stream(
                    &named.name(),
                    format!(
                        "An image does not exist locally with the tag: {}",
                        familiar_name(&named.name())
                    ),
                ));
            }
            targets.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }

    // Every blob must be here or known elsewhere before anything is pushed.
    for (tag, e) in &targets {
        let nowhere = unfetchable(api, e).await?;
        if !nowhere.is_empty() {
            return Err(ApiError::MissingContent(format!(
                "cannot push {}:{tag}: {}; nothing was pushed",
                familiar_name(&named.name()),
                nowhere
            )));
        }
    }

    let events = api
        .engine()
        .push(PushRequest {
            repository: named,
            tags: targets,
            auth,
            insecure_registries: api.options().insecure_registries.clone(),
        })
        .await?;
    let body = tokio_stream::wrappers::ReceiverStream::new(events)
        .flat_map(|e| futures::stream::iter(lines(&e).into_iter().map(Ok::<_, std::io::Error>)));
    Ok(json_stream(Body::from_stream(body)))
}

/// The credentials of `X-Registry-Auth`; one that does not decode is
/// ignored (anonymous), as Docker ignores it.
pub(crate) fn registry_auth(headers: &HeaderMap) -> registry::RegistryAuth {
    match registry::decode_auth(headers.get("x-registry-auth").and_then(|h| h.to_str().ok())) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(cause = %e, "X-Registry-Auth ignored");
            registry::RegistryAuth::Anonymous
        }
    }
}

pub(crate) fn json_stream(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Docker's answer to a push of a tag it does not have: `200`, the
/// repository line (its full name), then the error as a stream message —
/// Docker has begun streaming when it looks the tag up.
fn failed_stream(repository: &str, message: String) -> Response {
    let mut body = lines(&PushEvent::Repository(repository.to_string()));
    body.extend(lines(&PushEvent::Failed(message)));
    json_stream(Body::from(body.concat()))
}

/// The blobs of `e` that are neither in the content store nor known to be
/// anywhere else, said for users ("" when there are none).
pub(crate) async fn unfetchable(api: &Api, e: &ImageEntry) -> Result<String, ApiError> {
    let lost: Vec<String> = api
        .engine()
        .missing_blobs(e)
        .await?
        .into_iter()
        .filter(|m| m.sources.is_empty())
        .map(|m| m.descriptor.digest)
        .collect();
    Ok(match lost.as_slice() {
        [] => String::new(),
        lost => format!(
            "{} {} not in this node's content store (discarded after unpacking, or never pulled) and no registry is known to hold {} (no containerd.io/distribution.source label on the image)",
            if lost.len() == 1 { "blob" } else { "blobs" },
            lost.join(", ") + if lost.len() == 1 { " is" } else { " are" },
            if lost.len() == 1 { "it" } else { "them" },
        ),
    })
}
