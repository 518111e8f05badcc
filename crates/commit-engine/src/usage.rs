//! Disk usage as containerd's snapshotters and content store count it:
//! what `docker ps -s`, `docker inspect -s` and `docker system df` show.
//!
//! - A container's `SizeRw` is its snapshot's usage: for an active overlay
//!   snapshot containerd walks the upper directory and counts each inode's
//!   blocks once — `du -s -B1` of the upper directory, i.e. what a commit
//!   would capture. `SizeRootFs` adds the usage of every snapshot below it.
//! - An image's size is what it holds on this node: its blobs in the
//!   content store (index, manifest, config, layers) plus its unpacked
//!   snapshots; its shared size is the part other images hold too — Docker's
//!   containerd image store counts the same way.

use std::collections::{HashMap, HashSet};

use containerd_client::services::v1::snapshots::UsageRequest;
use tonic::Code;

use crate::catalog::{Image, ImageStore};
use crate::client::Containerd;
use crate::container::{ContainerRecord, Containers, snapshotter_of};
use crate::error::Result;
use crate::snapshot::Snapshots;

/// A container's sizes, as `docker ps -s` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSize {
    /// Bytes of its writable layer (its snapshot's own usage).
    pub rw: i64,
    /// `rw` plus the image snapshots it stands on.
    pub root_fs: i64,
}

/// An image's sizes, as `docker system df -v` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsage {
    /// `sha256:…` of the config.
    pub id: String,
    /// Its blobs plus its unpacked snapshots, in bytes.
    pub size: i64,
    /// The part of `size` other images hold too.
    pub shared: i64,
    /// Containers standing on it.
    pub containers: i64,
}

/// Every image's usage, and what the images hold together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesUsage {
    pub images: Vec<ImageUsage>,
    /// Every distinct blob and snapshot of every image, once.
    pub total: i64,
}

/// Things (blobs, snapshots) by name, with their sizes.
type Sizes = Vec<(String, i64)>;

/// A snapshot's own usage in bytes; `None` when there is no such snapshot.
pub(crate) async fn snapshot_usage(
    c: &Containerd,
    snapshotter: &str,
    key: &str,
) -> Result<Option<i64>> {
    let req = c.request(UsageRequest {
        snapshotter: snapshotter.to_string(),
        key: key.to_string(),
    });
    match c.snapshots().usage(req).await {
        Ok(r) => Ok(Some(r.into_inner().size)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err("snapshot usage", s)),
    }
}

/// The snapshots from `top` down to the bottom layer, with their usage.
async fn chain_usage(c: &Containerd, sn: &Snapshots<'_>, top: &str) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    let mut next = top.to_string();
    while !next.is_empty() {
        let Some(size) = snapshot_usage(c, sn.name(), &next).await? else {
            break;
        };
        let info = match sn.stat(&next).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e),
        };
        out.push((next, size));
        next = info.parent;
    }
    Ok(out)
}

impl Containers<'_> {
    /// `SizeRw` and `SizeRootFs` of a container; `None` when it has no
    /// snapshot (any more).
    pub async fn size(&self, ct: &ContainerRecord) -> Result<Option<ContainerSize>> {
        if ct.snapshot_key.is_empty() {
            return Ok(None);
        }
        let sn = Snapshots::new(self.c, snapshotter_of(&ct.snapshotter));
        let chain = chain_usage(self.c, &sn, &ct.snapshot_key).await?;
        let Some((_, rw)) = chain.first() else {
            return Ok(None);
        };
        Ok(Some(ContainerSize {
            rw: *rw,
            root_fs: chain.iter().map(|(_, s)| s).sum(),
        }))
    }
}

impl ImageStore<'_> {
    /// Every image's size, shared size and container count, and the total
    /// the images hold. `images` is the store's list (oldest first) and
    /// `snapshotter` the one images are unpacked into.
    pub async fn usage(&self, images: &[Image], snapshotter: &str) -> Result<ImagesUsage> {
        let c = self.c;
        let sn = Snapshots::new(c, snapshotter);
        // Each image's blobs and snapshots, each counted once per image.
        let mut per_image: Vec<(Sizes, Sizes)> = Vec::new();
        let mut snapshot_sizes: HashMap<String, i64> = HashMap::new();
        for img in images {
            let r = &img.resolved;
            let mut blobs: Vec<(String, i64)> = Vec::new();
            let mut seen = HashSet::new();
            // The record's target too: an index the manifest was picked from.
            for d in std::iter::once(&r.target).chain(r.blobs()) {
                if seen.insert(d.digest.clone()) && crate::content::info(c, &d.digest).await.is_ok()
                {
                    blobs.push((d.digest.clone(), d.size));
                }
            }
            let mut snaps = Vec::new();
            if let Some(top) = r.chain_id() {
                let chain = match snapshot_sizes.get(&top) {
                    Some(_) => None,
                    None => Some(chain_usage(c, &sn, &top).await?),
                };
                if let Some(chain) = chain {
                    for (k, s) in &chain {
                        snapshot_sizes.insert(k.clone(), *s);
                    }
                }
                // The chain as recorded: the top and its ancestors by chain ID.
                let diff_ids = &r.config.rootfs.diff_ids;
                let ids = (1..=diff_ids.len())
                    .filter_map(|n| docker_format::image::chain_id(&diff_ids[..n]));
                for id in ids.rev() {
                    if let Some(s) = snapshot_sizes.get(&id) {
                        snaps.push((id, *s));
                    }
                }
            }
            per_image.push((blobs, snaps));
        }
        let mut blob_count: HashMap<&str, usize> = HashMap::new();
        let mut snap_count: HashMap<&str, usize> = HashMap::new();
        for (blobs, snaps) in &per_image {
            for (d, _) in blobs {
                *blob_count.entry(d).or_default() += 1;
            }
            for (k, _) in snaps {
                *snap_count.entry(k).or_default() += 1;
            }
        }
        let mut total = 0;
        let mut counted: HashSet<&str> = HashSet::new();
        for (blobs, snaps) in &per_image {
            for (k, s) in blobs.iter().chain(snaps) {
                if counted.insert(k) {
                    total += s;
                }
            }
        }
        let mut out = Vec::new();
        for (img, (blobs, snaps)) in images.iter().zip(&per_image) {
            let size = blobs.iter().chain(snaps).map(|(_, s)| s).sum();
            let shared = blobs
                .iter()
                .filter(|(d, _)| blob_count[d.as_str()] > 1)
                .chain(snaps.iter().filter(|(k, _)| snap_count[k.as_str()] > 1))
                .map(|(_, s)| s)
                .sum();
            let containers = self.users(img).await?.len() as i64;
            out.push(ImageUsage {
                id: img.id.clone(),
                size,
                shared,
                containers,
            });
        }
        Ok(ImagesUsage { images: out, total })
    }
}
