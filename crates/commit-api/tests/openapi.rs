//! Keeps `api/openapi.yaml` honest (firecracker's way: the spec lives in
//! the tree and a test holds it to the code).
//!
//! - The spec is an OpenAPI 3.0 document (`openapiv3` reads it) whose `$ref`s
//!   resolve, whose operation IDs are unique and whose path templates have
//!   their parameters.
//! - Its operations are exactly [`commit_api::ROUTES`], each with and
//!   without the `/v{version}` prefix.
//! - The versions it advertises are [`commit_api::API_VERSION`] and
//!   [`commit_api::MIN_API_VERSION`].
//! - The real router's answers to a set of requests (containerd absent, so
//!   no commit succeeds) are all described: status, required headers,
//!   media type, and the JSON bodies' shape (each line of a JSON stream).
//! - [`commit_api::ROUTES`] is exactly what the router serves: every Docker
//!   Engine API endpoint, with every method, with and without the version
//!   prefix, answers something other than Docker's `404 page not found`
//!   exactly when it is in `ROUTES`. A route added to the router but not to
//!   `ROUTES` (and so not to the spec) fails here.
//!
//! Fuller checking, generated requests included, is schemathesis's job.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use commit_api::{API_VERSION, Api, MIN_API_VERSION, ROUTES};
use serde_json::Value;
use tower::ServiceExt;

const SPEC: &str = include_str!("../../../api/openapi.yaml");
const PREFIX: &str = "/v{version}";
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    serde_norway::from_str(SPEC).unwrap_or_else(|e| panic!("api/openapi.yaml is not YAML: {e}"))
}

fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("api/openapi.yaml has nothing at {pointer}"))
}

/// Follows `$ref`s (local ones: the spec has no others).
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = at(doc, pointer);
    }
    v
}

