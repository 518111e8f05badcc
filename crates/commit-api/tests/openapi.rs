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
//!   media type, and the JSON bodies' shape.
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
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn spec() -> Value {
    serde_norway::from_str(SPEC).unwrap_or_else(|e| panic!("api/openapi.yaml is not YAML: {e}"))
}

fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer).unwrap_or_else(|| panic!("api/openapi.yaml has nothing at {pointer}"))
}

/// Follows `$ref`s (local ones: the spec has no others).
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = at(doc, pointer);
    }
    v
}

#[test]
fn spec_is_an_openapi_3_0_document() {
    let api: openapiv3::OpenAPI =
        serde_norway::from_str(SPEC).unwrap_or_else(|e| panic!("api/openapi.yaml is not OpenAPI 3.0: {e}"));
    assert!(api.openapi.starts_with("3.0."), "openapi: {}", api.openapi);
    assert!(!api.paths.paths.is_empty());

    // openapiv3 only reads the document; check what it does not.
    let doc = spec();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in &refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    let mut ids = BTreeSet::new();
    for (path, item) in at(&doc, "/paths").as_object().into_iter().flatten() {
        let mut declared: BTreeSet<String> = BTreeSet::new();
        let path_params = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(*method) else { continue };
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            let op_params = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            for p in path_params.iter().chain(&op_params) {
                let p = resolve(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{path}: path parameter {} must be required", p["name"]);
                    declared.insert(p["name"].as_str().unwrap_or_default().to_string());
                }
            }
            let templated: BTreeSet<String> =
                path.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string())).collect();
            assert_eq!(templated, declared, "{method} {path}: path parameters");
            assert!(
                op.get("responses").and_then(Value::as_object).is_some_and(|r| !r.is_empty()),
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
    assert!(missing.is_empty(), "routes served but not in api/openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "routes in api/openapi.yaml the router does not serve: {extra:?}");
}

#[test]
fn spec_advertises_the_served_api_versions() {
    let doc = spec();
    let one = |v: &str| Value::Array(vec![Value::String(v.to_string())]);
    assert_eq!(at(&doc, "/info/version"), API_VERSION, "info.version");
    assert_eq!(at(&doc, "/components/headers/Api-Version/schema/enum"), &one(API_VERSION), "Api-Version header");
    assert_eq!(at(&doc, "/components/schemas/SystemVersion/properties/ApiVersion/enum"), &one(API_VERSION));
    assert_eq!(at(&doc, "/components/schemas/SystemVersion/properties/MinAPIVersion/enum"), &one(MIN_API_VERSION));
    assert_eq!(at(&doc, "/components/parameters/version/schema/example"), API_VERSION);
    let versioning = at(&doc, "/info/description").as_str().unwrap_or_default();
    assert!(
        versioning.contains(&format!("{MIN_API_VERSION} ..= {API_VERSION}")),
        "info.description should give the range {MIN_API_VERSION} ..= {API_VERSION}"
    );
}

/// A router like the daemon's, over a containerd that is not there.
fn app() -> axum::Router {
    let c = commit_engine::Containerd::lazy("/nonexistent/commitd-openapi-test/containerd.sock", "default")
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = commit_engine::Engine::new(c, commit_engine::EngineConfig::default());
    commit_api::app(&Api::new(engine, commit_api::ServerInfo::default()))
}

struct Case {
    method: Method,
    uri: &'static str,
    /// The spec's path the request falls under.
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
}

fn case(method: Method, uri: &'static str, path: &'static str, status: StatusCode) -> Case {
    Case { method, uri, path, content_type: None, body: Vec::new(), status }
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
        case(M::GET, "/v2.0/version", "/v{version}/version", S::BAD_REQUEST),
        case(M::POST, "/commit", "/commit", S::BAD_REQUEST),
        case(M::POST, "/commit?container=c1&compression=brotli", "/commit", S::BAD_REQUEST),
        case(M::POST, "/commit?container=c1&repo=Bad", "/commit", S::BAD_REQUEST),
        with_body(case(M::POST, "/commit?container=c1", "/commit", S::BAD_REQUEST), "text/plain", "{}"),
        with_body(case(M::POST, "/commit?container=c1", "/commit", S::PAYLOAD_TOO_LARGE), "application/json", big),
        case(M::POST, "/commit?container=c1", "/commit", S::SERVICE_UNAVAILABLE),
        with_body(case(M::POST, "/commit?container=c1", "/commit", S::SERVICE_UNAVAILABLE), "application/json", "null"),
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
        case(M::POST, "/v1.0/commit?container=c1", "/v{version}/commit", S::BAD_REQUEST),
        case(M::POST, "/v1.x/commit?container=c1", "/v{version}/commit", S::NOT_FOUND),
    ];

    let doc = spec();
    let app = app();
    for c in cases {
        let what = format!("{} {}", c.method, c.uri);
        let mut req = Request::builder().method(c.method.clone()).uri(c.uri);
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Body::from(c.body)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let resp = app.clone().oneshot(req).await.unwrap_or_else(|e| match e {});
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, c.status, "{what}: {}", String::from_utf8_lossy(&body));

        let op = at(
            &doc,
            &format!("/paths/{}/{}", c.path.replace('~', "~0").replace('/', "~1"), c.method.as_str().to_lowercase()),
        );
        let Some(documented) = op["responses"].get(status.as_str()).or_else(|| op["responses"].get("default")) else {
            panic!("{what}: status {status} is not in the spec's responses of {} {}", c.method, c.path);
        };
        let documented = resolve(&doc, documented);

        for (name, header) in documented.get("headers").and_then(Value::as_object).into_iter().flatten() {
            let header = resolve(&doc, header);
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            if header["required"] == true {
                let value = value.unwrap_or_else(|| panic!("{what}: required header {name} is missing"));
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
            assert!(documented.get("content").is_none(), "{what}: a HEAD response has no content");
            continue;
        }
        let content = documented.get("content").and_then(Value::as_object);
        let Some(content) = content else {
            assert!(body.is_empty(), "{what}: the spec says no body, got {}", String::from_utf8_lossy(&body));
            continue;
        };
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        let Some(media) = content.get(mime) else {
            panic!("{what}: content type {ct:?} is not one of {:?}", content.keys().collect::<Vec<_>>());
        };
        let value = if mime == "application/json" {
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"))
        } else {
            Value::String(String::from_utf8_lossy(&body).into_owned())
        };
        if let Err(e) = conforms(&doc, &media["schema"], &value, "") {
            panic!("{what}: body {value} does not match the spec: {e}");
        }
    }
}

/// A small part of JSON Schema, enough for the spec's response shapes:
/// `$ref`, `allOf`, `nullable`, `type`, `required`, `properties`,
/// `additionalProperties`, `items`, `enum`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return if schema["nullable"] == true || schema.get("type").is_none() && schema.get("allOf").is_none() {
            Ok(())
        } else {
            Err(format!("{at}: null where the spec does not allow it"))
        };
    }
    for s in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
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
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required property {r} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => conforms(doc, s, v, &format!("{at}/{k}"))?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: property {k} is not allowed")),
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
