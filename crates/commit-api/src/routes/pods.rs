//! `POST /pods/{namespace}/{pod}/commit`: a pod snapshot — one image per
//! app container of a Kubernetes pod, all taken at one moment
//! ([`commit_engine::Engine::commit_pod`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use commit_engine::CommitRequest;
use docker_format::changes::Changes;
use docker_format::reference::{self, Named};
use tracing::info;

use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::views::{self, commit::PodCommitted};

/// `?repo=R&tag=T[&container=NAME…]&comment=&author=`: `R/<container>:T`
/// for each chosen container (default: every app container of the pod).
pub(crate) async fn commit(
    State(api): State<Api>,
    Path((namespace, pod)): Path<(String, String)>,
    q: Query,
) -> Result<Response, ApiError> {
    let repo = q.get("repo");
    if repo.is_empty() {
        return Err(ApiError::InvalidRequest(
            "repo is required: each container's image is named <repo>/<container>".into(),
        ));
    }
    let tag = q.get("tag").to_string();
    let only: Vec<String> = q
        .all("container")
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    // Every name is checked before anything is paused.
    for c in &only {
        image_name(repo, c, &tag)?;
    }
    reference::repo_tag_reference(repo, &tag)?;
    let (author, comment) = (q.get("author").to_string(), q.get("comment").to_string());
    let repo = repo.to_string();
    let task = api.commits().spawn({
        let api = api.clone();
        async move {
            api.engine()
                .commit_pod(
                    &namespace,
                    &pod,
                    &only,
                    |name, id| CommitRequest {
                        container: id.to_string(),
                        image_name: image_name(&repo, name, &tag).ok().flatten(),
                        author: author.clone(),
                        comment: comment.clone(),
                        pause: false,
                        compression: None,
                        config: None,
                        changes: Changes::new(Vec::new()),
                        squash: None,
                        timestamp: None,
                        exclude: Vec::new(),
                        incremental: None,
                    },
                    api.abort_token(),
                )
                .await
        }
    });
    let done = task
        .await
        .map_err(|e| ApiError::Internal(format!("pod commit failed: {e}")))??;
    let out: Vec<PodCommitted> = done
        .into_iter()
        .map(|(container, c)| {
            info!(container = %c.container_id, image = %c.image_name, id = %c.image_id, "pod commit done");
            PodCommitted {
                container,
                id: c.image_id,
            }
        })
        .collect();
    Ok(views::json(StatusCode::CREATED, &out))
}

/// `repo/container:tag`, normalized.
fn image_name(repo: &str, container: &str, tag: &str) -> Result<Option<String>, ApiError> {
    let named = reference::repo_tag_reference(&format!("{repo}/{container}"), tag)?;
    Ok(named.as_ref().map(Named::full))
}
