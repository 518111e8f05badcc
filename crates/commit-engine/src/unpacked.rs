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

use std::collections::{HashMap, HashSet};
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

/// Reads `layer`'s blob and sums its tar's sizes (see [`tar_size`]; the
/// blob is read a second time only if two entries' paths hash alike).
async fn measure(c: &Containerd, layer: &Descriptor) -> Result<i64> {
    let c = c.clone();
    let layer = layer.clone();
    let digest = layer.digest.clone();
    tokio::task::spawn_blocking(move || {
        tar_size(|| -> std::io::Result<Box<dyn Read>> {
            let raw = crate::layer::BlobReader::new(c.clone(), layer.digest.clone(), layer.size);
            Ok(if layer.media_type.contains("gzip") {
                Box::new(flate2::read::MultiGzDecoder::new(raw))
            } else if layer.media_type.contains("zstd") {
                Box::new(zstd::Decoder::new(raw)?)
            } else {
                Box::new(raw)
            })
        })
    })
    .await
    .map_err(Error::task("layer measuring task"))?
    .map_err(|e| Error::Malformed(format!("layer {digest} is not a readable tar: {e}")))
}

/// Docker's `directory.Size` of what a layer tar unpacks to: regular files'
/// sizes, symlinks' target lengths, each path once (a later entry of the
/// same path replaces an earlier one); hard links, directories, devices,
/// FIFOs and whiteouts add nothing.
///
/// `open` gives the tar from its start. The first read keeps each path as
/// a 64-bit hash (8 bytes an entry: 8 MiB for a 1,000,000-file base, where
/// a map of the paths themselves took ~120 MiB); only if two hashes are
/// equal is the tar read again, keeping the real paths of those entries
/// alone, so the sum stays exact.
pub(crate) fn tar_size<R: Read>(open: impl Fn() -> std::io::Result<R>) -> std::io::Result<i64> {
    let mut total = 0u64;
    let mut keys: Vec<u64> = Vec::new();
    each_entry(open()?, |path, size| {
        total = total.saturating_add(size);
        keys.push(path_key(path));
    })?;
    keys.sort_unstable();
    let repeated: HashSet<u64> = keys
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    drop(keys);
    if !repeated.is_empty() {
        total = 0;
        let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
        each_entry(open()?, |path, size| {
            if repeated.contains(&path_key(path)) {
                last.insert(path.to_vec(), size);
            } else {
                total = total.saturating_add(size);
            }
        })?;
        total = last.values().fold(total, |t, s| t.saturating_add(*s));
    }
    Ok(i64::try_from(total).unwrap_or(i64::MAX))
}

/// Each entry of a tar: its path and what it adds to [`tar_size`].
fn each_entry(r: impl Read, mut f: impl FnMut(&[u8], u64)) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let entry = entry?;
        let size = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                entry.size()
            }
            tar::EntryType::Symlink => entry.link_name_bytes().map_or(0, |l| l.len() as u64),
            _ => 0,
        };
        f(&entry.path_bytes(), size);
    }
    Ok(())
}

/// A path's 64-bit hash (as [`Sizer`] keeps them).
fn path_key(path: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(path)
}

/// [`tar_size`] of a tar as its bytes pass by (a layer being written), so
/// a commit labels its layer with the size at once and the first `docker
/// images` after a 10 GiB commit reads no blob. Only headers and the
/// extension records that name the next entry (PAX `x`, GNU `L`/`K`) are
/// looked at; data is skipped. Bounded: paths are kept as 64-bit hashes, at
/// most [`Sizer::MAX_ENTRIES`] of them; past that, or on anything it cannot
/// read, it gives up (`None`) and the size is measured later as before.
pub(crate) struct Sizer {
    header: Vec<u8>,
    /// Data and padding bytes of the current entry still to pass.
    skip: u64,
    /// An extension record being read: its type flag, bytes so far, its
    /// length, and the padding after it.
    ext: Option<(u8, Vec<u8>, usize, u64)>,
    next_size: Option<u64>,
    next_path: Option<Vec<u8>>,
    next_link: Option<Vec<u8>>,
    sizes: HashMap<u64, u64>,
    broken: bool,
}

