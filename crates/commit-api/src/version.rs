//! API versions: the optional `/v{major}.{minor}` path prefix, checked
//! against the supported range and stripped before routing, and the
//! headers Docker puts on every answer (`Api-Version`, `Server`, `Ostype`).

use std::cmp::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::ApiVersion;
use crate::{API_VERSION, MIN_API_VERSION};

/// Compares dotted versions numerically, as Docker's `versions.compare`.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let l: u64 = l.and_then(|s| s.parse().ok()).unwrap_or(0);
                let r: u64 = r.and_then(|s| s.parse().ok()).unwrap_or(0);
                match l.cmp(&r) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
        }
    }
}

/// Splits `/v1.45/commit` into `("1.45", "/commit")`. The version is what
/// Docker's router accepts: digits and dots.
pub(crate) fn split_prefix(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/')?;
    let (version, tail) = rest.split_at(end);
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Some((version, tail))
}

pub(crate) async fn middleware(
    State(server): State<Arc<String>>,
    mut req: Request,
    next: Next,
) -> Response {
    let mut version = API_VERSION.to_string();
    if let Some((v, tail)) = split_prefix(req.uri().path()) {
        version = v.to_string();
        let rewritten = match req.uri().query() {
            Some(q) => format!("{tail}?{q}"),
            None => tail.to_string(),
        };
        match rewritten.parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                return with_headers(
                    ApiError::InvalidRequest("invalid request URI".into()).into_response(),
                    &server,
                );
            }
        }
    }
    let resp = if compare(&version, MIN_API_VERSION) == Ordering::Less {
        ApiError::VersionTooOld(version).into_response()
    } else if compare(&version, API_VERSION) == Ordering::Greater {
        ApiError::VersionTooNew(version).into_response()
    } else {
        req.extensions_mut().insert(ApiVersion(version));
        next.run(req).await
    };
    with_headers(resp, &server)
}

fn with_headers(mut resp: Response, server: &str) -> Response {
    let h = resp.headers_mut();
    h.insert("api-version", HeaderValue::from_static(API_VERSION));
    h.insert("ostype", HeaderValue::from_static(std::env::consts::OS));
    if let Ok(v) = HeaderValue::from_str(server) {
        h.insert("server", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare("1.9", "1.24"), Ordering::Less);
        assert_eq!(compare("1.24", "1.24"), Ordering::Equal);
        assert_eq!(compare("1.24.0", "1.24"), Ordering::Equal);
        assert_eq!(compare("2", "1.51"), Ordering::Greater);
    }

    #[test]
    fn prefixes_are_digits_and_dots() {
        assert_eq!(split_prefix("/v1.45/commit"), Some(("1.45", "/commit")));
        assert_eq!(split_prefix("/v1/_ping"), Some(("1", "/_ping")));
        assert_eq!(split_prefix("/version"), None);
        assert_eq!(split_prefix("/v1.45"), None);
        assert_eq!(split_prefix("/vx/commit"), None);
        assert_eq!(split_prefix("/v/commit"), None);
    }
}
