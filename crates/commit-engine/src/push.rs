//! `docker push` of images of this node: their blobs are streamed from
//! containerd's content store to the registry with `oci-client` (blobs the
//! registry has are skipped, blobs another local repository of the same
//! registry holds are mounted), then the manifest is pushed byte for byte
//! as stored, so the registry's digest is the local one. When an image's
//! record names an index, the manifest of the host's platform is pushed
//! under the tag, not the index. What happens is told as [`PushEvent`]s.
//! A push never deletes anything locally.
//!
//! A blob this node no longer has (a base layer discarded after unpacking,
//! see [`crate::remote`]) is skipped when the registry has it, mounted from
//! its source repository when that is on the same registry, else streamed
//! from its source registry through to this one. Before anything is sent,
//! each such blob is checked to be somewhere: if one is nowhere, the push
//! fails naming every missing layer and every source tried, having pushed
//! nothing.
//!
//! The process must have a rustls `CryptoProvider` installed (the daemon
//! installs ring at start): the registry client has none of its own.
//!
//! Layers are uploaded three at a time (Docker: five). Limits, compared
//! with Docker: an insecure registry is spoken to over plain HTTP only
//! (Docker first tries HTTPS without verifying the certificate); insecure
//! CIDR entries match IP literals only (Docker also resolves host names).

use std::collections::HashMap;

use bytes::Bytes;
use docker_format::image::Descriptor;
use docker_format::reference::{Named, familiar_name};
use docker_format::registry;
use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::sync::mpsc;

use crate::catalog::Image;
use crate::content::Blobs;
use crate::error::Result;
use crate::remote::{BlobSource, RegistryError, registry_host, source_ref};

/// What to push: tags of one repository, each naming a local image.
pub struct PushRequest {
    /// The repository (`domain/path`; its tag is not used).
    pub repository: Named,
    /// Tag → the image pushed under it, in the order to push.
    pub tags: Vec<(String, Image)>,
    pub auth: registry::RegistryAuth,
    /// Registries spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
}

/// What a push did, step by step (Docker's progress lines say the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The push starts: the repository, its full name (as Docker says it).
    Repository(String),
    /// A layer will be pushed.
    Preparing { layer: String },
    /// Bytes of a layer the registry has received.
    Progress {
        layer: String,
        current: i64,
        total: i64,
    },
    /// A layer is on the registry.
    Layer { layer: String, sent: Sent },
    /// A tag is pushed: its manifest's digest and size.
    Pushed {
        tag: String,
        digest: String,
        size: usize,
    },
    /// The push stopped; nothing more follows.
    Failed(String),
}

/// How a blob reached the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The registry had it in the repository already.
    Existed,
    /// Mounted from another repository of the registry (its path).
    Mounted(String),
    Pushed,
}

/// Other repositories tried for a cross-repository mount of one blob.
const MOUNT_TRIES: usize = 3;

/// Blobs uploaded at once (Docker's daemon: `max-concurrent-uploads`, 5 by
/// default; 3 keeps a 2-core node's compression and network share fair).
pub(crate) const PARALLEL_UPLOADS: usize = 3;

fn remote(named: &Named, tag: &str) -> Reference {
    Reference::with_tag(
        registry_host(&named.domain).to_string(),
        named.path.clone(),
        tag.to_string(),
    )
}

/// Starts a push; its events arrive on the returned channel, which the
/// push stops writing to (and stops) when the receiver is dropped.
pub(crate) async fn start(
    req: PushRequest,
    images: Vec<Image>,
    blobs: Blobs,
    credentials: docker_format::registry::ConfigFile,
) -> Result<mpsc::Receiver<PushEvent>> {
    let pushed: Vec<&Image> = req.tags.iter().map(|(_, e)| e).collect();
    let (job, rx) = Job::new(
        req.repository.clone(),
        req.auth,
        &req.insecure_registries,
        &pushed,
        &images,
        blobs,
        credentials,
    )
    .await?;
    let targets = req.tags;
    tokio::spawn(async move {
        let repo = familiar_name(&job.named.name()).to_string();
        // Docker names the repository in full here (`docker.io/library/app`).
        let _ = job.tx.send(PushEvent::Repository(job.named.name())).await;
        for (tag, e) in targets {
            if let Err(err) = job.push_one(&tag, &e, &HashMap::new()).await {
                tracing::warn!(repository = %repo, %tag, cause = %err, "push failed");
                let _ = job.tx.send(PushEvent::Failed(err.to_string())).await;
                return;
            }
        }
    });
    Ok(rx)
}

