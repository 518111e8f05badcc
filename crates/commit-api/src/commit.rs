//! `POST /commit`: Docker's `ContainerCommit`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use commit_engine::{CommitRequest, Compression};
use serde_json::json;
use std::sync::Arc;

use tracing::info;

use crate::Api;
use crate::error::{ApiError, json_response};
use docker_format::changes::Changes;
use docker_format::{body, reference};

/// Query parameters, repeated keys kept (`changes` repeats).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    /// The first value of `key`, or "" (Go's `r.Form.Get`).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Docker's `httputils.BoolValue`: false for "", 0, no, false, none.
pub(crate) fn bool_value(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// Docker's `httputils.CheckForJSON`: a body must be declared JSON.
pub(crate) fn check_for_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.is_empty() && body.is_empty() {
        return Ok(());
    }
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.is_empty() || !mime.contains('/') {
        return Err(ApiError::bad_request(format!(
            "malformed Content-Type header ({ct}): mime: no media type"
        )));
    }
    if mime != "application/json" {
        return Err(ApiError::bad_request(format!(
            "unsupported Content-Type header ({ct}): must be 'application/json'"
        )));
    }
    Ok(())
}

pub(crate) async fn commit(
    State(api): State<Api>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        let text = r.body_text();
        if text.contains("timeout") {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received in time: {text}"),
            )
        } else if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                r.status(),
                format!(
                    "request body too large (limit {} bytes)",
                    api.limits().max_body
                ),
            )
        } else {
            ApiError::new(r.status(), format!("request body unreadable: {text}"))
        }
    })?;
    let q = Query::parse(raw.as_deref());
    check_for_json(&headers, &body)?;
    let body_config = body::decode_body(&body)?;
    let name = reference::repo_tag_reference(q.get("repo"), q.get("tag"))?;
    let container = q.get("container").to_string();
    if container.is_empty() {
        return Err(ApiError::bad_request("invalid name or ID supplied: \"\""));
    }
    // Pause is on unless turned off explicitly (Docker, API ≥ 1.13).
    let pause = q.get("pause").trim().is_empty() || bool_value(q.get("pause"));
    let compression = match q.get("compression") {
        "" => None,
        c => Some(c.parse::<Compression>().map_err(ApiError::bad_request)?),
    };
    let changes = Changes::new(q.all("changes"));
    if changes.len() > api.limits().max_changes {
        return Err(ApiError::bad_request(format!(
            "too many changes: {} (at most {})",
            changes.len(),
            api.limits().max_changes
        )));
    }
    let req = CommitRequest {
        container,
        image_name: name.as_ref().map(reference::Named::full),
        author: q.get("author").to_string(),
        comment: q.get("comment").to_string(),
        pause,
        compression,
        config: body_config.map(Into::into),
        changes,
    };

    // The commit runs as its own task: a client hanging up does not stop it
    // half-way, and shutdown can wait for it.
    let engine = api.engine().clone();
    let abort = api.inner.abort.clone();
    let comment = req.comment.clone();
    let image_ref = name
        .as_ref()
        .map(reference::Named::familiar)
        .unwrap_or_default();
    let tracked = Arc::clone(api.metrics());
    let task = api.commits().spawn(tracing::Instrument::instrument(
        async move {
            let _in_flight = tracked.commit_started();
            let result = engine.commit(req, &abort).await;
            match &result {
                Ok(done) => tracked.commit_done(done),
                Err(_) => tracked.commit_failed(),
            }
            result
        },
        tracing::Span::current(),
    ));
    let committed = task
        .await
        .map_err(|e| ApiError::internal(format!("commit failed: {e}")))??;
    api.events().commit(
        &committed,
        &committed.container_name,
        reference::familiar_name(&committed.container_image),
        &comment,
        &image_ref,
    );
    info!(container = %committed.container_id, image = %committed.image_name, id = %committed.image_id, "commit request done");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "Id": committed.image_id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_keys_and_decodes() {
        let q = Query::parse(Some(
            "container=c1&changes=ENV%20A%3D1&changes=CMD+%5B%22sh%22%5D&repo=",
        ));
        assert_eq!(q.get("container"), "c1");
        assert_eq!(q.all("changes"), ["ENV A=1", "CMD [\"sh\"]"]);
        assert_eq!(q.get("repo"), "");
        assert_eq!(q.get("tag"), "");
    }

    #[test]
    fn bool_values_as_docker() {
        for f in ["", "0", "no", "false", "none", "FALSE", " No "] {
            assert!(!bool_value(f), "{f:?}");
        }
        for t in ["1", "yes", "true", "on", "anything"] {
            assert!(bool_value(t), "{t:?}");
        }
    }

    #[test]
    fn json_bodies_must_say_so() {
        let mut h = HeaderMap::new();
        assert!(check_for_json(&h, b"").is_ok());
        assert!(check_for_json(&h, b"{}").is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_for_json(&h, b"{}").is_ok());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = check_for_json(&h, b"{}").unwrap_err();
        assert_eq!(
            e.message,
            "unsupported Content-Type header (text/plain): must be 'application/json'"
        );
        // As Docker: a declared type is checked even with no body.
        assert!(check_for_json(&h, b"").is_err());
    }
}
