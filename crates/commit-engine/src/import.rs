//! `docker import`: a root filesystem tarball (plain, gzip or zstd) becomes
//! a one-layer image, as Docker makes it: the config from `changes` (the
//! commit's parser, over an empty config), the host's platform, one
//! history entry with the message, the layer stored compressed as the
//! engine's commits store theirs.
//!
//! Everything is made under a lease: the layer (streamed from the request
//! as it arrives, decompressed, recompressed and hashed in one pass), the
//! unpacked snapshot (applied by the diff service, checked against the
//! layer's diff ID), config and manifest; the image record is written
//! last, under its name's lock. On any failure the lease goes and nothing
//! is left.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use docker_format::changes::Changes;
use docker_format::image::{self, Descriptor, Manifest, media_type};
use docker_format::merge;

use crate::client::Containerd;
use crate::content;
use crate::diff;
use crate::error::{Error, Result};
use crate::images;
use crate::keyed::{Key, KeyedLocks};
use crate::layer::{self, Codec, ContentRoot};
use crate::lease::Lease;
use crate::snapshot::Snapshots;

/// What `docker import` can fail with that is its own (containerd's and
/// the content store's failures stay [`Error`]'s).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The tarball does not read as a tar archive: the client's.
    #[error("{0}")]
    Tarball(io::Error),
    /// The image made has no layer (a bug here).
    #[error("an imported image without a layer")]
    NoLayer,
    /// Its config or manifest did not serialize.
    #[error("{0}")]
    Json(serde_json::Error),
}

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// The image record's name (normalized); `None`: untagged.
    pub image_name: Option<String>,
    /// The history entry's comment (Docker: `Imported from -` by default).
    pub message: String,
    /// Dockerfile instructions making the config (as `docker commit -c`).
    pub changes: Changes,
}

/// An imported image.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `sha256:…` of the config: Docker's image ID.
    pub image_id: String,
    pub manifest: Descriptor,
    /// The record's name (`moby-dangling@…` when untagged).
    pub image_name: String,
}

pub(crate) struct Importer<'a> {
    pub c: &'a Containerd,
    pub locks: &'a KeyedLocks,
    pub lease_expiry: std::time::Duration,
    pub snapshotter: &'a str,
    pub codec: Codec,
    pub content_root: Option<&'a ContentRoot>,
}

impl Importer<'_> {
    pub(crate) async fn import<R>(&self, tarball: R, req: ImportRequest) -> Result<Imported>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        // A bad change costs nothing.
        let run = merge::commit_config(None, None, &req.changes)?;
        let lease = Lease::create(self.c, self.lease_expiry).await?;
        let result = self.import_leased(&lease, tarball, run, &req).await;
        lease.release().await;
        result
    }

    async fn import_leased<R>(
        &self,
        lease: &Lease,
        tarball: R,
        run: image::RunConfig,
        req: &ImportRequest,
    ) -> Result<Imported>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let c = self.c;
        let reader = tokio_util::io::SyncIoBridge::new(tarball);
        let streamed =
            layer::stream_layer(c, &lease.id(), self.codec, self.content_root, move |w| {
                copy_tar(reader, w)
            })
            .await
            .map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                    ImportError::Tarball(source).into()
                }
                other => other,
            })?;
        let layer = streamed.layer;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let config =
            crate::commit::child_config(None, 0, run, Some(&layer), "", &req.message, "", &now);
        let chain = image::chain_id(&config.rootfs.diff_ids).ok_or(ImportError::NoLayer)?;
        let sn = Snapshots::new(c, self.snapshotter);
        diff::apply_checked(
            c,
            &lease.id(),
            &sn,
            &chain,
            "",
            &layer.descriptor,
            Some(&layer.diff_id),
        )
        .await?;

        let config_bytes = serde_json::to_vec(&config).map_err(ImportError::Json)?;
        let config_digest = content::sha256_digest(&config_bytes);
        let config_size = config_bytes.len() as i64;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: descriptor(media_type::OCI_CONFIG, &config_digest, config_size),
            layers: vec![layer.descriptor.clone()],
            annotations: None,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(ImportError::Json)?;
        let manifest_size = manifest_bytes.len() as i64;
        let unique = crate::unique();
        content::write_blob(
            c,
            &lease.id(),
            &format!("commitd-import-config-{unique}"),
            config_bytes,
            HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                chain,
            )]),
        )
        .await?;
        let manifest_digest = content::write_blob(
            c,
            &lease.id(),
            &format!("commitd-import-manifest-{unique}"),
            manifest_bytes,
            HashMap::from([
                (
                    "containerd.io/gc.ref.content.0".to_string(),
                    config_digest.clone(),
                ),
                (
                    "containerd.io/gc.ref.content.1".to_string(),
                    layer.descriptor.digest.clone(),
                ),
            ]),
        )
        .await?;
        let manifest = descriptor(media_type::OCI_MANIFEST, &manifest_digest, manifest_size);
        let name = req
            .image_name
            .clone()
            .unwrap_or_else(|| images::dangling_name(&manifest.digest));
        {
            let _turn = self.locks.lock(Key::Images).await;
            images::name_image(c, &lease.id(), &name, &manifest).await?;
        }
        Ok(Imported {
            image_id: config_digest,
            manifest,
            image_name: name,
        })
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

