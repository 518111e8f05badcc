//! The commit itself, step by step (see the crate docs for the why).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::Container;
use containerd_client::types::Mount;
use docker_format::changes::Changes;
use docker_format::merge;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::capture::{self, CaptureWork, CopyError};
use crate::client::Containerd;
use crate::container;
use crate::content;
use crate::diff::{self, Layer};
use crate::error::{Error, Result};
use crate::filter::{Filter, Pattern};
use crate::images::{self, Resolved};
use crate::incremental;
use crate::keyed::Key;
use crate::layer;
use crate::lease::Lease;
use crate::lineage::{self, Base, Squash};
use crate::overlay;
use crate::snapshot::{self, Snapshots};
use crate::squash;
use crate::stubs;
use crate::tarball;
use crate::task::{self, TaskState};
use crate::{Compression, ConfigSource, EngineConfig};
use docker_format::image::{
    self, Descriptor, History, ImageConfig, Manifest, RunConfig, media_type,
};

/// What to commit and how.
pub struct CommitRequest {
    /// Container ID, unique ID prefix, or name.
    pub container: String,
    /// The image record's name (already normalized, e.g.
    /// `docker.io/library/app:latest`); `None` for an untagged image.
    pub image_name: Option<String>,
    /// Empty: the parent's author.
    pub author: String,
    pub comment: String,
    /// Pause a running container while its changes are captured.
    pub pause: bool,
    /// `None`: the engine's configured default.
    pub compression: Option<Compression>,
    /// The request body's config (Docker's `container.Config`); `None`:
    /// the parent's.
    pub config: Option<RunConfig>,
    /// Dockerfile instructions applied to the config, then completed from
    /// the parent's (Docker's `merge`). A change that cannot be applied
    /// aborts the commit before anything is paused or written.
    pub changes: Changes,
    /// Fold layers below the new one (`None`: the configured default).
    pub squash: Option<Squash>,
    /// Reproducible: every time in the layer clamped to this second
    /// (since the epoch), and the config's `created` (see `filter`).
    pub timestamp: Option<i64>,
    /// Globs on container paths left out of the layer and the snapshot.
    pub exclude: Vec<String>,
    /// Only what changed since this daemon's last commit of the container,
    /// on that commit's image (see `incremental`); a plain commit when that
    /// cannot be, and the answer says why. Either way the capture is
    /// remembered for the next one. `None`: the configured default.
    pub incremental: Option<bool>,
}

/// What `incremental=1` made of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incremental {
    /// Not asked for.
    NotAsked,
    /// Only what changed, on the previous commit's image (its ID).
    On(String),
    /// A plain commit, and why.
    Plain(String),
}

/// How the layer was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapturePath {
    /// The overlay upper directory, read directly.
    Overlay,
    /// containerd's diff service.
    DiffService,
}

/// A finished commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// `sha256:…` of the config: Docker's image ID.
    pub image_id: String,
    pub manifest: Descriptor,
    /// The image record's name (`moby-dangling@…` when untagged).
    pub image_name: String,
    pub container_id: String,
    /// The container's name as users know it: nerdctl's name label,
    /// Kubernetes' `namespace/pod/container`, or its ID.
    pub container_name: String,
    /// The container's image record name ("" for `FROM scratch`).
    pub container_image: String,
    /// The new layer; `None` when the container had no changes.
    pub layer: Option<Descriptor>,
    pub diff_id: Option<String>,
    /// Size of the layer's tar before compression.
    pub uncompressed_size: u64,
    pub capture: CapturePath,
    /// The squash done.
    pub squash: Squash,
    /// The new image's layers.
    pub depth: usize,
    /// What `incremental=1` made of it.
    pub incremental: Incremental,
    /// Entries `exclude` left out (a directory once, with its contents).
    pub excluded: u64,
    /// How long the container was paused (zero if it was not).
    pub paused: Duration,
    /// What the fast path's capture did before and during the pause
    /// (zero for the diff service).
    pub capture_work: CaptureWork,
    /// Time spent in each step.
    pub phases: Phases,
    pub elapsed: Duration,
}

/// Where a commit's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Reading the changes (the copy of the upper directory, or the diff
    /// service's diff), pause included.
    pub capture: Duration,
    /// Writing the layer: tar, compression, hashing, the blob.
    pub layer: Duration,
    /// Filling the new image's snapshot.
    pub fill: Duration,
    /// Config, manifest and the image record.
    pub image: Duration,
}

pub(crate) struct Committer<'a> {
    pub c: &'a Containerd,
    pub cfg: &'a EngineConfig,
    pub cancel: &'a CancellationToken,
    /// containerd's content directory when visible here: layers are written
    /// into it directly (see `layer`).
    pub content_root: Option<&'a layer::ContentRoot>,
    pub locks: &'a crate::keyed::KeyedLocks,
    /// Layers being produced at once (see [`crate::Engine`]).
    pub layer_slots: &'a tokio::sync::Semaphore,
    /// Part of a pod snapshot: the pod's one pause replaces this commit's
    /// own (see [`task::PodPause`]).
    pub pod: Option<&'a task::PodTurn>,
    /// Where the new layer's compressed bytes are also handed, as they are
    /// written (a commit pushed at once, see [`crate::pipeline`]).
    pub tee: Option<&'a std::sync::Mutex<Option<layer::Tee>>>,
    /// The resume of this commit's pause, under way while the layer and
    /// the image are written (see [`Committer::resumed`]).
    pub resuming: Resuming,
}

/// A resume sent after the paused walk, awaited before the commit answers.
pub(crate) type Resuming = std::sync::Mutex<Option<tokio::task::JoinHandle<Option<Error>>>>;

/// The layer as captured, and how to fill the new image's snapshot.
struct Captured {
    layer: Option<Layer>,
    /// Time spent writing the layer (part of the capture step's time).
    layer_time: Duration,
    uncompressed_size: u64,
    path: CapturePath,
    paused: Duration,
    work: CaptureWork,
    fill: Fill,
    /// The layer blob being made durable and registered (see
    /// [`layer::Settling`]), awaited before the image is named.
    settling: Option<tokio::task::JoinHandle<Result<()>>>,
    /// What to remember for the next incremental commit: the container's
    /// upper directory and its entries as captured.
    record: Option<(std::path::PathBuf, HashMap<Vec<u8>, incremental::Mark>)>,
}

enum Fill {
    /// No new layer: the parent's snapshot serves.
    Nothing,
    /// An `extract-` snapshot already holds the layer's files; commit it.
    Prepared(String),
    /// Apply this uncompressed tar with the diff service.
    Apply(Descriptor),
}

