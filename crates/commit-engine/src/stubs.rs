//! Mount stubs: what the runtime made in a container's upper directory only
//! so that a mount of the container's OCI spec has somewhere to land.
//!
//! runc creates a missing mount destination before it mounts: an empty file
//! for a file bind mount (kubelet's `/etc/hosts`, the CRI plugin's
//! `/etc/hostname` and `/etc/resolv.conf`), a directory otherwise (`/proc`,
//! `/sys`, `/dev`, a volume's mount point), and the missing directories
//! above it. Docker makes the same entries in its container's *init layer*,
//! below the layer it commits, so they never reach an image — except volume
//! mount points, which Docker makes in the committed layer and keeps.
//!
//! [`mount_stubs`] is the one rule, used by every reader of a container's
//! changes (the commit's fast path and diff-service path, `docker diff`).
//! For each mount destination of the spec, the changed entry at that path is
//! a stub when the image does not have the path and it is
//! - an empty regular file at one of the paths Docker keeps in its init
//!   layer (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, `/etc/mtab`,
//!   `/.dockerenv`, under `/dev`): a file bind mount elsewhere is the
//!   user's, and Docker commits its mount point, or
//! - an empty, not opaque directory at a mount that is not a bind mount
//!   (`proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`, `cgroup` …). A bind
//!   mount's directory is a volume mount point: kept, as Docker keeps it.
//!
//! Then, bottom up, a changed directory above a stub is a stub too when
//! everything changed below it is a stub, it is not opaque, and the image
//! either lacks it (runc made it for the stub) or has it with the same mode
//! and owner (only its time moved, by the stub's creation). A directory
//! whose image counterpart cannot be read is kept.
//!
//! What is left out is left out of the layer and of the new image's
//! snapshot alike; the path then shows what the image has, or nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::walk::{Kind, Layout, Policy};

/// A mount of a container's OCI spec, as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecMount {
    /// The destination below the root: bytes, no leading or trailing `/`.
    pub dest: Vec<u8>,
    /// A bind mount (`type: bind`, or a `bind`/`rbind` option).
    pub bind: bool,
}

/// The mounts of an OCI runtime spec (JSON, read typed by
/// [`read_spec`](crate::container::read_spec) as every reader of a spec
/// does). The root itself and destinations that leave the root are
/// skipped.
pub(crate) fn spec_mounts(spec: &[u8]) -> Vec<SpecMount> {
    let Some(spec) = crate::container::read_spec(spec) else {
        return Vec::new();
    };
    spec.mounts()
        .iter()
        .flatten()
        .filter_map(|m| {
            let dest = clean(m.destination().as_os_str().as_bytes())?;
            let options = m.options().as_deref().unwrap_or_default();
            let bind = m.typ().as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            Some(SpecMount { dest, bind })
        })
        .collect()
}

/// `path` below the root: `.` and empty components dropped, `..` resolved
/// (`None` if it leaves the root or is the root).
fn clean(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join(&b'/'))
}

fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

/// What the rule needs to know of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub kind: MetaKind,
    /// Permission bits with set-id and sticky bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKind {
    File {
        size: u64,
    },
    Dir {
        opaque: bool,
    },
    /// Anything else (links, devices, whiteouts …): never a stub.
    Other,
}

/// Whether the image (the container's lower layers) has a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InImage {
    Yes(Meta),
    No,
    /// The image's tree cannot be read from here.
    Unknown,
}

/// A container's changes and the image under them, as the rule reads them.
pub(crate) trait Changes {
    /// The changed entry at `path`, if any.
    fn get(&self, path: &[u8]) -> Option<Meta>;
    /// The paths of the changed entries directly below the directory
    /// `path` (whiteouts and opaque markers included); `None` if they
    /// cannot be read.
    fn children(&self, path: &[u8]) -> Option<Vec<Vec<u8>>>;
    /// What the image has at `path`.
    fn in_image(&self, path: &[u8]) -> InImage;
}

/// The stubs found: paths below the root, each left out with everything
/// below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MountStubs(BTreeSet<Vec<u8>>);

