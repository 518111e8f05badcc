//! `GET /events` (`docker events`): the event hub's kept events since a
//! time, then the live ones, filtered as Docker filters them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use docker_format::filters::Filters;
use docker_format::time::parse_unix_timestamp;
use tokio::sync::broadcast;

use crate::Api;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query};
use crate::observe::{Event, now_nanos};
use crate::version::compare;
use crate::views::events::Message;

/// The stream types Docker offers (API 1.52+), in its order of preference
/// when an `Accept` header names several with the same weight.
const JSON_LINES: &str = "application/jsonl";
const NDJSON: &str = "application/x-ndjson";
const JSON_SEQ: &str = "application/json-seq";

/// Docker's `contenttype.MatchAcceptStrict`: the offer named explicitly in
/// `Accept` with the highest weight (wildcards and `q=0` ignored; ties go
/// to the earlier offer).
fn match_accept_strict<'a>(accept: &str, offers: &[&'a str]) -> Option<&'a str> {
    let specs: Vec<(String, f64)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let value = it.next()?.trim().to_ascii_lowercase();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            Some((value, q))
        })
        .collect();
    let mut best: Option<(&str, f64)> = None;
    for offer in offers {
        for (value, q) in &specs {
            if *q == 0.0 || value != offer {
                continue;
            }
            if best.is_none_or(|(_, b)| *q > b) {
                best = Some((offer, *q));
            }
        }
    }
    best.map(|(o, _)| o)
}

/// One event as written at `version`: API 1.52 dropped the deprecated
/// `status`, `id` and `from`; `json-seq` records start with RS (0x1E).
fn encode(ev: &Event, legacy: bool, seq: bool) -> bytes::Bytes {
    let mut v = serde_json::to_value(&ev.message).unwrap_or_default();
    if !legacy {
        if let Some(o) = v.as_object_mut() {
            for k in ["status", "id", "from"] {
                o.remove(k);
            }
        }
    }
    let mut b = Vec::new();
    if seq {
        b.push(0x1e);
    }
    b.extend(serde_json::to_vec(&v).unwrap_or_default());
    b.push(b'\n');
    bytes::Bytes::from(b)
}

/// Whether an event passes Docker's event filters.
fn matches(f: &Filters, ev: &Message) -> bool {
    let attr = |k: &str| ev.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let any = |name: &str, vals: &[&str]| {
        f.get(name).is_empty() || f.get(name).iter().any(|want| vals.contains(&want.as_str()))
    };
    any("type", &[ev.kind])
        && any("event", &[&ev.action])
        && (ev.kind != "container" || any("container", &[&ev.actor.id, attr("name")]))
        && any(
            "image",
            &[
                attr("image"),
                attr("imageRef"),
                attr("imageID"),
                &ev.actor.id,
            ],
        )
        && f.labels_match("label", &ev.actor.attributes)
}

/// `GET /events?since=&until=&filters=` (`docker events`).
pub(crate) async fn events(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    headers: HeaderMap,
    q: Query,
) -> Result<Response, ApiError> {
    let invalid = |what: &str, e: docker_format::time::TimestampError| {
        ApiError::InvalidRequest(format!("invalid value for '{what}': {e}"))
    };
    let since = parse_unix_timestamp(q.get("since")).map_err(|e| invalid("since", e))?;
    let until = parse_unix_timestamp(q.get("until")).map_err(|e| invalid("until", e))?;
    if let Some(u) = until {
        if u < since.unwrap_or(i64::MIN) {
            return Err(ApiError::InvalidRequest(format!(
                "`since` time ({}) cannot be after `until` time ({})",
                q.get("since"),
                q.get("until")
            )));
        }
    }
    let filters = Filters::parse(
        q.get("filters"),
        &["type", "event", "container", "image", "label", "scope"],
    )?;
    let legacy = compare(&version, "1.52") == std::cmp::Ordering::Less;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let content_type =
        match_accept_strict(accept, &[JSON_LINES, NDJSON, JSON_SEQ]).unwrap_or(if legacy {
            "application/json"
        } else {
            JSON_LINES
        });
    let seq = content_type == JSON_SEQ;
    let now = now_nanos();
    let (kept, mut live) = api.events().subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |ev: &Event| encode(ev, legacy, seq);
        let in_window = |ev: &Event| {
            since.is_none_or(|s| ev.time_nano >= s) && until.is_none_or(|u| ev.time_nano <= u)
        };
        // Replay only when asked (`since`), as Docker does.
        if since.is_some() {
            for ev in kept
                .iter()
                .filter(|e| in_window(e) && matches(&filters, &e.message))
            {
                if tx.send(Ok(line(ev))).await.is_err() {
                    return;
                }
            }
        }
        if until.is_some_and(|u| u <= now) {
            return;
        }
        let deadline = until.map(|u| {
            tokio::time::Instant::now() + Duration::from_nanos(u64::try_from(u - now).unwrap_or(0))
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            tokio::select! {
                ev = next => match ev {
                    None => return, // until reached
                    Some(Ok(ev)) => {
                        if in_window(&ev) && matches(&filters, &ev.message) && tx.send(Ok(line(&ev))).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                    Some(Err(broadcast::error::RecvError::Closed)) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_matched_strictly_as_docker() {
        let offers = [JSON_LINES, NDJSON, JSON_SEQ];
        assert_eq!(match_accept_strict("", &offers), None);
        assert_eq!(match_accept_strict("*/*", &offers), None);
        assert_eq!(
            match_accept_strict("application/json-seq", &offers),
            Some(JSON_SEQ)
        );
        assert_eq!(
            match_accept_strict("application/x-ndjson;q=0.5, application/json-seq", &offers),
            Some(JSON_SEQ)
        );
        assert_eq!(
            match_accept_strict("application/json-seq, application/x-ndjson", &offers),
            Some(NDJSON)
        );
        assert_eq!(
            match_accept_strict("application/jsonl;q=0, application/x-ndjson;q=0.1", &offers),
            Some(NDJSON)
        );
    }

    #[test]
    fn filters_select_events() {
        let ev = Message {
            status: "commit".into(),
            id: "abc".into(),
            from: None,
            kind: "container",
            action: "commit".into(),
            actor: crate::views::events::Actor {
                id: "abc".into(),
                attributes: [("name", "web"), ("imageRef", "app:1")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            scope: "local",
            time: 0,
            time_nano: 0,
        };
        let f =
            |s: &str| Filters::parse(s, &["type", "event", "container", "image", "label"]).unwrap();
        assert!(matches(&f(""), &ev));
        assert!(matches(&f(r#"{"event":["commit"]}"#), &ev));
        assert!(!matches(&f(r#"{"event":["tag"]}"#), &ev));
        assert!(matches(&f(r#"{"container":["web"]}"#), &ev));
        assert!(matches(&f(r#"{"image":["app:1"]}"#), &ev));
        assert!(!matches(&f(r#"{"type":["image"]}"#), &ev));
    }
}
