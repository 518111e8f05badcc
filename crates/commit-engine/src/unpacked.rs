//! Layer sizes as Docker reports them. `docker history`'s SIZE and image
//! inspect's `Size` are *unpacked* sizes: what a layer's files hold once
//! applied — Docker's `directory.Size` of the layer's diff directory: the
//! size of each regular file and symlink (its target's length), hard links
//! once, directories, devices and whiteouts nothing. A 3 MB change shows
//! 3.15MB, whatever its compressed blob weighs.
//!
//! A layer is measured from its tar headers (the data is skipped, not
//! read into memory) the first time it is asked for, and the number is
//! kept on the blob as a content label, so each layer is measured once per
//! node; a layer whose blob is not here (discarded after unpacking) counts
//! as 0, as Docker's containerd store counts a layer it cannot measure.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use docker_format::image::Descriptor;

use crate::client::Containerd;
use crate::content;
use crate::error::{Error, Result};

/// The content label that keeps a layer's unpacked size.
pub(crate) const LABEL: &str = "commitd.io/unpacked-size";

/// Unpacked sizes already known, by layer digest (blobs are immutable).
#[derive(Default, Clone)]
pub(crate) struct Sizes {
    inner: Arc<Mutex<HashMap<String, i64>>>,
}

impl Sizes {
    fn get(&self, digest: &str) -> Option<i64> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .copied()
    }

    fn put(&self, digest: &str, size: i64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 65_536 {
            map.clear();
        }
        map.insert(digest.to_string(), size);
    }

    /// The unpacked size of `layer`: known, kept on its blob, or measured
    /// now (and kept); 0 when its blob is not here, or is gone by the time
    /// it is read.
    pub(crate) async fn layer(&self, c: &Containerd, layer: &Descriptor) -> Result<i64> {
        if let Some(s) = self.get(&layer.digest) {
            return Ok(s);
        }
        let info = match content::info(c, &layer.digest).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e),
        };
        if let Some(s) = info.labels.get(LABEL).and_then(|v| v.parse().ok()) {
            self.put(&layer.digest, s);
            return Ok(s);
        }
        let size = match measure(c, layer).await {
            Ok(s) => s,
            // The blob went while it was read (its image was deleted and
            // collected meanwhile): as absent, not a broken layer.
            Err(e) => match content::info(c, &layer.digest).await {
                Err(gone) if gone.is_not_found() => return Ok(0),
                _ => return Err(e),
            },
        };
        // Kept for the next run too; a failure to label costs a re-measure.
        if let Err(e) = content::add_labels(
            c,
            &layer.digest,
            HashMap::from([(LABEL.to_string(), size.to_string())]),
        )
        .await
        {
            tracing::debug!(digest = %layer.digest, cause = %e, "unpacked size not kept");
        }
        self.put(&layer.digest, size);
        Ok(size)
    }
}

/// Reads `layer`'s blob and sums its tar's sizes (see [`tar_size`]).
async fn measure(c: &Containerd, layer: &Descriptor) -> Result<i64> {
    let raw = crate::layer::BlobReader::new(c.clone(), layer.digest.clone(), layer.size);
    let media_type = layer.media_type.clone();
    let digest = layer.digest.clone();
    tokio::task::spawn_blocking(move || {
        let r: Box<dyn Read> = if media_type.contains("gzip") {
            Box::new(flate2::read::MultiGzDecoder::new(raw))
        } else if media_type.contains("zstd") {
            Box::new(zstd::Decoder::new(raw)?)
        } else {
            Box::new(raw)
        };
        tar_size(r)
    })
    .await
    .map_err(Error::task("layer measuring task"))?
    .map_err(|e| Error::Malformed(format!("layer {digest} is not a readable tar: {e}")))
}

/// Docker's `directory.Size` of what a layer tar unpacks to: regular files'
/// sizes, symlinks' target lengths, each path once (a later entry of the
/// same path replaces an earlier one); hard links, directories, devices,
/// FIFOs and whiteouts add nothing.
pub(crate) fn tar_size(r: impl Read) -> std::io::Result<i64> {
    let mut archive = tar::Archive::new(r);
    let mut sizes: HashMap<Vec<u8>, u64> = HashMap::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path_bytes().into_owned();
        let size = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                entry.size()
            }
            tar::EntryType::Symlink => entry.link_name_bytes().map_or(0, |l| l.len() as u64),
            _ => 0,
        };
        sizes.insert(path, size);
    }
    Ok(i64::try_from(sizes.values().sum::<u64>()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn sizes_as_docker_counts_an_applied_layer() {
        let t = tar_of(&[
            ("d/", tar::EntryType::Directory, b"", ""),
            ("d/f", tar::EntryType::Regular, b"hello", ""),
            ("d/hard", tar::EntryType::Link, b"", "d/f"),
            ("d/sym", tar::EntryType::Symlink, b"", "../target"),
            ("d/.wh.gone", tar::EntryType::Regular, b"", ""),
            ("d/.wh..wh..opq", tar::EntryType::Regular, b"", ""),
            ("fifo", tar::EntryType::Fifo, b"", ""),
            ("twice", tar::EntryType::Regular, b"1234", ""),
            ("twice", tar::EntryType::Regular, b"12", ""),
        ]);
        // 5 (f) + 9 (symlink target) + 2 (the last "twice").
        assert_eq!(tar_size(&t[..]).unwrap(), 16);
    }

    #[test]
    fn an_empty_layer_is_zero_and_a_broken_one_an_error() {
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        assert_eq!(tar_size(&empty[..]).unwrap(), 0);
        let t = tar_of(&[("f", tar::EntryType::Regular, &[7u8; 2000], "")]);
        assert!(tar_size(&t[..900]).is_err());
    }
}