impl MountStubs {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `path` (below the root, no leading `/`) is a stub or below one.
    pub(crate) fn covers(&self, path: &[u8]) -> bool {
        let mut p = path;
        loop {
            if self.0.contains(p) {
                return true;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return false,
            }
        }
    }

    /// The stubs, as `/`-rooted paths (lossy UTF-8), in byte order.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|p| format!("/{}", String::from_utf8_lossy(p)))
            .collect()
    }
}

impl Policy for MountStubs {
    fn include(&self, path: &[u8], _: Kind, _: &rustix::fs::Stat) -> bool {
        !self.0.contains(path)
    }
}

/// The rule (see the module docs): which changed entries exist only as the
/// runtime's mount targets of `mounts`.
pub(crate) fn mount_stubs(mounts: &[SpecMount], tree: &dyn Changes) -> MountStubs {
    let mut stubs = BTreeSet::new();
    for m in mounts {
        let Some(meta) = tree.get(&m.dest) else {
            continue;
        };
        if let InImage::Yes(_) = tree.in_image(&m.dest) {
            continue; // the runtime mounted over the image's entry
        }
        let stub = match meta.kind {
            MetaKind::File { size } => size == 0 && in_init_layer(&m.dest),
            MetaKind::Dir { opaque: false } if !m.bind => {
                tree.children(&m.dest).is_some_and(|c| c.is_empty())
            }
            _ => false,
        };
        if stub {
            stubs.insert(m.dest.clone());
        }
    }
    // Directories above stubs, deepest first.
    let mut candidates: BTreeSet<(usize, Vec<u8>)> = stubs
        .iter()
        .filter_map(|s| parent(s))
        .map(|p| (depth(p), p.to_vec()))
        .collect();
    while let Some((_, dir)) = candidates.pop_last() {
        if stubs.contains(&dir) {
            continue;
        }
        let Some(Meta {
            kind: MetaKind::Dir { opaque: false },
            mode,
            uid,
            gid,
        }) = tree.get(&dir)
        else {
            continue;
        };
        let only_stubs = tree
            .children(&dir)
            .is_some_and(|c| c.iter().all(|p| stubs.contains(p)));
        let image_same = match tree.in_image(&dir) {
            InImage::No => true,
            InImage::Yes(m) => {
                matches!(m.kind, MetaKind::Dir { .. }) && (m.mode, m.uid, m.gid) == (mode, uid, gid)
            }
            InImage::Unknown => false,
        };
        if only_stubs && image_same {
            if let Some(up) = parent(&dir) {
                candidates.insert((depth(up), up.to_vec()));
            }
            stubs.insert(dir);
        }
    }
    MountStubs(stubs)
}

/// The files Docker makes in a container's init layer (moby's
/// `initlayer.Setup` and the container's `/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf`), and anything under `/dev` (a tmpfs in every
/// runtime spec): mount targets Docker never commits. A file bind mount
/// anywhere else is the user's, and Docker keeps its mount point in the
/// committed layer (`-v /dev/null:/winning` commits an empty `/winning`).
fn in_init_layer(dest: &[u8]) -> bool {
    const FILES: [&[u8]; 6] = [
        b"etc/hosts",
        b"etc/hostname",
        b"etc/resolv.conf",
        b"etc/mtab",
        b".dockerenv",
        b"dev/console",
    ];
    FILES.contains(&dest) || dest.starts_with(b"dev/")
}

fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count()
}

/// The parsed mounts of a container's spec and the rule applied to an
/// overlay upper directory with its lower directories: the fast path's
/// (and `docker diff`'s) reading of a container.
pub(crate) fn in_upper(spec: &[u8], upper: &Path, lower: &[PathBuf], layout: Layout) -> MountStubs {
    let mounts = spec_mounts(spec);
    if mounts.is_empty() {
        return MountStubs::default();
    }
    mount_stubs(
        &mounts,
        &UpperDir {
            upper,
            lower: Some(lower),
            layout,
        },
    )
}

