//! `docker image prune`: images removed whole — every record naming them,
//! each under its name's lock, as every image mutation — and the space
//! containerd's collector gave back, as Docker's containerd image store
//! counts it: the blobs and unpacked snapshots of the pruned images that
//! are gone after a synchronous collection.
//!
//! Which images to prune (dangling or all, `until`, `label`) is the
//! caller's choice; that none is used by a container is checked here, just
//! before its records go.

use std::collections::HashMap;

use containerd_client::services::v1::DeleteImageRequest;
use tonic::Code;

use crate::catalog::{Image, ImageStore};
use crate::error::Result;
use crate::keyed::Key;
use crate::usage::snapshot_usage;

/// One pruned image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedImage {
    /// `sha256:…` of its config.
    pub id: String,
    /// The names it had (its dangling record, if any, not among them).
    pub names: Vec<String>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub images: Vec<PrunedImage>,
    /// Bytes of blobs and snapshots the collector removed.
    pub space_reclaimed: u64,
}

impl ImageStore<'_> {
    /// Removes each of `candidates` that no container uses (every record
    /// naming it), then has containerd collect and counts what went.
    /// `snapshotter` is the one images are unpacked into.
    pub async fn prune(&self, candidates: Vec<Image>, snapshotter: &str) -> Result<Pruned> {
        let c = self.c;
        let mut doomed = Vec::new();
        for img in candidates {
            if self.users(&img).await?.is_empty() {
                doomed.push(img);
            }
        }
        if doomed.is_empty() {
            return Ok(Pruned::default());
        }
        // What they hold now, each thing once.
        let mut blobs: HashMap<String, i64> = HashMap::new();
        let mut snapshots: HashMap<String, i64> = HashMap::new();
        for img in &doomed {
            let r = &img.resolved;
            for d in std::iter::once(&r.target).chain(r.blobs()) {
                if !blobs.contains_key(&d.digest)
                    && crate::content::info(c, &d.digest).await.is_ok()
                {
                    blobs.insert(d.digest.clone(), d.size);
                }
            }
            let ids = &r.config.rootfs.diff_ids;
            for n in 1..=ids.len() {
                let Some(chain) = docker_format::image::chain_id(&ids[..n]) else {
                    continue;
                };
                if snapshots.contains_key(&chain) {
                    continue;
                }
                if let Some(size) = snapshot_usage(c, snapshotter, &chain).await? {
                    snapshots.insert(chain, size);
                }
            }
        }
        let mut out = Pruned::default();
        let last = doomed.len() - 1;
        for (i, img) in doomed.into_iter().enumerate() {
            let n = img.records.len();
            for (j, r) in img.records.iter().enumerate() {
                // The very last deletion collects synchronously.
                let sync = i == last && j + 1 == n;
                let _turn = self.locks.lock(Key::Images).await;
                let req = c.request(DeleteImageRequest {
                    name: r.name.clone(),
                    sync,
                    target: None,
                });
                match c.images().delete(req).await {
                    Ok(_) => {}
                    Err(s) if s.code() == Code::NotFound => {}
                    Err(s) => return Err(c.err("image delete", s)),
                }
            }
            out.images.push(PrunedImage {
                id: img.id.clone(),
                names: img.names().into_iter().map(str::to_string).collect(),
            });
        }
        for (digest, size) in blobs {
            match crate::content::info(c, &digest).await {
                Err(e) if e.is_not_found() => out.space_reclaimed += size.max(0) as u64,
                _ => {}
            }
        }
        for (chain, size) in snapshots {
            if snapshot_usage(c, snapshotter, &chain).await?.is_none() {
                out.space_reclaimed += size.max(0) as u64;
            }
        }
        Ok(out)
    }
}
