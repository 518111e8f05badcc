//! `docker diff`: what a container changed in its image's filesystem, as
//! Docker lists it (`Path`, `Kind`: modified, added, deleted).
//!
//! **What is listed is what a commit captures.** The changes come from the
//! same reader as the commit's layer: the overlay upper directory walked by
//! [`crate::walk`] (same layout, same entries left out: sockets, the
//! runtime's mount stubs by the commit's own rule, [`crate::stubs`]), or, when the fast path does not
//! apply (other snapshotters, an upper directory not visible here, overlay
//! features the walk does not read), the tar containerd's diff service
//! makes of the snapshot. Each entry is then classified against the
//! container's lower layers as Docker's differ (`archive.ChangesDirs`,
//! which Docker's overlay2 driver uses) classifies it:
//! - a whiteout is a deletion of what it hides; an opaque directory deletes
//!   every entry of the lower directory it replaces that it does not hold
//!   again, recursively (Docker compares the whole trees);
//! - any other entry is added, or modified when the lower layers have that
//!   path (whatever its type was);
//! - a directory that existed below is listed as modified only when its
//!   mode or owner changed or something below it is listed: Docker ignores
//!   a directory's times and size (moby#9874), so a directory copied up
//!   only because an entry was made and removed in it is not listed.
//!
//! Where Docker compares attributes and this lists the upper directory, a
//! file copied up without a visible change (opened for writing and left as
//! it was, an xattr set) is listed as modified: the commit would capture it.
//!
//! Entries come in walk order: a directory before its contents, names in
//! byte order, deletions of entries an opaque directory hides after that
//! directory's own entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::Container;
use containerd_client::types::Mount;
use rustix::fs::{self as rfs, FileType, Stat};
use tracing::debug;

use crate::client::Containerd;
use crate::container;
use crate::diff;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::overlay;
use crate::snapshot::{self, Snapshots};
use crate::stubs;
use crate::walk::{self, Entry, Kind, Layout, Policy, Visit, Walk, WalkError};
use docker_format::image::media_type;

/// What happened to a path (Docker's `archive.ChangeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Docker's 0.
    Modified,
    /// Docker's 1.
    Added,
    /// Docker's 2.
    Deleted,
}

impl ChangeKind {
    /// Docker's number for it.
    pub fn code(self) -> u8 {
        match self {
            ChangeKind::Modified => 0,
            ChangeKind::Added => 1,
            ChangeKind::Deleted => 2,
        }
    }
}

/// One changed path: `path` starts with `/`; bytes that are not UTF-8
/// are shown as U+FFFD, as Go's JSON encoder shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// Leaves out what a tar holds under a mount stub (a tar is not walked:
/// a stub directory's contents come as entries of their own).
struct Covered<'a>(&'a stubs::MountStubs);

impl Policy for Covered<'_> {
    fn include(&self, path: &[u8], _: Kind, _: &Stat) -> bool {
        !self.0.covers(path)
    }
}

