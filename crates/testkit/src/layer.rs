//! Reading layers back: the entries of a layer tar, for comparing two layers field
//! by field (names, types, modes, owners, link targets, content hashes, whiteouts).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One entry of a layer, as a tar reader sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayerEntry {
    /// The path without a leading `./` or `/`, directories without a trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky (`0o7777` of the mode).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Symlink target or hard-link source; empty otherwise.
    pub link: String,
    /// Size of the content (regular files).
    pub size: u64,
    /// SHA-256 of the content, hex (regular files; empty otherwise).
    pub sha256: String,
    /// Device numbers (character and block devices).
    pub device: Option<(u32, u32)>,
    /// Extended attributes from PAX headers (`SCHILY.xattr.NAME`), values hex.
    pub xattrs: BTreeMap<String, String>,
}

/// The type of a [`LayerEntry`]; OCI whiteouts are told apart from plain files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    HardLink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// `.wh.NAME`: NAME of a lower layer is deleted.
    Whiteout,
    /// `.wh..wh..opq`: the directory's lower contents are hidden.
    Opaque,
    /// Anything else.
    Other,
}

impl fmt::Display for LayerEntry {
    /// One line: `path kind mode uid:gid [size sha256-prefix] [-> link] [dev] [xattrs]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {:o} {}:{}",
            self.path, self.kind, self.mode, self.uid, self.gid
        )?;
        if self.kind == EntryKind::File {
            write!(
                f,
                " {} {}",
                self.size,
                self.sha256.get(..16).unwrap_or_default()
            )?;
        }
        if !self.link.is_empty() {
            write!(f, " -> {}", self.link)?;
        }
        if let Some((ma, mi)) = self.device {
            write!(f, " dev {ma}:{mi}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// The entries of a layer blob, gzip-compressed or not (told by its magic bytes), in
/// the order of the tar (a gzip stream of several members, as parallel gzip writes,
/// is read whole). Modification times are left out: they differ between any
/// two commits.
pub fn layer_entries(blob: &[u8]) -> Result<Vec<LayerEntry>> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        read_tar(MultiGzDecoder::new(blob))
    } else {
        read_tar(blob)
    }
}

fn read_tar(reader: impl Read) -> Result<Vec<LayerEntry>> {
    let bad = |e: std::io::Error| Error::Other(format!("reading a layer tar: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header().clone();
        let raw_path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = raw_path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let name = path.rsplit('/').next().unwrap_or_default();
        let mut kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::HardLink,
            tar::EntryType::Char => EntryKind::Char,
            tar::EntryType::Block => EntryKind::Block,
            tar::EntryType::Fifo => EntryKind::Fifo,
            _ => EntryKind::Other,
        };
        if name == ".wh..wh..opq" {
            kind = EntryKind::Opaque;
        } else if name.starts_with(".wh.") {
            kind = EntryKind::Whiteout;
        }
        let link = entry
            .link_name()
            .map_err(bad)?
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                if let Ok(key) = ext.key()
                    && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.insert(attr.to_owned(), hex::encode(ext.value_bytes()));
                }
            }
        }
        let device = matches!(kind, EntryKind::Char | EntryKind::Block).then(|| {
            (
                header.device_major().ok().flatten().unwrap_or(0),
                header.device_minor().ok().flatten().unwrap_or(0),
            )
        });
        let (size, sha256) = if kind == EntryKind::File {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                let got = entry.read(&mut buf).map_err(bad)?;
                if got == 0 {
                    break;
                }
                h.update(&buf[..got]);
                n += got as u64;
            }
            (n, hex::encode(h.finalize()))
        } else {
            (0, String::new())
        };
        out.push(LayerEntry {
            path,
            kind,
            mode: header.mode().map_err(bad)? & 0o7777,
            uid: header.uid().map_err(bad)?,
            gid: header.gid().map_err(bad)?,
            link,
            size,
            sha256,
            device,
            xattrs,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_gzip_layers_with_whiteouts() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o640);
        h.set_uid(1);
        h.set_gid(2);
        h.set_size(2);
        b.append_data(&mut h, "a/f", &b"hi"[..]).unwrap();
        let mut w = tar::Header::new_gnu();
        w.set_entry_type(tar::EntryType::Regular);
        w.set_size(0);
        w.set_mode(0o644);
        w.set_uid(0);
        w.set_gid(0);
        b.append_data(&mut w, "a/.wh.gone", &b""[..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        for blob in [&plain, &gz] {
            let e = layer_entries(blob).unwrap();
            assert_eq!(e.len(), 2);
            assert_eq!(e[0].kind, EntryKind::File);
            assert_eq!((e[0].mode, e[0].uid, e[0].gid, e[0].size), (0o640, 1, 2, 2));
            assert!(e[0].sha256.starts_with("8f434346"), "{}", e[0]);
            assert_eq!(e[1].kind, EntryKind::Whiteout);
        }
    }
}