/// Why the fast path was not taken.
enum FastPath {
    Unsupported(String),
    Failed(Error),
}

impl From<Error> for FastPath {
    fn from(e: Error) -> Self {
        FastPath::Failed(e)
    }
}

/// Everything about the container a commit needs.
struct Source<'s> {
    ct: &'s Container,
    sn: &'s Snapshots<'s>,
    info: &'s snapshot::Info,
    /// The snapshot's mounts, when it is active.
    mounts: Option<&'s [Mount]>,
    /// What the layer is a diff against: the parent image's snapshot, or
    /// nothing for a `FROM scratch` container.
    diff_parent: String,
    /// Pause the task around the capture.
    pause: bool,
    /// The parent's layers kept below the new one.
    kept: usize,
    /// The parent's layers above those, folded into the new one (the
    /// lowest lower directories of the container's snapshot, top first).
    fold: usize,
    /// Excludes and timestamp.
    filter: std::sync::Arc<Filter>,
    /// An incremental commit: what the previous one captured.
    since: Option<Arc<incremental::Record>>,
    /// Remember what is captured, for the next incremental commit.
    record: bool,
}

impl Committer<'_> {
    /// A turn to produce a layer: compression is CPU-bound, so more layers
    /// at once than cores only multiply the buffers held.
    async fn layer_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.layer_slots
            .acquire()
            .await
            .map_err(|_| Error::Cancelled("waiting to write the layer"))
    }

    fn check_cancel(&self, step: &'static str) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled(step))
        } else {
            Ok(())
        }
    }

    /// The layer-depth guard: the squash this commit does, or a 400 when
    /// its image would have more layers than this node's overlay can mount
    /// (see [`overlay::max_depth`]) or than configured. The request's squash
    /// stands; without one, the configured default, or `new` when the
    /// configuration says to squash rather than refuse.
    fn depth_guard(
        &self,
        ct: &Container,
        mounts: Option<&[Mount]>,
        asked: Option<Squash>,
        parent_layers: usize,
        base: Option<&Base>,
    ) -> Result<Squash> {
        let squash = asked.unwrap_or(self.cfg.squash);
        let measured = match mounts {
            Some([m]) => overlay::max_depth(m, overlay::page_size()),
            _ => None,
        };
        let configured = (self.cfg.max_depth > 0).then_some(self.cfg.max_depth);
        let limit = match (measured, configured) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(l) => l,
                None => return Ok(squash),
            },
        };
        let depth = |s: Squash| match s {
            Squash::No => parent_layers + 1,
            Squash::New => base.map_or(0, |b| b.layers).min(parent_layers) + 1,
            Squash::All => 1,
        };
        if depth(squash) <= limit {
            return Ok(squash);
        }
        if asked.is_none() && self.cfg.auto_squash && depth(Squash::New) <= limit {
            info!(container = %ct.id, depth = depth(squash), limit, "squashing the lineage's layers: the image would be too deep");
            return Ok(Squash::New);
        }
        let why = match (measured, configured) {
            (Some(m), Some(c)) if c <= m => format!("the configured maximum ({c})"),
            (Some(m), _) => format!("what this node's overlay snapshotter can mount ({m})"),
            (None, _) => format!("the configured maximum ({limit})"),
        };
        let way_out = if squash == Squash::New || depth(Squash::New) > limit {
            "commit with squash=all (one layer)"
        } else {
            "commit with squash=new to fold the layers above the base image into one"
        };
        Err(Error::InvalidArgument(format!(
            "max depth exceeded: the image would have {} layers, more than {why}; {way_out}",
            depth(squash)
        )))
    }

    /// The container's previous commit and its image, when an incremental
    /// commit can stand on them; else why not (a plain commit then).
    async fn previous(
        &self,
        sn: &Snapshots<'_>,
        ct: &Container,
        info: &snapshot::Info,
        mounts: Option<&[Mount]>,
        squash: Option<Squash>,
        base: Option<&Base>,
    ) -> Result<std::result::Result<(Arc<incremental::Record>, Resolved), String>> {
        let c = self.c;
        if !self.cfg.records.is_kept() {
            return Ok(Err(
                "this daemon keeps no records (no state directory)".into()
            ));
        }
        let Some(mounts) = mounts.filter(|_| self.cfg.fast_path) else {
            return Ok(Err(
                "an incremental commit needs the overlay fast path".into()
            ));
        };
        if squash.unwrap_or(self.cfg.squash) != Squash::No {
            return Ok(Err(
                "a squash folds the lineage's layers: the commit captures everything".into(),
            ));
        }
        let Some(rec) = self.cfg.records.load(c.namespace(), &ct.id) else {
            return Ok(Err(
                "the container was not committed with incremental=1 by this daemon before".into(),
            ));
        };
        let upper = match overlay::dirs(mounts) {
            Ok(d) => d.upper,
            Err(why) => return Ok(Err(format!("the overlay fast path cannot read it: {why}"))),
        };
        if rec.base != record_base(&info.parent, &upper) {
            return Ok(Err(
                "the container's filesystem is not the one last committed".into(),
            ));
        }
        let gone = || {
            Ok(Err(format!(
                "the previous image {} no longer exists",
                rec.image
            )))
        };
        let platform = ct
            .labels
            .get(container::PLATFORM_LABEL)
            .and_then(|p| parse_platform(p))
            .unwrap_or_else(image::host_platform);
        let mut prev = None;
        for img in images::list(c, vec![format!("target.digest=={}", rec.manifest)]).await? {
            match images::resolve(c, &img, &platform).await {
                Ok(r) if r.manifest.config.digest == rec.image => {
                    prev = Some(r);
                    break;
                }
                _ => {}
            }
        }
        let Some(prev) = prev else {
            return gone();
        };
        if let Some(chain) = image::chain_id(&prev.config.rootfs.diff_ids) {
            if !sn.exists(&chain).await? {
                return gone();
            }
        }
        // One more layer on the previous image: the depth guard's say.
        if let Err(e) = self.depth_guard(
            ct,
            Some(mounts),
            Some(Squash::No),
            prev.manifest.layers.len(),
            base,
        ) {
            return Ok(Err(format!("one more layer is too many: {e}")));
        }
        Ok(Ok((Arc::new(rec), prev)))
    }

    #[instrument(skip_all, fields(container = %req.container))]
    pub(crate) async fn commit(&self, req: CommitRequest) -> Result<Committed> {
        // The lease is made while the container and its image are read;
        // whatever the commit ends in, it is released before the answer.
        let (c, expiry) = (self.c.clone(), self.cfg.lease_expiry);
        let mut early = Some(tokio::spawn(async move { Lease::create(&c, expiry).await }));
        let result = self.commit_with(req, &mut early).await;
        if let Some(made) = early {
            if let Ok(Ok(lease)) = made.await {
                lease.release().await;
            }
        }
        result
    }

    /// A lease for one attempt: the one made early, the first time.
    async fn lease(&self, early: &mut Option<JoinHandle<Result<Lease>>>) -> Result<Lease> {
        match early.take() {
            Some(made) => made.await.map_err(Error::task("lease task"))?,
            None => Lease::create(self.c, self.cfg.lease_expiry).await,
        }
    }

    async fn commit_with(
        &self,
        req: CommitRequest,
        early: &mut Option<JoinHandle<Result<Lease>>>,
    ) -> Result<Committed> {
        let started = Instant::now();
        let c = self.c;
        let ct = container::resolve(c, &req.container).await?;
        if ct.snapshot_key.is_empty() {
            return Err(Error::Conflict(format!(
                "container {} has no root filesystem snapshot to commit",
                ct.id
            )));
        }
        let sn = Snapshots::new(c, container::snapshotter_of(&ct.snapshotter));
        // The snapshot, its mounts (an active one's: where its upper
        // directory is) and the parent image, read at once.
        let (info, mounts, found) = tokio::join!(
            sn.stat(&ct.snapshot_key),
            sn.mounts(&ct.snapshot_key),
            find_parent(c, &ct)
        );
        let info = info?;
        let mounts = match snapshot::is_active(&info) {
            true => Some(mounts?),
            false => None,
        };
        let parent = load_parent(c, &ct, &info.parent, found?).await?;
        let excludes = self
            .cfg
            .exclude
            .iter()
            .chain(&req.exclude)
            .map(|p| Pattern::parse(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if let Some(t) = req.timestamp {
            if !(0..=253_402_300_799).contains(&t) {
                return Err(crate::OptionError::Timestamp(t).into());
            }
        }
        let filter = std::sync::Arc::new(Filter::new(excludes, req.timestamp));
        let lineage_base = parent.as_ref().map(|p| Base::of(p, &ct.image));
        let parent_layers = parent.as_ref().map_or(0, |p| p.manifest.layers.len());
        let parent_diff_ids = parent
            .as_ref()
            .map(|p| p.config.rootfs.diff_ids.clone())
            .unwrap_or_default();
        if parent_diff_ids.len() != parent_layers {
            return Err(Error::Malformed(format!(
                "image {} has {} layers and {} diff IDs",
                ct.image,
                parent_layers,
                parent_diff_ids.len()
            )));
        }
        // The caller's config first: a bad one costs nothing. Docker
        // starts from the container's config; containerd keeps its
        // run-time part in the OCI spec and labels.
        let parent_run = parent.as_ref().and_then(|p| p.config.config.as_ref());
        let container_run = docker_format::container::container_config(
            parent_run,
            container::runtime(&ct).as_ref(),
            &ct.labels,
        );
        let base = match self.cfg.config_source {
            ConfigSource::Container => Some(&container_run),
            ConfigSource::Image => parent_run,
        };
        let run_config = merge::commit_config(base, req.config, &req.changes)?;
        // Docker's history line: the container's Cmd, without its entrypoint.
        let created_by = container_run.cmd.unwrap_or_default().join(" ");
        let codec = self
            .cfg
            .codec(req.compression.unwrap_or(self.cfg.compression));

        // An incremental commit stands on the container's previous image.
        let mut outcome = Incremental::NotAsked;
        let mut since = None;
        let asked_incremental = req.incremental.unwrap_or(self.cfg.incremental);
        if asked_incremental {
            match self
                .previous(
                    &sn,
                    &ct,
                    &info,
                    mounts.as_deref(),
                    req.squash,
                    lineage_base.as_ref(),
                )
                .await?
            {
                Ok(prev) => since = Some(prev),
                Err(why) => {
                    info!(container = %ct.id, %why, "a plain commit, not an incremental one");
                    outcome = Incremental::Plain(why);
                }
            }
        }

        let record = asked_incremental && self.cfg.records.is_kept();

        let (result, squash) = loop {
            let (squash, kept, layers_parent, diff_parent, prev) = match since.take() {
                Some((prev_record, prev)) => {
                    let diff_parent =
                        image::chain_id(&prev.config.rootfs.diff_ids).unwrap_or_default();
                    let kept = prev.manifest.layers.len();
                    (Squash::No, kept, Some(prev), diff_parent, Some(prev_record))
                }
                None => {
                    let squash = self.depth_guard(
                        &ct,
                        mounts.as_deref(),
                        req.squash,
                        parent_layers,
                        lineage_base.as_ref(),
                    )?;
                    let kept = lineage::kept_layers(squash, parent.as_ref(), lineage_base.as_ref());
                    let diff_parent = if parent.is_some() && kept == parent_layers {
                        info.parent.clone()
                    } else {
                        image::chain_id(&parent_diff_ids[..kept]).unwrap_or_default()
                    };
                    (squash, kept, parent.clone(), diff_parent, None)
                }
            };
            let src = Source {
                ct: &ct,
                sn: &sn,
                info: &info,
                mounts: mounts.as_deref(),
                diff_parent,
                pause: req.pause,
                kept,
                fold: match prev {
                    Some(_) => 0,
                    None => parent_layers - kept,
                },
                filter: filter.clone(),
                since: prev.clone(),
                record,
            };
            // A squash=all image is its own base; otherwise the lineage's.
            let lineage_base = match squash {
                Squash::All => None,
                _ => lineage_base.clone(),
            };
            let lease = self.lease(early).await?;
            let result = self
                .commit_leased(
                    &lease,
                    &src,
                    layers_parent,
                    run_config.clone(),
                    &created_by,
                    &req.image_name,
                    &req.author,
                    &req.comment,
                    codec,
                    lineage_base.as_ref(),
                    req.timestamp,
                )
                .await;
            lease.release().await;
            match (result, prev) {
                (Err(Error::Incremental(why)), Some(_)) => {
                    info!(container = %ct.id, %why, "a plain commit, not an incremental one");
                    outcome = Incremental::Plain(why);
                }
                (result, prev) => {
                    if let (Ok(_), Some(prev)) = (&result, prev) {
                        outcome = Incremental::On(prev.image.clone());
                    }
                    break (result, squash);
                }
            }
        };
        let (image_id, manifest, image_name, mut captured, phases, depth) = result?;
        if let Some((upper, entries)) = captured.record.take() {
            let rec = incremental::Record {
                image: image_id.clone(),
                manifest: manifest.digest.clone(),
                base: record_base(&info.parent, &upper),
                entries,
            };
            let records = &self.cfg.records;
            if let Err(e) = records.save(c.namespace(), &ct.id, &rec) {
                warn!(container = %ct.id, cause = %e, "not remembered for the next incremental commit");
                records.forget(c.namespace(), &ct.id);
            }
        }
        let committed = Committed {
            image_id,
            manifest,
            image_name,
            container_id: ct.id.clone(),
            container_name: container::display_name(&ct),
            container_image: ct.image.clone(),
            diff_id: captured.layer.as_ref().map(|l| l.diff_id.clone()),
            layer: captured.layer.map(|l| l.descriptor),
            uncompressed_size: captured.uncompressed_size,
            capture: captured.path,
            squash,
            depth,
            incremental: outcome,
            excluded: filter.excluded(),
            paused: captured.paused,
            capture_work: captured.work,
            phases,
            elapsed: started.elapsed(),
        };
        info!(
            container = %committed.container_id,
            image = %committed.image_name,
            id = %committed.image_id,
            manifest = %committed.manifest.digest,
            capture = ?committed.capture,
            paused_ms = committed.paused.as_millis() as u64,
            elapsed_ms = committed.elapsed.as_millis() as u64,
            "committed"
        );
        Ok(committed)
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_leased(
        &self,
        lease: &Lease,
        src: &Source<'_>,
        parent: Option<Resolved>,
        run_config: RunConfig,
        created_by: &str,
        image_name: &Option<String>,
        author: &str,
        comment: &str,
        codec: crate::layer::Codec,
        base: Option<&Base>,
        timestamp: Option<i64>,
    ) -> Result<(String, Descriptor, String, Captured, Phases, usize)> {
        let c = self.c;
        let sn = src.sn;
        self.check_cancel("before capture")?;
        let capture_started = Instant::now();
        // Two captures of one container at once would pause and resume it
        // under each other: they take turns, until the resume is done.
        let turn = self.locks.lock(Key::Container(&src.ct.id)).await;
        let mut captured = match self.capture(lease, src, codec).await {
            Ok(captured) => captured,
            Err(e) => {
                self.resumed(&src.ct.id).await;
                return Err(e);
            }
        };
        let mut settling = captured.settling.take();
        let mut phases = Phases {
            capture: capture_started
                .elapsed()
                .saturating_sub(captured.layer_time),
            layer: captured.layer_time,
            ..Phases::default()
        };
        let result = async {
            // The child's config.
            let now = match timestamp.and_then(|t| chrono::DateTime::from_timestamp(t, 0)) {
                Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            };
            let layer = captured.layer.as_ref();
            let config = child_config(
                parent.as_ref().map(|p| &p.config),
                src.kept,
                run_config,
                layer,
                author,
                comment,
                created_by,
                &now,
            );

            // Fill the new image's snapshot so it runs at once, and write
            // its blobs meanwhile: neither needs the other (the lease holds
            // both until the image record references them).
            let chain_id = image::chain_id(&config.rootfs.diff_ids);
            self.check_cancel("before filling the image's snapshot")?;
            crate::failpoint::delay(&src.ct.id, crate::failpoint::step::BEFORE_FILL).await;
            crate::failpoint::check(&src.ct.id, crate::failpoint::step::BEFORE_FILL)?;
            let fill = async {
                let fill_started = Instant::now();
                match (&captured.fill, &chain_id) {
                    (Fill::Prepared(key), Some(chain)) => {
                        sn.commit(&lease.id(), chain, key).await?;
                    }
                    (Fill::Apply(tar), Some(chain)) => {
                        diff::apply(c, &lease.id(), sn, chain, &src.diff_parent, tar).await?;
                    }
                    _ => {}
                }
                Ok::<_, Error>(fill_started.elapsed())
            };
            let image_started = Instant::now();
            let write = self.write_image(
                lease,
                sn.name(),
                &config,
                &chain_id,
                parent.as_ref().map(|p| (p, src.kept)),
                layer,
                base,
            );
            // And the layer blob made durable and registered meanwhile.
            let settled = async {
                match settling.take() {
                    Some(s) => s.await.map_err(Error::task("layer blob"))?,
                    None => Ok(()),
                }
            };
            let (filled, written, settled) = tokio::join!(fill, write, settled);
            settled?;
            phases.fill = filled?;
            let (config_digest, manifest) = written?;
            let depth = config.rootfs.diff_ids.len();

            // The image record: the commit becomes visible here, all at once.
            self.check_cancel("before naming the image")?;
            crate::failpoint::delay(&src.ct.id, crate::failpoint::step::BEFORE_NAME).await;
            crate::failpoint::check(&src.ct.id, crate::failpoint::step::BEFORE_NAME)?;
            let name = image_name
                .clone()
                .unwrap_or_else(|| images::dangling_name(&manifest.digest));
            {
                let _turn = self.locks.lock(Key::Images).await;
                images::name_image(c, &lease.id(), &name, &manifest).await?;
            }
            phases.image = image_started.elapsed();
            Ok::<_, Error>((config_digest, manifest, name, depth))
        }
        .await;
        // Not left running past the commit's lease when it failed early.
        if let Some(s) = settling.take() {
            let _ = s.await;
        }
        if result.is_err() {
            if let Fill::Prepared(key) = &captured.fill {
                sn.remove_quietly(key).await;
            }
        }
        self.resumed(&src.ct.id).await;
        drop(turn);
        let (config_digest, manifest, name, depth) = result?;
        Ok((config_digest, manifest, name, captured, phases, depth))
    }

    /// Config and manifest blobs, with the references that keep the
    /// snapshot and the layers alive once the lease is gone.
    /// `parent`: the parent and how many of its layers are kept.
    #[allow(clippy::too_many_arguments)]
    #[instrument(skip_all, fields(phase = "write", chain_id = ?chain_id))]
    async fn write_image(
        &self,
        lease: &Lease,
        snapshotter: &str,
        config: &ImageConfig,
        chain_id: &Option<String>,
        parent: Option<(&Resolved, usize)>,
        layer: Option<&Layer>,
        base: Option<&Base>,
    ) -> Result<(String, Descriptor)> {
        let c = self.c;
        let config_bytes =
            serde_json::to_vec(config).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut config_labels = HashMap::new();
        // The image the container was made from: Docker's `Parent`, which
        // `docker history` follows to name the parent's rows. A squash
        // folded the parent's layers: the parent's rows are not its own.
        if let Some((p, kept)) = parent {
            if kept == p.manifest.layers.len() {
                config_labels.insert(
                    crate::catalog::PARENT_LABEL.to_string(),
                    p.manifest.config.digest.clone(),
                );
            }
        }
        if let Some(chain) = chain_id {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
                chain.clone(),
            );
        }
        let unique = crate::unique();
        let config_size = config_bytes.len() as i64;
        let config_digest = content::sha256_digest(&config_bytes);
        let mut layers = parent
            .map(|(p, kept)| lineage::kept_manifest_layers(&p.manifest, kept))
            .unwrap_or_default();
        if let Some(l) = layer {
            layers.push(l.descriptor.clone());
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: descriptor(media_type::OCI_CONFIG, &config_digest, config_size),
            layers,
            annotations: base.map(Base::annotations),
        };
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.0".to_string(),
            config_digest.clone(),
        )]);
        for (i, l) in manifest.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.{}", i + 1),
                l.digest.clone(),
            );
        }
        let manifest_size = manifest_bytes.len() as i64;
        // Both blobs at once: the lease holds them until the image record
        // references them, so their order does not matter.
        let lease_id = lease.id();
        let (config_ref, manifest_ref) = (
            format!("commitd-config-{unique}"),
            format!("commitd-manifest-{unique}"),
        );
        let write = |reference: &str, bytes: Vec<u8>, labels: HashMap<String, String>| {
            let (lease_id, reference) = (lease_id.clone(), reference.to_string());
            async move {
                match self.content_root {
                    Some(root) => layer::write_small_local(c, &lease_id, root, bytes, labels).await,
                    None => content::write_blob(c, &lease_id, &reference, bytes, labels).await,
                }
            }
        };
        let (config_written, manifest_written) = tokio::join!(
            write(&config_ref, config_bytes, config_labels),
            write(&manifest_ref, manifest_bytes, labels),
        );
        config_written?;
        let manifest_digest = manifest_written?;
        Ok((
            config_digest,
            descriptor(media_type::OCI_MANIFEST, &manifest_digest, manifest_size),
        ))
    }

    /// Captures the container's changes: the overlay fast path when it
    /// applies, containerd's diff service otherwise.
    async fn capture(
        &self,
        lease: &Lease,
        src: &Source<'_>,
        codec: crate::layer::Codec,
    ) -> Result<Captured> {
        let parentless_or_same =
            src.diff_parent == src.info.parent || src.fold > 0 || src.since.is_some();
        if self.cfg.fast_path && snapshot::is_active(src.info) && parentless_or_same {
            match self.capture_overlay(lease, src, codec).await {
                Ok(captured) => return Ok(captured),
                Err(FastPath::Unsupported(why)) if src.since.is_some() => {
                    return Err(Error::Incremental(format!(
                        "the overlay fast path cannot read this container: {why}"
                    )));
                }
                Err(FastPath::Unsupported(why)) => {
                    debug!(container = %src.ct.id, %why, "overlay fast path not usable; using the diff service");
                }
                Err(FastPath::Failed(e)) => return Err(e),
            }
        }
        if src.since.is_some() {
            return Err(Error::Incremental(
                "it needs commitd's overlay fast path".into(),
            ));
        }
        self.capture_with_service(lease, src, codec).await
    }

    /// Pauses the task if it runs and the caller wants it paused, runs `f`,
    /// and resumes — whatever `f` returned.
    async fn while_paused<T>(
        &self,
        src: &Source<'_>,
        f: impl Future<Output = T>,
    ) -> Result<(T, Duration)> {
        let c = self.c;
        let id = &src.ct.id;
        if let Some(pod) = self.pod {
            // The pod's containers are paused together, and resumed once
            // every one of them is captured.
            if pod.arrive().await? {
                let at = Instant::now();
                let out = f.await;
                crate::failpoint::delay(id, crate::failpoint::step::WHILE_PAUSED).await;
                let injected = crate::failpoint::check(id, crate::failpoint::step::WHILE_PAUSED);
                let paused = at.elapsed();
                pod.captured();
                injected?;
                return Ok((out, paused));
            }
        }
        let running = src.pause
            && snapshot::is_active(src.info)
            && task::state(c, id).await? == TaskState::Running;
        let journal = &self.cfg.journal;
        if running {
            journal
                .record(c.namespace(), id)
                .map_err(|e| Error::io("recording the pause in the journal", e))?;
        }
        let paused_at = match running {
            true => match task::pause(c, id).await {
                Ok(true) => Some(Instant::now()),
                Ok(false) => {
                    journal.clear(c.namespace(), id);
                    None
                }
                Err(e) => {
                    journal.clear(c.namespace(), id);
                    return Err(e);
                }
            },
            false => None,
        };
        let out = f.await;
        crate::failpoint::delay(id, crate::failpoint::step::WHILE_PAUSED).await;
        // A failure here must still resume the container.
        let injected = crate::failpoint::check(id, crate::failpoint::step::WHILE_PAUSED);
        let mut paused = Duration::ZERO;
        if let Some(at) = paused_at {
            paused = at.elapsed();
            // The resume goes on while the layer and the image are
            // written; the commit answers once it is done (`resumed`).
            let (c, id, journal) = (c.clone(), id.clone(), journal.clone());
            let resume =
                tokio::spawn(async move { task::resume_or_retry(&c, &id, &journal).await });
            *self.resuming.lock().unwrap_or_else(|p| p.into_inner()) = Some(resume);
        }
        injected?;
        Ok((out, paused))
    }

    /// Waits for the resume `while_paused` sent, if any: no commit answers
    /// while its container is still being resumed.
    async fn resumed(&self, id: &str) {
        let resume = self
            .resuming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(resume) = resume else { return };
        match resume.await {
            Ok(None) => {}
            Ok(Some(e)) => {
                warn!(container = %id, cause = %e, "container not resumed yet; retrying in the background");
            }
            Err(e) => warn!(container = %id, cause = %e, "the resume task failed"),
        }
    }

    #[instrument(skip_all, fields(phase = "capture", path = "overlay"))]
    async fn capture_overlay(
        &self,
        lease: &Lease,
        src: &Source<'_>,
        codec: crate::layer::Codec,
    ) -> std::result::Result<Captured, FastPath> {
        let sn = src.sn;
        let mounts = src.mounts.unwrap_or_default();
        let from = overlay::upper_dirs(mounts, &src.info.parent).map_err(FastPath::Unsupported)?;
        if !from.upper.is_dir() {
            return Err(FastPath::Unsupported(format!(
                "{} is not readable from here",
                from.upper.display()
            )));
        }
        if src.fold > 0 && from.lower.len() != src.kept + src.fold {
            return Err(FastPath::Unsupported(format!(
                "the snapshot has {} lower directories, the image {} layers",
                from.lower.len(),
                src.kept + src.fold
            )));
        }
        // An empty upper directory is a consistent capture by itself: no
        // pause, no snapshot to prepare (unless layers below are folded).
        let tracked = src.since.is_some() || src.record;
        if src.fold == 0
            && !tracked
            && std::fs::read_dir(&from.upper)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            return Ok(Captured {
                layer: None,
                layer_time: Duration::ZERO,
                uncompressed_size: 0,
                path: CapturePath::Overlay,
                paused: Duration::ZERO,
                work: CaptureWork::default(),
                fill: Fill::Nothing,
                settling: None,
                record: None,
            });
        }
        let key = format!("{}-{}-commit", snapshot::UNPACK_PREFIX, crate::unique());
        let prepared = sn.prepare(&lease.id(), &key, &src.diff_parent).await?;
        let result = async {
            let to = overlay::dirs(&prepared).map_err(FastPath::Unsupported)?;
            let empty = std::fs::read_dir(&to.upper)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                // Not the directory containerd just made: another host's path.
                return Err(FastPath::Unsupported(format!(
                    "{} is not a fresh snapshot here",
                    to.upper.display()
                )));
            }
            if src.since.is_some() && to.layout.private_prefix().is_none() {
                return Err(Error::Incremental(
                    "the snapshotter's directories cannot hold whiteouts".into(),
                )
                .into());
            }
            self.check_cancel("before capture")?;
            let opts = capture::CopyOptions {
                from: from.layout,
                to: to.layout,
                max_path: Some(crate::walk::applier_path_room(&to.upper)),
            };
            // Copy while the container runs; then pause only to walk it
            // once more and copy again what changed meanwhile, so the
            // pause costs a metadata walk, not the copy. What no layer can
            // carry is found before anything is paused.
            let (source, target) = (from.upper.clone(), to.upper.clone());
            let (spec, lower, layout) = (spec_of(src.ct), from.lower.clone(), from.layout);
            // Squashing: the folded layers are merged under the copy of
            // the upper afterwards; the upper's whiteouts and opaque
            // directories are remembered for that.
            let merge = match src.fold {
                0 => None,
                _ => Some(squash::Merge::new(&to.upper, to.layout).map_err(copy_failed)?),
            };
            let filter = src.filter.clone();
            let since = src.since.clone();
            let (running, merge) = tokio::task::spawn_blocking(move || {
                let stubs = stubs::in_upper(&spec, &source, &lower, layout);
                let mine = squash::Both(&stubs, &*filter);
                if !tracked && merge.is_none() {
                    let copied = capture::copy_running_parallel(&source, &target, opts, &mine);
                    return (copied, merge);
                }
                let nothing = HashMap::new();
                let inc = incremental::Since::new(
                    since.as_deref().map_or(&nothing, |r| &r.entries),
                    None,
                );
                let top = merge.as_ref().map(|m| m.top());
                let copied = capture_policy(&mine, top.as_ref(), tracked.then_some(&inc), |p| {
                    capture::copy_running(&source, &target, opts, p)
                });
                (copied, merge)
            })
            .await
            .map_err(Error::task("capture task"))?;
            let pre = match running {
                Ok(pre) => pre,
                Err(CopyError::Io { context, source }) => {
                    // A race the running copy does not follow: the paused
                    // walk copies everything.
                    debug!(%context, %source, "copy while running given up; copying while paused");
                    capture::clear_dir(&to.upper)
                        .map_err(|e| Error::io("emptying the new snapshot", e))?;
                    capture::Precopy::default()
                }
                Err(e) => return Err(copy_failed(e)),
            };
            debug!(
                entries = pre.entries,
                bytes = pre.bytes,
                "upper directory copied while running"
            );
            let (source, target) = (from.upper.clone(), to.upper.clone());
            let (spec, lower, layout) = (spec_of(src.ct), from.lower.clone(), from.layout);
            let filter = src.filter.clone();
            let since = src.since.clone();
            let (copied, paused) = self
                .while_paused(src, async {
                    tokio::task::spawn_blocking(move || {
                        // Read while paused: what the rule sees is what is copied.
                        let stubs = stubs::in_upper(&spec, &source, &lower, layout);
                        let mine = squash::Both(&stubs, &*filter);
                        let nothing = HashMap::new();
                        let inc = incremental::Since::new(
                            since.as_deref().map_or(&nothing, |r| &r.entries),
                            Some(&pre),
                        );
                        let top = merge.as_ref().map(|m| m.top());
                        let copied =
                            capture_policy(&mine, top.as_ref(), tracked.then_some(&inc), |p| {
                                capture::copy_paused(&source, &target, opts, p, &pre)
                            });
                        let seen = tracked.then(|| inc.into_seen());
                        (
                            copied.map(|(copied, work)| (copied, work, stubs, seen)),
                            merge,
                        )
                    })
                    .await
                })
                .await?;
            let (copied, merge) = copied.map_err(Error::task("capture task"))?;
            let (mut copied, work, stubs, seen) = copied.map_err(copy_failed)?;
            let seen = match (&src.since, seen) {
                (Some(prev), Some(seen)) => {
                    // Whiteouts for what is gone since, and the directories
                    // only walked through: no pause, the copy is ours.
                    self.check_cancel("before finishing the incremental layer")?;
                    let (prev, target, lowers, layout) = (
                        prev.clone(),
                        to.upper.clone(),
                        from.lower.clone(),
                        to.layout,
                    );
                    let (finished, seen) = tokio::task::spawn_blocking(move || {
                        let r = incremental::finish(&target, layout, &lowers, &prev.entries, &seen);
                        (r, seen)
                    })
                    .await
                    .map_err(Error::task("incremental task"))?;
                    match finished {
                        Ok(()) => {}
                        Err(incremental::Finish::Plain(why)) => {
                            return Err(Error::Incremental(why).into());
                        }
                        Err(incremental::Finish::Io(e)) => {
                            return Err(Error::io("writing the incremental layer", e).into());
                        }
                    }
                    if std::fs::read_dir(&to.upper)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false)
                    {
                        copied.entries = 0;
                    }
                    Some(seen)
                }
                (_, seen) => seen,
            };
            let record = seen.map(|s| (from.upper.clone(), s.next));
            if let Some(merge) = merge {
                // Committed snapshots: nothing changes them, no pause.
                self.check_cancel("before squashing")?;
                let lowers = from.lower[..src.fold].to_vec();
                let (target, from_layout) = (to.upper.clone(), from.layout);
                let filter = src.filter.clone();
                let folded = tokio::task::spawn_blocking(move || {
                    let opts = capture::CopyOptions {
                        from: from_layout,
                        ..opts
                    };
                    squash::fold_lowers(&lowers, &target, opts, &*filter, &merge, &mut copied)
                        .map(|()| copied)
                })
                .await
                .map_err(Error::task("squash task"))?;
                copied = folded.map_err(copy_failed)?;
            }
            debug!(
                entries = copied.entries,
                bytes = copied.bytes,
                copied_paused = work.copied_paused,
                removed_paused = work.removed_paused,
                paused_ms = paused.as_millis() as u64,
                mount_stubs = ?stubs.paths(),
                "upper directory captured"
            );
            if copied.entries == 0 {
                sn.remove_quietly(&key).await;
                return Ok(Captured {
                    layer: None,
                    layer_time: Duration::ZERO,
                    uncompressed_size: 0,
                    path: CapturePath::Overlay,
                    paused,
                    work,
                    fill: Fill::Nothing,
                    settling: None,
                    record,
                });
            }
            self.check_cancel("before writing the layer")?;
            let (root, layout, true_times) = (to.upper.clone(), to.layout, copied.true_times);
            let clamp = src.filter.clamp();
            let layer_started = Instant::now();
            let _slot = self.layer_slot().await?;
            // The image's config, manifest and snapshot need only the
            // blob's digests: they are written while it is made durable.
            let (streamed, settling) = layer::stream_layer_settling(
                self.c,
                &lease.id(),
                codec,
                self.content_root,
                self.take_tee(),
                move |w| tarball::write_layer_clamped(&root, layout, &true_times, clamp, w),
            )
            .await?;
            Ok(Captured {
                layer: Some(streamed.layer),
                layer_time: layer_started.elapsed(),
                uncompressed_size: streamed.uncompressed_size,
                path: CapturePath::Overlay,
                paused,
                work,
                fill: Fill::Prepared(key.clone()),
                settling: Some(tokio::spawn(settling)),
                record,
            })
        }
        .await;
        match &result {
            Ok(Captured {
                fill: Fill::Prepared(_),
                ..
            })
            | Ok(Captured {
                fill: Fill::Nothing,
                ..
            }) => {}
            _ => sn.remove_quietly(&key).await,
        }
        result
    }

    #[instrument(skip_all, fields(phase = "capture", path = "diff-service"))]
    async fn capture_with_service(
        &self,
        lease: &Lease,
        src: &Source<'_>,
        codec: crate::layer::Codec,
    ) -> Result<Captured> {
        let c = self.c;
        let active = snapshot::is_active(src.info);
        let (tar, paused) = self
            .while_paused(
                src,
                diff::capture(
                    c,
                    &lease.id(),
                    src.sn,
                    &src.ct.snapshot_key,
                    active,
                    &src.diff_parent,
                    media_type::OCI_LAYER_TAR,
                ),
            )
            .await?;
        let tar = self.without_stubs(lease, src, tar?).await?;
        if diff::has_no_entries(c, &tar.descriptor).await? {
            return Ok(Captured {
                layer: None,
                layer_time: Duration::ZERO,
                uncompressed_size: 0,
                path: CapturePath::DiffService,
                paused,
                work: CaptureWork::default(),
                fill: Fill::Nothing,
                settling: None,
                record: None,
            });
        }
        let uncompressed = tar.descriptor.clone();
        self.check_cancel("before compressing the layer")?;
        let layer_started = Instant::now();
        let (layer, size) = if codec.compression == Compression::None {
            let size = u64::try_from(tar.descriptor.size).unwrap_or(0);
            (tar, size)
        } else {
            let reader = layer::BlobReader::new(
                c.clone(),
                tar.descriptor.digest.clone(),
                tar.descriptor.size,
            );
            let _slot = self.layer_slot().await?;
            let streamed = layer::stream_layer_tee(
                c,
                &lease.id(),
                codec,
                self.content_root,
                self.take_tee(),
                move |w| {
                    let mut reader = reader;
                    std::io::copy(&mut reader, w)
                },
            )
            .await?;
            if streamed.layer.diff_id != tar.diff_id {
                return Err(Error::Malformed(format!(
                    "recompressed layer has diff ID {}, the diff service said {}",
                    streamed.layer.diff_id, tar.diff_id
                )));
            }
            (streamed.layer, streamed.uncompressed_size)
        };
        Ok(Captured {
            layer: Some(layer),
            layer_time: layer_started.elapsed(),
            uncompressed_size: size,
            path: CapturePath::DiffService,
            paused,
            work: CaptureWork::default(),
            fill: Fill::Apply(uncompressed),
            settling: None,
            record: None,
        })
    }
}