#[test]
fn spec_is_an_openapi_3_0_document() {
    let api: openapiv3::OpenAPI = serde_norway::from_str(SPEC)
        .unwrap_or_else(|e| panic!("api/openapi.yaml is not OpenAPI 3.0: {e}"));
    assert!(api.openapi.starts_with("3.0."), "openapi: {}", api.openapi);
    assert!(!api.paths.paths.is_empty());

    // openapiv3 only reads the document; check what it does not.
    let doc = spec();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    let mut ids = BTreeSet::new();
    for (path, item) in at(&doc, "/paths").as_object().into_iter().flatten() {
        let mut declared: BTreeSet<String> = BTreeSet::new();
        let path_params = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            let op_params = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in path_params.iter().chain(&op_params) {
                let p = resolve(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(
                        p["required"], true,
                        "{path}: path parameter {} must be required",
                        p["name"]
                    );
                    declared.insert(p["name"].as_str().unwrap_or_default().to_string());
                }
            }
            let templated: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string()))
                .collect();
            assert_eq!(templated, declared, "{method} {path}: path parameters");
            assert!(
                op.get("responses")
                    .and_then(Value::as_object)
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn spec_describes_exactly_the_routes_served() {
    let doc = spec();
    let mut described = BTreeSet::new();
    for (path, item) in at(&doc, "/paths").as_object().into_iter().flatten() {
        for method in METHODS {
            if item.get(*method).is_some() {
                described.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut served = BTreeSet::new();
    for (method, path) in ROUTES {
        served.insert((method.to_string(), path.to_string()));
        served.insert((method.to_string(), format!("{PREFIX}{path}")));
    }
    let missing: Vec<_> = served.difference(&described).collect();
    let extra: Vec<_> = described.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes served but not in api/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "routes in api/openapi.yaml the router does not serve: {extra:?}"
    );
}

#[test]
fn spec_advertises_the_served_api_versions() {
    let doc = spec();
    let one = |v: &str| Value::Array(vec![Value::String(v.to_string())]);
    assert_eq!(at(&doc, "/info/version"), API_VERSION, "info.version");
    assert_eq!(
        at(&doc, "/components/headers/Api-Version/schema/enum"),
        &one(API_VERSION),
        "Api-Version header"
    );
    assert_eq!(
        at(
            &doc,
            "/components/schemas/SystemVersion/properties/ApiVersion/enum"
        ),
        &one(API_VERSION)
    );
    assert_eq!(
        at(
            &doc,
            "/components/schemas/SystemVersion/properties/MinAPIVersion/enum"
        ),
        &one(MIN_API_VERSION)
    );
    assert_eq!(
        at(&doc, "/components/parameters/version/schema/example"),
        API_VERSION
    );
    let versioning = at(&doc, "/info/description").as_str().unwrap_or_default();
    assert!(
        versioning.contains(&format!("{MIN_API_VERSION} ..= {API_VERSION}")),
        "info.description should give the range {MIN_API_VERSION} ..= {API_VERSION}"
    );
}

/// The daemon's API state, over a containerd that is not there.
fn api() -> Api {
    let c = commit_engine::Containerd::lazy(
        "/nonexistent/commitd-openapi-test/containerd.sock",
        "default",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let engine = commit_engine::Engine::new(c, commit_engine::EngineConfig::default());
    Api::new(engine, commit_api::ServerInfo::default())
}

/// A router like the daemon's, over a containerd that is not there.
fn app() -> axum::Router {
    commit_api::app(&api())
}

/// Puts one event of each kind the daemon emits (and a commit in the
/// metrics), so `/events` and `/metrics` have something to show.
fn record_activity(api: &Api) {
    let id = format!("sha256:{}", "a".repeat(64));
    let done = commit_engine::Committed {
        image_id: id.clone(),
        manifest: docker_format::image::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            size: 424,
            annotations: None,
            platform: None,
            urls: None,
        },
        image_name: "docker.io/acc/x:1".into(),
        container_id: "c1".into(),
        container_name: "demo".into(),
        container_image: "docker.io/library/busybox:latest".into(),
        layer: None,
        diff_id: None,
        uncompressed_size: 0,
        capture: commit_engine::CapturePath::Overlay,
        squash: commit_engine::Squash::No,
        depth: 1,
        incremental: commit_engine::Incremental::NotAsked,
        excluded: 0,
        paused: std::time::Duration::from_millis(3),
        capture_work: commit_engine::CaptureWork::default(),
        phases: commit_engine::Phases::default(),
        elapsed: std::time::Duration::from_millis(40),
    };
    api.metrics().commit_done(&done);
    api.events().commit(&done, "busybox", "nightly", "acc/x:1");
    api.events().image("tag", &id, "acc/y:2");
    api.events().image("untag", &id, "acc/y:2");
    api.events().image("delete", &id, "");
}

struct Case {
    method: Method,
    uri: String,
    /// The spec's path the request falls under.
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    headers: Vec<(&'static str, &'static str)>,
}

fn case(method: Method, uri: impl Into<String>, path: &'static str, status: StatusCode) -> Case {
    Case {
        method,
        uri: uri.into(),
        path,
        content_type: None,
        body: Vec::new(),
        status,
        headers: Vec::new(),
    }
}

fn with_header(mut c: Case, name: &'static str, value: &'static str) -> Case {
    c.headers.push((name, value));
    c
}

fn with_body(mut c: Case, content_type: &'static str, body: impl Into<Vec<u8>>) -> Case {
    c.content_type = Some(content_type);
    c.body = body.into();
    c
}

#[tokio::test]
async fn router_answers_are_described() {
    use Method as M;
    use StatusCode as S;
    // The events to replay are recorded first; `until` a second after
    // them: the event stream ends by itself, and holds them all however
    // long building the cases takes (recorded after a `soon` computed
    // first, they fell past it about once in ten runs on a loaded machine).
    let api = api();
    record_activity(&api);
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let big = {
        let mut b = b"{\"Labels\":{\"x\":\"".to_vec();
        b.resize(3 << 20, b'a');
        b.extend_from_slice(b"\"}}");
        b
    };
    let cases = [
        case(M::GET, "/_ping", "/_ping", S::OK),
        case(M::HEAD, "/_ping", "/_ping", S::OK),
        case(M::GET, "/v1.51/_ping", "/v{version}/_ping", S::OK),
        case(M::HEAD, "/v1.24/_ping", "/v{version}/_ping", S::OK),
        case(M::GET, "/v1.12/_ping", "/v{version}/_ping", S::BAD_REQUEST),
        case(M::HEAD, "/v9.0/_ping", "/v{version}/_ping", S::BAD_REQUEST),
        case(M::GET, "/vx.y/_ping", "/v{version}/_ping", S::NOT_FOUND),
        case(M::GET, "/version", "/version", S::OK),
        case(M::GET, "/v1.40/version", "/v{version}/version", S::OK),
        case(
            M::GET,
            "/v2.0/version",
            "/v{version}/version",
            S::BAD_REQUEST,
        ),
        case(M::POST, "/commit", "/commit", S::BAD_REQUEST),
        case(
            M::POST,
            "/commit?container=c1&compression=brotli",
            "/commit",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/commit?container=c1&repo=Bad",
            "/commit",
            S::BAD_REQUEST,
        ),
        with_body(
            case(M::POST, "/commit?container=c1", "/commit", S::BAD_REQUEST),
            "text/plain",
            "{}",
        ),
        with_body(
            case(
                M::POST,
                "/commit?container=c1",
                "/commit",
                S::PAYLOAD_TOO_LARGE,
            ),
            "application/json",
            big,
        ),
        case(
            M::POST,
            "/commit?container=c1",
            "/commit",
            S::SERVICE_UNAVAILABLE,
        ),
        with_body(
            case(
                M::POST,
                "/commit?container=c1",
                "/commit",
                S::SERVICE_UNAVAILABLE,
            ),
            "application/json",
            "null",
        ),
        with_body(
            case(
                M::POST,
                "/v1.51/commit?container=c1&repo=app&tag=v1&pause=false&comment=c&author=a&changes=ENV%20A%3D1&changes=EXPOSE%2080&compression=zstd",
                "/v{version}/commit",
                S::SERVICE_UNAVAILABLE,
            ),
            "application/json; charset=utf-8",
            r#"{"Env":["A=1"],"Cmd":["sh"],"Labels":{"a":"b"}}"#,
        ),
        case(
            M::POST,
            "/v1.0/commit?container=c1",
            "/v{version}/commit",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/v1.x/commit?container=c1",
            "/v{version}/commit",
            S::NOT_FOUND,
        ),
        // Images: without containerd, what is read from its store is 503;
        // what is refused before that, 400.
        case(
            M::GET,
            "/images/json",
            "/images/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/json?all=1&filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
            "/images/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/json?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
            "/images/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/images/json?filters=not-json",
            "/images/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.53/images/json?filters=%7B%22reference%22%3A%7B%22app*%22%3Atrue%7D%7D",
            "/v{version}/images/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/v1.12/images/json",
            "/v{version}/images/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/vx/images/json",
            "/v{version}/images/json",
            S::NOT_FOUND,
        ),
        case(M::GET, "/images/get", "/images/get", S::BAD_REQUEST),
        case(
            M::GET,
            "/images/get?names=app%3Av1&names=busybox",
            "/images/get",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/get?names=Bad&names=app%3Av1",
            "/images/get",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.45/images/get?names=busybox",
            "/v{version}/images/get",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/docker.io/acc/x:1/json",
            "/images/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/sha256:4b825dc642cb/json",
            "/images/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/Bad/json",
            "/images/{name}/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/images/sha256:xyz/json",
            "/images/{name}/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.47/images/busybox/json",
            "/v{version}/images/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/docker.io/acc/x:1/history",
            "/images/{name}/history",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/Bad/history",
            "/images/{name}/history",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.53/images/acc/x/history",
            "/v{version}/images/{name}/history",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::POST,
            "/images/acc/x:1/tag?repo=registry.example.com%2Fteam%2Fx&tag=v2",
            "/images/{name}/tag",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::POST,
            "/images/acc/x:1/tag",
            "/images/{name}/tag",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/images/acc/x:1/tag?repo=acc%2Fy&tag=-bad",
            "/images/{name}/tag",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/v1.53/images/acc/x:1/tag?repo=acc%2Fy%3Av3",
            "/v{version}/images/{name}/tag",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::POST,
            "/images/registry.example.com/team/x/push?tag=v1",
            "/images/{name}/push",
            S::SERVICE_UNAVAILABLE,
        ),
        with_header(
            case(
                M::POST,
                "/images/acc/x/push?tag=v1",
                "/images/{name}/push",
                S::SERVICE_UNAVAILABLE,
            ),
            "x-registry-auth",
            "eyJ1c2VybmFtZSI6InJvYm90IiwicGFzc3dvcmQiOiJzZWNyZXQifQ==",
        ),
        case(
            M::POST,
            "/images/acc/x/push",
            "/images/{name}/push",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::POST,
            "/images/acc/x/push?tag=-bad",
            "/images/{name}/push",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/images/Bad/push",
            "/images/{name}/push",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/images/acc/x@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54b/push",
            "/images/{name}/push",
            S::BAD_REQUEST,
        ),
        case(
            M::POST,
            "/v1.40/images/acc/x/push?tag=v1",
            "/v{version}/images/{name}/push",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/docker.io/acc/x:1/get",
            "/images/{name}/get",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/images/Bad/get",
            "/images/{name}/get",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.53/images/busybox/get",
            "/v{version}/images/{name}/get",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::DELETE,
            "/images/docker.io/acc/x:1",
            "/images/{name}",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::DELETE,
            "/images/acc/x:1?force=1&noprune=1",
            "/images/{name}",
            S::SERVICE_UNAVAILABLE,
        ),
        case(M::DELETE, "/images/Bad", "/images/{name}", S::BAD_REQUEST),
        case(
            M::DELETE,
            "/v1.53/images/busybox",
            "/v{version}/images/{name}",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::DELETE,
            "/v0.1/images/busybox",
            "/v{version}/images/{name}",
            S::BAD_REQUEST,
        ),
        // Containers.
        case(
            M::GET,
            "/containers/json",
            "/containers/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/containers/json?all=1&limit=3&size=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D",
            "/containers/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/containers/json?limit=many",
            "/containers/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/containers/json?filters=%7B%22status%22%3A%5B%22bogus%22%5D%7D",
            "/containers/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/containers/json?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
            "/containers/json",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.53/containers/json?all=true",
            "/v{version}/containers/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/vx/containers/json",
            "/v{version}/containers/json",
            S::NOT_FOUND,
        ),
        case(
            M::GET,
            "/containers/c1/json",
            "/containers/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/containers/c1/json?size=1",
            "/containers/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        // A name with slashes, percent-encoded or not.
        case(
            M::GET,
            "/containers/team/nb-0/app/json",
            "/containers/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/containers/team%2Fnb-0%2Fapp/json",
            "/containers/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/v1.45/containers/demo/json",
            "/v{version}/containers/{name}/json",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/v1.99/containers/demo/json",
            "/v{version}/containers/{name}/json",
            S::BAD_REQUEST,
        ),
        // System information and disk usage.
        case(M::GET, "/info", "/info", S::SERVICE_UNAVAILABLE),
        case(
            M::GET,
            "/v1.41/info",
            "/v{version}/info",
            S::SERVICE_UNAVAILABLE,
        ),
        case(M::GET, "/v1.0/info", "/v{version}/info", S::BAD_REQUEST),
        case(M::GET, "/system/df", "/system/df", S::SERVICE_UNAVAILABLE),
        case(
            M::GET,
            "/system/df?type=image&type=container&verbose=1",
            "/system/df",
            S::SERVICE_UNAVAILABLE,
        ),
        case(
            M::GET,
            "/system/df?type=bogus",
            "/system/df",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/v1.52/system/df?type=volume&type=build-cache",
            "/v{version}/system/df",
            S::OK,
        ),
        case(
            M::GET,
            "/v1.41/system/df?type=bogus",
            "/v{version}/system/df",
            S::SERVICE_UNAVAILABLE,
        ),
        // A load answers with a stream; without containerd it ends with an error line.
        with_body(
            case(M::POST, "/images/load", "/images/load", S::OK),
            "application/x-tar",
            vec![0u8; 1024],
        ),
        with_body(
            case(
                M::POST,
                "/v1.50/images/load?quiet=0",
                "/v{version}/images/load",
                S::OK,
            ),
            "application/x-tar",
            vec![0u8; 1024],
        ),
        // Events (kept ones replayed, then the stream ends at `until`) and
        // metrics answer without containerd.
        case(
            M::GET,
            format!("/events?since=0&until={soon}"),
            "/events",
            S::OK,
        ),
        case(
            M::GET,
            format!("/events?since=0&until={soon}&filters=%7B%22type%22%3A%5B%22image%22%5D%7D"),
            "/events",
            S::OK,
        ),
        case(M::GET, "/events?since=0&until=1", "/events", S::OK),
        case(
            M::GET,
            format!("/v1.41/events?since=0&until={soon}"),
            "/v{version}/events",
            S::OK,
        ),
        case(M::GET, "/events?since=2&until=1", "/events", S::BAD_REQUEST),
        case(M::GET, "/events?since=yesterday", "/events", S::BAD_REQUEST),
        case(
            M::GET,
            "/events?until=2026-13-01",
            "/events",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            "/events?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
            "/events",
            S::BAD_REQUEST,
        ),
        case(
            M::GET,
            format!("/v1.53/events?since=0&until={soon}"),
            "/v{version}/events",
            S::OK,
        ),
        case(M::GET, "/v1.0/events", "/v{version}/events", S::BAD_REQUEST),
        case(M::GET, "/vx/events", "/v{version}/events", S::NOT_FOUND),
        case(M::GET, "/metrics", "/metrics", S::OK),
        case(M::GET, "/v1.24/metrics", "/v{version}/metrics", S::OK),
        case(
            M::GET,
            "/v9.9/metrics",
            "/v{version}/metrics",
            S::BAD_REQUEST,
        ),
        case(M::GET, "/vx/metrics", "/v{version}/metrics", S::NOT_FOUND),
    ];

    let doc = spec();
    let app = commit_api::app(&api);
    let mut streamed = 0;
    for c in cases {
        let what = format!("{} {}", c.method, c.uri);
        let mut req = Request::builder()
            .method(c.method.clone())
            .uri(c.uri.as_str());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in &c.headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Body::from(c.body))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let resp = app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            status,
            c.status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );

        let op = at(
            &doc,
            &format!(
                "/paths/{}/{}",
                c.path.replace('~', "~0").replace('/', "~1"),
                c.method.as_str().to_lowercase()
            ),
        );
        let Some(documented) = op["responses"]
            .get(status.as_str())
            .or_else(|| op["responses"].get("default"))
        else {
            panic!(
                "{what}: status {status} is not in the spec's responses of {} {}",
                c.method, c.path
            );
        };
        let documented = resolve(&doc, documented);

        for (name, header) in documented
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let header = resolve(&doc, header);
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            if header["required"] == true {
                let value =
                    value.unwrap_or_else(|| panic!("{what}: required header {name} is missing"));
                if let Some(allowed) = header["schema"]["enum"].as_array() {
                    assert!(
                        allowed.iter().any(|a| a == value),
                        "{what}: header {name}: {value:?} is not one of {allowed:?}"
                    );
                }
            }
        }

        // hyper drops HEAD bodies on the wire; the spec describes none.
        if c.method == Method::HEAD {
            assert!(
                documented.get("content").is_none(),
                "{what}: a HEAD response has no content"
            );
            continue;
        }
        let content = documented.get("content").and_then(Value::as_object);
        let Some(content) = content else {
            assert!(
                body.is_empty(),
                "{what}: the spec says no body, got {}",
                String::from_utf8_lossy(&body)
            );
            continue;
        };
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        let Some(media) = content.get(mime) else {
            panic!(
                "{what}: content type {ct:?} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            );
        };
        // A JSON stream (`x-stream: json-lines`): the schema is each line's.
        if media["x-stream"] == "json-lines" {
            assert!(
                [
                    "application/json",
                    "application/jsonl",
                    "application/x-ndjson"
                ]
                .contains(&mime),
                "{what}: a JSON stream as {mime}"
            );
            let text = String::from_utf8_lossy(&body);
            for line in text.lines() {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{what}: line {line:?} is not JSON: {e}"));
                if let Err(e) = conforms(&doc, &media["schema"], &value, "") {
                    panic!("{what}: line {value} does not match the spec: {e}");
                }
                streamed += 1;
            }
            continue;
        }
        let value = if mime == "application/json" {
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"))
        } else {
            Value::String(String::from_utf8_lossy(&body).into_owned())
        };
        if let Err(e) = conforms(&doc, &media["schema"], &value, "") {
            panic!("{what}: body {value} does not match the spec: {e}");
        }
    }
    // The four replays: the 4 recorded events, the 3 image ones, the 4
    // again, the 4 at API 1.41; and the error line of each of the 2 loads.
    assert_eq!(streamed, 4 + 3 + 4 + 4 + 2, "event lines checked");
}

/// A small part of JSON Schema, enough for the spec's response shapes:
/// `$ref`, `allOf`, `nullable`, `type`, `required`, `properties`,
/// `additionalProperties`, `items`, `enum`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return if schema["nullable"] == true
            || schema.get("type").is_none() && schema.get("allOf").is_none()
        {
            Ok(())
        } else {
            Err(format!("{at}: null where the spec does not allow it"))
        };
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        conforms(doc, s, value, at)?;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => return Err(format!("{at}: unknown type {other}")),
    };
    if !ok {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(obj) = value.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required property {r} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => conforms(doc, s, v, &format!("{at}/{k}"))?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: property {k} is not allowed"));
                }
                (None, Some(s @ Value::Object(_))) => conforms(doc, s, v, &format!("{at}/{k}"))?,
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}/{i}"))?;
        }
    }
    Ok(())
}

