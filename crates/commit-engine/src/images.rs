//! containerd's image records, kept the way Docker's containerd image store
//! keeps them, so `docker`, `nerdctl` and `ctr` agree on what they see:
//! an untagged image is named `moby-dangling@<manifest digest>`, and when a
//! name moves to another image the image it leaves is kept under its
//! dangling name unless another name still points at it.

use std::collections::HashMap;

use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use containerd_client::types::Descriptor as ProtoDescriptor;
use tonic::Code;
use tracing::debug;

use crate::client::Containerd;
use crate::error::{Error, Result};
use docker_format::image::Descriptor;

const DANGLING_PREFIX: &str = "moby-dangling@";

/// The record name Docker gives an image that has no name.
pub(crate) fn dangling_name(manifest_digest: &str) -> String {
    format!("{DANGLING_PREFIX}{manifest_digest}")
}

pub(crate) fn is_dangling(img: &Image) -> bool {
    img.target
        .as_ref()
        .is_some_and(|t| img.name == dangling_name(&t.digest))
}

pub(crate) async fn get(c: &Containerd, name: &str) -> Result<Option<Image>> {
    let req = c.request(GetImageRequest {
        name: name.to_string(),
    });
    match c.images().get(req).await {
        Ok(resp) => Ok(resp.into_inner().image),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err("image get", s)),
    }
}

pub(crate) async fn list(c: &Containerd, filters: Vec<String>) -> Result<Vec<Image>> {
    let req = c.request(ListImagesRequest { filters });
    let resp = c
        .images()
        .list(req)
        .await
        .map_err(|s| c.err("image list", s))?;
    Ok(resp.into_inner().images)
}

pub(crate) async fn delete(c: &Containerd, name: &str) -> Result<()> {
    let req = c.request(DeleteImageRequest {
        name: name.to_string(),
        sync: false,
        target: None,
    });
    match c.images().delete(req).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(c.err("image delete", s)),
    }
}

pub(crate) fn to_proto(d: &Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d
            .annotations
            .clone()
            .map(|a| a.into_iter().collect())
            .unwrap_or_default(),
    }
}

fn now() -> prost_types::Timestamp {
    let t = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Points `name` at `target`, creating the record or moving it. The image a
/// moved name leaves behind stays listed under its dangling name when no
/// other record points at it. Naming an image drops its dangling record.
pub(crate) async fn name_image(
    c: &Containerd,
    lease: &str,
    name: &str,
    target: &Descriptor,
) -> Result<()> {
    // The name's record and the target's dangling one are read at once.
    let dangling = dangling_name(&target.digest);
    let (previous, dangles) = tokio::join!(get(c, name), async {
        match name == dangling {
            true => Ok(false),
            false => get(c, &dangling).await.map(|d| d.is_some()),
        }
    });
    let (previous, dangles) = (previous?, dangles?);
    if let Some(prev) = &previous {
        if prev
            .target
            .as_ref()
            .is_some_and(|t| t.digest == target.digest)
        {
            if dangles {
                delete(c, &dangling).await?;
            }
            return Ok(());
        }
    }
    let record = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(to_proto(target)),
        created_at: Some(now()),
        updated_at: Some(now()),
    };
    match &previous {
        None => {
            let req = c.leased(
                CreateImageRequest {
                    image: Some(record.clone()),
                    source_date_epoch: None,
                },
                lease,
            );
            match c.images().create(req).await {
                Ok(_) => {}
                // Someone named it meanwhile: last writer wins, as in
                // Docker, and the image it pointed at stays listed.
                Err(s) if s.code() == Code::AlreadyExists => {
                    if let Some(now) = get(c, name).await? {
                        if now
                            .target
                            .as_ref()
                            .is_some_and(|t| t.digest != target.digest)
                        {
                            keep_dangling(c, lease, &now).await?;
                        }
                    }
                    update(c, lease, record).await?
                }
                Err(s) => return Err(c.err("image create", s)),
            }
        }
        Some(prev) => {
            keep_dangling(c, lease, prev).await?;
            update(c, lease, record).await?;
        }
    }
    if dangles && !name.starts_with(DANGLING_PREFIX) {
        delete(c, &dangling).await?;
    }
    debug!(image = %name, digest = %target.digest, "image record written");
    Ok(())
}

async fn update(c: &Containerd, lease: &str, mut record: Image) -> Result<()> {
    record.created_at = None;
    let req = c.leased(
        UpdateImageRequest {
            image: Some(record),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["target".into()],
            }),
            source_date_epoch: None,
        },
        lease,
    );
    c.images()
        .update(req)
        .await
        .map_err(|s| c.err("image update", s))?;
    Ok(())
}

