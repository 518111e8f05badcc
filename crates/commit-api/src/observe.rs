//! What operators watch: Prometheus metrics (`GET /metrics`) and Docker's
//! event stream (`GET /events`, a `commit` event per commit, image `tag`,
//! `untag` and `delete` events), so agents can follow along.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commit_engine::Committed;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::Api;
use crate::commit::Query;
use crate::error::ApiError;
use docker_format::filters::Filters;
use docker_format::time::parse_timestamp as parse_time;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
    capture: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    code: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    commits: Family<OutcomeLabels, Counter>,
    phases: Family<PhaseLabels, Histogram>,
    paused: Histogram,
    bytes_captured: Counter,
    bytes_stored: Counter,
    in_flight: Gauge,
    reconnects: Counter,
    reconnects_seen: Mutex<u64>,
    requests: Family<RequestLabels, Counter>,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 1 ms … ~65 s.
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("commitd");
        let commits = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "commits",
            "Commits, by outcome (success, error) and capture path",
            commits.clone(),
        );
        let phases = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "commit_phase_duration_seconds",
            "Time spent per commit phase: total, pause, capture, layer (tar, compress, hash, write), apply, write (config, manifest, image)",
            phases.clone(),
        );
        let paused = Histogram::new(seconds_buckets());
        registry.register(
            "paused_seconds",
            "How long commits kept their container paused",
            paused.clone(),
        );
        let bytes_captured = Counter::default();
        registry.register(
            "captured_bytes",
            "Bytes of layer tar captured (uncompressed)",
            bytes_captured.clone(),
        );
        let bytes_stored = Counter::default();
        registry.register(
            "stored_bytes",
            "Bytes of layer blobs written (compressed)",
            bytes_stored.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "commits_in_flight",
            "Commits running now",
            in_flight.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "containerd_reconnects",
            "Times the connection to containerd was re-established",
            reconnects.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests, by method, route and status code",
            requests.clone(),
        );
        Self {
            registry,
            commits,
            phases,
            paused,
            bytes_captured,
            bytes_stored,
            in_flight,
            reconnects,
            reconnects_seen: Mutex::new(0),
            requests,
        }
    }
}

impl Metrics {
    /// A commit starts; the returned guard marks its end.
    pub fn commit_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    pub fn commit_done(&self, done: &Committed) {
        let capture = serde_json::to_value(done.capture)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.commits
            .get_or_create(&OutcomeLabels {
                outcome: "success".into(),
                capture,
            })
            .inc();
        let p = &done.phases;
        for (phase, d) in [
            ("total", done.elapsed),
            ("pause", done.paused),
            ("capture", p.capture),
            ("layer", p.layer),
            ("apply", p.fill),
            ("write", p.image),
        ] {
            self.phases
                .get_or_create(&PhaseLabels {
                    phase: phase.into(),
                })
                .observe(d.as_secs_f64());
        }
        self.paused.observe(done.paused.as_secs_f64());
        self.bytes_captured.inc_by(done.uncompressed_size);
        if let Some(l) = &done.layer {
            self.bytes_stored.inc_by(u64::try_from(l.size).unwrap_or(0));
        }
    }

    pub fn commit_failed(&self) {
        self.commits
            .get_or_create(&OutcomeLabels {
                outcome: "error".into(),
                capture: String::new(),
            })
            .inc();
    }

