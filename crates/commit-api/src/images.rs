//! Docker's image routes over containerd's image store: list, inspect,
//! history, tag, delete. (Save and push live in their own modules.)

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use commit_engine::{ContainerRecord, Image as ImageEntry, TaskState};
use docker_format::image::Descriptor;
use serde_json::{Value, json};

use crate::Api;
use crate::commit::{Query, bool_value};
use crate::error::{ApiError, json_response};
use docker_format::filters::{Filters, glob_match};
use docker_format::reference::{self, ImageRef, familiar_name, short_id};
use docker_format::time::unix_seconds as unix_of;

/// The image a user named, or 404 `No such image: X`.
pub async fn find(api: &Api, input: &str) -> Result<ImageEntry, ApiError> {
    let image = ImageRef::parse(input)?;
    api.engine()
        .images()
        .find(&image)
        .await
        .map_err(|e| match e {
            commit_engine::Error::ImageNotFound(_) => {
                ApiError::not_found(format!("No such image: {input}"))
            }
            other => other.into(),
        })
}

fn unix(created: Option<&str>) -> i64 {
    unix_of(created)
}

fn repo_tags(e: &ImageEntry) -> Vec<String> {
    e.names()
        .into_iter()
        .filter(|n| !n.contains('@'))
        .map(|n| familiar_name(n).to_string())
        .collect()
}