/// An overlay upper directory and the lower directories under it (top
/// first; `None`: not readable from here).
pub(crate) struct UpperDir<'a> {
    pub upper: &'a Path,
    pub lower: Option<&'a [PathBuf]>,
    pub layout: Layout,
}

/// `lstat` of `root/path`, refusing to pass through a symlink or anything
/// but a directory on the way.
fn lstat_below(root: &Path, path: &[u8]) -> Option<std::fs::Metadata> {
    let mut at = root.to_path_buf();
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(OsStr::from_bytes(part));
        let md = std::fs::symlink_metadata(&at).ok()?;
        if i + 1 < parts.len() && !md.file_type().is_dir() {
            return None;
        }
        if i + 1 == parts.len() {
            return Some(md);
        }
    }
    None
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn meta_of(md: &std::fs::Metadata, opaque: bool) -> Meta {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        MetaKind::File { size: md.len() }
    } else if ft.is_dir() {
        MetaKind::Dir { opaque }
    } else {
        MetaKind::Other
    };
    Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    }
}

impl Changes for UpperDir<'_> {
    fn get(&self, path: &[u8]) -> Option<Meta> {
        let md = lstat_below(self.upper, path)?;
        let opaque = md.is_dir()
            && crate::overlay::is_opaque(self.layout, &self.upper.join(OsStr::from_bytes(path)));
        Some(meta_of(&md, opaque))
    }

    fn children(&self, path: &[u8]) -> Option<Vec<Vec<u8>>> {
        let md = lstat_below(self.upper, path)?;
        if !md.is_dir() {
            return None;
        }
        let dir = std::fs::read_dir(self.upper.join(OsStr::from_bytes(path))).ok()?;
        dir.map(|e| {
            e.ok()
                .map(|e| [path, b"/", e.file_name().as_bytes()].concat())
        })
        .collect()
    }

    fn in_image(&self, path: &[u8]) -> InImage {
        let Some(lower) = self.lower else {
            return InImage::Unknown;
        };
        for dir in lower {
            if !dir.is_dir() {
                return InImage::Unknown;
            }
            if let Some(md) = lstat_below(dir, path) {
                if is_whiteout(&md) {
                    return InImage::No;
                }
                return InImage::Yes(meta_of(&md, false));
            }
        }
        InImage::No
    }
}

/// A layer tar's entries (as containerd's diff service wrote them) over the
/// image's lower directories, for the diff-service path.
pub(crate) struct TarChanges {
    entries: BTreeMap<Vec<u8>, Meta>,
    children: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The image's directories, top first (`None`: not readable here).
    pub lower: Option<Vec<PathBuf>>,
}

impl TarChanges {
    /// Reads the headers of an uncompressed layer tar.
    pub(crate) fn read(tar: impl Read, lower: Option<Vec<PathBuf>>) -> io::Result<Self> {
        let mut entries = BTreeMap::new();
        let mut children: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            let entry = entry?;
            let Some(path) = clean(&entry.path_bytes()) else {
                continue;
            };
            let h = entry.header();
            let name = path.rsplit(|&b| b == b'/').next().unwrap_or(&path);
            let up = parent(&path).unwrap_or(b"").to_vec();
            if name == crate::walk::OPAQUE_MARKER {
                if let Some(Meta {
                    kind: MetaKind::Dir { opaque },
                    ..
                }) = entries.get_mut(&up)
                {
                    *opaque = true;
                }
            }
            let kind = match h.entry_type() {
                _ if name.starts_with(crate::walk::WHITEOUT_PREFIX) => MetaKind::Other,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    MetaKind::File { size: h.size()? }
                }
                tar::EntryType::Directory => MetaKind::Dir { opaque: false },
                _ => MetaKind::Other,
            };
            let meta = Meta {
                kind,
                mode: h.mode()? & 0o7777,
                uid: u32::try_from(h.uid()?).unwrap_or(u32::MAX),
                gid: u32::try_from(h.gid()?).unwrap_or(u32::MAX),
            };
            children.entry(up).or_default().push(path.clone());
            entries.insert(path, meta);
        }
        Ok(Self {
            entries,
            children,
            lower,
        })
    }

    /// Whether any of `mounts` is a changed path.
    pub(crate) fn touches(&self, mounts: &[SpecMount]) -> bool {
        mounts.iter().any(|m| self.entries.contains_key(&m.dest))
    }
}