/// One push: the registry client, the repository and where progress goes.
pub(crate) struct Job {
    pub(crate) client: Client,
    auth: RegistryAuth,
    blobs: Blobs,
    pub(crate) named: Named,
    /// Layer digest → other repositories of the registry that may hold it.
    sources: HashMap<String, Vec<String>>,
    /// Blobs not in the content store → where else they may be.
    remote: HashMap<String, Vec<BlobSource>>,
    /// Source registries' credentials (a configured `config.json`).
    credentials: docker_format::registry::ConfigFile,
    pub(crate) tx: mpsc::Sender<PushEvent>,
}

impl Job {
    /// A push of `named`, of which `pushed` are the images to send (`all`:
    /// every local image, for the blobs' other repositories); its events
    /// arrive on the returned channel.
    pub(crate) async fn new(
        named: Named,
        auth: registry::RegistryAuth,
        insecure_registries: &[String],
        pushed: &[&Image],
        images: &[Image],
        blobs: Blobs,
        credentials: docker_format::registry::ConfigFile,
    ) -> Result<(Job, mpsc::Receiver<PushEvent>)> {
        // Where else on this registry our layers may already be (other local
        // repositories of the same domain): Docker mounts from those instead
        // of uploading again.
        let mut sources: HashMap<String, Vec<String>> = HashMap::new();
        let prefix = format!("{}/", named.domain);
        for e in images {
            for n in e.names() {
                let Some(rest) = n.strip_prefix(&prefix) else {
                    continue;
                };
                let repo = rest.split([':', '@']).next().unwrap_or(rest);
                if repo == named.path {
                    continue;
                }
                for l in &e.resolved.manifest.layers {
                    let v = sources.entry(l.digest.clone()).or_default();
                    if !v.iter().any(|r| r == repo) {
                        v.push(repo.to_string());
                    }
                }
            }
        }
        // Blobs not here, and where else they are.
        let mut remote: HashMap<String, Vec<BlobSource>> = HashMap::new();
        for e in pushed {
            for m in crate::remote::missing(&blobs.c, e, images).await? {
                remote.insert(m.descriptor.digest, m.sources);
            }
        }
        let domains: Vec<&str> = std::iter::once(named.domain.as_str())
            .chain(remote.values().flatten().map(|s| s.domain.as_str()))
            .collect();
        let client = crate::remote::client(domains, insecure_registries)?;
        let auth = crate::remote::oci_auth(auth);
        let (tx, rx) = mpsc::channel::<PushEvent>(16);
        Ok((
            Job {
                client,
                auth,
                blobs,
                named,
                sources,
                remote,
                credentials,
                tx,
            },
            rx,
        ))
    }

    /// The registry's reference for `tag` of the repository.
    pub(crate) fn reference(&self, tag: &str) -> Reference {
        remote(&self.named, tag)
    }