/// Before `prev`'s name moves away, keeps its image listed (as Docker's
/// `<none>`) if no other record points at its target.
async fn keep_dangling(c: &Containerd, lease: &str, prev: &Image) -> Result<()> {
    let Some(target) = &prev.target else {
        return Ok(());
    };
    let others = list(c, vec![format!("target.digest=={}", target.digest)]).await?;
    if others.iter().any(|i| i.name != prev.name) {
        return Ok(());
    }
    let record = Image {
        name: dangling_name(&target.digest),
        labels: prev.labels.clone(),
        target: Some(target.clone()),
        created_at: prev.created_at,
        updated_at: Some(now()),
    };
    let req = c.leased(
        CreateImageRequest {
            image: Some(record),
            source_date_epoch: None,
        },
        lease,
    );
    match c.images().create(req).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(c.err("image create", s)),
    }
}

/// An image's manifest and config, as read from the content store.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The record's target (a manifest, or an index the manifest was picked from).
    pub target: Descriptor,
    pub manifest_descriptor: Descriptor,
    pub manifest: docker_format::image::Manifest,
    pub config: docker_format::image::ImageConfig,
}

impl Resolved {
    /// Every blob the image is made of: its manifest, config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        [&self.manifest_descriptor, &self.manifest.config]
            .into_iter()
            .chain(&self.manifest.layers)
    }

    /// The chain ID of the image's layers: the name of its unpacked snapshot.
    pub fn chain_id(&self) -> Option<String> {
        docker_format::image::chain_id(&self.config.rootfs.diff_ids)
    }

    /// How a snapshot whose parent is `snapshot_parent` stands on this
    /// image's layers (see [`footing`]).
    pub fn footing(&self, snapshot_parent: &str) -> Option<Footing> {
        footing(snapshot_parent, &self.chain_id()?)
    }
}

/// How a container's snapshot stands on an image's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footing {
    /// On the image's own top snapshot (named by its chain ID).
    Direct,
    /// On a user-namespace remapped copy of it, `<chain>-<uid>-<gid>` as
    /// containerd's `WithRemappedSnapshot` names it: the same layers with
    /// their owners shifted.
    Remapped,
}

/// The one rule for "which image is this container's", by layers: how a
/// snapshot whose parent is `snapshot_parent` stands on the layers whose
/// chain ID is `chain`, if it does. Callers decide what a remapped copy
/// counts as: the image a container shows and the images it keeps in use
/// count it; a commit does not (its files' owners are shifted).
pub(crate) fn footing(snapshot_parent: &str, chain: &str) -> Option<Footing> {
    let rest = snapshot_parent.strip_prefix(chain)?;
    if rest.is_empty() {
        return Some(Footing::Direct);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (uid, gid) = rest.strip_prefix('-')?.split_once('-')?;
    (digits(uid) && digits(gid)).then_some(Footing::Remapped)
}

pub(crate) fn from_proto(d: &ProtoDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: (!d.annotations.is_empty())
            .then(|| d.annotations.clone().into_iter().collect()),
        platform: None,
        urls: None,
    }
}

/// Reads an image record's manifest (choosing from an index by `platform`)
/// and config.
pub(crate) async fn resolve(
    c: &Containerd,
    img: &Image,
    platform: &docker_format::image::Platform,
) -> Result<Resolved> {
    use docker_format::image::{ImageConfig, Index, Manifest, media_type as mt};
    let target = img
        .target
        .as_ref()
        .map(from_proto)
        .ok_or_else(|| Error::Malformed(format!("image {} has no target", img.name)))?;
    let mut desc = target.clone();
    // Indexes may nest; a few levels is plenty.
    for _ in 0..4 {
        let bytes = crate::content::read_blob(c, &desc.digest).await?;
        let is_index = match desc.media_type.as_str() {
            mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => true,
            mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => false,
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|v| v.get("manifests").is_some())
                .unwrap_or(false),
        };
        if is_index {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Malformed(format!("index {} of image {}: {e}", desc.digest, img.name))
            })?;
            let pick = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| docker_format::image::platform_matches(p, platform))
                })
                .or_else(|| index.manifests.iter().find(|m| m.platform.is_none()))
                .ok_or_else(|| {
                    Error::ImageNotFound(format!(
                        "{} (no manifest for {}/{})",
                        img.name, platform.os, platform.architecture
                    ))
                })?;
            desc = pick.clone();
            continue;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Malformed(format!(
                "manifest {} of image {}: {e}",
                desc.digest, img.name
            ))
        })?;
        let config_bytes = crate::content::read_blob(c, &manifest.config.digest).await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::Malformed(format!(
                "config {} of image {}: {e}",
                manifest.config.digest, img.name
            ))
        })?;
        return Ok(Resolved {
            target,
            manifest_descriptor: desc,
            manifest,
            config,
        });
    }
    Err(Error::Malformed(format!(
        "image {} nests indexes too deeply",
        img.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_stand_on_chains_directly_or_remapped() {
        assert_eq!(footing("sha256:ab", "sha256:ab"), Some(Footing::Direct));
        assert_eq!(
            footing("sha256:ab-1000-1000", "sha256:ab"),
            Some(Footing::Remapped)
        );
        assert_eq!(footing("sha256:abc", "sha256:ab"), None);
        assert_eq!(footing("sha256:ab-1000", "sha256:ab"), None);
        assert_eq!(footing("sha256:ab-x-1", "sha256:ab"), None);
        assert_eq!(footing("", "sha256:ab"), None);
    }
}
