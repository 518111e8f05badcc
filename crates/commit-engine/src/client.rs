//! The connection to containerd: one lazily connected, self-healing gRPC
//! channel over the unix socket, and request builders that carry the
//! namespace (and, during a commit, the lease) in gRPC metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, introspection_client::IntrospectionClient,
    leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// gRPC messages up to this size are accepted from containerd (its own
/// server limit is 16 MiB).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// A handle on one containerd namespace. Cheap to clone; clones share the
/// channel.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Traced,
    socket: PathBuf,
    namespace: String,
    /// Connections made to the socket (the first, then each reconnect).
    connects: Arc<AtomicU64>,
}

impl Containerd {
    /// Prepares a channel to the socket without connecting: the first call
    /// connects, and a broken connection is re-established on the next call.
    /// So a daemon can start before containerd and ride out its restarts.
    pub fn lazy(socket: impl AsRef<Path>, namespace: &str) -> Result<Self> {
        validate_namespace(namespace)?;
        let socket = socket.as_ref().to_path_buf();
        let path = socket.clone();
        let connects = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connects);
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                let counter = Arc::clone(&counter);
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Ok(Self {
            channel: Traced(channel),
            socket,
            namespace: namespace.to_string(),
            connects,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Times the socket was (re)connected since start; one more than the
    /// reconnects.
    pub fn connections(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// A request in this namespace.
    pub(crate) fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        // Validated in the constructor: namespaces are ASCII.
        if let Ok(v) = MetadataValue::try_from(self.namespace.as_str()) {
            req.metadata_mut().insert("containerd-namespace", v);
        }
        req
    }

    /// A request in this namespace whose new resources belong to `lease`
    /// (none when `lease` is empty).
    pub(crate) fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.request(msg);
        if lease.is_empty() {
            return req;
        }
        if let Ok(v) = MetadataValue::try_from(lease) {
            req.metadata_mut().insert("containerd-lease", v);
        }
        req
    }

    /// Converts a gRPC status into an engine error naming the call.
    pub(crate) fn err(&self, op: &'static str, s: tonic::Status) -> Error {
        Error::status(op, &self.socket, s)
    }

    pub(crate) fn containers(&self) -> ContainersClient<Traced> {
        ContainersClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub(crate) fn tasks(&self) -> TasksClient<Traced> {
        TasksClient::new(self.channel.clone())
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Traced> {
        SnapshotsClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub(crate) fn diff(&self) -> DiffClient<Traced> {
        DiffClient::new(self.channel.clone())
    }
    pub(crate) fn content(&self) -> ContentClient<Traced> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
    pub(crate) fn images(&self) -> ImagesClient<Traced> {
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub(crate) fn leases(&self) -> LeasesClient<Traced> {
        LeasesClient::new(self.channel.clone())
    }
    /// The CRI plugin's runtime service (same socket; it keeps to the
    /// `k8s.io` namespace whatever the request says).
    pub(crate) fn cri(&self) -> k8s_cri::v1::runtime_service_client::RuntimeServiceClient<Traced> {
        k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
    }
    pub(crate) fn version(&self) -> VersionClient<Traced> {
        VersionClient::new(self.channel.clone())
    }
    pub(crate) fn introspection(&self) -> IntrospectionClient<Traced> {
        IntrospectionClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// containerd's version string; also a cheap liveness probe.
    pub async fn server_version(&self) -> Result<String> {
        let resp = self
            .version()
            .version(Request::new(()))
            .await
            .map_err(|s| self.err("version", s))?;
        Ok(resp.into_inner().version)
    }
}

/// The channel, with every call's method and its time to the answer's
/// headers logged at trace level (`RUST_LOG=commit_engine::client=trace`):
/// where a commit's time goes, call by call.
#[derive(Clone, Debug)]
pub(crate) struct Traced(Channel);

impl tower::Service<http::Request<tonic::body::Body>> for Traced {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<Self::Response, Self::Error>>
                + Send,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if !tracing::enabled!(tracing::Level::TRACE) {
            return Box::pin(self.0.call(req));
        }
        let method = req.uri().path().to_owned();
        let started = std::time::Instant::now();
        let call = self.0.call(req);
        Box::pin(async move {
            let answer = call.await;
            let us = started.elapsed().as_micros() as u64;
            tracing::trace!(%method, us, ok = answer.is_ok(), "containerd call");
            answer
        })
    }
}

/// containerd's namespace rule: labels of `[A-Za-z0-9]` joined by `.`, `_`
/// or `-`, at most 76 characters.
fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid containerd namespace {ns:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_containerd_rules() {
        for ok in ["default", "k8s.io", "moby", "a-b_c.d", "x1"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a",
            "a-",
            "a b",
            "ns/x",
            "ümlaut",
            &"x".repeat(77),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
