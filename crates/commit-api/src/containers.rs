//! Docker's container routes, read from containerd's containers and tasks:
//! `GET /containers/json` (`docker ps`) and `GET /containers/{id}/json`
//! (`docker inspect`; docker-py's `containers.get(id)`, which agents call
//! before `container.commit(…)`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use commit_engine::catalog;
use commit_engine::container::{self as ctrs, display_name};
use commit_engine::containerd_client::services::v1::Container;
use commit_engine::task::{self, TaskInfo, TaskState};
use serde_json::{Value, json};

use crate::Api;
use crate::commit::{Query, bool_value};
use crate::error::{ApiError, json_response};
use crate::filters::Filters;
use crate::reference::familiar_name;

/// Docker's state name.
fn state_name(t: &TaskInfo) -> &'static str {
    match t.state {
        Some(TaskState::Running) => "running",
        Some(TaskState::Paused) => "paused",
        Some(TaskState::Stopped) => "exited",
        Some(TaskState::Created) | Some(TaskState::None) | None => "created",
        Some(TaskState::Other) => "dead",
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as i64;
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        s => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// Docker's `State.String()`: "Up 5 minutes", "Up 1 second (Paused)",
/// "Exited (137) 2 minutes ago", "Created".
fn status_text(t: &TaskInfo, created: i64, now: i64) -> String {
    match t.state {
        Some(TaskState::Running) | Some(TaskState::Paused) => {
            let up = format!(
                "Up {}",
                human_duration(now - t.started_at.unwrap_or(created))
            );
            if t.state == Some(TaskState::Paused) {
                format!("{up} (Paused)")
            } else {
                up
            }
        }
        Some(TaskState::Stopped) => match t.exited_at {
            Some((at, _)) => format!(
                "Exited ({}) {} ago",
                t.exit_status,
                human_duration(now - at)
            ),
            None => format!("Exited ({})", t.exit_status),
        },
        Some(TaskState::Other) => "Dead".into(),
        _ => "Created".into(),
    }
}

fn spec(ct: &Container) -> Value {
    ct.spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null)
}