/// Every endpoint of Docker's Engine API (moby's `api/swagger.yaml`, API
/// 1.55: containers, images, build, system, exec, volumes, networks,
/// plugins, swarm, distribution, session; plus `POST /grpc`, which it
/// leaves out) as a concrete path. Image names hold slashes, as clients
/// send them.
const DOCKER_ENDPOINTS: &[&str] = &[
    // Containers.
    "/containers/json",
    "/containers/create",
    "/containers/c1/json",
    // Docker's route is `/containers/{name:.*}/json`: Kubernetes names.
    "/containers/team/nb-0/app/json",
    "/containers/c1/top",
    "/containers/c1/logs",
    "/containers/c1/changes",
    "/containers/c1/export",
    "/containers/c1/stats",
    "/containers/c1/resize",
    "/containers/c1/start",
    "/containers/c1/stop",
    "/containers/c1/restart",
    "/containers/c1/kill",
    "/containers/c1/update",
    "/containers/c1/rename",
    "/containers/c1/pause",
    "/containers/c1/unpause",
    "/containers/c1/attach",
    "/containers/c1/attach/ws",
    "/containers/c1/wait",
    "/containers/c1",
    "/containers/c1/archive",
    "/containers/prune",
    "/containers/c1/exec",
    // Images and build.
    "/images/json",
    "/build",
    "/build/prune",
    "/images/create",
    "/images/docker.io/acc/x:1/json",
    "/images/docker.io/acc/x:1/attestations",
    "/images/docker.io/acc/x:1/history",
    "/images/docker.io/acc/x:1/push",
    "/images/docker.io/acc/x:1/tag",
    "/images/docker.io/acc/x:1",
    "/images/busybox/json",
    "/images/busybox",
    "/images/search",
    "/images/prune",
    "/commit",
    "/images/docker.io/acc/x:1/get",
    "/images/get",
    "/images/load",
    // System.
    "/auth",
    "/info",
    "/version",
    "/_ping",
    "/events",
    "/system/df",
    // Exec.
    "/exec/e1/start",
    "/exec/e1/resize",
    "/exec/e1/json",
    // Volumes.
    "/volumes",
    "/volumes/create",
    "/volumes/v1",
    "/volumes/prune",
    // Networks.
    "/networks",
    "/networks/n1",
    "/networks/create",
    "/networks/n1/connect",
    "/networks/n1/disconnect",
    "/networks/prune",
    // Plugins.
    "/plugins",
    "/plugins/privileges",
    "/plugins/pull",
    "/plugins/p1/json",
    "/plugins/p1",
    "/plugins/p1/enable",
    "/plugins/p1/disable",
    "/plugins/p1/upgrade",
    "/plugins/create",
    "/plugins/p1/push",
    "/plugins/p1/set",
    // Swarm: nodes, the swarm, services, tasks, secrets, configs.
    "/nodes",
    "/nodes/n1",
    "/nodes/n1/update",
    "/swarm",
    "/swarm/init",
    "/swarm/join",
    "/swarm/leave",
    "/swarm/update",
    "/swarm/unlockkey",
    "/swarm/unlock",
    "/services",
    "/services/create",
    "/services/s1",
    "/services/s1/update",
    "/services/s1/logs",
    "/tasks",
    "/tasks/t1",
    "/tasks/t1/logs",
    "/secrets",
    "/secrets/create",
    "/secrets/s1",
    "/secrets/s1/update",
    "/configs",
    "/configs/create",
    "/configs/c1",
    "/configs/c1/update",
    // Distribution, session, BuildKit.
    "/distribution/docker.io/acc/x:1/json",
    "/session",
    "/grpc",
];