    /// Logs in for pushing to the repository (a token, when the registry
    /// asks for one).
    pub(crate) async fn authenticate(
        &self,
        reference: &Reference,
    ) -> std::result::Result<(), RegistryError> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map(|_| ())
            .map_err(|err| {
                self.fail(
                    &format!("authenticating to {}", reference.registry()),
                    &err,
                    reference,
                )
            })
    }

    /// A registry call `what` failed.
    pub(crate) fn fail(
        &self,
        what: &str,
        err: &OciDistributionError,
        reference: &Reference,
    ) -> RegistryError {
        RegistryError::call(what, err, reference.registry(), &self.auth)
    }

    pub(crate) async fn send(&self, e: PushEvent) -> std::result::Result<(), RegistryError> {
        self.tx.send(e).await.map_err(|_| RegistryError::ClientGone)
    }

    /// Pushes `e` under `tag`: its layers (but those in `already`, sent
    /// and told of before), config and manifest.
    pub(crate) async fn push_one(
        &self,
        tag: &str,
        e: &Image,
        already: &HashMap<String, Sent>,
    ) -> std::result::Result<(), RegistryError> {
        let reference = remote(&self.named, tag);
        self.authenticate(&reference).await?;
        let r = &e.resolved;
        self.check_missing(&reference, e).await?;
        let todo = |l: &&Descriptor| !already.contains_key(&l.digest);
        for l in r.manifest.layers.iter().rev().filter(todo) {
            self.send(PushEvent::Preparing {
                layer: l.digest.clone(),
            })
            .await?;
        }
        // Layers go up to `PARALLEL_UPLOADS` at once, as Docker's; the
        // first failure stops the rest.
        let layers: Vec<Descriptor> = r
            .manifest
            .layers
            .iter()
            .rev()
            .filter(todo)
            .cloned()
            .collect();
        let at = &reference;
        let mut uploads = futures::stream::iter(layers)
            .map(|l| async move {
                let sent = self.push_blob(at, &l, true).await?;
                self.send(PushEvent::Layer {
                    layer: l.digest.clone(),
                    sent,
                })
                .await
            })
            .buffer_unordered(PARALLEL_UPLOADS);
        while let Some(done) = uploads.next().await {
            done?;
        }
        drop(uploads);
        self.push_blob(&reference, &r.manifest.config, false)
            .await?;
        let digest = &r.manifest_descriptor.digest;
        let manifest = self
            .blobs
            .read(digest)
            .await
            .map_err(|err| RegistryError::Local {
                what: format!("reading manifest {digest}"),
                detail: err.to_string(),
            })?;
        let media =
            http::HeaderValue::from_str(&r.manifest_descriptor.media_type).map_err(|err| {
                RegistryError::Local {
                    what: "manifest media type".into(),
                    detail: err.to_string(),
                }
            })?;
        let size = manifest.len();
        self.client
            .push_manifest_raw(&reference, manifest, media)
            .await
            .map_err(|err| self.fail("pushing the manifest", &err, &reference))?;
        tracing::info!(
            repository = %familiar_name(&self.named.name()),
            %tag,
            %digest,
            "pushed"
        );
        self.send(PushEvent::Pushed {
            tag: tag.to_string(),
            digest: digest.clone(),
            size,
        })
        .await
    }

    /// Every blob of `e` that is not here must be on the registry already
    /// or at one of its sources; else nothing is pushed and the error names
    /// each such layer with the sources tried.
    async fn check_missing(
        &self,
        reference: &Reference,
        e: &Image,
    ) -> std::result::Result<(), RegistryError> {
        let mut nowhere = Vec::new();
        for d in e.resolved.blobs() {
            let Some(sources) = self.remote.get(&d.digest) else {
                continue;
            };
            if matches!(
                self.client.blob_exists(reference, &d.digest).await,
                Ok(true)
            ) {
                continue;
            }
            let mut found = false;
            for s in sources {
                let r = source_ref(s);
                if s.domain != self.named.domain {
                    let _ = self
                        .client
                        .auth(
                            &r,
                            &crate::remote::oci_auth(self.credentials.auth_for(&s.domain)),
                            RegistryOperation::Pull,
                        )
                        .await;
                }
                if matches!(self.client.blob_exists(&r, &d.digest).await, Ok(true)) {
                    found = true;
                    break;
                }
            }
            if !found {
                let tried: Vec<String> = sources.iter().map(ToString::to_string).collect();
                nowhere.push(format!(
                    "{} (sources tried: {})",
                    d.digest,
                    if tried.is_empty() {
                        "none known: no containerd.io/distribution.source label".to_string()
                    } else {
                        tried.join(", ")
                    }
                ));
            }
        }
        if nowhere.is_empty() {
            return Ok(());
        }
        Err(RegistryError::Nowhere {
            repository: familiar_name(&self.named.name()).to_string(),
            nowhere,
        })
    }

    /// Pushes one blob unless the registry has it in this repository, or
    /// can mount it from another repository of the registry. `progress`:
    /// report bytes sent as Docker's `Pushing` lines.
    pub(crate) async fn push_blob(
        &self,
        reference: &Reference,
        d: &Descriptor,
        progress: bool,
    ) -> std::result::Result<Sent, RegistryError> {
        if self
            .client
            .blob_exists(reference, &d.digest)
            .await
            .map_err(|err| self.fail(&format!("checking blob {}", d.digest), &err, reference))?
        {
            return Ok(Sent::Existed);
        }
        let from = self
            .sources
            .get(&d.digest)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for repo in from.iter().take(MOUNT_TRIES) {
            let src = Reference::with_tag(
                reference.registry().to_string(),
                repo.clone(),
                "latest".into(),
            );
            if self
                .client
                .mount_blob(reference, &src, &d.digest)
                .await
                .is_ok()
            {
                return Ok(Sent::Mounted(repo.clone()));
            }
        }
        if let Some(sources) = self.remote.get(&d.digest) {
            return self.push_from_sources(reference, d, sources).await;
        }
        let (digest, size) = (d.digest.clone(), d.size);
        let tx = progress.then(|| self.tx.clone());
        let data = Box::pin(self.blobs.chunks(&d.digest, d.size));
        // Each chunk is sent before the next is asked for: `offset` bytes
        // have reached the registry whenever the stream is polled.
        let chunks = futures::stream::unfold((data, 0i64), move |(mut data, offset)| {
            let (digest, tx) = (digest.clone(), tx.clone());
            async move {
                if let (Some(tx), true) = (&tx, offset > 0) {
                    let progress = PushEvent::Progress {
                        layer: digest.clone(),
                        current: offset,
                        total: size,
                    };
                    if tx.send(progress).await.is_err() {
                        return Some((Err(generic("client went away".into())), (data, offset)));
                    }
                }
                match data.next().await? {
                    Ok(bytes) => {
                        let next = offset + bytes.len() as i64;
                        Some((Ok(Bytes::from(bytes)), (data, next)))
                    }
                    Err(e) => Some((
                        Err(generic(format!("reading local blob {digest}: {e}"))),
                        (data, offset),
                    )),
                }
            }
        });
        self.upload(reference, d, chunks).await
    }
}