fn rfc3339(secs: i64, nanos: i32) -> String {
    DateTime::<Utc>::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// The image IDs of the namespace's image records, by record name.
async fn image_ids(api: &Api) -> HashMap<String, String> {
    let engine = api.engine();
    let Ok(all) = catalog::list(engine.containerd(), engine.cache()).await else {
        return HashMap::new();
    };
    all.into_iter()
        .flat_map(|e| e.records.into_iter().map(move |r| (r.name, e.id.clone())))
        .collect()
}

/// `GET /containers/json` (`docker ps`).
pub async fn list(State(api): State<Api>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let filters = Filters::parse(
        q.get("filters"),
        &["id", "name", "label", "status", "ancestor"],
    )?;
    for s in filters.get("status") {
        if ![
            "created",
            "restarting",
            "running",
            "removing",
            "paused",
            "exited",
            "dead",
        ]
        .contains(&s.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'status={s}'"
            )));
        }
    }
    let all = bool_value(q.get("all")) || !filters.get("status").is_empty();
    let limit: Option<usize> = match q.get("limit") {
        "" => None,
        l => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit: {l}"))),
        },
    };
    let c = api.engine().containerd();
    let mut containers = ctrs::list(c, Vec::new()).await?;
    // Newest first, as Docker lists.
    containers.sort_by_key(|ct| std::cmp::Reverse(ct.created_at.map(|t| (t.seconds, t.nanos))));
    let ids = image_ids(&api).await;
    let now = Utc::now().timestamp();
    let mut out = Vec::new();
    for ct in containers {
        let t = task::info(c, &ct.id).await?;
        let state = state_name(&t);
        if !all && !matches!(state, "running" | "paused") {
            continue;
        }
        let name = display_name(&ct);
        let labels: BTreeMap<String, String> = ct
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let image = familiar_name(&ct.image).to_string();
        let keep = (filters.get("id").is_empty()
            || filters
                .get("id")
                .iter()
                .any(|p| ct.id.starts_with(p.as_str())))
            && (filters.get("name").is_empty()
                || filters
                    .get("name")
                    .iter()
                    .any(|n| name.contains(n.as_str())))
            && (filters.get("status").is_empty()
                || filters.get("status").iter().any(|s| s == state))
            && (filters.get("ancestor").is_empty()
                || filters.get("ancestor").iter().any(|a| {
                    a == &image
                        || a == &ct.image
                        || ids.get(&ct.image).is_some_and(|id| id.contains(a.as_str()))
                }))
            && filters.labels_match("label", &labels);
        if !keep {
            continue;
        }
        let created = ct.created_at.map(|t| t.seconds).unwrap_or(0);
        let args: Vec<String> = spec(&ct)["process"]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.push(json!({
            "Id": ct.id,
            "Names": [format!("/{name}")],
            "Image": image,
            "ImageID": ids.get(&ct.image).cloned().unwrap_or_default(),
            "Command": args.join(" "),
            "Created": created,
            "Ports": [],
            "Labels": labels,
            "State": state,
            "Status": status_text(&t, created, now),
            "HostConfig": { "NetworkMode": "none" },
            "NetworkSettings": { "Networks": {} },
            "Mounts": [],
        }));
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /containers/{id}/json` (`docker inspect`).
pub async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let c = api.engine().containerd();
    let ct = ctrs::resolve(c, &id).await?;
    let t = task::info(c, &ct.id).await?;
    let spec = spec(&ct);
    let process = &spec["process"];
    let args: Vec<String> = process["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ids = image_ids(&api).await;
    let created = ct
        .created_at
        .map(|t| rfc3339(t.seconds, t.nanos))
        .unwrap_or_default();
    let state = state_name(&t);
    let started = t
        .started_at
        .map(|s| rfc3339(s, 0))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let finished = t
        .exited_at
        .map(|(s, n)| rfc3339(s, n))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let user = match (&process["user"]["uid"], &process["user"]["gid"]) {
        (Value::Number(u), Value::Number(g)) if u.as_u64() != Some(0) || g.as_u64() != Some(0) => {
            format!("{u}:{g}")
        }
        _ => String::new(),
    };
    let mounts: Vec<Value> = spec["mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["type"] == "bind")
                .map(|m| {
                    let rw = !m["options"].as_array().is_some_and(|o| o.iter().any(|x| x == "ro"));
                    json!({"Type": "bind", "Source": m["source"], "Destination": m["destination"], "Mode": "", "RW": rw, "Propagation": ""})
                })
                .collect()
        })
        .unwrap_or_default();
    let name = display_name(&ct);
    let body = json!({
        "Id": ct.id,
        "Created": created,
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state,
            "Running": matches!(state, "running" | "paused"),
            "Paused": state == "paused",
            "Restarting": false,
            "OOMKilled": false,
            "Dead": state == "dead",
            "Pid": if matches!(state, "running" | "paused") { t.pid } else { 0 },
            "ExitCode": t.exit_status,
            "Error": "",
            "StartedAt": started,
            "FinishedAt": finished,
        },
        "Image": ids.get(&ct.image).cloned().unwrap_or_default(),
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": format!("/{name}"),
        "RestartCount": 0,
        "Driver": ct.snapshotter,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": { "NetworkMode": "none" },
        "GraphDriver": { "Name": ct.snapshotter, "Data": null },
        "Mounts": mounts,
        "Config": {
            "Hostname": spec["hostname"].as_str().unwrap_or(""),
            "Domainname": "",
            "User": user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": process["terminal"].as_bool().unwrap_or(false),
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": process["env"],
            "Cmd": args,
            "Image": familiar_name(&ct.image),
            "Volumes": null,
            "WorkingDir": process["cwd"].as_str().unwrap_or(""),
            "Entrypoint": null,
            "OnBuild": null,
            "Labels": ct.labels,
        },
        "NetworkSettings": { "Networks": {} },
    });
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(42), "42 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn status_texts() {
        let running = TaskInfo {
            state: Some(TaskState::Running),
            started_at: Some(1000),
            ..Default::default()
        };
        assert_eq!(status_text(&running, 0, 1300), "Up 5 minutes");
        let paused = TaskInfo {
            state: Some(TaskState::Paused),
            started_at: Some(1000),
            ..Default::default()
        };
        assert_eq!(status_text(&paused, 0, 1002), "Up 2 seconds (Paused)");
        let exited = TaskInfo {
            state: Some(TaskState::Stopped),
            exit_status: 137,
            exited_at: Some((1000, 0)),
            ..Default::default()
        };
        assert_eq!(status_text(&exited, 0, 1120), "Exited (137) 2 minutes ago");
        assert_eq!(
            status_text(
                &TaskInfo {
                    state: Some(TaskState::None),
                    ..Default::default()
                },
                0,
                5
            ),
            "Created"
        );
    }
}
