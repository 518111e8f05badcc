//! Commit a containerd container's changes into a new image — `docker
//! commit` for containerd — by driving containerd's own services over gRPC.
//!
//! # The algorithm
//! 1. Resolve the container (ID, name or ID prefix) and read its parent
//!    image's manifest and config from the content store. A container with
//!    no image is `FROM scratch`.
//! 2. Take a lease (one hour, renewed while the commit works) so nothing the
//!    commit makes is collected mid-way, and everything it made is collected
//!    if it fails.
//! 3. Pause the task if it runs and the caller asks; capture the layer;
//!    resume at once — and on every error path, retrying in the background
//!    while containerd is unreachable.
//! 4. Build the child config (parent → caller's config → history entry).
//! 5. Fill the snapshot named by the new chain ID, so the image runs at once.
//! 6. Write config and manifest with garbage-collection references, then
//!    point the image record at the manifest: the commit becomes visible in
//!    that last step only.
//!
//! # The façade
//! [`Engine`] is the whole surface: commits, the image store (list, find,
//! tag, untag, users), containers (read only), blobs to stream out, push
//! and export. Its types are its own or `docker_format`'s; containerd's
//! gRPC types and `tonic` stay inside (they are not re-exported).
//!
//! # Limits
//! The engine knows nothing of HTTP or Docker's Engine API. It applies
//! Docker's config rules (`docker_format::merge`) to the request's config
//! and `changes`, as Docker's daemon does.

mod capture;
mod catalog;
mod changes;
pub mod check;
mod client;
mod commit;
mod container;
mod content;
mod diff;
mod direct;
pub mod error;
mod export;
pub mod failpoint;
mod filter;
mod igzip;
mod images;
mod import;
mod incremental;
mod ingest;
mod keyed;
mod layer;
mod lease;
mod lineage;
mod load;
mod overlay;
mod pgzip;
mod pipeline;
mod prune;
mod push;
pub(crate) mod remote;
mod rootfs;
mod snapshot;
mod squash;
pub(crate) mod stubs;
mod system;
mod tarball;
mod task;
mod unpacked;
mod usage;
mod walk;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::capture::CaptureWork;
pub use crate::catalog::{Image, ImageIndex, ImageOf, ImageRecord, ImageStore};
pub use crate::changes::{Change, ChangeKind};
pub use crate::client::Containerd;
pub use crate::commit::{CapturePath, CommitRequest, Committed, Incremental, Phases};
pub use crate::container::{ContainerRecord, Containers, RestartPolicy};
pub use crate::content::Blobs;
pub use crate::error::{Error, Kind, OptionError, Result};
pub use crate::export::Exported;
pub use crate::filter::Pattern as ExcludePattern;
pub use crate::images::{Footing, Resolved};
pub use crate::import::{ImportError, ImportRequest, Imported};
pub use crate::incremental::Records;
pub use crate::lineage::{BASE_DIGEST, BASE_LAYERS, BASE_NAME, Squash};
pub use crate::load::{LoadError, LoadProgress, Loaded};
pub use crate::pipeline::PushTarget;
pub use crate::prune::{Pruned, PrunedImage};
pub use crate::push::{PushEvent, PushRequest, Sent};
pub use crate::remote::{BlobSource, Login, Missing, RegistryError};
pub use crate::system::{DEFAULT_SNAPSHOTTER, SystemInfo};
pub use crate::task::{PauseJournal, TaskInfo, TaskState};
pub use crate::usage::{ContainerSize, ImageUsage, ImagesUsage};
pub use crate::walk::WalkError;

/// Which config a commit starts from (before the request's body and
/// `changes`), and so what fills in what the request leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// Docker's: the container's own config — its command, environment,
    /// working directory, user and labels as it runs, rebuilt from its OCI
    /// runtime spec and labels over the image's config (see
    /// `docker_format::container`). The image's `OnBuild`, `Shell` and
    /// `ArgsEscaped` are not inherited, as in Docker.
    #[default]
    Container,
    /// nerdctl's: the parent image's config as it is; how the container
    /// was run leaves no trace in the image.
    Image,
}