impl Sizer {
    /// Entries kept track of before giving up (about 2 MiB of hashes).
    pub(crate) const MAX_ENTRIES: usize = 65_536;
    /// The largest extension record read.
    const MAX_EXT: usize = 1 << 20;

    pub(crate) fn new() -> Sizer {
        Sizer {
            header: Vec::with_capacity(512),
            skip: 0,
            ext: None,
            next_size: None,
            next_path: None,
            next_link: None,
            sizes: HashMap::new(),
            broken: false,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.broken {
            if let Some((kind, buf, len, pad)) = &mut self.ext {
                let want = *len - buf.len();
                let n = want.min(data.len());
                buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                if buf.len() == *len {
                    let (kind, buf, pad) = (*kind, std::mem::take(buf), *pad);
                    self.ext = None;
                    self.skip = pad;
                    self.extension(kind, &buf);
                }
                continue;
            }
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 512 {
                let h = std::mem::replace(&mut self.header, Vec::with_capacity(512));
                self.entry(&h);
            }
        }
    }

    fn entry(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            return; // the end-of-archive blocks
        }
        let Some(field) = octal_or_binary(&h[124..136]) else {
            self.broken = true;
            return;
        };
        let size = self.next_size.take().unwrap_or(field);
        let padded = size.div_ceil(512) * 512;
        let kind = h[156];
        if matches!(kind, b'x' | b'L' | b'K') {
            match usize::try_from(size) {
                Ok(len) if len <= Self::MAX_EXT => {
                    self.ext = Some((kind, Vec::with_capacity(len), len, padded - size));
                }
                _ => self.broken = true,
            }
            return;
        }
        self.skip = padded;
        if kind == b'g' {
            return;
        }
        let path = self.next_path.take().unwrap_or_else(|| {
            let name = cstr(&h[0..100]);
            let prefix = cstr(&h[345..500]);
            if &h[257..262] == b"ustar" && !prefix.is_empty() {
                [prefix, b"/", name].concat()
            } else {
                name.to_vec()
            }
        });
        let link = self.next_link.take();
        let counted = match kind {
            b'0' | 0 | b'7' | b'S' => size,
            b'2' => link.map_or_else(|| cstr(&h[157..257]).len(), |l| l.len()) as u64,
            _ => 0,
        };
        if self.sizes.len() >= Self::MAX_ENTRIES {
            self.broken = true;
            return;
        }
        self.sizes.insert(path_key(&path), counted);
    }

    fn extension(&mut self, kind: u8, data: &[u8]) {
        match kind {
            b'L' => self.next_path = Some(cstr(data).to_vec()),
            b'K' => self.next_link = Some(cstr(data).to_vec()),
            _ => {
                // PAX records: "<len> <key>=<value>\n".
                let mut rest = data;
                while !rest.is_empty() {
                    let Some(sp) = rest.iter().position(|b| *b == b' ') else {
                        self.broken = true;
                        return;
                    };
                    let len = std::str::from_utf8(&rest[..sp])
                        .ok()
                        .and_then(|l| l.parse::<usize>().ok());
                    let Some(len) = len.filter(|l| *l > sp + 1 && *l <= rest.len()) else {
                        self.broken = true;
                        return;
                    };
                    let record = &rest[sp + 1..len];
                    let record = record.strip_suffix(b"\n").unwrap_or(record);
                    if let Some(eq) = record.iter().position(|b| *b == b'=') {
                        let (key, value) = (&record[..eq], &record[eq + 1..]);
                        match key {
                            b"path" => self.next_path = Some(value.to_vec()),
                            b"linkpath" => self.next_link = Some(value.to_vec()),
                            b"size" => {
                                match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                                    Some(v) => self.next_size = Some(v),
                                    None => self.broken = true,
                                }
                            }
                            _ => {}
                        }
                    }
                    rest = &rest[len..];
                }
            }
        }
    }

    /// The size, when every byte was read and understood.
    pub(crate) fn finish(self) -> Option<i64> {
        if self.broken || self.skip > 0 || self.ext.is_some() || !self.header.is_empty() {
            return None;
        }
        i64::try_from(self.sizes.values().sum::<u64>()).ok()
    }
}

