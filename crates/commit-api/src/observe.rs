//! What operators watch: the daemon's Prometheus metrics and Docker's
//! event hub (a `commit` event per commit, image `tag`, `untag` and
//! `delete` events), both state of the API; the routes that serve them
//! are `routes::metrics` and `routes::events`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use commit_engine::Committed;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::Api;
use crate::views::events::{Actor, Message};

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
struct CaptureLabels {
    stage: String,
    work: String,
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
    capture_entries: Family<CaptureLabels, Counter>,
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
        let capture_entries = Family::<CaptureLabels, Counter>::default();
        registry.register(
            "capture_entries",
            "Fast-path capture work in entries: copied while the container ran (stage=running), \
             then walked, copied again or anew, and removed while it was paused (stage=paused)",
            capture_entries.clone(),
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
            capture_entries,
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
        let w = &done.capture_work;
        for (stage, work, n) in [
            ("running", "copied", w.copied_running),
            ("paused", "walked", w.walked_paused),
            ("paused", "copied", w.copied_paused),
            ("paused", "removed", w.removed_paused),
        ] {
            self.capture_entries
                .get_or_create(&CaptureLabels {
                    stage: stage.into(),
                    work: work.into(),
                })
                .inc_by(n);
        }
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
pub(crate) async fn track(
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

/// One Docker event, as published.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub time_nano: i64,
    pub message: Message,
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

pub(crate) fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl Events {
    fn publish(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        from: Option<&str>,
        attributes: BTreeMap<String, String>,
    ) {
        let time_nano = now_nanos();
        let message = Message {
            status: action.to_string(),
            id: id.to_string(),
            from: from.map(str::to_string),
            kind,
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local",
            time: time_nano / 1_000_000_000,
            time_nano,
        };
        let ev = Arc::new(Event { time_nano, message });
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(Arc::clone(&ev));
        let _ = self.tx.send(ev);
    }

    /// Docker's container `commit` event.
    pub fn commit(&self, done: &Committed, container_image: &str, comment: &str, image_ref: &str) {
        let attributes = [
            ("comment", comment),
            ("imageID", done.image_id.as_str()),
            ("imageRef", image_ref),
            ("image", container_image),
            ("name", done.container_name.as_str()),
            ("pausedMs", &done.paused.as_millis().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        self.publish(
            "container",
            "commit",
            &done.container_id,
            Some(container_image),
            attributes,
        );
    }

    /// Docker's image events (`tag`, `untag`, `delete`).
    pub fn image(&self, action: &str, image_id: &str, name: &str) {
        let attributes = BTreeMap::from([("name".to_string(), name.to_string())]);
        self.publish("image", action, image_id, None, attributes);
    }

    /// Clients following `/events` now (`docker info`'s `NEventsListener`).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The kept events and a live subscription, without gap or repeat.
    pub(crate) fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.iter().cloned().collect(), self.tx.subscribe())
    }
}