impl Committer<'_> {
    /// The tee for the new layer, once.
    fn take_tee(&self) -> Option<layer::Tee> {
        self.tee.and_then(|t| {
            t.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        })
    }

    /// The diff service's tar without the runtime's mount stubs
    /// ([`stubs::mount_stubs`], read against a view of the parent) and what
    /// `exclude` leaves out, its times clamped to `timestamp`; the tar
    /// itself when none of that changes it.
    async fn without_stubs(&self, lease: &Lease, src: &Source<'_>, tar: Layer) -> Result<Layer> {
        let c = self.c;
        let stubs = self.stubs_in_tar(lease, src, &tar).await?;
        if stubs.is_empty() && src.filter.is_noop() {
            return Ok(tar);
        }
        if !stubs.is_empty() {
            debug!(mount_stubs = ?stubs.paths(), "leaving the runtime's mount stubs out");
        }
        let reader = layer::BlobReader::new(
            c.clone(),
            tar.descriptor.digest.clone(),
            tar.descriptor.size,
        );
        let plain = self.cfg.codec(Compression::None);
        let filter = src.filter.clone();
        let streamed = layer::stream_layer(c, &lease.id(), plain, self.content_root, move |w| {
            let clamp = filter.clamp().map(|t| t.sec);
            stubs::rewrite_tar(
                reader,
                w,
                &|p| stubs.covers(p) || filter.leaves_out(p),
                clamp,
            )
        })
        .await?;
        Ok(streamed.layer)
    }

    /// The runtime's mount stubs in the diff service's tar.
    async fn stubs_in_tar(
        &self,
        lease: &Lease,
        src: &Source<'_>,
        tar: &Layer,
    ) -> Result<stubs::MountStubs> {
        let c = self.c;
        let mounts = stubs::spec_mounts(&spec_of(src.ct));
        if mounts.is_empty() {
            return Ok(stubs::MountStubs::default());
        }
        let reader = layer::BlobReader::new(
            c.clone(),
            tar.descriptor.digest.clone(),
            tar.descriptor.size,
        );
        let mut changes =
            tokio::task::spawn_blocking(move || stubs::TarChanges::read(reader, None))
                .await
                .map_err(Error::task("layer read task"))?
                .map_err(|e| Error::io("reading the diff service's layer", e))?;
        if !changes.touches(&mounts) {
            return Ok(stubs::MountStubs::default());
        }
        changes.lower = if src.diff_parent.is_empty() {
            Some(Vec::new())
        } else {
            let view = format!("{}-stubs-view-{}", src.diff_parent, crate::unique());
            let m = src.sn.view(&lease.id(), &view, &src.diff_parent).await;
            src.sn.remove_quietly(&view).await;
            overlay::view_lowers(&m?)
        };
        Ok(stubs::mount_stubs(&mounts, &changes))
    }
}