/// Paths that are no Docker endpoint: commitd's own, and near misses of the
/// routes it serves (an image or container path without its action).
const OTHER_PATHS: &[&str] = &[
    "/metrics",
    "/",
    "/images",
    "/containers",
    "/debug/pprof/",
    "/images/docker.io/acc/x:1/json/extra",
    "/containers/c1/json/extra",
    "/pods/team/nb-0/commit",
];

/// Each path is sent with each of these methods.
const PROBE_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

/// Requests a route of `ROUTES` matches that the router does not serve,
/// Docker does, and the spec says so. None now: `DELETE /images/json` and
/// `DELETE /images/get` reach the images named `json` and `get`, as in
/// Docker. Add an entry when such a request is knowingly not served.
const SHADOWED: &[(&str, &str)] = &[];

/// Whether a `ROUTES` path template matches a concrete path: `{name}` is
/// one segment or more (image names hold slashes, as in the router's
/// `/images/{*rest}`), another `{…}` exactly one, the rest literal.
fn template_matches(template: &str, path: &str) -> bool {
    fn go(t: &[&str], p: &[&str]) -> bool {
        match t.split_first() {
            None => p.is_empty(),
            Some((&"{name}", rest)) => {
                (1..=p.len()).any(|n| p[..n].iter().all(|s| !s.is_empty()) && go(rest, &p[n..]))
            }
            Some((seg, rest)) if seg.starts_with('{') && seg.ends_with('}') => {
                p.first().is_some_and(|s| !s.is_empty()) && go(rest, &p[1..])
            }
            Some((seg, rest)) => p.first() == Some(seg) && go(rest, &p[1..]),
        }
    }
    let t: Vec<&str> = template.split('/').skip(1).collect();
    let p: Vec<&str> = path.split('/').skip(1).collect();
    go(&t, &p)
}

