//! The portable path: containerd's diff service compares the container's
//! snapshot with its parent and writes the layer; the same service applies
//! the layer into the new image's snapshot.

use std::collections::HashMap;
use std::io::Read;

use containerd_client::services::v1::{ApplyRequest, DiffRequest};
use containerd_client::types::Descriptor as ProtoDescriptor;
use tracing::{debug, instrument};

use crate::client::Containerd;
use crate::content;
use crate::error::{Error, Result};
use crate::snapshot::{Snapshots, UNPACK_PREFIX};
use docker_format::image::Descriptor;

/// The label containerd's differ puts on a layer blob: the digest of the
/// uncompressed tar, i.e. the layer's diff ID.
pub(crate) const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// A captured layer, in the content store.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// Diffs `key` (the container's snapshot) against `parent` with the diff
/// service. Returns `None` when the layer has no entries.
#[instrument(skip_all, fields(snapshot = %key, parent = %parent))]
pub(crate) async fn capture(
    c: &Containerd,
    lease: &str,
    sn: &Snapshots<'_>,
    key: &str,
    active: bool,
    parent: &str,
    media: &str,
) -> Result<Layer> {
    let unique = crate::unique();
    let mut views = Vec::new();
    let result = async {
        let upper = if active {
            sn.mounts(key).await?
        } else {
            let view = format!("{key}-view-{unique}");
            let m = sn.view(lease, &view, key).await?;
            views.push(view);
            m
        };
        let lower = if parent.is_empty() {
            Vec::new()
        } else {
            let view = format!("{parent}-parent-view-{unique}");
            let m = sn.view(lease, &view, parent).await?;
            views.push(view);
            m
        };
        let req = c.leased(
            DiffRequest {
                left: lower,
                right: upper,
                media_type: media.to_string(),
                r#ref: format!("commitd-diff-{unique}"),
                labels: HashMap::new(),
                source_date_epoch: None,
            },
            lease,
        );
        let resp = c.diff().diff(req).await.map_err(|s| c.err("diff", s))?;
        resp.into_inner()
            .diff
            .ok_or_else(|| Error::Malformed("diff service returned no descriptor".into()))
    }
    .await;
    for v in views {
        sn.remove_quietly(&v).await;
    }
    let desc = result?;
    let info = content::info(c, &desc.digest).await?;
    // An uncompressed layer is its own diff ID (containerd labels only
    // compressed ones).
    let diff_id = match info.labels.get(UNCOMPRESSED_LABEL) {
        Some(d) => d.clone(),
        None if media.ends_with(".tar") => desc.digest.clone(),
        None => {
            return Err(Error::Malformed(format!(
                "diff service gave layer {} no {UNCOMPRESSED_LABEL} label",
                desc.digest
            )));
        }
    };
    debug!(digest = %desc.digest, %diff_id, size = info.size, "layer captured by the diff service");
    Ok(Layer {
        descriptor: Descriptor {
            media_type: if desc.media_type.is_empty() {
                media.to_string()
            } else {
                desc.media_type
            },
            digest: desc.digest,
            size: info.size,
            annotations: None,
            platform: None,
            urls: None,
        },
        diff_id,
    })
}

/// Whether a layer blob holds no tar entries: its first header block is the
/// end-of-archive marker. Reads only the first few KiB of the blob.
pub(crate) async fn has_no_entries(c: &Containerd, layer: &Descriptor) -> Result<bool> {
    let head = content::read_range(c, &layer.digest, 0, layer.size.min(64 << 10)).await?;
    let mut block = [0u8; 512];
    let filled = match layer.media_type.as_str() {
        m if m.ends_with("gzip") => {
            read_prefix(flate2::read::GzDecoder::new(&head[..]), &mut block)
        }
        m if m.ends_with("tar") => read_prefix(&head[..], &mut block),
        m => {
            return Err(Error::Malformed(format!(
                "cannot inspect a layer of media type {m}"
            )));
        }
    };
    // A tar that ends before a full block, or whose first block is all
    // zeros, has no entries.
    Ok(filled < block.len() || block.iter().all(|&b| b == 0))
}

fn read_prefix(mut r: impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// Fills the snapshot `chain_id` (child of `parent`) from `layer` with the
/// diff service: prepare under a unique `extract-` key, apply, commit. An
/// existing snapshot of that name is success. The prepared snapshot is
/// removed on failure.
pub(crate) async fn apply(
    c: &Containerd,
    lease: &str,
    sn: &Snapshots<'_>,
    chain_id: &str,
    parent: &str,
    layer: &Descriptor,
) -> Result<()> {
    apply_checked(c, lease, sn, chain_id, parent, layer, None).await
}

/// [`apply`], refusing (before the snapshot is committed) a layer whose
/// tar is not `diff_id` — what its image's config says it is.
#[instrument(skip_all, fields(phase = "apply", chain_id = %chain_id))]
pub(crate) async fn apply_checked(
    c: &Containerd,
    lease: &str,
    sn: &Snapshots<'_>,
    chain_id: &str,
    parent: &str,
    layer: &Descriptor,
    diff_id: Option<&str>,
) -> Result<()> {
    if sn.exists(chain_id).await? {
        return Ok(());
    }
    let key = format!("{UNPACK_PREFIX}-{}-{chain_id}", crate::unique());
    let mounts = sn.prepare(lease, &key, parent).await?;
    let result = async {
        let req = c.leased(
            ApplyRequest {
                diff: Some(ProtoDescriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
            lease,
        );
        let applied = c
            .diff()
            .apply(req)
            .await
            .map_err(|s| c.err("diff apply", s))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if let Some(want) = diff_id.filter(|want| *want != applied) {
            return Err(Error::InvalidArgument(format!(
                "wrong diff id calculated on extraction of {}: {applied}, the image says {want}",
                layer.digest
            )));
        }
        sn.commit(lease, chain_id, &key).await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        sn.remove_quietly(&key).await;
    }
    result
}
