//! Docker's image routes over the engine's image store: list, inspect,
//! history, tag, delete. (Save and push have files of their own.)

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use commit_engine::{ContainerRecord, Image, TaskState};
use docker_format::filters::{FilterError, Filters, glob_match};
use docker_format::reference::{self, ImageRef, familiar_name, short_id};
use docker_format::time::{ZERO_TIME, parse_time_or_duration, unix_seconds};

use super::find_image;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query, bool_value};
use crate::version::compare;
use crate::views::{self, images as v};
use crate::{Api, Events};

/// Docker's `image.Summary` of `e`, with its counts.
pub(crate) fn summary(e: &Image, containers: i64, shared_size: i64, size: i64) -> v::ImageSummary {
    let l = labels(e);
    v::ImageSummary {
        containers,
        created: unix_seconds(e.config().created.as_deref()),
        id: e.id.clone(),
        labels: (!l.is_empty()).then_some(l),
        parent_id: "",
        descriptor: e.target().clone(),
        repo_digests: repo_digests(e),
        repo_tags: repo_tags(e),
        shared_size,
        size,
    }
}

pub(crate) fn repo_tags(e: &Image) -> Vec<String> {
    e.names()
        .into_iter()
        .filter(|n| !n.contains('@'))
        .map(|n| familiar_name(n).to_string())
        .collect()
}