/// The compression a tarball's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packed {
    Plain,
    Gzip,
    Zstd,
}

fn sniff(head: &[u8]) -> io::Result<Packed> {
    let refuse = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} tarballs are not supported: send a plain, gzip or zstd tar"),
        ))
    };
    match head {
        [0x1f, 0x8b, ..] => Ok(Packed::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Packed::Zstd),
        [b'B', b'Z', b'h', ..] => refuse("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => refuse("xz"),
        _ => Ok(Packed::Plain),
    }
}

/// Copies the tarball, decompressed, into `w`, refusing what does not start
/// as a tar.
fn copy_tar(r: impl Read, w: &mut dyn Write) -> io::Result<()> {
    let mut r = io::BufReader::with_capacity(256 << 10, r);
    let head = io::BufRead::fill_buf(&mut r)?.to_vec();
    let mut plain: Box<dyn Read> = match sniff(&head)? {
        Packed::Plain => Box::new(r),
        Packed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Packed::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    };
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match plain.read(&mut block[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    if !is_tar_start(&block[..filled]) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the body is not a tar archive (plain, gzip or zstd)",
        ));
    }
    w.write_all(&block[..filled])?;
    io::copy(&mut plain, w)?;
    Ok(())
}

/// A first block that is a tar header with a right checksum, or the
/// end-of-archive block of an empty tar.
fn is_tar_start(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let header = tar::Header::from_byte_slice(block);
    let Ok(want) = header.cksum() else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hi", &b"hi\n"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn tarballs_plain_gzip_zstd_come_out_plain() {
        let tar = a_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for input in [&tar, &gz, &zst] {
            let mut out = Vec::new();
            copy_tar(&input[..], &mut out).unwrap();
            assert_eq!(out, tar);
        }
    }

    #[test]
    fn what_is_not_a_tar_is_refused() {
        let mut out = Vec::new();
        let e = copy_tar(&b"not a tarball at all"[..], &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = copy_tar(&b"BZh91AY&SY"[..], &mut out).unwrap_err();
        assert!(e.to_string().contains("bzip2"), "{e}");
        let mut junk = vec![7u8; 2048];
        junk[0] = b'x';
        assert!(copy_tar(&junk[..], &mut out).is_err());
    }

    #[test]
    fn import_errors_keep_their_texts() {
        let bad = io::Error::new(io::ErrorKind::InvalidData, "not a tar archive");
        assert_eq!(
            Error::from(ImportError::Tarball(bad)).to_string(),
            "not a tar archive"
        );
        assert_eq!(
            Error::from(ImportError::NoLayer).to_string(),
            "an imported image without a layer"
        );
    }
}
