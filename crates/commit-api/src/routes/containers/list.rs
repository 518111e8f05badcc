//! `GET /containers/json` (`docker ps`): Docker's filters, validated as
//! Docker validates them, then each container's `ContainerSummary`.
//!
//! The `name` filter is a Go regexp (`regex`, `NamePattern`); `id` matches
//! an exact ID or a unique prefix (Docker's `GetByPrefix`); `network`,
//! `publish` and `expose` are validated and then match nothing (no CNI
//! state here), as in Docker for such containers.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use commit_engine::{ContainerRecord as Container, ImageIndex};
use docker_format::filters::{FilterError, Filters, NamePattern};
use docker_format::image::Empty;
use docker_format::ports::check_port_filter;
use docker_format::reference::ImageRef;
use futures::StreamExt;

use super::spec::network_mode;
use super::state::status_text;
use super::{Seen, annotations, manifest_for, see};
use crate::Api;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query, bool_value};
use crate::views::{self, containers as v};

/// Docker's container states, in its order (for the filter's error text).
const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// The filters `docker ps` accepts (Docker's `acceptedPsFilterTags`).
const PS_FILTERS: &[&str] = &[
    "ancestor",
    "before",
    "exited",
    "id",
    "isolation",
    "label",
    "name",
    "status",
    "health",
    "since",
    "volume",
    "network",
    "is-task",
    "publish",
    "expose",
];

/// Task lookups in flight at once while listing.
const PARALLEL: usize = 8;

/// The summary's `Command`: path, then the arguments, those with a space
/// single-quoted (Docker's `container/view.go`).
pub(super) fn command_line(args: &[String]) -> String {
    let Some((path, rest)) = args.split_first() else {
        return String::new();
    };
    if rest.is_empty() {
        return path.clone();
    }
    let rest: Vec<String> = rest
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("{path} {}", rest.join(" "))
}

/// What `docker ps` asked for, validated as Docker validates it.
#[derive(Debug)]
struct Selection {
    all: bool,
    limit: Option<usize>,
    filters: Filters,
    exited: Vec<i64>,
    is_task: Option<bool>,
    names: Vec<NamePattern>,
}

impl Selection {
    fn parse(q: &Query) -> Result<Self, ApiError> {
        let filters = Filters::parse(q.get("filters"), PS_FILTERS)?;
        let mut all = bool_value(q.get("all"));
        let limit = match q.get("limit") {
            "" => None,
            l => match l.parse::<i64>() {
                Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Ok(_) => None,
                Err(_) => {
                    return Err(ApiError::InvalidRequest(format!(
                        "strconv.Atoi: parsing {l:?}: invalid syntax"
                    )));
                }
            },
        };
        let mut exited = Vec::new();
        for v in filters.get("exited") {
            let code = v.parse::<i64>().map_err(|_| FilterError::ValueBecause {
                name: "exited".into(),
                value: v.clone(),
                reason: format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
            })?;
            exited.push(code);
        }
        for s in filters.get("status") {
            if !STATES.contains(&s.as_str()) {
                return Err(FilterError::ValueBecause {
                    name: "status".into(),
                    value: s.clone(),
                    reason: format!(
                        "invalid value for state ({s}): must be one of {}",
                        STATES.join(", ")
                    ),
                }
                .into());
            }
            all = true;
        }
        for h in filters.get("health") {
            if !["none", "starting", "healthy", "unhealthy"].contains(&h.as_str()) {
                return Err(FilterError::ValueBecause {
                    name: "health".into(),
                    value: h.clone(),
                    reason: format!(
                        "invalid value for health ({h}): must be one of none, starting, healthy, unhealthy"
                    ),
                }
                .into());
            }
        }
        let is_task = match filters.get("is-task") {
            [] => None,
            values => {
                let t = values.iter().any(|v| v == "1" || v == "true");
                let f = values.iter().any(|v| v == "0" || v == "false");
                if t == f {
                    return Err(FilterError::Value {
                        name: "is-task".into(),
                        value: format!("[{}]", values.join(" ")),
                    }
                    .into());
                }
                Some(t)
            }
        };
        for key in ["publish", "expose"] {
            for v in filters.get(key) {
                check_port_filter(key, v)?;
            }
        }
        let names = filters
            .get("name")
            .iter()
            .map(|p| NamePattern::new(p))
            .collect();
        Ok(Self {
            all,
            limit,
            filters,
            exited,
            is_task,
            names,
        })
    }

