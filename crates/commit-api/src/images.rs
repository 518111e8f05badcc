//! Docker's image routes over containerd's image store: list, inspect,
//! history, tag, delete. (Save and push live in their own modules.)

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use commit_engine::catalog::{self, ImageEntry, Lookup};
use commit_engine::containerd_client::services::v1::Container;
use commit_engine::image::Descriptor;
use commit_engine::images as records;
use commit_engine::task::{self, TaskState};
use serde_json::{Value, json};

use crate::Api;
use crate::commit::{Query, bool_value};
use crate::error::{ApiError, json_response};
use crate::filters::{Filters, glob_match};
use crate::reference::{self, familiar_name};

/// What a user typed in an image position (`docker image inspect X`),
/// read the way Docker reads it.
pub fn lookup(input: &str) -> Result<(Lookup, Option<String>), ApiError> {
    if let Some(hex) = input.strip_prefix("sha256:") {
        if hex.len() == 64 && is_hex(hex) {
            return Ok((Lookup::Id(input.to_string()), None));
        }
        if is_hex(hex) && !hex.is_empty() {
            return Ok((Lookup::IdPrefix(input.to_string()), None));
        }
        return Err(ApiError::bad_request(format!(
            "invalid reference format: {input}"
        )));
    }
    if input.len() == 64 && is_hex(input) {
        return Ok((Lookup::Id(format!("sha256:{input}")), None));
    }
    let named = reference::parse_normalized_named(input).map_err(ApiError::bad_request)?;
    let mut named = named;
    if named.tag.is_none() && named.digest.is_none() {
        named.tag = Some("latest".into());
    }
    // A short hex ID is also a valid repository name: try the name first.
    let fallback = is_hex(input).then(|| input.to_string());
    Ok((Lookup::Name(named.full()), fallback))
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The image a user named, or 404 `No such image: X`.
pub async fn find(api: &Api, input: &str) -> Result<ImageEntry, ApiError> {
    let (l, fallback) = lookup(input)?;
    let engine = api.engine();
    catalog::find(engine.containerd(), engine.cache(), &l, fallback.as_deref())
        .await
        .map_err(|e| match e {
            commit_engine::Error::ImageNotFound(_) => {
                ApiError::not_found(format!("No such image: {input}"))
            }
            other => other.into(),
        })
}

pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn unix(created: Option<&str>) -> i64 {
    created
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
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
    let engine = api.engine();
    let all = catalog::list(engine.containerd(), engine.cache()).await?;
    let dangling = filters.bool("dangling")?;
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        match filters.get(name) {
            [] => Ok(None),
            [r] => {
                let (l, fb) = lookup(r)?;
                let hit = all.iter().find(|e| match &l {
                    Lookup::Name(n) => {
                        e.records.iter().any(|rec| &rec.name == n)
                            || fb.as_ref().is_some_and(|p| {
                                e.id.trim_start_matches("sha256:").starts_with(p.as_str())
                            })
                    }
                    Lookup::Id(id) => &e.id == id,
                    Lookup::IdPrefix(p) => e.id.starts_with(p.as_str()),
                });
                hit.map(|e| Some(unix(e.config().created.as_deref())))
                    .ok_or_else(|| ApiError::not_found(format!("No such image: {r}")))
            }
            _ => Err(ApiError::bad_request(format!(
                "invalid filter '{name}': only one value"
            ))),
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
    let target = reference::repo_tag_reference(q.get("repo"), q.get("tag"))
        .map_err(ApiError::bad_request)?
        .ok_or_else(|| ApiError::bad_request("repository name must have at least one component"))?;
    let e = find(api, name).await?;
    let c = api.engine().containerd();
    // Tagging writes a record only; it needs no lease (the image's content
    // is already referenced by its other records).
    {
        let _turn = api
            .engine()
            .locks()
            .lock(&format!("image:{}", target.full()))
            .await;
        records::name_image(c, "", &target.full(), e.target()).await?;
    }
    api.events().image("tag", &e.id, &target.familiar());
    Ok((StatusCode::CREATED, "").into_response())
}

/// `DELETE /images/{name}?force=&noprune=` (`docker rmi`).
pub async fn delete(api: &Api, name: &str, raw: Option<&str>) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    let force = bool_value(q.get("force"));
    let e = find(api, name).await?;
    let c = api.engine().containerd();
    let (l, _) = lookup(name)?;
    let named = match &l {
        Lookup::Name(n) if e.records.iter().any(|r| &r.name == n) => Some(n.clone()),
        _ => None,
    };
    let real = e.names();
    // A name among others: untag it, the image stays.
    if let Some(n) = &named {
        if real.len() > 1 {
            records::delete(c, n).await?;
            api.events().image("untag", &e.id, familiar_name(n));
            return Ok(json_response(
                StatusCode::OK,
                &json!([{ "Untagged": familiar_name(n) }]),
            ));
        }
    }
    // The image itself.
    let short = short_id(&e.id);
    let users: Vec<Container> = catalog::users(c, &e).await?;
    for ct in &users {
        let state = task::state(c, &ct.id).await?;
        if matches!(state, TaskState::Running | TaskState::Paused) {
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
        records::delete(c, &r.name).await?;
        if !records::is_dangling(r) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_read_like_docker() {
        let id = format!("sha256:{}", "a".repeat(64));
        assert_eq!(lookup(&id).unwrap().0, Lookup::Id(id.clone()));
        assert_eq!(lookup(&"a".repeat(64)).unwrap().0, Lookup::Id(id));
        assert_eq!(
            lookup("sha256:abc").unwrap().0,
            Lookup::IdPrefix("sha256:abc".into())
        );
        assert_eq!(
            lookup("app").unwrap(),
            (Lookup::Name("docker.io/library/app:latest".into()), None)
        );
        assert_eq!(
            lookup("abc123").unwrap(),
            (
                Lookup::Name("docker.io/library/abc123:latest".into()),
                Some("abc123".into())
            )
        );
        assert_eq!(
            lookup("acc/one:v1").unwrap().0,
            Lookup::Name("docker.io/acc/one:v1".into())
        );
        assert!(lookup("Bad").is_err());
    }
}