/// How a new layer is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl std::str::FromStr for Compression {
    type Err = OptionError;
    fn from_str(s: &str) -> std::result::Result<Self, OptionError> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(OptionError::Compression(other.to_string())),
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Expiry of a commit's lease; renewed every third of it while the
    /// commit works, so it only matters if the daemon dies mid-commit.
    pub lease_expiry: Duration,
    /// Compression of new layers when the request does not choose.
    pub compression: Compression,
    /// gzip level, 1 (fastest) to 9 (smallest): 1 to 3 ISA-L's igzip, 4
    /// to 9 libdeflate.
    pub gzip_level: u32,
    /// zstd level, 1 to 19.
    pub zstd_level: i32,
    /// Compression threads (0: one per core).
    pub threads: usize,
    /// Read overlay upper directories directly when possible; `false`
    /// always uses containerd's diff service.
    pub fast_path: bool,
    /// Where paused containers are remembered across a crash.
    pub journal: PauseJournal,
    /// fsync layer blobs written directly into the content store before
    /// registering them (containerd's own durability). Off: as durable as
    /// `docker commit`, which syncs nothing.
    pub sync_layers: bool,
    /// Which config a commit starts from.
    pub config_source: ConfigSource,
    /// What a commit folds when the request does not say.
    pub squash: Squash,
    /// Most layers of a committed image (0: only what this node's overlay
    /// can mount, measured per commit).
    pub max_depth: usize,
    /// A commit beyond the depth limit that did not ask for a squash is
    /// squashed (`new`) instead of refused.
    pub auto_squash: bool,
    /// `exclude` patterns every commit applies, before the request's.
    pub exclude: Vec<String>,
    /// Commits that do not say are `incremental=1`.
    pub incremental: bool,
    /// A Docker-style `config.json` whose credentials push and save use to
    /// read blobs from their source registries (None: anonymous).
    pub source_credentials: Option<std::path::PathBuf>,
    /// Where commits remember what they captured of each container, for
    /// `incremental=1` (none: every commit is a plain one).
    pub records: Records,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_expiry: Duration::from_secs(3600),
            compression: Compression::Gzip,
            gzip_level: 1,
            zstd_level: 3,
            threads: 0,
            fast_path: true,
            journal: PauseJournal::default(),
            sync_layers: true,
            config_source: ConfigSource::Container,
            squash: Squash::No,
            max_depth: 0,
            auto_squash: false,
            exclude: Vec::new(),
            incremental: false,
            source_credentials: None,
            records: Records::default(),
        }
    }
}

impl EngineConfig {
    /// Compression threads: the setting, or one per core.
    pub(crate) fn threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.threads
        }
    }

    pub(crate) fn codec(&self, compression: Compression) -> layer::Codec {
        layer::Codec {
            compression,
            gzip_level: self.gzip_level,
            zstd_level: self.zstd_level,
            threads: self.threads(),
            sync: self.sync_layers,
        }
    }
}

/// The commit engine: a containerd connection and its settings.
#[derive(Clone)]
pub struct Engine {
    c: Containerd,
    cfg: EngineConfig,
    /// Manifests and configs already read.
    cache: catalog::Cache,
    /// Layers' unpacked sizes already measured.
    sizes: unpacked::Sizes,
    /// Captures of one container, and renames of one image, take turns.
    locks: keyed::KeyedLocks,
    /// containerd's content store directory, once seen from here.
    content_root: std::sync::Arc<std::sync::Mutex<Option<layer::ContentRoot>>>,
    /// Layers produced at once: as many as compression threads (cores).
    /// More would not be faster, only hold more buffers: memory stays
    /// bounded under any number of concurrent commits.
    layer_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Engine {
    pub fn new(c: Containerd, cfg: EngineConfig) -> Self {
        Self {
            c,
            cache: catalog::Cache::default(),
            sizes: unpacked::Sizes::default(),
            locks: keyed::KeyedLocks::default(),
            content_root: Default::default(),
            layer_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(cfg.threads())),
            cfg,
        }
    }

    /// The connection to containerd (its socket, namespace, version).
    pub fn containerd(&self) -> &Containerd {
        &self.c
    }

