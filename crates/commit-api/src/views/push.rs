//! Progress streams — `docker push`, and the `Message` lines of
//! `docker load` and `docker import`: Docker's `jsonmessage.JSONMessage`.

use bytes::Bytes;
use commit_engine::{PushEvent, Sent};
use docker_format::size::human_size;
use serde::Serialize;

/// The lines Docker writes for one push event.
pub(crate) fn lines(e: &PushEvent) -> Vec<Bytes> {
    match e {
        PushEvent::Repository(repo) => {
            vec![Message::status(format!("The push refers to repository [{repo}]")).line()]
        }
        PushEvent::Preparing { layer } => vec![Message::layer("Preparing", layer).line()],
        PushEvent::Progress {
            layer,
            current,
            total,
        } => vec![Message::pushing(layer, *current, *total).line()],
        PushEvent::Layer { layer, sent } => {
            let status = match sent {
                Sent::Existed => "Layer already exists".to_string(),
                // The repository's path on the registry, as Docker says it.
                Sent::Mounted(repo) => format!("Mounted from {repo}"),
                Sent::Pushed => "Pushed".to_string(),
            };
            vec![Message::layer(status, layer).line()]
        }
        PushEvent::Pushed { tag, digest, size } => vec![
            Message::status(format!("{tag}: digest: {digest} size: {size}")).line(),
            Message::result(tag, digest, *size).line(),
        ],
        PushEvent::Failed(message) => vec![Message::failure(message.clone()).line()],
    }
}

/// Docker's `jsonmessage.JSONMessage`, fields in Go's order (so lines read
/// as Docker's do).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    progress_detail: Option<ProgressDetail>,
    #[serde(rename = "progress", skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aux: Option<Aux>,
}

/// What an `aux` carries.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Aux {
    Push(PushResult),
    /// The image a commit made (`POST /commit?push=1`), as `docker build`
    /// tells the image it made: `{"aux":{"ID":"sha256:…"}}`.
    Image {
        #[serde(rename = "ID")]
        id: String,
    },
}

#[derive(Debug, Default, Serialize)]
struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    message: String,
}

/// Docker's `types.PushResult`, the `aux` of a pushed tag.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PushResult {
    tag: String,
    digest: String,
    size: usize,
}

impl Message {
    pub(crate) fn status(status: impl Into<String>) -> Self {
        Self {
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// A layer's state: `{"status":…,"progressDetail":{},"id":…}`.
    fn layer(status: impl Into<String>, digest: &str) -> Self {
        Self {
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail::default()),
            id: Some(short(digest)),
            ..Self::default()
        }
    }

    /// A line of text: `{"stream":"Loaded image: app:1\n"}`.
    pub(crate) fn stream(text: impl Into<String>) -> Self {
        Self {
            stream: Some(text.into()),
            ..Self::default()
        }
    }

    fn pushing(digest: &str, current: i64, total: i64) -> Self {
        Self::progress("Pushing", digest, current, total)
    }

    /// A progress bar: `{"status":"Loading layer","progressDetail":{…},
    /// "progress":"[==>  ] …","id":"0123456789ab"}`.
    pub(crate) fn progress(status: &str, digest: &str, current: i64, total: i64) -> Self {
        Self {
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            progress: Some(progress_bar(current, total)),
            id: Some(short(digest)),
            ..Self::default()
        }
    }

    pub(crate) fn failure(message: String) -> Self {
        Self {
            error_detail: Some(ErrorDetail {
                message: message.clone(),
            }),
            error: Some(message),
            ..Self::default()
        }
    }

    fn result(tag: &str, digest: &str, size: usize) -> Self {
        Self {
            progress_detail: Some(ProgressDetail::default()),
            aux: Some(Aux::Push(PushResult {
                tag: tag.to_string(),
                digest: digest.to_string(),
                size,
            })),
            ..Self::default()
        }
    }

    /// The image a commit made: `{"aux":{"ID":"sha256:…"}}`.
    pub(crate) fn image(id: &str) -> Self {
        Self {
            aux: Some(Aux::Image { id: id.to_string() }),
            ..Self::default()
        }
    }

    /// One line of the stream.
    pub(crate) fn line(&self) -> Bytes {
        let mut b = serde_json::to_vec(self).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    }
}

/// Docker's progress text: `[=====>    ]  1.2MB/3.4MB`.
fn progress_bar(current: i64, total: i64) -> String {
    let pct = if total > 0 {
        ((current as f64 / total as f64 * 100.0) as usize / 2).min(50)
    } else {
        0
    };
    format!(
        "[{}>{}] {:>8}/{}",
        "=".repeat(pct),
        " ".repeat(50 - pct),
        human_size(current),
        human_size(total)
    )
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_docker() {
        assert_eq!(
            progress_bar(1024, 2048),
            format!("[{}>{}]  1.024kB/2.048kB", "=".repeat(25), " ".repeat(25))
        );
    }

    #[test]
    fn lines_read_like_docker() {
        let text = |m: Message| String::from_utf8(m.line().to_vec()).unwrap();
        assert_eq!(
            text(Message::layer("Preparing", "sha256:0123456789abcdef")),
            "{\"status\":\"Preparing\",\"progressDetail\":{},\"id\":\"0123456789ab\"}\n"
        );
        assert_eq!(
            text(Message::pushing("sha256:0123456789abcdef", 1, 2)),
            format!(
                "{{\"status\":\"Pushing\",\"progressDetail\":{{\"current\":1,\"total\":2}},\"progress\":\"{}\",\"id\":\"0123456789ab\"}}\n",
                progress_bar(1, 2)
            )
        );
        assert_eq!(
            text(Message::result("1", "sha256:aa", 5)),
            "{\"progressDetail\":{},\"aux\":{\"Tag\":\"1\",\"Digest\":\"sha256:aa\",\"Size\":5}}\n"
        );
        assert_eq!(
            text(Message::failure("x".into())),
            "{\"errorDetail\":{\"message\":\"x\"},\"error\":\"x\"}\n"
        );
    }
}