    /// Filters that need only the record: `id` and `name`. `ids` is every
    /// container's ID (an `id` value matches an exact ID, else a unique
    /// prefix, as Docker's `GetByPrefix`).
    fn keeps_record(&self, ct: &Container, ids: &[&str]) -> bool {
        let id = self.filters.get("id");
        let id_ok = id.is_empty()
            || id
                .iter()
                .any(|p| unique_prefix(ids, p) == Some(ct.id.as_str()));
        let name = &ct.name;
        let name_ok = self.names.is_empty() || self.names.iter().any(|p| p.matches(name));
        id_ok && name_ok
    }

    /// The remaining filters, and `all`.
    fn keeps(&self, s: &Seen, ancestors: Option<&HashSet<String>>) -> bool {
        let state = s.state();
        if !self.all && self.limit.is_none() && !matches!(state, "running" | "paused") {
            return false;
        }
        if !self.filters.labels_match("label", &s.labels) {
            return false;
        }
        if self.is_task == Some(true) {
            return false;
        }
        // Docker: only containers that ran and stopped have an exit code.
        let exited_with = |code: &i64| state == "exited" && i64::from(s.task.exit_status) == *code;
        if !self.exited.is_empty() && !self.exited.iter().any(exited_with) {
            return false;
        }
        let status = self.filters.get("status");
        if !status.is_empty() && !status.iter().any(|v| v == state) {
            return false;
        }
        // No container here has a health check: its health is "none".
        let health = self.filters.get("health");
        if !health.is_empty() && !health.iter().any(|h| h == "none") {
            return false;
        }
        let volumes = self.filters.get("volume");
        if !volumes.is_empty()
            && !s.mounts.iter().any(|m| {
                volumes
                    .iter()
                    .any(|v| m.destination == *v || m.source == *v)
            })
        {
            return false;
        }
        if ancestors.is_some_and(|ids| !ids.contains(&s.image.id)) {
            return false;
        }
        // Neither networks nor ports are known here.
        ["network", "publish", "expose"]
            .iter()
            .all(|k| self.filters.get(k).is_empty())
    }
}

/// The one ID equal to `p`, else the one starting with it.
fn unique_prefix<'a>(ids: &[&'a str], p: &str) -> Option<&'a str> {
    if p.is_empty() {
        return None;
    }
    if let Some(exact) = ids.iter().find(|id| **id == p) {
        return Some(exact);
    }
    let mut hits = ids.iter().filter(|id| id.starts_with(p));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// The position of the container `before=`/`since=` names: an exact ID or
/// a name.
fn position(sorted: &[Container], value: &str) -> Result<usize, ApiError> {
    let wanted = value.trim_start_matches('/');
    sorted
        .iter()
        .position(|ct| ct.id == value)
        .or_else(|| sorted.iter().position(|ct| ct.name == wanted))
        .ok_or_else(|| ApiError::NoSuchContainer(value.to_string()))
}

/// `GET /containers/json` (`docker ps`; `size=1`: `docker ps -s`).
pub(crate) async fn list(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    q: Query,
) -> Result<Response, ApiError> {
    let sel = Selection::parse(&q)?;
    let out = summaries(&api, &version, &sel, bool_value(q.get("size"))).await?;
    Ok(views::json(StatusCode::OK, &out))
}

/// Every container's summary with its sizes, as `docker ps -a -s` lists
/// them (`docker system df`).
pub(crate) async fn all_with_sizes(
    api: &Api,
    version: &str,
) -> Result<Vec<v::ContainerSummary>, ApiError> {
    let sel = Selection::parse(&Query::parse(Some("all=1")))?;
    summaries(api, version, &sel, true).await
}