/// The `ROUTES` entry that serves `method path`, if any.
fn route_for(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .copied()
        .find(|(m, t)| *m == method && template_matches(t, path))
}

/// Whether the answer is Docker's "no such route": `404 {"message":"page
/// not found"}` (without a body for `HEAD`, as axum strips it there).
fn is_page_not_found(method: &Method, status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::NOT_FOUND {
        return false;
    }
    if method == Method::HEAD && body.is_empty() {
        return true;
    }
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v == serde_json::json!({"message": "page not found"}))
}

#[test]
fn route_templates_match_concrete_paths() {
    assert!(template_matches(
        "/images/{name}/json",
        "/images/docker.io/acc/x:1/json"
    ));
    assert!(template_matches(
        "/images/{name}/json",
        "/images/busybox/json"
    ));
    assert!(!template_matches("/images/{name}/json", "/images/json"));
    assert!(template_matches(
        "/images/{name}",
        "/images/docker.io/acc/x:1"
    ));
    assert!(template_matches("/images/{name}", "/images/json"));
    assert!(!template_matches("/images/{name}", "/images"));
    assert!(!template_matches("/images/{name}", "/images/"));
    assert!(template_matches(
        "/containers/{name}/json",
        "/containers/c1/json"
    ));
    assert!(!template_matches(
        "/containers/{name}/json",
        "/containers/json"
    ));
    assert!(template_matches(
        "/containers/{name}/json",
        "/containers/team/nb-0/app/json"
    ));
    assert!(template_matches("/_ping", "/_ping"));
    assert!(!template_matches("/_ping", "/_ping/x"));
}