/// The changes of container `query` (ID, name or unique ID prefix).
pub(crate) async fn changes(
    c: &Containerd,
    query: &str,
    fast_path: bool,
    lease_expiry: std::time::Duration,
) -> Result<Vec<Change>> {
    let ct = container::resolve(c, query).await?;
    if ct.snapshot_key.is_empty() {
        return Err(Error::Conflict(format!(
            "container {} has no root filesystem snapshot",
            ct.id
        )));
    }
    let sn = Snapshots::new(c, container::snapshotter_of(&ct.snapshotter));
    let info = sn.stat(&ct.snapshot_key).await?;
    let spec = ct
        .spec
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_default();
    if fast_path && snapshot::is_active(&info) {
        match upper_of(&sn.mounts(&ct.snapshot_key).await?, &info) {
            Ok(dirs) => {
                let spec = spec.clone();
                let run = tokio::task::spawn_blocking(move || {
                    // The commit's rule, read as the commit reads it.
                    let stubs = stubs::in_upper(&spec, &dirs.upper, &dirs.lower, dirs.layout);
                    let upper = read_upper(&dirs.upper, dirs.layout, &stubs)?;
                    let lower = Lower::new(dirs.lower, dirs.layout);
                    Ok::<_, WalkError>(classify(&upper, &lower))
                });
                match run.await.map_err(Error::task("diff task"))? {
                    Ok(changes) => return Ok(changes),
                    Err(WalkError::Unsupported(why)) => {
                        debug!(container = %ct.id, %why, "upper directory not readable; using the diff service");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(why) => {
                debug!(container = %ct.id, %why, "no upper directory to read; using the diff service");
            }
        }
    }
    let lease = Lease::create(c, lease_expiry).await?;
    let result = by_service(c, &sn, &ct, &info, &lease, spec).await;
    lease.release().await;
    result
}

/// The upper and lower directories of an active snapshot, when readable
/// here.
fn upper_of(
    mounts: &[Mount],
    info: &snapshot::Info,
) -> std::result::Result<overlay::OverlayDirs, String> {
    let dirs = overlay::upper_dirs(mounts, &info.parent)?;
    if !dirs.upper.is_dir() || dirs.lower.iter().any(|l| !l.is_dir()) {
        return Err(format!(
            "{} is not readable from here",
            dirs.upper.display()
        ));
    }
    Ok(dirs)
}

/// Through containerd's diff service: the snapshot's layer tar (under the
/// lease, gone with it) read against the parent's view.
async fn by_service(
    c: &Containerd,
    sn: &Snapshots<'_>,
    ct: &Container,
    info: &snapshot::Info,
    lease: &Lease,
    spec: Vec<u8>,
) -> Result<Vec<Change>> {
    let layer = diff::capture(
        c,
        &lease.id(),
        sn,
        &ct.snapshot_key,
        snapshot::is_active(info),
        &info.parent,
        media_type::OCI_LAYER_TAR,
    )
    .await?;
    let view = format!("{}-changes-view-{}", ct.id, crate::unique());
    let (lowers, layout) = if info.parent.is_empty() {
        (Vec::new(), Layout::Plain)
    } else {
        let mounts = sn.view(&lease.id(), &view, &info.parent).await?;
        let read = lowers_of(&mounts);
        sn.remove_quietly(&view).await;
        read.map_err(|why| {
            Error::Conflict(format!(
                "cannot list the changes of container {}: its image's layers are not readable here ({why})",
                ct.id
            ))
        })?
    };
    let reader = || {
        crate::layer::BlobReader::new(
            c.clone(),
            layer.descriptor.digest.clone(),
            layer.descriptor.size,
        )
    };
    let (first, second) = (reader(), reader());
    let mounts = stubs::spec_mounts(&spec);
    tokio::task::spawn_blocking(move || {
        // The commit's rule, read from the same tar as the commit's.
        let mut found = stubs::MountStubs::default();
        if !mounts.is_empty() {
            let bad = |e| Error::io("reading the diff service's layer", e);
            let tree = stubs::TarChanges::read(first, Some(lowers.clone())).map_err(bad)?;
            if tree.touches(&mounts) {
                found = stubs::mount_stubs(&mounts, &tree);
            }
        }
        let upper = read_tar(second, &Covered(&found))?;
        Ok(classify(&upper, &Lower::new(lowers, layout)))
    })
    .await
    .map_err(Error::task("diff task"))?
}

/// The directories of a read-only view (the parent's layers), top first.
fn lowers_of(mounts: &[Mount]) -> std::result::Result<(Vec<PathBuf>, Layout), String> {
    let (dirs, layout) = overlay::view(mounts)?;
    match dirs.iter().find(|d| !d.is_dir()) {
        Some(d) => Err(format!("{} is not a directory here", d.display())),
        None => Ok((dirs, layout)),
    }
}

/// An entry of the upper tree, as far as classifying it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upper {
    Whiteout,
    /// A directory; `meta` is `None` for one only implied by its contents
    /// (a tar need not hold the parents of its entries).
    Dir {
        meta: Option<Meta>,
        opaque: bool,
    },
    Other,
}

/// What Docker compares of a directory: type and mode bits, owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Meta {
    fn of(st: &Stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// The upper tree: entries by path (relative, no leading `/`), and each
/// directory's children in name order.
#[derive(Debug, Default)]
struct UpperTree {
    entries: HashMap<Vec<u8>, Upper>,
    children: HashMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>>,
}

impl UpperTree {
    /// Adds an entry, and every parent it implies.
    fn insert(&mut self, path: &[u8], e: Upper) {
        let path = trim(path);
        if path.is_empty() {
            return;
        }
        let mut child = path.to_vec();
        let mut first = true;
        loop {
            let parent = match child.iter().rposition(|&b| b == b'/') {
                Some(i) => child[..i].to_vec(),
                None => Vec::new(),
            };
            let new = self
                .children
                .entry(parent.clone())
                .or_default()
                .insert(child.clone());
            if first {
                match (self.entries.get_mut(&child), &e) {
                    // A directory implied before it came: now it has its own.
                    (Some(Upper::Dir { meta, opaque }), Upper::Dir { meta: m, opaque: o }) => {
                        *meta = meta.or(*m);
                        *opaque |= *o;
                    }
                    _ => {
                        self.entries.insert(child.clone(), e.clone());
                    }
                }
                first = false;
            } else if new || !self.entries.contains_key(&child) {
                self.entries.entry(child.clone()).or_insert(Upper::Dir {
                    meta: None,
                    opaque: false,
                });
            }
            if parent.is_empty() {
                break;
            }
            child = parent;
        }
    }

    fn mark_opaque(&mut self, dir: &[u8]) {
        let dir = trim(dir);
        if dir.is_empty() {
            return;
        }
        self.insert(
            dir,
            Upper::Dir {
                meta: None,
                opaque: true,
            },
        );
    }
}

fn trim(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let [b'/', rest @ ..] | [b'.', b'/', rest @ ..] = p {
        p = rest;
    }
    while let [rest @ .., b'/'] = p {
        p = rest;
    }
    p
}

/// Walks an upper directory as the commit does (entries left out by
/// `policy` are not there).
fn read_upper(root: &Path, layout: Layout, policy: &dyn Policy) -> Result<UpperTree, WalkError> {
    struct Collect(UpperTree);
    impl Visit for Collect {
        fn entry(
            &mut self,
            e: &Entry<'_>,
            _: &OwnedFd,
            _: Option<&OwnedFd>,
        ) -> Result<(), WalkError> {
            let u = match e.kind {
                Kind::Whiteout => Upper::Whiteout,
                Kind::Dir => Upper::Dir {
                    meta: Some(Meta::of(e.stat)),
                    opaque: e.opaque,
                },
                _ => Upper::Other,
            };
            self.0.insert(e.path, u);
            Ok(())
        }
    }
    let mut c = Collect(UpperTree::default());
    Walk {
        layout,
        max_path: None,
        tolerate_vanished: true,
        policy,
    }
    .run(root, &mut c)?;
    Ok(c.0)
}

/// Reads a layer tar (OCI whiteouts) into an upper tree.
fn read_tar(r: impl Read, policy: &dyn Policy) -> Result<UpperTree> {
    let bad = |e: std::io::Error| Error::io("reading the diff service's layer", e);
    let mut tree = UpperTree::default();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path_bytes().into_owned();
        let path = trim(&path);
        if path.is_empty() {
            continue;
        }
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        if name == walk::OPAQUE_MARKER {
            tree.mark_opaque(dir);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(walk::WHITEOUT_PREFIX) {
            let mut p = dir.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(hidden);
            tree.insert(&p, Upper::Whiteout);
            continue;
        }
        let h = entry.header();
        let mode = h.mode().map_err(bad)?;
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Char => Kind::CharDevice,
            tar::EntryType::Block => Kind::BlockDevice,
            tar::EntryType::Fifo => Kind::Fifo,
            _ => Kind::File,
        };
        let ftype = match kind {
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            _ => libc::S_IFREG,
        };
        let meta = Meta {
            mode: ftype | (mode & 0o7777),
            uid: h.uid().map_err(bad)? as u32,
            gid: h.gid().map_err(bad)? as u32,
        };
        // The policy sees what a walk would have given it.
        let mut st: Stat = zeroed_stat();
        st.st_mode = meta.mode;
        st.st_uid = meta.uid;
        st.st_gid = meta.gid;
        st.st_size = h.size().unwrap_or(0) as _;
        if !policy.include(path, kind, &st) {
            continue;
        }
        let u = match kind {
            Kind::Dir => Upper::Dir {
                meta: Some(meta),
                opaque: false,
            },
            _ => Upper::Other,
        };
        tree.insert(path, u);
    }
    Ok(tree)
}

/// A `Stat` with every field zero.
fn zeroed_stat() -> Stat {
    // SAFETY: `Stat` is libc's `struct stat`: plain integers, for which
    // all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// The container's lower layers, read as overlay merges them.
struct Lower {
    layers: Vec<PathBuf>,
    layout: Layout,
}

/// A path of the lower view: its attributes (the topmost layer's) and,
/// for a directory, the layers it is merged from (top first).
struct Node {
    stat: Stat,
    layers: Vec<usize>,
}

impl Node {
    fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.stat.st_mode) == FileType::Directory
    }
}

impl Lower {
    fn new(layers: Vec<PathBuf>, layout: Layout) -> Lower {
        Lower { layers, layout }
    }

    fn root(&self) -> Option<Node> {
        let top = self.layers.first()?;
        let stat = rfs::lstat(top).ok()?;
        Some(Node {
            stat,
            layers: (0..self.layers.len()).collect(),
        })
    }

    fn at(&self, layer: usize, path: &[u8]) -> PathBuf {
        self.layers[layer].join(OsStr::from_bytes(path))
    }

    fn opaque(&self, p: &Path) -> bool {
        overlay::is_opaque(self.layout, p)
    }

    fn is_whiteout(&self, st: &Stat) -> bool {
        self.layout != Layout::Plain
            && FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
            && st.st_rdev == 0
    }

    /// `path` (relative), a child of the directory `parent`.
    fn child(&self, parent: &Node, path: &[u8]) -> Option<Node> {
        let mut found: Option<Node> = None;
        for &i in &parent.layers {
            let p = self.at(i, path);
            let Ok(st) = rfs::lstat(&p) else {
                continue;
            };
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            match &mut found {
                None => {
                    if self.is_whiteout(&st) {
                        return None;
                    }
                    let stop = !is_dir || self.opaque(&p);
                    found = Some(Node {
                        stat: st,
                        layers: if is_dir { vec![i] } else { Vec::new() },
                    });
                    if stop {
                        break;
                    }
                }
                Some(n) => {
                    if !is_dir {
                        break;
                    }
                    n.layers.push(i);
                    if self.opaque(&p) {
                        break;
                    }
                }
            }
        }
        found
    }

    /// The names a directory of the lower view holds.
    fn names(&self, dir: &Node, path: &[u8]) -> Vec<Vec<u8>> {
        let mut decided: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        for &i in &dir.layers {
            let p = self.at(i, path);
            let Ok(rd) = std::fs::read_dir(&p) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().as_bytes().to_vec();
                if decided.contains_key(&name) {
                    continue;
                }
                let visible = match rfs::lstat(e.path()) {
                    Ok(st) => !self.is_whiteout(&st),
                    Err(_) => false,
                };
                decided.insert(name, visible);
            }
        }
        decided
            .into_iter()
            .filter_map(|(n, v)| v.then_some(n))
            .collect()
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn change(path: &[u8], kind: ChangeKind) -> Change {
    Change {
        path: format!("/{}", String::from_utf8_lossy(path)),
        kind,
    }
}

/// Docker's changes of an upper tree over a lower view.
fn classify(upper: &UpperTree, lower: &Lower) -> Vec<Change> {
    let mut out = Vec::new();
    let root = lower.root();
    dir_changes(upper, lower, b"", root.as_ref(), false, &mut out);
    out
}

/// The changes below the directory `dir` of the upper tree; `below` is the
/// lower view's directory at that path, `hides` whether the upper
/// directory replaces it (opaque, or inside an opaque one).
fn dir_changes(
    upper: &UpperTree,
    lower: &Lower,
    dir: &[u8],
    below: Option<&Node>,
    hides: bool,
    out: &mut Vec<Change>,
) {
    let mut held: HashSet<&[u8]> = HashSet::new();
    if let Some(children) = upper.children.get(dir) {
        for path in children {
            let name = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => &path[i + 1..],
                None => &path[..],
            };
            held.insert(name);
            let Some(entry) = upper.entries.get(path) else {
                continue;
            };
            let under = below
                .filter(|b| b.is_dir())
                .and_then(|b| lower.child(b, path));
            match entry {
                Upper::Whiteout => {
                    if under.is_some() {
                        out.push(change(path, ChangeKind::Deleted));
                    }
                }
                Upper::Other => out.push(change(
                    path,
                    if under.is_some() {
                        ChangeKind::Modified
                    } else {
                        ChangeKind::Added
                    },
                )),
                Upper::Dir { meta, opaque } => match under {
                    None => {
                        out.push(change(path, ChangeKind::Added));
                        dir_changes(upper, lower, path, None, false, out);
                    }
                    Some(n) if !n.is_dir() => {
                        out.push(change(path, ChangeKind::Modified));
                        dir_changes(upper, lower, path, None, false, out);
                    }
                    Some(n) => {
                        let start = out.len();
                        dir_changes(upper, lower, path, Some(&n), hides || *opaque, out);
                        let own = meta.is_some_and(|m| m != Meta::of(&n.stat));
                        if own || out.len() > start {
                            out.insert(start, change(path, ChangeKind::Modified));
                        }
                    }
                },
            }
        }
    }
    if hides {
        if let Some(b) = below.filter(|b| b.is_dir()) {
            for name in lower.names(b, dir) {
                if !held.contains(name.as_slice()) {
                    out.push(change(&join(dir, &name), ChangeKind::Deleted));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mkfile(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    fn whiteout(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        rfs::mknodat(
            rfs::CWD,
            p,
            FileType::CharacterDevice,
            rfs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
    }

    fn set_opaque(p: &Path) {
        rfs::lsetxattr(p, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty()).unwrap();
    }

    fn kinds(changes: &[Change]) -> Vec<(String, u8)> {
        let mut v: Vec<_> = changes
            .iter()
            .map(|c| (c.path.clone(), c.kind.code()))
            .collect();
        v.sort();
        v
    }

    fn owned(v: &[(&str, u8)]) -> Vec<(String, u8)> {
        let mut v: Vec<_> = v.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        v.sort();
        v
    }

    /// Two lower layers and an upper with adds, edits, deletes, an opaque
    /// directory and a directory touched only by a made-and-removed file.
    #[test]
    fn classified_as_dockers_differ_does() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, up) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("up"),
        );
        for d in [&l1, &l2, &up] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Bottom layer.
        mkfile(&l2.join("etc/passwd"));
        mkfile(&l2.join("etc/group"));
        mkfile(&l2.join("opt/a/old"));
        mkfile(&l2.join("opt/b"));
        mkfile(&l2.join("gone/x"));
        mkfile(&l2.join("tmpdir/keep"));
        // Top layer deletes /etc/group.
        whiteout(&l1.join("etc/group"));
        // Upper: edit, add, delete, opaque /opt with a new /opt/a/new.
        mkfile(&up.join("etc/passwd"));
        mkfile(&up.join("etc/new"));
        whiteout(&up.join("gone"));
        std::fs::create_dir_all(up.join("opt/a")).unwrap();
        set_opaque(&up.join("opt"));
        mkfile(&up.join("opt/a/new"));
        std::fs::create_dir_all(up.join("tmpdir")).unwrap();
        // /etc/group: deleted below already; a whiteout over nothing.
        whiteout(&up.join("etc/group"));
        // Same mode and owner as below: /tmpdir's copy-up is not a change.
        let m = std::fs::metadata(l2.join("tmpdir"))
            .unwrap()
            .permissions()
            .mode();
        std::fs::set_permissions(up.join("tmpdir"), std::fs::Permissions::from_mode(m)).unwrap();
        for d in ["etc", "opt", "opt/a"] {
            let m = std::fs::metadata(l2.join(d)).unwrap().permissions().mode();
            std::fs::set_permissions(up.join(d), std::fs::Permissions::from_mode(m)).unwrap();
        }

        let tree = read_upper(&up, Layout::Overlay, &walk::Everything).unwrap();
        let lower = Lower::new(vec![l1, l2], Layout::Overlay);
        let got = classify(&tree, &lower);
        assert_eq!(
            kinds(&got),
            owned(&[
                ("/etc", 0),
                ("/etc/new", 1),
                ("/etc/passwd", 0),
                ("/gone", 2),
                ("/opt", 0),
                ("/opt/a", 0),
                ("/opt/a/new", 1),
                ("/opt/a/old", 2),
                ("/opt/b", 2),
            ])
        );
        // A directory comes before its contents.
        let pos = |p: &str| got.iter().position(|c| c.path == p).unwrap();
        assert!(pos("/etc") < pos("/etc/new"));
        assert!(pos("/opt") < pos("/opt/a") && pos("/opt/a") < pos("/opt/a/new"));
    }

    #[test]
    fn a_directory_replacing_a_file_is_modified_and_its_contents_added() {
        let t = tempfile::tempdir().unwrap();
        let (l, up) = (t.path().join("l"), t.path().join("up"));
        mkfile(&l.join("thing"));
        std::fs::create_dir_all(&up).unwrap();
        mkfile(&up.join("thing/inside"));
        let tree = read_upper(&up, Layout::Overlay, &walk::Everything).unwrap();
        let got = classify(&tree, &Lower::new(vec![l], Layout::Overlay));
        assert_eq!(kinds(&got), owned(&[("/thing", 0), ("/thing/inside", 1)]));
        // Without lower layers (FROM scratch) everything is added.
        let got = classify(&tree, &Lower::new(vec![], Layout::Plain));
        assert_eq!(kinds(&got), owned(&[("/thing", 1), ("/thing/inside", 1)]));
    }

    #[test]
    fn a_layer_tar_reads_as_the_upper_directory_does() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("l");
        mkfile(&l.join("etc/passwd"));
        mkfile(&l.join("srv/old"));
        mkfile(&l.join("bin/sh"));
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, ty: tar::EntryType, mode: u32| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            h.set_cksum();
            b.append_data(&mut h, path, &[][..]).unwrap();
        };
        // No entry for etc/ itself: it is implied.
        add("etc/passwd", tar::EntryType::Regular, 0o644);
        add("bin/.wh.sh", tar::EntryType::Regular, 0o644);
        add("srv/", tar::EntryType::Directory, 0o755);
        add("srv/.wh..wh..opq", tar::EntryType::Regular, 0o644);
        add("srv/new", tar::EntryType::Regular, 0o644);
        let bytes = b.into_inner().unwrap();
        let tree = read_tar(&bytes[..], &walk::Everything).unwrap();
        let m = std::fs::metadata(l.join("srv"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(m, 0o755, "the test's umask");
        let got = classify(&tree, &Lower::new(vec![l], Layout::Plain));
        assert_eq!(
            kinds(&got),
            owned(&[
                ("/bin", 0),
                ("/bin/sh", 2),
                ("/etc", 0),
                ("/etc/passwd", 0),
                ("/srv", 0),
                ("/srv/new", 1),
                ("/srv/old", 2),
            ])
        );
    }
}