async fn summaries(
    api: &Api,
    version: &str,
    sel: &Selection,
    size: bool,
) -> Result<Vec<v::ContainerSummary>, ApiError> {
    let mut containers = api.engine().containers().list().await?;
    // Newest first, as Docker lists.
    containers.sort_by(|a, b| {
        let at = |ct: &Container| ct.created;
        at(b).cmp(&at(a)).then_with(|| a.id.cmp(&b.id))
    });
    // `before`: only older ones; `since`: only newer ones.
    let mut range = 0..containers.len();
    for v in sel.filters.get("before") {
        range.start = range.start.max(position(&containers, v)? + 1);
    }
    for v in sel.filters.get("since") {
        range.end = range.end.min(position(&containers, v)?);
    }
    let ids: Vec<String> = containers.iter().map(|ct| ct.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let candidates: Vec<Container> = containers
        .into_iter()
        .enumerate()
        .filter(|(i, ct)| range.contains(i) && sel.keeps_record(ct, &id_refs))
        .map(|(_, ct)| ct)
        .collect();
    let images = api.engine().images().index().await?;
    // Docker logs and skips an `ancestor=` value that names no image (or
    // several): it names nothing.
    let ancestors = (!sel.filters.get("ancestor").is_empty()).then(|| {
        let refs: Vec<ImageRef> = sel
            .filters
            .get("ancestor")
            .iter()
            .filter_map(|v| ImageRef::parse(v).ok())
            .collect();
        images.ids_of(&refs)
    });
    let seen: Vec<Result<Seen, ApiError>> = futures::stream::iter(candidates)
        .map(|ct| see(api, ct, &images))
        .buffered(PARALLEL)
        .collect()
        .await;
    let now = Utc::now().timestamp();
    let mut out = Vec::new();
    for s in seen {
        let s = s?;
        if !sel.keeps(&s, ancestors.as_ref()) {
            continue;
        }
        let mut sum = summary(&s, &images, version, now);
        if size && let Some(size) = crate::routes::df::sizes(api, &s.ct).await {
            // `omitempty` integers.
            sum.size_rw = (size.rw != 0).then_some(size.rw);
            sum.size_root_fs = (size.root_fs != 0).then_some(size.root_fs);
        }
        out.push(sum);
        if sel.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

/// Docker's `ContainerSummary`.
pub(super) fn summary(
    s: &Seen,
    images: &ImageIndex,
    version: &str,
    now: i64,
) -> v::ContainerSummary {
    let created = s.created();
    v::ContainerSummary {
        id: s.ct.id.clone(),
        names: vec![format!("/{}", s.name)],
        image: s.image_text.clone(),
        image_id: s.image.id.clone(),
        image_manifest_descriptor: manifest_for(s, images, version),
        command: command_line(s.args()),
        created,
        ports: [],
        size_rw: None,
        size_root_fs: None,
        labels: s.labels.clone(),
        state: s.state(),
        status: status_text(&s.task, created, now),
        host_config: v::SummaryHostConfig {
            network_mode: network_mode(&s.ct),
            annotations: annotations(s.spec(), version),
        },
        network_settings: v::SummaryNetworkSettings { networks: Empty {} },
        mounts: s.mounts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{container, named, seen, task};
    use super::*;
    use commit_engine::{TaskInfo, TaskState};
    use serde_json::Value;

    #[test]
    fn commands_quote_arguments_with_spaces() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&args(&["sh", "-c", "sleep 100000"])),
            "sh -c 'sleep 100000'"
        );
        assert_eq!(command_line(&args(&["nginx"])), "nginx");
        assert_eq!(command_line(&[]), "");
    }

    fn selection(query: &str) -> Result<Selection, ApiError> {
        Selection::parse(&Query::parse(Some(query)))
    }

    fn filters(json: &str) -> String {
        format!(
            "filters={}",
            form_urlencoded::byte_serialize(json.as_bytes()).collect::<String>()
        )
    }

    #[test]
    fn filters_are_validated_as_docker_does() {
        assert_eq!(
            selection(&filters(r#"{"status":["bogus"]}"#))
                .unwrap_err()
                .to_string(),
            "invalid filter 'status=bogus': invalid value for state (bogus): must be one of created, running, paused, restarting, removing, exited, dead"
        );
        assert_eq!(
            selection(&filters(r#"{"nope":["x"]}"#))
                .unwrap_err()
                .to_string(),
            "invalid filter 'nope'"
        );
        assert!(selection(&filters(r#"{"exited":["x"]}"#)).is_err());
        assert!(selection(&filters(r#"{"health":["sick"]}"#)).is_err());
        assert!(selection(&filters(r#"{"is-task":["maybe"]}"#)).is_err());
        assert!(selection(&filters(r#"{"publish":["80:80"]}"#)).is_err());
        assert!(selection(&filters(r#"{"expose":["8000-8080/udp"]}"#)).is_ok());
        assert_eq!(
            selection("limit=x").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        // A status filter lists stopped containers too.
        assert!(selection(&filters(r#"{"status":["exited"]}"#)).unwrap().all);
        assert!(!selection("all=0").unwrap().all);
        assert_eq!(selection("limit=3").unwrap().limit, Some(3));
        assert_eq!(selection("limit=-1").unwrap().limit, None);
    }

    #[test]
    fn filters_select_as_docker_does() {
        let running = seen(
            named(
                "web-1",
                container("run1", &[("team", "infra")], Value::Null),
            ),
            task(TaskState::Running),
        );
        let exited = seen(
            named("job", container("stop1", &[], Value::Null)),
            TaskInfo {
                exit_status: 137,
                ..task(TaskState::Stopped)
            },
        );
        let keeps = |q: &str, s: &Seen| selection(q).unwrap().keeps(s, None);
        assert!(keeps("", &running));
        assert!(!keeps("", &exited));
        assert!(keeps("all=1", &exited));
        // A limit lists every state, as `docker ps -n`.
        assert!(keeps("limit=1", &exited));
        assert!(keeps(&filters(r#"{"status":["exited"]}"#), &exited));
        assert!(!keeps(&filters(r#"{"status":["exited"]}"#), &running));
        assert!(keeps(&filters(r#"{"label":["team=infra"]}"#), &running));
        assert!(!keeps(&filters(r#"{"label":["team"]}"#), &exited));
        // `exited` does not imply `all` (Docker's docs pair it with `-a`).
        let exited_137 = filters(r#"{"exited":["137"]}"#);
        assert!(!keeps(&exited_137, &exited));
        assert!(keeps(&format!("all=1&{exited_137}"), &exited));
        assert!(!keeps(&format!("all=1&{exited_137}"), &running));
        assert!(!keeps(
            &format!("all=1&{}", filters(r#"{"exited":["0"]}"#)),
            &exited
        ));
        assert!(keeps(&filters(r#"{"health":["none"]}"#), &running));
        assert!(!keeps(&filters(r#"{"health":["healthy"]}"#), &running));
        assert!(keeps(&filters(r#"{"is-task":["false"]}"#), &running));
        assert!(!keeps(&filters(r#"{"is-task":["true"]}"#), &running));
        assert!(!keeps(&filters(r#"{"network":["bridge"]}"#), &running));

        let ids = ["run1", "run10", "abc"];
        let record = |q: &str, ct: &Container| selection(q).unwrap().keeps_record(ct, &ids);
        let ct = named("web-1", container("run1", &[], Value::Null));
        assert!(record(&filters(r#"{"name":["web"]}"#), &ct));
        assert!(record(&filters(r#"{"name":["^/web-\\d$"]}"#), &ct));
        assert!(record(&filters(r#"{"name":["^web-1$"]}"#), &ct));
        assert!(!record(&filters(r#"{"name":["^web$"]}"#), &ct));
        // An exact ID wins over a longer one it is a prefix of; an
        // ambiguous prefix matches nothing.
        assert!(record(&filters(r#"{"id":["run1"]}"#), &ct));
        assert!(!record(&filters(r#"{"id":["run"]}"#), &ct));
        let abc = container("abc", &[], Value::Null);
        assert!(record(&filters(r#"{"id":["ab"]}"#), &abc));
    }
}
