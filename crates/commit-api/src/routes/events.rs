//! `GET /events` (`docker events`): the event hub's kept events since a
//! time, then the live ones, filtered as Docker filters them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use docker_format::filters::Filters;
use docker_format::time::parse_timestamp;
use tokio::sync::broadcast;

use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::observe::{Event, now_nanos};
use crate::views::events::Message;

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
pub(crate) async fn events(State(api): State<Api>, q: Query) -> Result<Response, ApiError> {
    let filters = Filters::parse(
        q.get("filters"),
        &["type", "event", "container", "image", "label", "scope"],
    )?;
    let since = parse_timestamp(q.get("since"))?;
    let until = parse_timestamp(q.get("until"))?;
    let now = now_nanos();
    let (kept, mut live) = api.events().subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |ev: &Event| {
            let mut b = serde_json::to_vec(&ev.message).unwrap_or_default();
            b.push(b'\n');
            bytes::Bytes::from(b)
        };
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
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

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
