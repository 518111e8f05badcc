//! `POST /images/load` (`docker load [-q]`): an image archive in the
//! request body — Docker's or OCI's, plain, gzip or zstd — loaded by the
//! engine as it arrives (see `commit_engine::load`).
//!
//! As Docker's, the answer is `200` and a JSON stream: `Loading layer`
//! progress unless `quiet` (the default, and what the CLI asks when its
//! output is not a terminal), then one `Loaded image: <name>` (or `Loaded
//! image ID: <id>`) line per image; a failure is the stream's last line
//! (`{"errorDetail":…,"error":…}`). The load runs as a task of its own: a
//! client that hangs up ends the body, the load fails and cleans up.
//! `platform` is accepted; every platform of the archive is loaded, the
//! host's unpacked.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Api;
use crate::error::ApiError;
use crate::extract::{Query, bool_value};
use crate::views::push::Message;
use docker_format::reference::familiar_name;

/// A query flag that is true unless given and false (Docker's
/// `BoolValueOrDefault(r, k, true)`).
pub(crate) fn bool_or_true(q: &Query, key: &str) -> bool {
    q.all(key).is_empty() || bool_value(q.get(key))
}

/// A request body as bytes that come as the client sends them.
pub(crate) fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    tokio_util::io::StreamReader::new(stream)
}

/// A JSON stream answered while `lines` yields.
pub(crate) fn json_stream(lines: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(ReceiverStream::new(lines).map(Ok::<_, std::io::Error>));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /images/load?quiet=`.
pub(crate) async fn load(api: &Api, q: &Query, body: Body) -> Result<Response, ApiError> {
    let quiet = bool_or_true(q, "quiet");
    let (out, lines) = mpsc::channel::<Bytes>(16);
    let api = api.clone();
    let archive = body_reader(body);
    tokio::spawn(async move {
        let (ptx, mut prx) = mpsc::channel(64);
        let engine = api.engine().clone();
        let loading =
            tokio::spawn(async move { engine.load(archive, (!quiet).then_some(ptx)).await });
        // The progress channel closes when the load ends.
        while let Some(p) = prx.recv().await {
            let commit_engine::LoadProgress { id, current, total } = p;
            let line = Message::progress("Loading layer", &id, current as i64, total as i64).line();
            let _ = out.send(line).await;
        }
        let result = match loading.await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::Internal(format!("the load failed: {e}"))),
        };
        match result {
            Ok(images) => {
                for i in images {
                    let text = match &i.name {
                        Some(n) => format!("Loaded image: {}\n", familiar_name(n)),
                        None => format!("Loaded image ID: {}\n", i.id),
                    };
                    api.events().image(
                        "load",
                        &i.id,
                        i.name.as_deref().map(familiar_name).unwrap_or(""),
                    );
                    let _ = out.send(Message::stream(text).line()).await;
                }
            }
            Err(e) => {
                tracing::info!(cause = %e, "load failed");
                let _ = out.send(Message::failure(e.to_string()).line()).await;
            }
        }
    });
    Ok(json_stream(lines))
}