    pub fn request(&self, method: &str, route: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition, with containerd's connection count brought up
    /// to date.
    pub fn render(&self, connections: u64) -> String {
        {
            let mut seen = self
                .reconnects_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = connections.saturating_sub(1);
            if now > *seen {
                self.reconnects.inc_by(now - *seen);
                *seen = now;
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Counts every request by method, route template and status.
pub async fn track(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Only the methods routes use are labels of their own: a client making
    // up methods must not grow the metrics without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "DELETE" | "PUT") => m.to_string(),
        _ => "other".to_string(),
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    api.metrics()
        .request(&method, &route, resp.status().as_u16());
    resp
}

/// `GET /metrics`.
pub async fn metrics(State(api): State<Api>) -> Response {
    let body = api
        .metrics()
        .render(api.engine().containerd().connections());
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// One Docker event.
#[derive(Debug, Clone)]
pub struct Event {
    pub time_nano: i64,
    pub json: Value,
}

/// Events kept for `since` replay.
const KEPT: usize = 1024;

/// The event hub: a broadcast to live subscribers and the last events.
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    kept: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(256).0,
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl Events {
    fn publish(&self, mut json: Value) {
        let time_nano = now_nanos();
        json["time"] = json!(time_nano / 1_000_000_000);
        json["timeNano"] = json!(time_nano);
        json["scope"] = json!("local");
        let ev = Arc::new(Event { time_nano, json });
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(Arc::clone(&ev));
        let _ = self.tx.send(ev);
    }

    /// Docker's container `commit` event.
    pub fn commit(
        &self,
        done: &Committed,
        container_name: &str,
        container_image: &str,
        comment: &str,
        image_ref: &str,
    ) {
        self.publish(json!({
            "status": "commit",
            "id": done.container_id,
            "from": container_image,
            "Type": "container",
            "Action": "commit",
            "Actor": {
                "ID": done.container_id,
                "Attributes": {
                    "comment": comment,
                    "imageID": done.image_id,
                    "imageRef": image_ref,
                    "image": container_image,
                    "name": container_name,
                    "pausedMs": done.paused.as_millis().to_string(),
                }
            }
        }));
    }

    /// Docker's image events (`tag`, `untag`, `delete`).
    pub fn image(&self, action: &str, image_id: &str, name: &str) {
        self.publish(json!({
            "status": action,
            "id": image_id,
            "Type": "image",
            "Action": action,
            "Actor": { "ID": image_id, "Attributes": { "name": name } }
        }));
    }

    /// The kept events and a live subscription, without gap or repeat.
    fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.iter().cloned().collect(), self.tx.subscribe())
    }
}

fn matches(f: &Filters, ev: &Value) -> bool {
    let s = |p: &str| ev.pointer(p).and_then(Value::as_str).unwrap_or("");
    let any = |name: &str, vals: &[&str]| {
        f.get(name).is_empty() || f.get(name).iter().any(|want| vals.contains(&want.as_str()))
    };
    let attrs = ev.pointer("/Actor/Attributes").and_then(Value::as_object);
    let labels: std::collections::BTreeMap<String, String> = attrs
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    any("type", &[s("/Type")])
        && any("event", &[s("/Action")])
        && (s("/Type") != "container"
            || any("container", &[s("/Actor/ID"), s("/Actor/Attributes/name")]))
        && any(
            "image",
            &[
                s("/Actor/Attributes/image"),
                s("/Actor/Attributes/imageRef"),
                s("/Actor/Attributes/imageID"),
                s("/Actor/ID"),
            ],
        )
        && f.labels_match("label", &labels)
}

/// `GET /events?since=&until=&filters=` (`docker events`).
pub async fn events(State(api): State<Api>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let filters = Filters::parse(
        q.get("filters"),
        &["type", "event", "container", "image", "label", "scope"],
    )?;
    let since = parse_time(q.get("since"))?;
    let until = parse_time(q.get("until"))?;
    let now = now_nanos();
    let (kept, mut live) = api.events().subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |ev: &Event| {
            let mut b = serde_json::to_vec(&ev.json).unwrap_or_default();
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
                .filter(|e| in_window(e) && matches(&filters, &e.json))
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
                        if in_window(&ev) && matches(&filters, &ev.json) && tx.send(Ok(line(&ev))).await.is_err() {
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
        let ev = json!({"Type":"container","Action":"commit","Actor":{"ID":"abc","Attributes":{"name":"web","imageRef":"app:1"}}});
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