/// `repo@digest` for each named repository of the image.
fn repo_digests(e: &ImageEntry) -> Vec<String> {
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

fn labels(e: &ImageEntry) -> BTreeMap<String, String> {
    e.config()
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn descriptor_json(d: &Descriptor) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// `GET /images/json` (`docker images`).
pub async fn list(State(api): State<Api>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let filters = Filters::parse(
        q.get("filters"),
        &["reference", "dangling", "label", "before", "since"],
    )?;
    let all = api.engine().images().list().await?;
    let dangling = filters.bool("dangling")?;
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        match filters.get(name) {
            [] => Ok(None),
            [r] => {
                let l = ImageRef::parse(r)?;
                let hit = all.iter().find(|e| match &l {
                    ImageRef::Name { name, or_id_prefix } => {
                        e.records.iter().any(|rec| &rec.name == name)
                            || or_id_prefix.as_ref().is_some_and(|p| {
                                e.id.trim_start_matches("sha256:").starts_with(p.as_str())
                            })
                    }
                    ImageRef::Id(id) => &e.id == id,
                    ImageRef::IdPrefix(p) => e.id.starts_with(p.as_str()),
                });
                hit.map(|e| Some(unix(e.config().created.as_deref())))
                    .ok_or_else(|| ApiError::not_found(format!("No such image: {r}")))
            }
            _ => Err(docker_format::filters::FilterError::OnlyOne(name.to_string()).into()),
        }
    };
    let (before, since) = (bound("before")?, bound("since")?);
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
        if !filters.labels_match("label", &labels(e)) {
            continue;
        }
        let created = unix(e.config().created.as_deref());
        if before.is_some_and(|b| created >= b) || since.is_some_and(|s| created <= s) {
            continue;
        }
        let l = labels(e);
        out.push(json!({
            "Containers": -1,
            "Created": created,
            "Id": e.id,
            "Labels": if l.is_empty() { Value::Null } else { json!(l) },
            "ParentId": "",
            "Descriptor": descriptor_json(e.target()),
            "RepoDigests": repo_digests(e),
            "RepoTags": tags,
            "SharedSize": -1,
            "Size": e.size(),
        }));
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /images/{name}/json` (`docker image inspect`).
pub async fn inspect(api: &Api, name: &str) -> Result<Response, ApiError> {
    let e = find(api, name).await?;
    let cfg = e.config();
    let last_tag = e
        .last_tagged()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let comment = cfg
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .unwrap_or_default();
    let mut body = json!({
        "Id": e.id,
        "RepoTags": repo_tags(&e),
        "RepoDigests": repo_digests(&e),
        "Parent": "",
        "Comment": comment,
        "Created": cfg.created,
        "DockerVersion": "",
        "Author": cfg.author.clone().unwrap_or_default(),
        "Config": cfg.config,
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Size": e.size(),
        "GraphDriver": { "Name": "overlayfs", "Data": null },
        "RootFS": { "Type": cfg.rootfs.kind, "Layers": cfg.rootfs.diff_ids },
        "Metadata": { "LastTagTime": last_tag },
        "Descriptor": descriptor_json(e.target()),
    });
    if let Some(v) = &cfg.variant {
        body["Variant"] = json!(v);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /images/{name}/history` (`docker history`): newest first.
pub async fn history(api: &Api, name: &str) -> Result<Response, ApiError> {
    let e = find(api, name).await?;
    let cfg = e.config();
    let mut layers = e.manifest().layers.iter();
    let mut rows: Vec<Value> = cfg
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().map(|l| l.size).unwrap_or(0)
            };
            json!({
                "Id": "<missing>",
                "Created": unix(h.created.as_deref()),
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": Value::Null,
                "Size": size,
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(e.id);
        let tags = repo_tags(&e);
        top["Tags"] = if tags.is_empty() {
            Value::Null
        } else {
            json!(tags)
        };
    }
    Ok(json_response(StatusCode::OK, &rows))
}

/// `GET /images/{name}/json|history|get`: the name may hold slashes, so
/// the route is a wildcard and the action is its last segment.
pub async fn get_route(
    State(api): State<Api>,
    axum::extract::Path(rest): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    match rest.rsplit_once('/') {
        Some((name, "json")) => inspect(&api, name).await,
        Some((name, "history")) => history(&api, name).await,
        Some((name, "get")) => crate::save::save(&api, vec![name.to_string()]).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}

/// `POST /images/{name}/tag|push`.
pub async fn post_route(
    State(api): State<Api>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    match rest.rsplit_once('/') {
        Some((name, "tag")) => tag(&api, name, raw.as_deref()).await,
        Some((name, "push")) => crate::push::push(&api, name, raw.as_deref(), &headers).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}

/// `DELETE /images/{name}`.
pub async fn delete_route(
    State(api): State<Api>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    delete(&api, &rest, raw.as_deref()).await
}

/// `POST /images/{name}/tag?repo=&tag=` (`docker tag`).
pub async fn tag(api: &Api, name: &str, raw: Option<&str>) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    let target = reference::repo_tag_reference(q.get("repo"), q.get("tag"))?
        .ok_or_else(|| ApiError::bad_request("repository name must have at least one component"))?;
    let e = find(api, name).await?;
    api.engine().images().tag(&e, &target.full()).await?;
    api.events().image("tag", &e.id, &target.familiar());
    Ok((StatusCode::CREATED, "").into_response())
}

/// `DELETE /images/{name}?force=&noprune=` (`docker rmi`).
pub async fn delete(api: &Api, name: &str, raw: Option<&str>) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    let force = bool_value(q.get("force"));
    let e = find(api, name).await?;
    let store = api.engine().images();
    let named = match ImageRef::parse(name)? {
        ImageRef::Name { name: n, .. } if e.records.iter().any(|r| r.name == n) => Some(n),
        _ => None,
    };
    let real = e.names();
    // A name among others: untag it, the image stays.
    if let Some(n) = &named {
        if real.len() > 1 {
            store.untag(n).await?;
            api.events().image("untag", &e.id, familiar_name(n));
            return Ok(json_response(
                StatusCode::OK,
                &json!([{ "Untagged": familiar_name(n) }]),
            ));
        }
    }
    // The image itself.
    let short = short_id(&e.id);
    let users: Vec<ContainerRecord> = store.users(&e).await?;
    for ct in &users {
        let state = api.engine().containers().task(&ct.id).await?.state;
        if matches!(state, Some(TaskState::Running | TaskState::Paused)) {
            return Err(conflict(
                &short,
                true,
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
                &short,
                false,
                format!(
                    "image is being used by stopped container {}",
                    short_id(&ct.id)
                ),
            ));
        }
        if named.is_none() && real.len() > 1 {
            return Err(conflict(
                &short,
                false,
                "image is referenced in multiple repositories".into(),
            ));
        }
    }
    let mut out = Vec::new();
    for r in &e.records {
        store.untag(&r.name).await?;
        if !r.dangling {
            api.events().image("untag", &e.id, familiar_name(&r.name));
            out.push(json!({ "Untagged": familiar_name(&r.name) }));
        }
    }
    api.events().image("delete", &e.id, "");
    out.push(json!({ "Deleted": e.id }));
    Ok(json_response(StatusCode::OK, &out))
}

fn conflict(short: &str, hard: bool, message: String) -> ApiError {
    let force = if hard {
        "cannot be forced"
    } else {
        "must be forced"
    };
    ApiError::new(
        StatusCode::CONFLICT,
        format!("conflict: unable to delete {short} ({force}) - {message}"),
    )
}