/// The container's OCI runtime spec (JSON; empty without one).
fn spec_of(ct: &Container) -> Vec<u8> {
    ct.spec
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_default()
}

/// What a failed copy means for the commit.
/// The capture's walk policy, one stack for the running and the paused
/// copy: the runtime's stubs and the `exclude=`/`timestamp=` filter
/// (`mine`), then a squash's rule for the top layer, then incremental's
/// `Since` — each only when the commit asks for it.
fn capture_policy<R>(
    mine: &dyn crate::walk::Policy,
    top: Option<&squash::Top<'_>>,
    since: Option<&incremental::Since<'_>>,
    copy: impl FnOnce(&dyn crate::walk::Policy) -> R,
) -> R {
    let with_top;
    let policy: &dyn crate::walk::Policy = match top {
        Some(t) => {
            with_top = squash::Both(mine, t);
            &with_top
        }
        None => mine,
    };
    match since {
        Some(s) => copy(&squash::Both(policy, s)),
        None => copy(policy),
    }
}

fn copy_failed(e: CopyError) -> FastPath {
    match e {
        CopyError::Unsupported(why) => FastPath::Unsupported(why),
        e => FastPath::Failed(e.into()),
    }
}

fn descriptor(media_type: &str, digest: &str, size: i64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size,
        annotations: None,
        platform: None,
        urls: None,
    }
}