impl Changes for TarChanges {
    fn get(&self, path: &[u8]) -> Option<Meta> {
        self.entries.get(path).copied()
    }

    fn children(&self, path: &[u8]) -> Option<Vec<Vec<u8>>> {
        Some(self.children.get(path).cloned().unwrap_or_default())
    }

    fn in_image(&self, path: &[u8]) -> InImage {
        UpperDir {
            upper: Path::new("/nonexistent"),
            lower: self.lower.as_deref(),
            layout: Layout::Plain,
        }
        .in_image(path)
    }
}

/// Copies an uncompressed tar from `r` to `w` without the entries `stubs`
/// covers (with their PAX and GNU long-name headers); every other block is
/// copied as it is.
#[cfg(test)]
pub(crate) fn filter_tar(r: impl Read, w: &mut dyn Write, stubs: &MountStubs) -> io::Result<u64> {
    rewrite_tar(r, w, &|p| stubs.covers(p), None)
}

/// Copies an uncompressed tar from `r` to `w` without the entries whose
/// cleaned path `drop` names (with their PAX and GNU long-name headers),
/// and with every modification time after `clamp` (seconds) set to it (in
/// the ustar header and PAX records; PAX access and change times are left
/// out). Every other block is copied as it is. Returns the entries dropped.
pub(crate) fn rewrite_tar(
    mut r: impl Read,
    w: &mut dyn Write,
    drop: &dyn Fn(&[u8]) -> bool,
    clamp: Option<i64>,
) -> io::Result<u64> {
    let mut pending: Vec<u8> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut dropped = 0u64;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut r, &mut header)? {
            // A tar without its end marker: end it as it ends.
            w.write_all(&pending)?;
            return Ok(dropped);
        }
        if header.iter().all(|&b| b == 0) {
            w.write_all(&pending)?;
            w.write_all(&header)?;
            io::copy(&mut r, w)?;
            return Ok(dropped);
        }
        let size = header_size(&header)?;
        let padded = size.div_ceil(512) * 512;
        match header[156] {
            b'x' | b'L' | b'K' => {
                let mut data = vec![0u8; usize::try_from(padded).map_err(io::Error::other)?];
                r.read_exact(&mut data)?;
                let body = &data[..usize::try_from(size).map_err(io::Error::other)?];
                match header[156] {
                    b'x' => {
                        if let Some(p) = pax_path(body) {
                            long_name = Some(p);
                        }
                    }
                    b'L' => {
                        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                        long_name.get_or_insert_with(|| body[..end].to_vec());
                    }
                    _ => {}
                }
                match (header[156], clamp) {
                    (b'x', Some(t)) => {
                        let body = clamp_pax(body, t);
                        let mut h = header;
                        set_octal(&mut h[124..136], body.len() as u64);
                        set_checksum(&mut h);
                        pending.extend_from_slice(&h);
                        pending.extend_from_slice(&body);
                        pending.resize(pending.len().div_ceil(512) * 512, 0);
                    }
                    _ => {
                        pending.extend_from_slice(&header);
                        pending.extend_from_slice(&data);
                    }
                }
            }
            _ => {
                let path = long_name.take().unwrap_or_else(|| ustar_path(&header));
                let out = clean(&path).is_some_and(|p| drop(&p));
                if out {
                    io::copy(&mut (&mut r).take(padded), &mut io::sink())?;
                    dropped += 1;
                } else {
                    if let Some(t) = clamp {
                        clamp_header(&mut header, t);
                    }
                    w.write_all(&pending)?;
                    w.write_all(&header)?;
                    let copied = io::copy(&mut (&mut r).take(padded), w)?;
                    if copied != padded {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "layer tar ended inside an entry",
                        ));
                    }
                }
                pending.clear();
            }
        }
    }
}