#[tokio::test]
async fn routes_are_exactly_the_ones_served() {
    let app = app();
    let mut covered = BTreeSet::new();
    let mut wrong = Vec::new();
    let mut sent = 0;
    for path in DOCKER_ENDPOINTS.iter().chain(OTHER_PATHS) {
        for method in PROBE_METHODS {
            // Unlike Docker's, axum's `get` routes answer `HEAD` too (as
            // `GET` without the body); the spec says so once, not per route.
            let route = route_for(method.as_str(), path).or_else(|| {
                (method == Method::HEAD)
                    .then(|| route_for("GET", path))
                    .flatten()
            });
            let shadowed = SHADOWED.contains(&(method.as_str(), path));
            for uri in [path.to_string(), format!("/v{API_VERSION}{path}")] {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(uri.as_str())
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
                let resp = app
                    .clone()
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|e| match e {});
                let status = resp.status();
                // Only a 404 is read: a 200 may be an endless stream (`/events`).
                let body = if status == StatusCode::NOT_FOUND {
                    axum::body::to_bytes(resp.into_body(), usize::MAX)
                        .await
                        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
                } else {
                    Default::default()
                };
                sent += 1;
                let served = !is_page_not_found(method, status, &body);
                match (route, served) {
                    (Some(r), true) => {
                        covered.insert(r);
                    }
                    (None, false) => {}
                    (Some(_), false) if shadowed => {}
                    (Some((m, t)), false) => {
                        wrong.push(format!("{method} {uri}: ROUTES has {m} {t}, the router answers page not found"))
                    }
                    (None, true) => wrong.push(format!(
                        "{method} {uri}: the router answers {status} but no route of ROUTES (nor the spec) has it"
                    )),
                }
                if shadowed && served {
                    wrong.push(format!(
                        "{method} {uri} is served now: remove it from SHADOWED"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ROUTES and the router disagree:\n{}",
        wrong.join("\n")
    );
    let uncovered: Vec<_> = ROUTES.iter().filter(|r| !covered.contains(*r)).collect();
    assert!(
        uncovered.is_empty(),
        "routes of ROUTES no probe reached (add a path to DOCKER_ENDPOINTS or OTHER_PATHS): {uncovered:?}"
    );
    assert_eq!(
        sent,
        (DOCKER_ENDPOINTS.len() + OTHER_PATHS.len()) * PROBE_METHODS.len() * 2
    );
}