/// `repo@digest` for each named repository of the image.
pub(crate) fn repo_digests(e: &Image) -> Vec<String> {
    let mut out: Vec<String> = e
        .names()
        .into_iter()
        .map(|n| {
            let repo = n.split('@').next().unwrap_or(n);
            let repo = match repo.rfind(':') {
                Some(i) if !repo[i..].contains('/') => &repo[..i],
                _ => repo,
            };
            format!("{}@{}", familiar_name(repo), e.target().digest)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(crate) fn labels(e: &Image) -> BTreeMap<String, String> {
    e.config()
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// `GET /images/json` (`docker images`). From API 1.51 each image counts
/// the containers made from it (`Containers`; -1 before, as Docker).
pub(crate) async fn list(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    q: Query,
) -> Result<Response, ApiError> {
    let filters = Filters::parse(
        q.get("filters"),
        &["reference", "dangling", "label", "before", "since", "until"],
    )?;
    // `until`: created before the time (a Go duration back from now, an
    // RFC 3339 time or date, or unix seconds), as moby's `timestamp.Parse`.
    let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let untils = filters
        .get("until")
        .iter()
        .map(|u| {
            parse_time_or_duration(u, now).map_err(|e| {
                ApiError::InvalidRequest(format!("invalid value for 'until' filter: {e}"))
            })
        })
        .collect::<Result<Vec<i64>, ApiError>>()?;
    let count_containers = compare(&version, "1.51") != std::cmp::Ordering::Less;
    let all = api.engine().images().list().await?;
    let dangling = filters.bool("dangling")?;
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        match filters.get(name) {
            [] => Ok(None),
            [r] => {
                let hit = Image::find_in(&all, &ImageRef::parse(r)?).map_err(|e| {
                    if e.is_not_found() {
                        ApiError::NoSuchImage(r.clone())
                    } else {
                        e.into()
                    }
                })?;
                Ok(Some(unix_seconds(hit.config().created.as_deref())))
            }
            _ => Err(FilterError::OnlyOne(name.to_string()).into()),
        }
    };
    let (before, since) = (bound("before")?, bound("since")?);
    let store = api.engine().images();
    let mut out = Vec::new();
    for e in all.iter().rev() {
        let tags = repo_tags(e);
        if let Some(d) = dangling {
            if d != tags.is_empty() {
                continue;
            }
        }
        let patterns = filters.get("reference");
        if !patterns.is_empty() {
            let hit = e.names().iter().any(|n| {
                let fam = familiar_name(n);
                let repo = fam
                    .rsplit_once(':')
                    .filter(|(_, t)| !t.contains('/'))
                    .map(|(r, _)| r)
                    .unwrap_or(fam);
                patterns
                    .iter()
                    .any(|p| glob_match(p, fam) || glob_match(p, repo))
            });
            if !hit {
                continue;
            }
        }
        let l = labels(e);
        if !filters.labels_match("label", &l) {
            continue;
        }
        let created = unix_seconds(e.config().created.as_deref());
        if before.is_some_and(|b| created >= b) || since.is_some_and(|s| created <= s) {
            continue;
        }
        let created_nanos = e
            .config()
            .created
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
        if untils.iter().any(|&u| created_nanos >= u) {
            continue;
        }
        let containers = if count_containers {
            store.users(e).await?.len() as i64
        } else {
            -1
        };
        out.push(summary(e, containers, -1, store.size(e).await?));
    }
    Ok(views::json(StatusCode::OK, &out))
}

/// `GET /images/{name}/json` (`docker image inspect`).
/// From API 1.52 the empty `Parent`, `Comment`, `DockerVersion` and
/// `Author` are left out, as Docker leaves them out.
pub(crate) async fn inspect(api: &Api, name: &str, version: &str) -> Result<Response, ApiError> {
    let e = find_image(api, name).await?;
    let store = api.engine().images();
    let cfg = e.config();
    let last_tag_time = e
        .last_tagged()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| ZERO_TIME.into());
    let body = v::ImageInspect {
        id: e.id.clone(),
        repo_tags: repo_tags(&e),
        repo_digests: repo_digests(&e),
        parent: store.parent(&e).await?.unwrap_or_default(),
        comment: cfg
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default(),
        created: cfg.created.clone(),
        docker_version: "",
        author: cfg.author.clone().unwrap_or_default(),
        config: cfg.config.clone(),
        architecture: cfg.architecture.clone(),
        variant: cfg.variant.clone(),
        os: cfg.os.clone(),
        size: store.size(&e).await?,
        graph_driver: v::GraphDriver {
            name: "overlayfs".into(),
            data: None,
        },
        root_fs: v::RootFs {
            kind: cfg.rootfs.kind.clone(),
            layers: cfg.rootfs.diff_ids.clone(),
        },
        metadata: v::Metadata { last_tag_time },
        descriptor: e.target().clone(),
    };
    if compare(version, "1.52") == std::cmp::Ordering::Less {
        return Ok(views::json(StatusCode::OK, &body));
    }
    let mut value = serde_json::to_value(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = value.as_object_mut() {
        for k in ["Parent", "Comment", "DockerVersion", "Author"] {
            if o.get(k).is_some_and(|v| v == "") {
                o.remove(k);
            }
        }
    }
    Ok(views::json(StatusCode::OK, &value))
}

/// `GET /images/{name}/history` (`docker history`): newest first, each
/// row's size the unpacked size of its layer. The rows of the image and of
/// the images it was committed from (their `Parent`s) carry those images'
/// IDs and tags; older rows are `<missing>`, as Docker shows them.
pub(crate) async fn history(api: &Api, name: &str) -> Result<Response, ApiError> {
    let e = find_image(api, name).await?;
    let store = api.engine().images();
    let cfg = e.config();
    let mut sizes = store.layer_sizes(&e).await?.into_iter();
    let mut rows: Vec<v::HistoryItem> = cfg
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            v::HistoryItem {
                id: "<missing>".into(),
                created: unix_seconds(h.created.as_deref()),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: None,
                size,
                comment: h.comment.clone().unwrap_or_default(),
            }
        })
        .collect();
    rows.reverse();
    // Docker's walk: row i is named by the i-th image up the parent chain.
    let mut current = Some(e);
    let mut all: Option<Vec<Image>> = None;
    for row in &mut rows {
        let Some(img) = current.take() else { break };
        row.id = img.id.clone();
        let tags = repo_tags(&img);
        row.tags = (!tags.is_empty()).then_some(tags);
        let Some(parent) = store.parent(&img).await? else {
            break;
        };
        if all.is_none() {
            all = Some(store.list().await?);
        }
        current = all
            .as_ref()
            .and_then(|l| l.iter().find(|i| i.id == parent).cloned());
    }
    Ok(views::json(StatusCode::OK, &rows))
}

/// `POST /images/{name}/tag?repo=&tag=` (`docker tag`).
pub(crate) async fn tag(api: &Api, name: &str, q: &Query) -> Result<Response, ApiError> {
    let target = reference::repo_tag_reference(q.get("repo"), q.get("tag"))?.ok_or_else(|| {
        ApiError::InvalidRequest("repository name must have at least one component".into())
    })?;
    let e = find_image(api, name).await?;
    api.engine().images().tag(&e, &target.full()).await?;
    api.events().image("tag", &e.id, &target.familiar());
    Ok((StatusCode::CREATED, "").into_response())
}

/// `DELETE /images/{name}?force=&noprune=` (`docker rmi`). Every record
/// is removed under its name's lock, the one commits and tags take.
pub(crate) async fn delete(
    State(api): State<Api>,
    Path(name): Path<String>,
    q: Query,
) -> Result<Response, ApiError> {
    delete_image(api, name, q).await
}

/// `DELETE /images/json` and `DELETE /images/get`: Docker routes only
/// `GET` of these paths elsewhere, so a delete reaches the image named
/// `json` or `get`.
pub(crate) async fn delete_json(State(api): State<Api>, q: Query) -> Result<Response, ApiError> {
    delete_image(api, "json".into(), q).await
}

/// See [`delete_json`].
pub(crate) async fn delete_get(State(api): State<Api>, q: Query) -> Result<Response, ApiError> {
    delete_image(api, "get".into(), q).await
}

async fn delete_image(api: Api, name: String, q: Query) -> Result<Response, ApiError> {
    let force = bool_value(q.get("force"));
    let e = find_image(&api, &name).await?;
    let store = api.engine().images();
    let events: &Events = api.events();
    let named = match ImageRef::parse(&name)? {
        ImageRef::Name { name: n, .. } if e.records.iter().any(|r| r.name == n) => Some(n),
        _ => None,
    };
    let real = e.names();
    // A name among others: untag it, the image stays.
    if let Some(n) = &named {
        if real.len() > 1 {
            store.untag(n).await?;
            events.image("untag", &e.id, familiar_name(n));
            let out = [v::DeleteItem::Untagged(familiar_name(n).to_string())];
            return Ok(views::json(StatusCode::OK, &out));
        }
    }
    // The image itself.
    let conflict = |forcible: bool, reason: String| ApiError::DeleteConflict {
        short: short_id(&e.id),
        forcible,
        reason,
    };
    let users: Vec<ContainerRecord> = store.users(&e).await?;
    for ct in &users {
        let state = api.engine().containers().task(&ct.id).await?.state;
        if matches!(state, Some(TaskState::Running | TaskState::Paused)) {
            return Err(conflict(
                false,
                format!(
                    "image is being used by running container {}",
                    short_id(&ct.id)
                ),
            ));
        }
    }
    if !force {
        if let Some(ct) = users.first() {
            return Err(conflict(
                true,
                format!(
                    "image is being used by stopped container {}",
                    short_id(&ct.id)
                ),
            ));
        }
        if named.is_none() && real.len() > 1 {
            return Err(conflict(
                true,
                "image is referenced in multiple repositories".into(),
            ));
        }
    }
    let mut out = Vec::new();
    for r in &e.records {
        store.untag(&r.name).await?;
        if !r.dangling {
            events.image("untag", &e.id, familiar_name(&r.name));
            out.push(v::DeleteItem::Untagged(familiar_name(&r.name).to_string()));
        }
    }
    events.image("delete", &e.id, "");
    out.push(v::DeleteItem::Deleted(e.id.clone()));
    Ok(views::json(StatusCode::OK, &out))
}