/// A NUL-terminated header field.
fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// A numeric header field: octal digits (NUL/space padded), or base-256
/// when its first bit is set (GNU, for values past 8 GiB).
fn octal_or_binary(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let digits: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizer, fed in pieces of `step` bytes.
    fn sized(t: &[u8], step: usize) -> Option<i64> {
        let mut s = Sizer::new();
        for c in t.chunks(step) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn the_sizer_agrees_with_the_measure_however_bytes_arrive() {
        let long = "d/".to_string() + &"n".repeat(180);
        let target = "../".repeat(60) + "t";
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if link.is_empty() {
                b.append_data(&mut h, path, data).unwrap();
            } else {
                b.append_link(&mut h, path, link).unwrap();
            }
        };
        add("d/", tar::EntryType::Directory, b"", "");
        add("d/f", tar::EntryType::Regular, &[1u8; 1000], "");
        add(&long, tar::EntryType::Regular, &[2u8; 700], "");
        add("d/long-link", tar::EntryType::Symlink, b"", &target);
        add("d/short", tar::EntryType::Symlink, b"", "f");
        add("d/hard", tar::EntryType::Link, b"", "d/f");
        add("d/f", tar::EntryType::Regular, &[3u8; 10], "");
        add("d/.wh.gone", tar::EntryType::Regular, b"", "");
        let gnu = b.into_inner().unwrap();
        // PAX records as commitd's own tar writer makes them.
        let mut pax = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(4096);
        pax.append_pax_extensions([("path", long.as_bytes()), ("size", b"4096".as_slice())])
            .unwrap();
        h.set_path("short-name").unwrap();
        h.set_cksum();
        pax.append(&h, &[9u8; 4096][..]).unwrap();
        let pax = pax.into_inner().unwrap();
        for t in [&gnu, &pax] {
            let want = tar_size(|| Ok(&t[..])).unwrap();
            assert!(want > 0);
            for step in [1, 7, 511, 512, 513, 4096, t.len()] {
                assert_eq!(sized(t, step), Some(want), "step {step}");
            }
        }
        assert_eq!(
            tar_size(|| Ok(&gnu[..])).unwrap(),
            10 + 700 + target.len() as i64 + 1
        );
        assert_eq!(sized(&gnu[..gnu.len() - 1000], 4096), None, "cut short");
    }

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
        assert_eq!(tar_size(|| Ok(&t[..])).unwrap(), 16);
    }

    #[test]
    fn a_tar_is_read_again_only_when_a_path_repeats() {
        let reads = |t: &[u8]| {
            let n = std::cell::Cell::new(0);
            let size = tar_size(|| {
                n.set(n.get() + 1);
                Ok(t)
            })
            .unwrap();
            (size, n.get())
        };
        let once = tar_of(&[
            ("a", tar::EntryType::Regular, b"123", ""),
            ("b", tar::EntryType::Regular, b"45", ""),
        ]);
        assert_eq!(reads(&once), (5, 1));
        let twice = tar_of(&[
            ("a", tar::EntryType::Regular, b"123", ""),
            ("b", tar::EntryType::Regular, b"45", ""),
            ("a", tar::EntryType::Regular, b"6", ""),
        ]);
        assert_eq!(reads(&twice), (3, 2));
    }

    #[test]
    fn an_empty_layer_is_zero_and_a_broken_one_an_error() {
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        assert_eq!(tar_size(|| Ok(&empty[..])).unwrap(), 0);
        let t = tar_of(&[("f", tar::EntryType::Regular, &[7u8; 2000], "")]);
        assert!(tar_size(|| Ok(&t[..900])).is_err());
    }
}