    /// The image store: list, find, tag, untag, users. Its writes take the
    /// same per-name locks as commits naming their images.
    pub fn images(&self) -> ImageStore<'_> {
        ImageStore {
            c: &self.c,
            cache: &self.cache,
            sizes: &self.sizes,
            locks: &self.locks,
        }
    }

    /// The containers, read only.
    pub fn containers(&self) -> Containers<'_> {
        Containers { c: &self.c }
    }

    /// Pushes tags of a repository to its registry (`docker push`); what
    /// happens arrives as events on the returned channel. Stops when the
    /// receiver is dropped. A blob not here is taken from where it came
    /// from ([`Engine::missing_blobs`]); one that is nowhere fails the
    /// push before anything is sent.
    pub async fn push(&self, req: PushRequest) -> Result<tokio::sync::mpsc::Receiver<PushEvent>> {
        let images = self.images().list().await?;
        let credentials =
            remote::source_credentials(self.cfg.source_credentials.as_deref()).await?;
        push::start(req, images, self.blobs(), credentials).await
    }

    /// A tar of images (`docker save`): an OCI layout with Docker's
    /// `manifest.json`, produced as it is read; dropping the stream stops
    /// it. Every blob should have been checked present or fetchable
    /// ([`Engine::missing_blobs`]) first.
    ///
    /// Blobs this node discarded after unpacking are streamed from the
    /// registries they came from ([`Engine::missing_blobs`]);
    /// `insecure_registries` are spoken to over plain HTTP.
    pub async fn export(
        &self,
        images: &[Exported],
        insecure_registries: &[String],
    ) -> Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
        let all = self.images().list().await?;
        let mut sources = std::collections::HashMap::new();
        for e in images {
            for m in remote::missing(&self.c, &e.image, &all).await? {
                sources.insert(m.descriptor.digest, m.sources);
            }
        }
        let domains: Vec<&str> = sources
            .values()
            .flatten()
            .map(|s: &BlobSource| s.domain.as_str())
            .collect();
        let client = remote::client(domains, insecure_registries)?;
        let credentials =
            remote::source_credentials(self.cfg.source_credentials.as_deref()).await?;
        let rx = export::start(
            images,
            self.blobs(),
            export::Remote {
                client,
                sources,
                credentials,
            },
        )?;
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The blobs of `image` not in the content store (a base layer
    /// discarded after unpacking), each with where else it may be.
    pub async fn missing_blobs(&self, image: &Image) -> Result<Vec<Missing>> {
        let all = self.images().list().await?;
        remote::missing(&self.c, image, &all).await
    }

    /// Blobs of the content store, to stream out (push, save).
    pub fn blobs(&self) -> Blobs {
        Blobs { c: self.c.clone() }
    }

    /// Commits a container. Cancelling `cancel` makes the commit stop at
    /// its next step and roll back (the container is resumed either way).
    pub async fn commit(
        &self,
        req: CommitRequest,
        cancel: &CancellationToken,
    ) -> Result<Committed> {
        let content_root = self.content_root().await;
        self.committer(cancel, content_root.as_ref(), None, None)
            .commit(req)
            .await
    }

    /// A commit of this engine's: `pod`, its turn in a pod snapshot's one
    /// pause; `tee`, where commit+push hands the new layer's bytes.
    fn committer<'a>(
        &'a self,
        cancel: &'a CancellationToken,
        content_root: Option<&'a layer::ContentRoot>,
        pod: Option<&'a task::PodTurn>,
        tee: Option<&'a std::sync::Mutex<Option<layer::Tee>>>,
    ) -> commit::Committer<'a> {
        commit::Committer {
            c: &self.c,
            cfg: &self.cfg,
            cancel,
            content_root,
            locks: &self.locks,
            layer_slots: &self.layer_slots,
            pod,
            tee,
            resuming: Default::default(),
        }
    }

    /// A pod snapshot: one image per app container of the pod
    /// `namespace`/`pod` (or of the containers named in `only`), all taken
    /// at one moment. The containers' commits run together; where each
    /// would pause its own container, every running container of the pod
    /// is paused at once, each upper directory is captured, and all are
    /// resumed when the last capture is done — before any layer or image is
    /// written (see [`task::PodPause`]). Nothing stays paused on any path;
    /// the pause journal covers a daemon that dies meanwhile. `request`
    /// makes each container's commit from its name and ID. Answers in name
    /// order.
    pub async fn commit_pod(
        &self,
        namespace: &str,
        pod: &str,
        only: &[String],
        request: impl Fn(&str, &str) -> CommitRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<(String, Committed)>> {
        let mut chosen = container::pod_containers(&self.c, namespace, pod).await?;
        if chosen.is_empty() {
            return Err(Error::ContainerNotFound(format!("{namespace}/{pod}")));
        }
        if let Some(n) = only.iter().find(|n| !chosen.iter().any(|(c, _)| c == *n)) {
            return Err(Error::ContainerNotFound(format!("{namespace}/{pod}/{n}")));
        }
        if !only.is_empty() {
            chosen.retain(|(name, _)| only.contains(name));
        }
        let content_root = self.content_root().await;
        let shared = task::PodPause::new(chosen.len());
        let ids: Vec<String> = chosen.iter().map(|(_, ct)| ct.id.clone()).collect();
        let pausing = shared.run(&self.c, &self.cfg.journal, &ids);
        let commits = futures::future::join_all(chosen.iter().map(|(name, ct)| {
            let mut req = request(name, &ct.id);
            req.pause = true;
            let turn = shared.turn();
            let content_root = content_root.as_ref();
            async move {
                let r = self
                    .committer(cancel, content_root, Some(&turn), None)
                    .commit(req)
                    .await;
                turn.leave(r.is_ok());
                r.map(|committed| (name.clone(), committed))
            }
        }));
        let (paused, done) = futures::future::join(pausing, commits).await;
        paused?;
        let mut out = Vec::with_capacity(done.len());
        let mut first_err = None;
        for r in done {
            match r {
                Ok(c) => out.push(c),
                // Told not to capture because another commit failed: that
                // failure is the answer.
                Err(Error::Cancelled(why)) if why.starts_with("another container") => {
                    first_err.get_or_insert(Error::Cancelled(why));
                }
                Err(e) => {
                    if !matches!(&first_err, Some(f) if !matches!(f, Error::Cancelled(_))) {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Loads an image archive (`docker load`): Docker's or OCI's, plain,
    /// gzip or zstd, read as it comes. Every image is unpacked, then named;
    /// on any failure nothing is left (see [`load`]). `progress` hears how
    /// far each file of the archive has come.
    pub async fn load<R>(
        &self,
        archive: R,
        progress: Option<tokio::sync::mpsc::Sender<LoadProgress>>,
    ) -> Result<Vec<Loaded>>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        load::Loader {
            c: &self.c,
            locks: &self.locks,
            lease_expiry: self.cfg.lease_expiry,
            snapshotter: DEFAULT_SNAPSHOTTER,
        }
        .load(archive, progress)
        .await
    }

    /// What a container changed (`docker diff`), read as a commit reads
    /// it: see [`changes`].
    pub async fn changes(&self, container: &str) -> Result<Vec<Change>> {
        changes::changes(
            &self.c,
            container,
            self.cfg.fast_path,
            self.cfg.lease_expiry,
        )
        .await
    }

    /// A container's whole filesystem as a tar (`docker export`), produced
    /// as it is read from a private read-only mount; dropping the stream
    /// stops it. With `pause`, a running container is paused for the whole
    /// stream: resumed before the stream's end, or when the stream is
    /// dropped, or by [`Engine::recover`] after a daemon death (see
    /// [`rootfs`]); otherwise it is not paused.
    pub async fn export_container(
        &self,
        container: &str,
        pause: bool,
    ) -> Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
        let pausing = pause.then_some(rootfs::Pausing {
            journal: &self.cfg.journal,
            locks: &self.locks,
        });
        let (rx, hold) = rootfs::start(&self.c, container, pausing).await?;
        Ok(futures::stream::unfold(
            (rx, hold),
            |(mut rx, mut hold)| async move {
                match rx.recv().await {
                    Some(chunk) => Some((chunk, (rx, hold))),
                    None => {
                        // Resumed before the client sees the end.
                        if let Some(h) = hold.take() {
                            h.release().await;
                        }
                        None
                    }
                }
            },
        ))
    }

    /// Imports a root filesystem tarball as a one-layer image (`docker
    /// import`): plain, gzip or zstd, read as it comes; nothing is left on
    /// failure (see [`import`]).
    pub async fn import<R>(&self, tarball: R, req: ImportRequest) -> Result<Imported>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let content_root = self.content_root().await;
        // One layer being produced per compression thread, as commits.
        let _slot = self
            .layer_slots
            .acquire()
            .await
            .map_err(|_| Error::Cancelled("waiting to write the layer"))?;
        import::Importer {
            c: &self.c,
            locks: &self.locks,
            lease_expiry: self.cfg.lease_expiry,
            snapshotter: DEFAULT_SNAPSHOTTER,
            codec: self.cfg.codec(self.cfg.compression),
            content_root: content_root.as_ref(),
        }
        .import(tarball, req)
        .await
    }

    /// containerd's version, root and snapshotter (`docker info`).
    pub async fn system(&self) -> Result<SystemInfo> {
        system::info(&self.c).await
    }

    /// Resumes containers a previous run of the daemon paused and did not
    /// resume (it died mid-commit).
    pub async fn recover(&self) {
        task::recover(&self.c, &self.cfg.journal).await;
        if let Err(e) = self.forget_removed_containers().await {
            tracing::warn!(cause = %e, "incremental records of removed containers not swept");
        }
    }

    /// Removes the incremental records (see `incremental=1`) of containers
    /// that no longer exist in this namespace; the daemon does it at start
    /// and then every hour. Returns how many went.
    pub async fn forget_removed_containers(&self) -> Result<usize> {
        if !self.cfg.records.is_kept() {
            return Ok(0);
        }
        let alive: std::collections::HashSet<String> = container::list(&self.c, Vec::new())
            .await?
            .into_iter()
            .map(|ct| ct.id)
            .collect();
        Ok(self.cfg.records.keep_only(self.c.namespace(), &alive))
    }

    /// Where layers can be written directly, if anywhere (fast path only).
    async fn content_root(&self) -> Option<layer::ContentRoot> {
        if !self.cfg.fast_path {
            return None;
        }
        if let Some(root) = self
            .content_root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(root);
        }
        let root = layer::ContentRoot::discover(&self.c).await?;
        root.sweep_stale();
        *self.content_root.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.clone());
        Some(root)
    }
}

/// A short random string for names that must not collide (lease IDs,
/// temporary snapshot keys, ingest refs).
pub(crate) fn unique() -> String {
    use rand::RngExt;
    let n: u64 = rand::rng().random();
    format!("{:x}-{:016x}", std::process::id(), n)
}
