//! The commit itself, step by step (see the crate docs for the why).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_client::services::v1::Container;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::client::Containerd;
use crate::container;
use crate::content;
use crate::diff::{self, Layer};
use crate::error::{Error, Result};
use crate::image::{self, media_type, Descriptor, History, ImageConfig, Manifest, RunConfig};
use crate::images::{self, Resolved};
use crate::lease::Lease;
use crate::snapshot::{self, Snapshots};
use crate::task::{self, TaskState};
use crate::{Compression, EngineConfig};

/// Computes the child's run config from the parent's (`None` for an image
/// built `FROM scratch`). The API layer supplies it: it knows Docker's
/// rules for the request body and `changes`. An `Err` is the caller's
/// mistake and aborts the commit before anything is paused or written.
pub type ConfigFn = Box<dyn FnOnce(Option<&RunConfig>) -> std::result::Result<RunConfig, String> + Send>;

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
    /// `None`: the parent's config as it is.
    pub config: Option<ConfigFn>,
}

/// How the layer was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePath {
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
    /// The new layer; `None` when the container had no changes.
    pub layer: Option<Descriptor>,
    pub diff_id: Option<String>,
    pub capture: CapturePath,
    /// How long the container was paused (zero if it was not).
    pub paused: Duration,
    pub elapsed: Duration,
}

pub(crate) struct Committer<'a> {
    pub c: &'a Containerd,
    pub cfg: &'a EngineConfig,
    pub cancel: &'a CancellationToken,
}

impl Committer<'_> {
    fn check_cancel(&self, step: &'static str) -> Result<()> {
        if self.cancel.is_cancelled() { Err(Error::Cancelled(step)) } else { Ok(()) }
    }

    #[instrument(skip_all, fields(container = %req.container))]
    pub async fn commit(&self, req: CommitRequest) -> Result<Committed> {
        let started = Instant::now();
        let c = self.c;
        let ct = container::resolve(c, &req.container).await?;
        if ct.snapshot_key.is_empty() {
            return Err(Error::Conflict(format!("container {} has no root filesystem snapshot to commit", ct.id)));
        }
        let sn = Snapshots::new(c, if ct.snapshotter.is_empty() { "overlayfs" } else { &ct.snapshotter });
        let info = sn.stat(&ct.snapshot_key).await?;
        let parent = load_parent(c, &ct, &info.parent).await?;

        // The caller's config first: a bad one costs nothing.
        let parent_run = parent.as_ref().and_then(|p| p.config.config.as_ref());
        let run_config = match req.config {
            Some(f) => f(parent_run).map_err(Error::InvalidArgument)?,
            None => parent_run.cloned().unwrap_or_default(),
        };
        let compression = req.compression.unwrap_or(self.cfg.compression);
        // Layers of a FROM-scratch image hold the whole filesystem; otherwise
        // only what changed over the parent image's snapshot.
        let diff_parent = if parent.is_some() { info.parent.clone() } else { String::new() };

        let lease = Lease::create(c, self.cfg.lease_expiry).await?;
        let result = self
            .commit_leased(&lease, &ct, &sn, snapshot::is_active(&info), &diff_parent, parent, run_config, &req.image_name, &req.author, &req.comment, req.pause, compression)
            .await;
        lease.release().await;
        let (image_id, manifest, image_name, layer, paused) = result?;
        let committed = Committed {
            image_id,
            manifest,
            image_name,
            container_id: ct.id.clone(),
            diff_id: layer.as_ref().map(|l| l.diff_id.clone()),
            layer: layer.map(|l| l.descriptor),
            capture: CapturePath::DiffService,
            paused,
            elapsed: started.elapsed(),
        };
        info!(
            container = %committed.container_id,
            image = %committed.image_name,
            id = %committed.image_id,
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
        ct: &Container,
        sn: &Snapshots<'_>,
        active: bool,
        diff_parent: &str,
        parent: Option<Resolved>,
        run_config: RunConfig,
        image_name: &Option<String>,
        author: &str,
        comment: &str,
        pause: bool,
        compression: Compression,
    ) -> Result<(String, Descriptor, String, Option<Layer>, Duration)> {
        let c = self.c;
        self.check_cancel("before capture")?;

        // Capture, with the container paused if it runs and pause is on.
        let state = if active { task::state(c, &ct.id).await? } else { TaskState::None };
        let mut paused_at = None;
        if pause && state == TaskState::Running && task::pause(c, &ct.id).await? {
            paused_at = Some(Instant::now());
        }
        let media = diff::service_media_type(compression != Compression::None);
        let captured = diff::capture(c, &lease.id(), sn, &ct.snapshot_key, active, diff_parent, media).await;
        let mut paused = Duration::ZERO;
        if let Some(at) = paused_at {
            paused = at.elapsed();
            if let Some(e) = task::resume_or_retry(c, &ct.id).await {
                // The resume goes on in the background; the commit goes on
                // if the capture worked.
                warn!(container = %ct.id, cause = %e, "container not resumed yet");
            }
        }
        let layer = captured?;
        self.check_cancel("after capture")?;
        let layer = if diff::has_no_entries(c, &layer.descriptor).await? { None } else { Some(layer) };
        debug!(empty = layer.is_none(), "layer inspected");

        // The child's config.
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let config = child_config(parent.as_ref().map(|p| &p.config), run_config, layer.as_ref(), author, comment, &container::process_args(ct), &now);

        // Fill the new image's snapshot so it runs at once.
        let chain_id = image::chain_id(&config.rootfs.diff_ids);
        if let (Some(layer), Some(chain)) = (&layer, &chain_id) {
            self.check_cancel("before apply")?;
            diff::apply(c, &lease.id(), sn, chain, diff_parent, &layer.descriptor).await?;
        }
        self.check_cancel("before writing the image")?;

        // Config and manifest blobs, with the references that keep the
        // snapshot and the layers alive once the lease is gone.
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut config_labels = HashMap::new();
        if let Some(chain) = &chain_id {
            config_labels.insert(format!("containerd.io/gc.ref.snapshot.{}", sn.name()), chain.clone());
        }
        let unique = crate::unique();
        let config_digest =
            content::write_blob(c, &lease.id(), &format!("commitd-config-{unique}"), config_bytes.clone(), config_labels).await?;
        let mut layers = parent.as_ref().map(|p| p.manifest.layers.clone()).unwrap_or_default();
        if let Some(l) = &layer {
            layers.push(l.descriptor.clone());
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: media_type::OCI_CONFIG.into(),
                digest: config_digest.clone(),
                size: config_bytes.len() as i64,
                annotations: None,
                platform: None,
                urls: None,
            },
            layers,
            annotations: None,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut manifest_labels = HashMap::from([("containerd.io/gc.ref.content.0".to_string(), config_digest.clone())]);
        for (i, l) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.{}", i + 1), l.digest.clone());
        }
        let manifest_size = manifest_bytes.len() as i64;
        let manifest_digest =
            content::write_blob(c, &lease.id(), &format!("commitd-manifest-{unique}"), manifest_bytes, manifest_labels).await?;
        let manifest_desc = Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: manifest_digest.clone(),
            size: manifest_size,
            annotations: None,
            platform: None,
            urls: None,
        };

        // The image record: the commit becomes visible here, all at once.
        self.check_cancel("before naming the image")?;
        let name = image_name.clone().unwrap_or_else(|| images::dangling_name(&manifest_digest));
        images::name_image(c, &lease.id(), &name, &manifest_desc).await?;
        Ok((config_digest, manifest_desc, name, layer, paused))
    }
}

