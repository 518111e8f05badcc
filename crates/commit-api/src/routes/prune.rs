//! `POST /images/prune` (`docker image prune [-a] [--filter …]`): the
//! images to prune are chosen here as Docker chooses them — dangling ones
//! (no name) unless `dangling=false` (`-a`: every image), then `until`
//! (created before: a timestamp or a Go duration ago), `label` and
//! `label!` — and removed by the engine, which skips any a container uses
//! and takes each name's lock (`commit_engine::ImageStore::prune`).
//! Answered as Docker's `PruneReport`: `ImagesDeleted` (each name
//! untagged, then the image's ID deleted; `null` when nothing was) and
//! `SpaceReclaimed` (what containerd's collector gave back).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use commit_engine::DEFAULT_SNAPSHOTTER;
use docker_format::filters::Filters;
use docker_format::reference::familiar_name;
use docker_format::time::{parse_time_or_duration, unix_seconds};

use super::images::labels;
use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::views;
use crate::views::images::{DeleteItem, PruneReport};

/// The latest creation time (unix nanoseconds) an `until` value keeps:
/// moby's `timestamp.Parse` (a Go duration ago, a time, unix seconds).
fn until_nanos(value: &str, now_nanos: i64) -> Result<i64, ApiError> {
    parse_time_or_duration(value, now_nanos)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid value for 'until' filter: {e}")))
}

/// `POST /images/prune?filters=`.
pub(crate) async fn prune(State(api): State<Api>, q: Query) -> Result<Response, ApiError> {
    let filters = Filters::parse(q.get("filters"), &["dangling", "label", "label!", "until"])?;
    let dangling_only = filters.bool("dangling")?.unwrap_or(true);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let until = match filters.get("until") {
        [] => None,
        [v] => Some(until_nanos(v, now)?),
        _ => {
            return Err(ApiError::InvalidRequest(
                "more than one until filter specified".into(),
            ));
        }
    };
    let store = api.engine().images();
    let candidates = store
        .list()
        .await?
        .into_iter()
        .filter(|e| !dangling_only || e.names().is_empty())
        .filter(|e| {
            let l = labels(e);
            filters.labels_match("label", &l)
                && (filters.get("label!").is_empty() || !filters.labels_match("label!", &l))
        })
        .filter(|e| {
            until.is_none_or(|u| {
                unix_seconds(e.config().created.as_deref()).saturating_mul(1_000_000_000) < u
            })
        })
        .collect();
    let pruned = store.prune(candidates, DEFAULT_SNAPSHOTTER).await?;
    let mut deleted = Vec::new();
    for p in &pruned.images {
        for name in &p.names {
            api.events().image("untag", &p.id, familiar_name(name));
            deleted.push(DeleteItem::Untagged(familiar_name(name).to_string()));
        }
        api.events().image("delete", &p.id, "");
        deleted.push(DeleteItem::Deleted(p.id.clone()));
    }
    let report = PruneReport {
        images_deleted: (!deleted.is_empty()).then_some(deleted),
        space_reclaimed: pruned.space_reclaimed,
    };
    Ok(views::json(StatusCode::OK, &report))
}
