//! What handlers take from a request, read as Docker reads it: the query
//! (repeated keys kept, Go's `Form.Get` semantics), the API version the
//! path asked for, and a JSON body (declared JSON, within the limits),
//! each refusing with an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;
use crate::{API_VERSION, Api};

/// Query parameters, repeated keys kept (`changes` repeats).
#[derive(Debug, Clone, Default)]
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

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Query::parse(parts.uri.query()))
    }
}

/// The API version a request asked for (its `/v1.NN` prefix, checked by
/// [`crate::version::middleware`]), or [`API_VERSION`] without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiVersion(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<ApiVersion>()
            .cloned()
            .unwrap_or_else(|| ApiVersion(API_VERSION.to_string())))
    }
}

/// A request body that is JSON or nothing (Docker's `CheckForJSON`), read
/// within the daemon's size and time limits.
pub(crate) struct JsonBody(pub Bytes);

impl FromRequest<Api> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Api) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, api).await.map_err(|r| {
            let text = r.body_text();
            if text.contains("timeout") {
                ApiError::BodyTimeout(text)
            } else if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(api.limits().max_body)
            } else {
                ApiError::BodyUnreadable {
                    status: r.status(),
                    message: text,
                }
            }
        })?;
        check_for_json(&headers, &body)?;
        Ok(JsonBody(body))
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
fn check_for_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
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
        return Err(ApiError::InvalidRequest(format!(
            "malformed Content-Type header ({ct}): mime: no media type"
        )));
    }
    if mime != "application/json" {
        return Err(ApiError::InvalidRequest(format!(
            "unsupported Content-Type header ({ct}): must be 'application/json'"
        )));
    }
    Ok(())
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
            e.to_string(),
            "unsupported Content-Type header (text/plain): must be 'application/json'"
        );
        // As Docker: a declared type is checked even with no body.
        assert!(check_for_json(&h, b"").is_err());
    }
}
