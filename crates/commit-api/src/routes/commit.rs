//! `POST /commit`: Docker's `ContainerCommit`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use commit_engine::{CommitRequest, Compression, PushTarget, Squash};
use docker_format::reference::{self, Named};
use docker_format::{body, reference::familiar_name};
use futures::StreamExt;
use tracing::info;

use crate::Api;
use crate::error::ApiError;
use crate::extract::{JsonBody, Query, bool_value};
use crate::views::push::{Message, lines};
use crate::views::{self, commit::IdResponse};

pub(crate) async fn commit(
    State(api): State<Api>,
    q: Query,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body_config = body::decode_body(&body)?;
    let name = reference::repo_tag_reference(q.get("repo"), q.get("tag"))?;
    let container = q.get("container").to_string();
    if container.is_empty() {
        return Err(ApiError::InvalidRequest(
            "invalid name or ID supplied: \"\"".into(),
        ));
    }
    // Pause is on unless turned off explicitly (Docker, API ≥ 1.13).
    let pause = q.get("pause").trim().is_empty() || bool_value(q.get("pause"));
    let compression = match q.get("compression") {
        "" => None,
        c => Some(
            c.parse::<Compression>()
                .map_err(commit_engine::Error::from)?,
        ),
    };
    let squash = match q.get("squash") {
        "" => None,
        s => Some(s.parse::<Squash>().map_err(commit_engine::Error::from)?),
    };
    let timestamp = match q.get("timestamp") {
        "" => None,
        t => Some(t.parse::<i64>().map_err(|_| {
            ApiError::InvalidRequest(format!(
                "invalid timestamp {t:?}: want whole seconds since 1970"
            ))
        })?),
    };
    let exclude: Vec<String> = q
        .all("exclude")
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let asked_exclude = !exclude.is_empty();
    // commitd's own: push the new image at once (see `pipeline`).
    let push = match (bool_value(q.get("push")), &name) {
        (false, _) => None,
        (true, None) => {
            return Err(ApiError::InvalidRequest(
                "push needs a repository to push to: give repo (and tag)".into(),
            ));
        }
        (true, Some(named)) => Some(PushTarget {
            repository: named.clone(),
            tag: named.tag.clone().unwrap_or_else(|| "latest".into()),
            auth: super::push::registry_auth(&headers),
            insecure_registries: api.options().insecure_registries.clone(),
        }),
    };
    let incremental = match q.get("incremental") {
        "" => None,
        v => Some(bool_value(v)),
    };
    let changes = super::changes(&api, &q)?;
    let req = CommitRequest {
        container,
        image_name: name.as_ref().map(Named::full),
        author: q.get("author").to_string(),
        comment: q.get("comment").to_string(),
        pause,
        compression,
        config: body_config.map(Into::into),
        changes,
        squash,
        timestamp,
        exclude,
        incremental,
    };

    // The commit runs as its own task: a client hanging up does not stop it
    // half-way, shutdown can wait for it, and what a finished commit tells
    // (metrics, the `commit` event) is told by the task, whoever waits.
    let image_ref = name.as_ref().map(Named::familiar).unwrap_or_default();
    let comment = req.comment.clone();
    let task = api.commits().spawn(tracing::Instrument::instrument(
        {
            let api = api.clone();
            async move {
                let metrics = api.metrics();
                let _in_flight = metrics.commit_started();
                let result = match push {
                    None => api
                        .engine()
                        .commit(req, api.abort_token())
                        .await
                        .map(|done| (done, None)),
                    Some(to) => api
                        .engine()
                        .commit_and_push(req, to, api.abort_token())
                        .await
                        .map(|(done, events)| (done, Some(events))),
                };
                match &result {
                    Ok((done, _)) => {
                        metrics.commit_done(done);
                        api.events().commit(
                            done,
                            familiar_name(&done.container_image),
                            &comment,
                            &image_ref,
                        );
                    }
                    Err(_) => metrics.commit_failed(),
                }
                result
            }
        },
        tracing::Span::current(),
    ));
    let (committed, events) = task
        .await
        .map_err(|e| ApiError::Internal(format!("commit failed: {e}")))??;
    info!(container = %committed.container_id, image = %committed.image_name, id = %committed.image_id, "commit request done");
    if let Some(events) = events {
        // The image is made: its ID, then the push's progress as
        // `docker push` streams it (the last line: its result or error).
        let first = Message::image(&committed.image_id).line();
        let rest = tokio_stream::wrappers::UnboundedReceiverStream::new(events)
            .flat_map(|e| futures::stream::iter(lines(&e)));
        let body = futures::stream::once(async move { first })
            .chain(rest)
            .map(Ok::<_, std::io::Error>);
        return Ok(super::push::json_stream(Body::from_stream(body)));
    }
    Ok(views::json(
        StatusCode::CREATED,
        &IdResponse {
            id: committed.image_id,
            excluded: (asked_exclude || committed.excluded > 0).then_some(committed.excluded),
            incremental: views::commit::IncrementalView::of(&committed.incremental),
        },
    ))
}