/// An octal numeric field: digits, then a NUL.
fn set_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let text = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}");
    h[148..154].copy_from_slice(&text.as_bytes()[text.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';
}

/// The ustar header's modification time, at most `t`.
fn clamp_header(h: &mut [u8; 512], t: i64) {
    let field = &h[136..148];
    let mtime = if field[0] & 0x80 != 0 {
        i64::MAX // base-256: beyond the octal field, later than any clamp
    } else {
        let text: String = field
            .iter()
            .take_while(|&&b| b != 0)
            .filter(|&&b| b != b' ')
            .map(|&b| b as char)
            .collect();
        i64::from_str_radix(&text, 8).unwrap_or(i64::MAX)
    };
    if mtime > t {
        set_octal(&mut h[136..148], u64::try_from(t.max(0)).unwrap_or(0));
        set_checksum(h);
    }
}

/// A PAX body with `mtime` at most `t`, and no `atime` or `ctime`.
fn clamp_pax(mut body: &[u8], t: i64) -> Vec<u8> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let Some(space) = body.iter().position(|&b| b == b' ') else {
            out.extend_from_slice(body);
            break;
        };
        let len: usize = match std::str::from_utf8(&body[..space])
            .ok()
            .and_then(|l| l.parse().ok())
        {
            Some(l) if l > space && l <= body.len() => l,
            _ => {
                out.extend_from_slice(body);
                break;
            }
        };
        let record = &body[space + 1..len];
        let kv = record.strip_suffix(b"\n").unwrap_or(record);
        let times = kv.starts_with(b"atime=") || kv.starts_with(b"ctime=");
        if times {
            // Left out: the layer records modification times only.
        } else if let Some(v) = kv.strip_prefix(b"mtime=") {
            let later = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                .is_none_or(|sec| sec >= t);
            if later {
                out.extend_from_slice(&pax_record(b"mtime", t.to_string().as_bytes()));
            } else {
                out.extend_from_slice(&body[..len]);
            }
        } else {
            out.extend_from_slice(&body[..len]);
        }
        body = &body[len..];
    }
    out
}

/// One PAX record: `LEN key=value\n`, LEN counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = len.to_string().into_bytes();
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match r.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "layer tar ended inside a header",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The size field: octal, or base-256 when its first byte has the high bit.
fn header_size(h: &[u8; 512]) -> io::Result<u64> {
    let field = &h[124..136];
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or_else(|| io::Error::other("tar size field overflows"))?;
        }
        return Ok(n);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(&String::from_utf8_lossy(&text), 8)
        .map_err(|e| io::Error::other(format!("tar size field: {e}")))
}

/// `prefix/name` of a ustar header (`name` alone otherwise).
fn ustar_path(h: &[u8; 512]) -> Vec<u8> {
    let field = |r: std::ops::Range<usize>| {
        let f = &h[r];
        f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec()
    };
    let name = field(0..100);
    if &h[257..262] == b"ustar" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            return [prefix.as_slice(), b"/", &name].concat();
        }
    }
    name
}