/// The child's image config: the parent's platform and history, the new
/// run config, the new layer's diff ID, a history entry for the commit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn child_config(
    parent: Option<&ImageConfig>,
    kept: usize,
    run: RunConfig,
    layer: Option<&Layer>,
    author: &str,
    comment: &str,
    created_by: &str,
    now: &str,
) -> ImageConfig {
    let host = image::host_platform();
    let (architecture, os, variant) = match parent {
        Some(p) if !p.architecture.is_empty() && !p.os.is_empty() => {
            (p.architecture.clone(), p.os.clone(), p.variant.clone())
        }
        _ => (host.architecture, host.os, host.variant),
    };
    let author = if author.is_empty() {
        parent.and_then(|p| p.author.clone()).unwrap_or_default()
    } else {
        author.to_string()
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut diff_ids: Vec<String> = parent
        .map(|p| p.rootfs.diff_ids.iter().take(kept).cloned().collect())
        .unwrap_or_default();
    if let Some(l) = layer {
        diff_ids.push(l.diff_id.clone());
    }
    let mut history = parent
        .map(|p| lineage::folded_history(&p.history, kept))
        .unwrap_or_default();
    history.push(History {
        created: Some(now.to_string()),
        created_by: non_empty(created_by),
        author: non_empty(&author),
        comment: non_empty(comment),
        empty_layer: layer.is_none(),
    });
    ImageConfig {
        created: Some(now.to_string()),
        author: non_empty(&author),
        architecture,
        os,
        variant,
        config: Some(run),
        rootfs: image::RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history,
        extra: Default::default(),
    }
}

/// The parent image of a container, or `None` for a container without one
/// (`FROM scratch`). The container's image record names the parent, but a
/// name can move (e.g. a commit to the container's own tag); then the image
/// whose layers are the container snapshot's parent is looked for.
/// The platform a container's image is resolved for.
fn platform_of(ct: &Container) -> image::Platform {
    ct.labels
        .get(container::PLATFORM_LABEL)
        .and_then(|p| parse_platform(p))
        .unwrap_or_else(image::host_platform)
}

/// The image record the container names, resolved (`None`: no such record,
/// or a `FROM scratch` container). Read while its snapshot is looked at.
async fn find_parent(c: &Containerd, ct: &Container) -> Result<Option<Resolved>> {
    if ct.image.is_empty() {
        return Ok(None);
    }
    match images::get(c, &ct.image).await? {
        Some(img) => images::resolve(c, &img, &platform_of(ct)).await.map(Some),
        None => Ok(None),
    }
}

/// The container's parent image: `found` (see [`find_parent`]) when its
/// layers are the snapshot's parent, else the image that has them.
async fn load_parent(
    c: &Containerd,
    ct: &Container,
    snapshot_parent: &str,
    found: Option<Resolved>,
) -> Result<Option<Resolved>> {
    if ct.image.is_empty() {
        return Ok(None);
    }
    let platform = platform_of(ct);
    if let Some(resolved) = found {
        // Only directly: a remapped copy's files have their owners shifted,
        // and a layer must not carry those.
        if snapshot_parent.is_empty()
            || resolved.footing(snapshot_parent) == Some(images::Footing::Direct)
        {
            return Ok(Some(resolved));
        }
        debug!(image = %ct.image, "image moved since the container was created; looking for its parent by chain ID");
    }
    for img in images::list(c, Vec::new()).await? {
        let Ok(resolved) = images::resolve(c, &img, &platform).await else {
            continue;
        };
        if resolved.footing(snapshot_parent) == Some(images::Footing::Direct) {
            return Ok(Some(resolved));
        }
    }
    Err(Error::ImageNotFound(format!(
        "{} (the image of container {}, whose layers are no longer in any image)",
        ct.image, ct.id
    )))
}

/// What a record is of: the container's snapshot parent and upper
/// directory (a new container of the same name has another).
fn record_base(parent: &str, upper: &std::path::Path) -> String {
    format!("{parent}\n{}", upper.display())
}

fn parse_platform(s: &str) -> Option<image::Platform> {
    let mut parts = s.split('/');
    let os = parts.next()?.to_string();
    let architecture = parts.next()?.to_string();
    let variant = parts.next().map(str::to_string);
    Some(image::Platform {
        architecture,
        os,
        os_version: None,
        variant,
    })
}
