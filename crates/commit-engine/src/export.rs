//! `docker save`: the archive Docker 25+ writes — an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) and Docker's
//! `manifest.json` in one tar, so `docker load`, skopeo (`docker-archive:`
//! and `oci-archive:`) and umoci all read it. It is streamed: metadata
//! first, then each blob (once, however many images share it) read from
//! containerd's content store in chunks. Dropping the stream stops the work.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use docker_format::image::{Descriptor, media_type};
use docker_format::reference::familiar_name;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use crate::catalog::Image;
use crate::content::Blobs;
use crate::error::{Error, Result};

/// One image of an archive.
pub struct Exported {
    pub image: Image,
    /// The normalized name it was asked for by, when it was a name (not
    /// an ID): the archive tags it so.
    pub name: Option<String>,
}

/// Every blob of the images, once, in a stable order.
fn blobs_of(exported: &[Exported]) -> Vec<Descriptor> {
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    for e in exported {
        for d in e.image.resolved.blobs() {
            if seen.insert(d.digest.clone()) {
                blobs.push(d.clone());
            }
        }
    }
    blobs
}

/// Blobs not in the content store, streamed from where they came from
/// (see [`crate::remote`]).
pub(crate) struct Remote {
    pub client: oci_client::Client,
    pub sources: std::collections::HashMap<String, Vec<crate::remote::BlobSource>>,
    /// Source registries' credentials (a configured `config.json`).
    pub credentials: docker_format::registry::ConfigFile,
}

/// The archive's bytes, produced as they are taken.
pub(crate) fn start(
    exported: &[Exported],
    store: Blobs,
    remote: Remote,
) -> Result<mpsc::Receiver<std::io::Result<Bytes>>> {
    let blobs = blobs_of(exported);
    let metadata = metadata(exported)?;

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let send = |b: Vec<u8>| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(b))).await.is_ok() }
        };
        for (path, data) in &metadata {
            if !send(entry(path, data.len() as u64, 0o644)).await
                || !send(padded(data.clone())).await
            {
                return;
            }
        }
        for dir in ["blobs/", "blobs/sha256/"] {
            if !send(dir_entry(dir)).await {
                return;
            }
        }
        for d in blobs {
            let size = u64::try_from(d.size).unwrap_or(0);
            if !send(entry(
                &format!("blobs/sha256/{}", d.digest.trim_start_matches("sha256:")),
                size,
                0o444,
            ))
            .await
            {
                return;
            }
            let mut data: futures::stream::BoxStream<'_, std::io::Result<Bytes>> =
                match remote.sources.get(&d.digest) {
                    Some(sources) => {
                        match crate::remote::fetch(&remote.client, &d, sources, &remote.credentials)
                            .await
                        {
                            Ok(s) => s.boxed(),
                            Err(why) => {
                                let _ = tx.send(Err(std::io::Error::other(why))).await;
                                return;
                            }
                        }
                    }
                    None => store
                        .chunks(&d.digest, d.size)
                        .map(|c| {
                            c.map(Bytes::from)
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        })
                        .boxed(),
                };
            let mut sent = 0u64;
            while let Some(chunk) = data.next().await {
                match chunk {
                    Ok(bytes) => {
                        sent += bytes.len() as u64;
                        if sent > size {
                            let why = format!("blob {} is longer than {size} bytes", d.digest);
                            let _ = tx.send(Err(std::io::Error::other(why))).await;
                            return;
                        }
                        if tx.send(Ok(bytes)).await.is_err() {
                            return; // the client hung up
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if sent != size {
                let why = format!("blob {} ended after {sent} of {size} bytes", d.digest);
                let _ = tx.send(Err(std::io::Error::other(why))).await;
                return;
            }
            let pad = (512 - (size % 512)) % 512;
            if pad > 0 && !send(vec![0; pad as usize]).await {
                return;
            }
        }
        let _ = send(vec![0; 1024]).await;
    });
    Ok(rx)
}

/// `oci-layout`, `index.json`, `manifest.json` (and `repositories`).
fn metadata(exported: &[Exported]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut index = Vec::new();
    let mut manifest_json = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for e in exported {
        let r = &e.image.resolved;
        let mut annotations = BTreeMap::new();
        let mut repo_tags = Vec::new();
        if let Some(full) = &e.name {
            annotations.insert("io.containerd.image.name".to_string(), full.clone());
            let familiar = familiar_name(full).to_string();
            if let Some((repo, tag)) = familiar.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                annotations.insert(
                    "org.opencontainers.image.ref.name".to_string(),
                    tag.to_string(),
                );
                repositories.entry(repo.to_string()).or_default().insert(
                    tag.to_string(),
                    e.image.id.trim_start_matches("sha256:").to_string(),
                );
            }
            repo_tags.push(familiar);
        }
        index.push(json!({
            "mediaType": if r.manifest_descriptor.media_type.is_empty() { media_type::OCI_MANIFEST } else { r.manifest_descriptor.media_type.as_str() },
            "digest": r.manifest_descriptor.digest,
            "size": r.manifest_descriptor.size,
            "annotations": annotations,
        }));
        let blob =
            |d: &Descriptor| format!("blobs/sha256/{}", d.digest.trim_start_matches("sha256:"));
        manifest_json.push(json!({
            "Config": blob(&r.manifest.config),
            "RepoTags": repo_tags,
            "Layers": r.manifest.layers.iter().map(blob).collect::<Vec<_>>(),
        }));
    }
    let ser =
        |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| Error::Malformed(e.to_string()));
    let mut out = vec![
        (
            "oci-layout".to_string(),
            ser(&json!({"imageLayoutVersion": "1.0.0"}))?,
        ),
        (
            "index.json".to_string(),
            ser(
                &json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": index}),
            )?,
        ),
        ("manifest.json".to_string(), ser(&json!(manifest_json))?),
    ];
    if !repositories.is_empty() {
        out.push(("repositories".to_string(), ser(&json!(repositories))?));
    }
    Ok(out)
}

/// A regular file's tar header.
fn entry(path: &str, size: u64, mode: u32) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    let _ = h.set_path(path);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn dir_entry(path: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    let _ = h.set_path(path);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Data followed by the zeros that round it up to a 512-byte block.
fn padded(mut data: Vec<u8>) -> Vec<u8> {
    let pad = (512 - data.len() % 512) % 512;
    data.resize(data.len() + pad, 0);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_padding_make_a_tar() {
        let mut tarball = entry("oci-layout", 5, 0o644);
        tarball.extend(padded(b"hello".to_vec()));
        tarball.extend(dir_entry("blobs/"));
        tarball.extend(vec![0; 1024]);
        let mut a = tar::Archive::new(&tarball[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["oci-layout", "blobs/"]);
    }
}