/// The `path` record of a PAX extended header.
fn pax_path(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut path = None;
    while !body.is_empty() {
        let space = body.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
        if len <= space || len > body.len() {
            return path;
        }
        let record = &body[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            path = Some(v.to_vec());
        }
        body = &body[len..];
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        changed: BTreeMap<Vec<u8>, Meta>,
        image: BTreeMap<Vec<u8>, Meta>,
    }

    fn file(size: u64) -> Meta {
        Meta {
            kind: MetaKind::File { size },
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
    fn dir(mode: u32) -> Meta {
        Meta {
            kind: MetaKind::Dir { opaque: false },
            mode,
            uid: 0,
            gid: 0,
        }
    }

    impl Changes for Fake {
        fn get(&self, path: &[u8]) -> Option<Meta> {
            self.changed.get(path).copied()
        }
        fn children(&self, path: &[u8]) -> Option<Vec<Vec<u8>>> {
            Some(
                self.changed
                    .keys()
                    .filter(|k| parent(k) == Some(path))
                    .cloned()
                    .collect(),
            )
        }
        fn in_image(&self, path: &[u8]) -> InImage {
            self.image
                .get(path)
                .map_or(InImage::No, |m| InImage::Yes(*m))
        }
    }

    fn fake(changed: &[(&str, Meta)], image: &[(&str, Meta)]) -> Fake {
        let map = |v: &[(&str, Meta)]| v.iter().map(|(p, m)| (p.as_bytes().to_vec(), *m)).collect();
        Fake {
            changed: map(changed),
            image: map(image),
        }
    }

    fn mounts(spec: &str) -> Vec<SpecMount> {
        spec_mounts(spec.as_bytes())
    }

    const SPEC: &str = r#"{"mounts":[
        {"destination":"/proc","type":"proc","source":"proc"},
        {"destination":"/dev","type":"tmpfs"},
        {"destination":"/etc/hosts","type":"bind","source":"/k/etc-hosts","options":["rbind","rw"]},
        {"destination":"/etc/hostname","type":"bind","options":["rbind"]},
        {"destination":"/data/scratch/","type":"bind","options":["rbind"]},
        {"destination":"/","type":"bind"},
        {"destination":"/../x/../","type":"bind"}
    ]}"#;

    #[test]
    fn spec_mounts_are_cleaned() {
        let m = mounts(SPEC);
        let dests: Vec<_> = m
            .iter()
            .map(|m| (String::from_utf8_lossy(&m.dest).into_owned(), m.bind))
            .collect();
        assert_eq!(
            dests,
            [
                ("proc".into(), false),
                ("dev".into(), false),
                ("etc/hosts".into(), true),
                ("etc/hostname".into(), true),
                ("data/scratch".into(), true),
            ]
        );
        assert!(spec_mounts(b"not json").is_empty());
    }

    #[test]
    fn stubs_their_parents_and_kept_volumes() {
        // A bare image: runc made /etc, both files, /proc, /data/scratch.
        let t = fake(
            &[
                ("etc", dir(0o755)),
                ("etc/hosts", file(0)),
                ("etc/hostname", file(0)),
                ("proc", dir(0o755)),
                ("data", dir(0o755)),
                ("data/scratch", dir(0o755)),
                ("model", file(8)),
            ],
            &[],
        );
        let s = mount_stubs(&mounts(SPEC), &t);
        assert_eq!(s.paths(), ["/etc", "/etc/hostname", "/etc/hosts", "/proc"]);
        assert!(s.covers(b"etc/hosts") && !s.covers(b"data/scratch") && !s.covers(b"etcx"));
    }

    #[test]
    fn a_users_file_bind_mount_point_is_kept_as_docker_keeps_it() {
        // `-v /dev/null:/winning`, `-v x:/media/dev/null`: Docker commits both
        // empty mount points; only its init layer's files are left out.
        let spec = r#"{"mounts":[
            {"destination":"/winning","type":"bind","options":["rbind"]},
            {"destination":"/media/dev/null","type":"bind","options":["rbind"]},
            {"destination":"/etc/resolv.conf","type":"bind","options":["rbind"]},
            {"destination":"/dev/termination-log","type":"bind","options":["rbind"]}
        ]}"#;
        let t = fake(
            &[
                ("winning", file(0)),
                ("media", dir(0o755)),
                ("media/dev", dir(0o755)),
                ("media/dev/null", file(0)),
                ("etc", dir(0o755)),
                ("etc/resolv.conf", file(0)),
                ("dev", dir(0o755)),
                ("dev/termination-log", file(0)),
            ],
            &[],
        );
        let s = mount_stubs(&mounts(spec), &t);
        assert_eq!(
            s.paths(),
            ["/dev", "/dev/termination-log", "/etc", "/etc/resolv.conf"]
        );
    }

    #[test]
    fn what_the_user_or_the_image_has_stays() {
        // The image has /etc (same mode) and /etc/hostname; the user wrote /etc/motd.
        let t = fake(
            &[
                ("etc", dir(0o755)),
                ("etc/hosts", file(0)),
                ("etc/motd", file(3)),
                ("etc/hostname", file(0)),
            ],
            &[("etc", dir(0o755)), ("etc/hostname", file(5))],
        );
        assert_eq!(mount_stubs(&mounts(SPEC), &t).paths(), ["/etc/hosts"]);
        // Only stubs below, but the user changed /etc's mode.
        let t = fake(
            &[("etc", dir(0o700)), ("etc/hosts", file(0))],
            &[("etc", dir(0o755))],
        );
        assert_eq!(mount_stubs(&mounts(SPEC), &t).paths(), ["/etc/hosts"]);
        // Same mode: only the time moved; left out with its stub.
        let t = fake(
            &[("etc", dir(0o755)), ("etc/hosts", file(0))],
            &[("etc", dir(0o755))],
        );
        assert_eq!(
            mount_stubs(&mounts(SPEC), &t).paths(),
            ["/etc", "/etc/hosts"]
        );
        // Something at a mount destination that is not empty stays.
        let t = fake(
            &[
                ("proc", dir(0o755)),
                ("proc/x", file(1)),
                ("etc/hosts", file(4)),
            ],
            &[],
        );
        assert!(mount_stubs(&mounts(SPEC), &t).is_empty());
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_filtered_by_stubs() {
        let long = format!("data/{}/f", "d".repeat(150));
        let tar = tar_of(&[
            ("etc/", b""),
            ("etc/hosts", b""),
            ("etc/hostname", b""),
            ("proc/", b""),
            (&long, b"long"),
            ("model", b"trained\n"),
        ]);
        let changes = TarChanges::read(&tar[..], Some(Vec::new())).unwrap();
        assert!(changes.touches(&mounts(SPEC)));
        let stubs = mount_stubs(&mounts(SPEC), &changes);
        assert_eq!(
            stubs.paths(),
            ["/etc", "/etc/hostname", "/etc/hosts", "/proc"]
        );
        let mut out = Vec::new();
        assert_eq!(filter_tar(&tar[..], &mut out, &stubs).unwrap(), 4);
        let mut a = tar::Archive::new(&out[..]);
        let kept: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(kept, [long.as_str(), "model"]);
        // Nothing to leave out: the same bytes.
        let mut same = Vec::new();
        filter_tar(&tar[..], &mut same, &MountStubs::default()).unwrap();
        assert_eq!(same, tar);
    }

    #[test]
    fn tar_rewritten_with_times_clamped() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, mtime, pax) in [
            ("old", 1_000, None),
            ("new", 2_000_000_000, None),
            ("paxed", 2_000_000_000, Some("2000000000.5")),
            ("tmp/x", 2_000_000_000, None),
        ] {
            if let Some(v) = pax {
                b.append_pax_extensions([("mtime", v.as_bytes()), ("atime", v.as_bytes())])
                    .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(1);
            h.set_mtime(mtime);
            b.append_data(&mut h, path, &b"x"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut out = Vec::new();
        let dropped = rewrite_tar(
            &tar[..],
            &mut out,
            &|p| p.starts_with(b"tmp/"),
            Some(1_700_000_000),
        )
        .unwrap();
        assert_eq!(dropped, 1);
        let mut a = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let pax: Vec<(String, String)> = match e.pax_extensions().unwrap() {
                Some(x) => x
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key().unwrap().to_string(), r.value().unwrap().to_string())
                    })
                    .collect(),
                None => Vec::new(),
            };
            let h = e.header();
            assert!(h.cksum().unwrap() > 0);
            seen.push((
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().mtime().unwrap(),
                pax,
            ));
        }
        assert_eq!(
            seen,
            [
                ("old".to_string(), 1_000, vec![]),
                ("new".to_string(), 1_700_000_000, vec![]),
                (
                    "paxed".to_string(),
                    1_700_000_000,
                    vec![("mtime".to_string(), "1700000000".to_string())]
                ),
            ]
        );
    }
}