/// The child's image config: the parent's platform and history, the new
/// run config, the new layer's diff ID, a history entry for the commit.
pub(crate) fn child_config(
    parent: Option<&ImageConfig>,
    run: RunConfig,
    layer: Option<&Layer>,
    author: &str,
    comment: &str,
    process_args: &[String],
    now: &str,
) -> ImageConfig {
    let host = image::host_platform();
    let (architecture, os, variant) = match parent {
        Some(p) if !p.architecture.is_empty() && !p.os.is_empty() => {
            (p.architecture.clone(), p.os.clone(), p.variant.clone())
        }
        _ => (host.architecture, host.os, host.variant),
    };
    let author = if author.is_empty() { parent.and_then(|p| p.author.clone()).unwrap_or_default() } else { author.to_string() };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut diff_ids = parent.map(|p| p.rootfs.diff_ids.clone()).unwrap_or_default();
    if let Some(l) = layer {
        diff_ids.push(l.diff_id.clone());
    }
    let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
    history.push(History {
        created: Some(now.to_string()),
        created_by: non_empty(&process_args.join(" ")),
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
        rootfs: image::RootFs { kind: "layers".into(), diff_ids },
        history,
        extra: Default::default(),
    }
}

/// The parent image of a container, or `None` for a container without one
/// (`FROM scratch`). The container's image record names the parent, but a
/// name can move (e.g. a commit to the container's own tag); then the image
/// whose layers are the container snapshot's parent is looked for.
async fn load_parent(c: &Containerd, ct: &Container, snapshot_parent: &str) -> Result<Option<Resolved>> {
    if ct.image.is_empty() {
        return Ok(None);
    }
    let platform = ct
        .labels
        .get(container::PLATFORM_LABEL)
        .and_then(|p| parse_platform(p))
        .unwrap_or_else(image::host_platform);
    if let Some(img) = images::get(c, &ct.image).await? {
        let resolved = images::resolve(c, &img, &platform).await?;
        if snapshot_parent.is_empty() || resolved.chain_id().as_deref() == Some(snapshot_parent) {
            return Ok(Some(resolved));
        }
        debug!(image = %ct.image, "image moved since the container was created; looking for its parent by chain ID");
    }
    for img in images::list(c, Vec::new()).await? {
        let Ok(resolved) = images::resolve(c, &img, &platform).await else { continue };
        if resolved.chain_id().as_deref() == Some(snapshot_parent) {
            return Ok(Some(resolved));
        }
    }
    Err(Error::ImageNotFound(format!(
        "{} (the image of container {}, whose layers are no longer in any image)",
        ct.image, ct.id
    )))
}

fn parse_platform(s: &str) -> Option<image::Platform> {
    let mut parts = s.split('/');
    let os = parts.next()?.to_string();
    let architecture = parts.next()?.to_string();
    let variant = parts.next().map(str::to_string);
    Some(image::Platform { architecture, os, os_version: None, variant })
}