impl Job {
    /// A blob not here: mounted from a source repository of this registry,
    /// else streamed from a source registry.
    async fn push_from_sources(
        &self,
        reference: &Reference,
        d: &Descriptor,
        sources: &[BlobSource],
    ) -> std::result::Result<Sent, RegistryError> {
        for s in sources.iter().filter(|s| s.domain == self.named.domain) {
            if self
                .client
                .mount_blob(reference, &source_ref(s), &d.digest)
                .await
                .is_ok()
                && matches!(
                    self.client.blob_exists(reference, &d.digest).await,
                    Ok(true)
                )
            {
                return Ok(Sent::Mounted(s.repo.clone()));
            }
        }
        let stream = crate::remote::fetch(&self.client, d, sources, &self.credentials).await?;
        let digest = d.digest.clone();
        let chunks = stream.map(move |r| {
            r.map_err(|e| generic(format!("fetching blob {digest} from its source: {e}")))
        });
        self.upload(reference, d, chunks).await
    }
}

impl Job {
    /// Uploads a blob's bytes as they come (one PATCH per chunk).
    async fn upload(
        &self,
        reference: &Reference,
        d: &Descriptor,
        chunks: impl futures::Stream<Item = std::result::Result<Bytes, OciDistributionError>>
        + Send
        + 'static,
    ) -> std::result::Result<Sent, RegistryError> {
        self.client
            .push_blob_stream(
                reference,
                chunks,
                &d.digest,
                Some(u64::try_from(d.size).unwrap_or(0)),
            )
            .await
            .map_err(|err| self.fail(&format!("pushing blob {}", d.digest), &err, reference))?;
        Ok(Sent::Pushed)
    }
}

fn generic(msg: String) -> OciDistributionError {
    OciDistributionError::GenericError(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_pushed_to_registry_1() {
        use docker_format::reference::parse_normalized_named;
        let named = parse_normalized_named("acc/app").unwrap();
        let r = remote(&named, "1");
        assert_eq!(r.resolve_registry(), "registry-1.docker.io");
        assert_eq!(r.repository(), "acc/app");
        let named = parse_normalized_named("127.0.0.1:5000/acc/app").unwrap();
        assert_eq!(remote(&named, "1").resolve_registry(), "127.0.0.1:5000");
    }
}
