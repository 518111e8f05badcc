//! One walk of an upper directory, shared by everything that reads one: the
//! capture's copy into the new snapshot, the layer's tar (written from that
//! copy), and the read-ahead before the pause.
//!
//! The walk decides, once, what every entry *is* in a layer:
//! - **Names are bytes.** Paths, link targets and xattr names are never
//!   decoded; they go into the snapshot and the tar as they are.
//! - **Overlay's own markers** are read in the xattr namespace the mount
//!   uses ([`Layout`]): `trusted.overlay.*`, or `user.overlay.*` only with
//!   `userxattr`. A 0/0 character device is a whiteout; `opaque=y` marks an
//!   opaque directory; bookkeeping (`origin`, `impure`, …) is dropped;
//!   `redirect`, `metacopy` and xattr whiteouts make the walk
//!   [`WalkError::Unsupported`] (the caller falls back to the diff service).
//!   A user's xattr that overlay stored escaped (`trusted.overlay.overlay.x`)
//!   is the user's `trusted.overlay.x`.
//! - **What a layer cannot carry** is refused with
//!   [`WalkError::Unrepresentable`], naming the path: a name starting with
//!   `.wh.` (every unpacker reads it as a whiteout or opaque marker), an
//!   xattr name with `=` (a PAX record key ends at the first `=`), a path
//!   longer than containerd's applier can create (it opens whole paths), a
//!   0/0 character device outside overlay (an unpacker on overlay makes it
//!   a whiteout).
//! - **What a layer does not carry** is left out of both the layer and the
//!   snapshot: sockets, `trusted.*` xattrs (containerd's applier ignores
//!   them, Docker's differ drops them) and `security.selinux` (the host's
//!   label).
//! - **Hard links** of every type but directories and whiteouts are
//!   reported as links to the first path of their inode.
//!
//! Entries come in byte order of their names, each directory before its
//! contents and [`Visit::leave`] after them. Directories are opened
//! relative to their parent (`O_NOFOLLOW`), so paths of any depth work and
//! a directory swapped for a symlink mid-walk fails the open instead of
//! leading elsewhere; only the innermost [`OPEN_DIRS`] ancestors are kept
//! open, the others are reopened through `..` (checked by inode) on the
//! way back.
//!
//! [`Policy`] is where later decisions plug in: leaving entries out (mount
//! stubs, exclude patterns) and rewriting times (clamping).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Linux's `PATH_MAX`: the longest path a system call takes, with its NUL.
pub(crate) const PATH_MAX: usize = 4096;

/// Directories a walk keeps open at once (per side); deeper ancestors are
/// reopened through `..` when the walk comes back to them.
pub(crate) const OPEN_DIRS: usize = 48;

/// The OCI whiteout prefix.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What kind of tree is walked: which xattr namespace, if any, is overlay's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// An overlay upper directory; overlay's xattrs are `trusted.overlay.*`.
    Overlay,
    /// An overlay upper directory mounted with `userxattr`: overlay's xattrs
    /// are `user.overlay.*`.
    OverlayUserXattr,
    /// A plain directory (a parentless snapshot, bind mounted): nothing in
    /// it is overlay's.
    Plain,
}

impl Layout {
    /// The prefix of overlay's private xattrs, if any.
    pub(crate) fn private_prefix(self) -> Option<&'static [u8]> {
        match self {
            Layout::Overlay => Some(b"trusted.overlay."),
            Layout::OverlayUserXattr => Some(b"user.overlay."),
            Layout::Plain => None,
        }
    }

    /// The name under which an xattr of a user is stored in a tree of this
    /// layout: overlay escapes names in its own namespace
    /// (`trusted.overlay.x` → `trusted.overlay.overlay.x`).
    pub(crate) fn stored_name(self, name: &[u8]) -> Vec<u8> {
        match self.private_prefix() {
            Some(p) if name.starts_with(p) => [p, b"overlay.", &name[p.len()..]].concat(),
            _ => name.to_vec(),
        }
    }
}

/// A timestamp as the kernel keeps it: seconds since the epoch (negative
/// before 1970) and nanoseconds (`0..1e9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    pub(crate) const EPOCH: Time = Time { sec: 0, nsec: 0 };

    /// Go's `time.Unix(0, 1<<63-1)`: 2262-04-11T23:47:16.854775807Z, the
    /// latest time containerd's applier sets (`archive.boundTime`).
    pub(crate) const APPLIER_MAX: Time = Time {
        sec: 9_223_372_036,
        nsec: 854_775_807,
    };

    pub(crate) fn mtime(st: &Stat) -> Time {
        Time {
            sec: st.st_mtime,
            nsec: st.st_mtime_nsec as u32,
        }
    }

    /// The time an applier gives a file whose layer entry says `self`.
    /// containerd 1.6 (`archive.boundTime`) and Docker
    /// (`system.Chtimes`) both set times before the epoch or after
    /// [`Time::APPLIER_MAX`] to the epoch.
    pub(crate) fn applied(self) -> Time {
        if self < Time::EPOCH || self > Time::APPLIER_MAX {
            Time::EPOCH
        } else {
            self
        }
    }

    pub(crate) fn timespec(self) -> rfs::Timespec {
        rfs::Timespec {
            tv_sec: self.sec,
            tv_nsec: self.nsec.into(),
        }
    }
}

/// What an entry is in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// An overlay whiteout (a 0/0 character device): the lower entry of
    /// this name is deleted.
    Whiteout,
}

/// An extended attribute: its real name (unescaped) and value.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// One entry of the walked tree, as it goes into a layer.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    /// Path below the root: bytes, no leading or trailing `/`.
    pub path: &'a [u8],
    /// The last component of `path`.
    pub name: &'a CStr,
    pub kind: Kind,
    pub stat: &'a Stat,
    /// The modification time the layer records (after [`Policy::mtime`]).
    pub mtime: Time,
    /// The xattrs a layer carries, sorted by name (none for whiteouts).
    pub xattrs: &'a [Xattr],
    /// A directory overlay marked opaque.
    pub opaque: bool,
    /// A symlink's target (empty otherwise).
    pub target: &'a [u8],
    /// For a hard link to an inode already reported: that entry's path.
    pub link: Option<&'a [u8]>,
}

impl Entry<'_> {
    /// Permission bits with set-id and sticky bits.
    pub(crate) fn mode(&self) -> u32 {
        self.stat.st_mode & 0o7777
    }
}

/// What a walk reports to.
pub(crate) trait Visit {
    /// An entry, in walk order. `dir` is the open directory holding it;
    /// `data` is the open file of a regular file (not of a repeated hard
    /// link) and the directory itself for a directory.
    fn entry(
        &mut self,
        e: &Entry<'_>,
        dir: &OwnedFd,
        data: Option<&OwnedFd>,
    ) -> Result<(), WalkError>;

    /// Whether an entry that is not a directory is only compared, not
    /// read: the walk then neither opens it nor reads its xattrs or link
    /// target (the entry's `xattrs` and `target` are empty, `data` is
    /// `None`). `link` is the first path of its hard-link group, if one
    /// was reported.
    fn skim(&mut self, path: &[u8], kind: Kind, st: &Stat, link: Option<&[u8]>) -> bool {
        let _ = (path, kind, st, link);
        false
    }

    /// After a directory's contents. `fd` is the directory.
    fn leave(&mut self, e: &Entry<'_>, fd: &OwnedFd) -> Result<(), WalkError> {
        let _ = (e, fd);
        Ok(())
    }
}

/// Decisions that belong to the caller, not to the layer format.
pub(crate) trait Policy {
    /// Whether an entry (and, for a directory, everything below it) goes
    /// into the layer and the snapshot.
    fn include(&self, path: &[u8], kind: Kind, stat: &Stat) -> bool {
        let _ = (path, kind, stat);
        true
    }

    /// The modification time the layer records for an entry.
    fn mtime(&self, path: &[u8], stat: &Stat, t: Time) -> Time {
        let _ = (path, stat);
        t
    }

    /// Told of each included entry as it is about to be visited (what
    /// `include` cannot see: overlay's opaque marker, the link target).
    fn seen(&self, e: &Entry<'_>) {
        let _ = e;
    }
}

/// Everything, with its own times.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Everything;
impl Policy for Everything {}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The tree uses an overlay feature the walk does not read.
    #[error("{0}")]
    Unsupported(String),
    /// An entry no layer can carry as it is.
    #[error("{}: {why}", display_path(path))]
    Unrepresentable { path: Vec<u8>, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl WalkError {
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        WalkError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { context, source } => {
                io::Error::new(source.kind(), format!("{context}: {source}"))
            }
            other => io::Error::other(other.to_string()),
        }
    }
}

fn errno(context: impl FnOnce() -> String) -> impl FnOnce(Errno) -> WalkError {
    move |e| WalkError::io(context(), e)
}

/// A path below the root for messages: `/` first; valid UTF-8 as it is
/// (control characters escaped), other bytes as `\xNN`; a very long path
/// is shortened in the middle.
pub(crate) fn display_path(path: &[u8]) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 80;
    let mut out = String::from("/");
    let mut push = |bytes: &[u8]| {
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    };
    if path.len() > HEAD + TAIL + 32 {
        push(&path[..HEAD]);
        let omitted = path.len() - HEAD - TAIL;
        push(format!("…({omitted} bytes)…").as_bytes());
        push(&path[path.len() - TAIL..]);
    } else {
        push(path);
    }
    out
}

/// How to walk.
pub(crate) struct Walk<'p> {
    pub layout: Layout,
    /// The longest path (bytes below the root) a layer may hold; see
    /// [`applier_path_room`].
    pub max_path: Option<usize>,
    /// Skip entries that vanish or are replaced between listing and
    /// reading (a walk of a running container's tree); otherwise that is
    /// an error.
    pub tolerate_vanished: bool,
    pub policy: &'p dyn Policy,
}

/// What a walk saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Entries reported (sockets and entries left out not counted).
    pub entries: u64,
}

/// The longest path below an upper directory that containerd's applier
/// can create in a snapshot directory of `upper`'s snapshotter: it opens
/// `<root>/snapshots/<id>/fs/<path>` whole, so that must fit in
/// `PATH_MAX`. The ID is taken at its widest (20 digits), so the answer
/// holds for any later snapshot of this node.
pub(crate) fn applier_path_room(upper: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let snapshots = upper.parent().and_then(Path::parent);
    let prefix = match snapshots {
        // "<snapshots>/<20 digits>/fs/"
        Some(s) => s.as_os_str().as_bytes().len() + 1 + 20 + "/fs/".len(),
        None => upper.as_os_str().as_bytes().len() + 1,
    };
    (PATH_MAX - 1).saturating_sub(prefix)
}

impl Walk<'_> {
    /// Walks the tree under `root` (the root itself is not reported).
    pub(crate) fn run(&self, root: &Path, v: &mut dyn Visit) -> Result<Walked, WalkError> {
        let fd = open_dir_path(root)?;
        self.run_fd(fd, b"", true, v)
    }

    /// Reports the entries of one directory only, `dir` at `prefix` below
    /// the root: its subdirectories are reported (with their open
    /// descriptor) but not entered, and hard links are found among its
    /// own entries only. For walks that share a tree out among threads.
    pub(crate) fn run_dir(
        &self,
        dir: OwnedFd,
        prefix: &[u8],
        v: &mut dyn Visit,
    ) -> Result<Walked, WalkError> {
        self.run_fd(dir, prefix, false, v)
    }

    fn run_fd(
        &self,
        root: OwnedFd,
        prefix: &[u8],
        descend: bool,
        v: &mut dyn Visit,
    ) -> Result<Walked, WalkError> {
        let root_stat = rfs::fstat(&root).map_err(errno(|| "stat of the root".into()))?;
        let mut dirs = DirStack::default();
        let names = list_dir(&root).map_err(|e| WalkError::io("reading the root", e))?;
        dirs.push(root, &root_stat);
        let mut frames = vec![Frame {
            names,
            next: 0,
            path_len: prefix.len(),
            info: None,
        }];
        let mut path: Vec<u8> = prefix.to_vec();
        let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let mut walked = Walked::default();
        let mut target = Vec::new();

        while let Some(top) = frames.last_mut() {
            if top.next == top.names.len() {
                let frame = frames.pop().unwrap_or_else(|| unreachable!());
                let fd = dirs.pop();
                if let Some(info) = &frame.info {
                    path.truncate(frame.path_len);
                    let e = info.entry(&path);
                    v.leave(&e, &fd)?;
                }
                if !frames.is_empty() {
                    dirs.reopen_top(&fd)?;
                }
                continue;
            }
            let name = std::mem::take(&mut top.names[top.next]);
            top.next += 1;
            path.truncate(top.path_len);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            let dir = dirs.top();

            let step = self.step(dir, name, &path, &mut links, &mut target, v)?;
            match step {
                Step::Skipped => {}
                Step::Reported => walked.entries += 1,
                Step::Dir(fd, info) => {
                    walked.entries += 1;
                    if descend {
                        let names = list_dir(&fd).map_err(|e| {
                            WalkError::io(format!("reading directory {}", display_path(&path)), e)
                        })?;
                        let st = info.stat;
                        dirs.push(fd, &st);
                        frames.push(Frame {
                            names,
                            next: 0,
                            path_len: path.len(),
                            info: Some(*info),
                        });
                    }
                }
            }
        }
        Ok(walked)
    }

    /// One entry, `name` in the open directory `dir` at `path` below the
    /// root, with hard links found against `links` (kept by the caller
    /// across calls, in walk order). A directory is reported, not entered.
    pub(crate) fn run_one(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        path: &[u8],
        links: &mut HashMap<(u64, u64), Vec<u8>>,
        v: &mut dyn Visit,
    ) -> Result<(), WalkError> {
        let mut target = Vec::new();
        self.step(dir, name.to_owned(), path, links, &mut target, v)
            .map(|_| ())
    }

    /// One entry of the open directory `dir`, `name` at `path` below the
    /// root: read, checked and reported to `v` (hard links against
    /// `links`); a directory comes back open, not entered.
    fn step(
        &self,
        dir: &OwnedFd,
        name: CString,
        path: &[u8],
        links: &mut HashMap<(u64, u64), Vec<u8>>,
        target: &mut Vec<u8>,
        v: &mut dyn Visit,
    ) -> Result<Step, WalkError> {
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) if self.tolerate_vanished => return Ok(Step::Skipped),
            Err(e) => return Err(WalkError::io(format!("stat {}", display_path(path)), e)),
        };
        let Some(kind) = self.kind(&st, path)? else {
            return Ok(Step::Skipped); // a socket: no layer carries one
        };
        if kind != Kind::Whiteout && name.to_bytes().starts_with(WHITEOUT_PREFIX) {
            return Err(WalkError::Unrepresentable {
                path: path.to_vec(),
                why: "a layer cannot carry a name starting with \".wh.\": every unpacker \
                      reads it as a whiteout or an opaque marker"
                    .into(),
            });
        }
        if let Some(max) = self.max_path {
            if path.len() > max {
                return Err(WalkError::Unrepresentable {
                    path: path.to_vec(),
                    why: format!(
                        "the path is {} bytes; containerd's applier opens whole paths, \
                         which leaves {max} bytes below a snapshot directory here",
                        path.len()
                    ),
                });
            }
        }
        if !self.policy.include(path, kind, &st) {
            return Ok(Step::Skipped);
        }

        let key = (st.st_dev, st.st_ino);
        let linked = kind != Kind::Dir && kind != Kind::Whiteout && st.st_nlink > 1;
        let first = if linked { links.get(&key) } else { None };
        let is_first = linked && first.is_none();
        let skim = kind != Kind::Dir && v.skim(path, kind, &st, first.map(Vec::as_slice));
        let opened = match kind {
            Kind::Dir => Some(open_dir_at(dir, &name, &st, path)),
            Kind::File if first.is_none() && !skim => Some(open_file_at(dir, &name, &st, path)),
            _ => None,
        };
        let opened = match opened.transpose() {
            Ok(f) => f,
            Err(e) if self.vanished(&e) => return Ok(Step::Skipped),
            Err(e) => return Err(e),
        };
        let raw = match (kind, &opened) {
            _ if skim => Ok(Vec::new()),
            (Kind::Whiteout, _) => Ok(Vec::new()),
            (_, Some(fd)) => read_xattrs(XattrSource::Fd(fd)),
            (_, None) => read_xattrs(XattrSource::Path(&proc_path(dir, &name))),
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) if self.tolerate_vanished && e.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(Step::Skipped);
            }
            Err(e) => {
                return Err(WalkError::io(
                    format!("reading xattrs of {}", display_path(path)),
                    e,
                ));
            }
        };
        let (xattrs, opaque) = self.xattrs(raw, kind, path)?;
        target.clear();
        if kind == Kind::Symlink && !skim {
            *target = match rfs::readlinkat(dir, &name, std::mem::take(target)) {
                Ok(t) => t.into_bytes(),
                // Gone, or no longer a symlink.
                Err(Errno::NOENT | Errno::INVAL) if self.tolerate_vanished => {
                    *target = Vec::new();
                    return Ok(Step::Skipped);
                }
                Err(e) => {
                    return Err(WalkError::io(format!("readlink {}", display_path(path)), e));
                }
            };
        }
        let mtime = self.policy.mtime(path, &st, Time::mtime(&st));
        let e = Entry {
            path,
            name: &name,
            kind,
            stat: &st,
            mtime,
            xattrs: &xattrs,
            opaque,
            target,
            link: first.map(Vec::as_slice),
        };
        self.policy.seen(&e);
        v.entry(&e, dir, opened.as_ref())?;
        if is_first {
            links.insert(key, path.to_vec());
        }
        if let (Kind::Dir, Some(fd)) = (kind, opened) {
            let info = DirInfo {
                name,
                stat: st,
                mtime,
                xattrs,
                opaque,
            };
            return Ok(Step::Dir(fd, Box::new(info)));
        }
        Ok(Step::Reported)
    }

    /// Whether a failure to open an entry means it vanished or was
    /// replaced between its listing and its open, and the walk skips it
    /// ([`Walk::tolerate_vanished`]).
    fn vanished(&self, e: &WalkError) -> bool {
        self.tolerate_vanished
            && matches!(e, WalkError::Io { source, .. }
                if source.raw_os_error() == Some(libc::ENOENT)
                    || source.kind() == io::ErrorKind::Interrupted)
    }

    /// What an entry is; `None` for what no layer carries (sockets).
    fn kind(&self, st: &Stat, path: &[u8]) -> Result<Option<Kind>, WalkError> {
        Ok(Some(match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::BlockDevice => Kind::BlockDevice,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice if st.st_rdev == 0 => match self.layout {
                Layout::Overlay | Layout::OverlayUserXattr => Kind::Whiteout,
                Layout::Plain => {
                    return Err(WalkError::Unrepresentable {
                        path: path.to_vec(),
                        why: "a 0/0 character device cannot be carried: an unpacker on overlay \
                              makes it a whiteout"
                            .into(),
                    });
                }
            },
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::Socket | FileType::Unknown => return Ok(None),
        }))
    }

    /// Sorts an entry's xattrs into the ones a layer carries and overlay's
    /// opaque marker; refuses what the walk cannot read or a layer carry.
    fn xattrs(
        &self,
        raw: Vec<Xattr>,
        kind: Kind,
        path: &[u8],
    ) -> Result<(Vec<Xattr>, bool), WalkError> {
        let mut out = Vec::with_capacity(raw.len());
        let mut opaque = false;
        for (name, value) in raw {
            let name = match self.layout.private_prefix() {
                Some(p) if name.starts_with(p) => {
                    let rest = &name[p.len()..];
                    if let Some(user) = rest.strip_prefix(b"overlay.") {
                        // A user's xattr in overlay's namespace, escaped.
                        [p, user].concat()
                    } else {
                        match rest {
                            b"opaque" if value == b"y" && kind == Kind::Dir => opaque = true,
                            // "x": the directory holds xattr whiteouts.
                            b"opaque" if value == b"x" => return Err(unsupported(path, &name)),
                            b"redirect" | b"metacopy" | b"whiteout" | b"whiteouts" => {
                                return Err(unsupported(path, &name));
                            }
                            // origin, impure, nlink, upper, uuid, protattr…:
                            // bookkeeping of this mount.
                            _ => {}
                        }
                        continue;
                    }
                }
                _ => name,
            };
            if !carried(&name) {
                continue;
            }
            if name.contains(&b'=') {
                return Err(WalkError::Unrepresentable {
                    path: path.to_vec(),
                    why: format!(
                        "the xattr name \"{}\" holds \"=\", which a PAX record key cannot",
                        &display_path(&name)[1..]
                    ),
                });
            }
            out.push((name, value));
        }
        out.sort();
        Ok((out, opaque))
    }
}

fn unsupported(path: &[u8], name: &[u8]) -> WalkError {
    WalkError::Unsupported(format!(
        "{} carries {}: the upper directory is not self-contained",
        display_path(path),
        String::from_utf8_lossy(name)
    ))
}

/// Whether a layer carries an xattr of this (real) name. `trusted.*` is
/// not: containerd's applier refuses it ("admin attributes from archive
/// not supported", then skips it) and Docker's differ never writes it.
/// `security.selinux` is the host's label, not the image's.
pub(crate) fn carried(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.") && name != b"security.selinux"
}

/// What became of one entry.
enum Step {
    /// Left out (a socket, an entry the policy leaves out, one vanished).
    Skipped,
    /// Reported.
    Reported,
    /// A directory, reported; open, with what its `leave` needs.
    Dir(OwnedFd, Box<DirInfo>),
}

/// A directory's state kept until its contents are done.
struct DirInfo {
    name: CString,
    stat: Stat,
    mtime: Time,
    xattrs: Vec<Xattr>,
    opaque: bool,
}

impl DirInfo {
    fn entry<'a>(&'a self, path: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            name: &self.name,
            kind: Kind::Dir,
            stat: &self.stat,
            mtime: self.mtime,
            xattrs: &self.xattrs,
            opaque: self.opaque,
            target: b"",
            link: None,
        }
    }
}

struct Frame {
    names: Vec<CString>,
    next: usize,
    /// Length of the directory's path (the walk's path buffer is cut back
    /// to it for each child).
    path_len: usize,
    /// `None` for the root.
    info: Option<DirInfo>,
}

/// Open directories from the root down, of which only the innermost
/// [`OPEN_DIRS`] hold a descriptor.
#[derive(Default)]
pub(crate) struct DirStack {
    frames: Vec<(Option<OwnedFd>, u64, u64)>,
}

impl DirStack {
    pub(crate) fn push(&mut self, fd: OwnedFd, st: &Stat) {
        self.frames.push((Some(fd), st.st_dev, st.st_ino));
        let n = self.frames.len();
        if n > OPEN_DIRS {
            self.frames[n - OPEN_DIRS - 1].0 = None;
        }
    }

    /// The innermost directory.
    ///
    /// # Panics
    /// On an empty stack.
    pub(crate) fn top(&self) -> &OwnedFd {
        match self.frames.last() {
            Some((Some(fd), ..)) => fd,
            _ => panic!("DirStack::top of an empty stack or a closed directory"),
        }
    }

    /// Removes the innermost directory and returns it; call
    /// [`DirStack::reopen_top`] with it before using the new top.
    pub(crate) fn pop(&mut self) -> OwnedFd {
        match self.frames.pop() {
            Some((Some(fd), ..)) => fd,
            _ => panic!("DirStack::pop of an empty stack or a closed directory"),
        }
    }

    /// Reopens the (new) innermost directory if it was closed, as `..` of
    /// `child`, checking that it is the same directory.
    pub(crate) fn reopen_top(&mut self, child: &OwnedFd) -> Result<(), WalkError> {
        let Some((slot @ None, dev, ino)) = self.frames.last_mut() else {
            return Ok(());
        };
        let fd = rfs::openat(
            child,
            c"..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno(|| "reopening a parent directory".into()))?;
        let st = rfs::fstat(&fd).map_err(errno(|| "stat of a parent directory".into()))?;
        if (st.st_dev, st.st_ino) != (*dev, *ino) {
            return Err(WalkError::io(
                "a directory was moved while being walked",
                io::Error::from(io::ErrorKind::Interrupted),
            ));
        }
        *slot = Some(fd);
        Ok(())
    }
}

/// Directories are read without touching their access times where
/// allowed (listing them is no access of the container's).
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub(crate) fn open_dir_path(p: &Path) -> Result<OwnedFd, WalkError> {
    rfs::open(p, DIR_FLAGS | OFlags::NOATIME, Mode::empty())
        .or_else(|e| match e {
            Errno::PERM => rfs::open(p, DIR_FLAGS, Mode::empty()),
            e => Err(e),
        })
        .map_err(errno(|| format!("opening {}", p.display())))
}

/// Opens the directory at `path` below `root` without following any
/// symlink on the way (a tree a container changes may swap a directory
/// for one) and without leaving `root`. A path longer than one system
/// call takes is opened a directory at a time.
pub(crate) fn open_dir_beneath(root: &OwnedFd, path: &[u8]) -> io::Result<OwnedFd> {
    if path.is_empty() {
        return root.try_clone();
    }
    if path.len() < PATH_MAX - 1 {
        let how = rfs::ResolveFlags::NO_SYMLINKS
            | rfs::ResolveFlags::NO_MAGICLINKS
            | rfs::ResolveFlags::BENEATH;
        match rfs::openat2(root, path, DIR_FLAGS | OFlags::NOATIME, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::PERM) => {
                return Ok(rfs::openat2(root, path, DIR_FLAGS, Mode::empty(), how)?);
            }
            // No openat2 (Linux < 5.6): a directory at a time.
            Err(Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut fd = root.try_clone()?;
    for part in path.split(|&b| b == b'/') {
        fd = rfs::openat(&fd, part, DIR_FLAGS | OFlags::NOATIME, Mode::empty()).or_else(
            |e| match e {
                Errno::PERM => rfs::openat(&fd, part, DIR_FLAGS, Mode::empty()),
                e => Err(e),
            },
        )?;
    }
    Ok(fd)
}

fn open_dir_at(dir: &OwnedFd, name: &CStr, st: &Stat, path: &[u8]) -> Result<OwnedFd, WalkError> {
    let fd = rfs::openat(dir, name, DIR_FLAGS | OFlags::NOATIME, Mode::empty())
        .or_else(|e| match e {
            Errno::PERM => rfs::openat(dir, name, DIR_FLAGS, Mode::empty()),
            e => Err(e),
        })
        .map_err(errno(|| format!("opening {}", display_path(path))))?;
    same_inode(&fd, st, path)?;
    Ok(fd)
}

/// Opens a regular file for reading without touching its access time
/// where allowed.
fn open_file_at(dir: &OwnedFd, name: &CStr, st: &Stat, path: &[u8]) -> Result<OwnedFd, WalkError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty())
        .or_else(|e| match e {
            Errno::PERM => rfs::openat(dir, name, flags, Mode::empty()),
            e => Err(e),
        })
        .map_err(errno(|| format!("opening {}", display_path(path))))?;
    same_inode(&fd, st, path)?;
    Ok(fd)
}

/// Refuses an entry replaced between its stat and its open.
fn same_inode(fd: &OwnedFd, st: &Stat, path: &[u8]) -> Result<(), WalkError> {
    let now = rfs::fstat(fd).map_err(errno(|| format!("fstat {}", display_path(path))))?;
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        return Err(WalkError::io(
            format!("{} changed while being read", display_path(path)),
            io::Error::from(io::ErrorKind::Interrupted),
        ));
    }
    Ok(())
}

/// `/proc/self/fd/DIR/NAME`: a short path to an entry of any depth, for the
/// calls that have no descriptor form (xattrs of symlinks and devices).
pub(crate) fn proc_path(dir: &OwnedFd, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).unwrap_or_else(|_| unreachable!("a file name has no NUL"))
}

/// Lists a directory's entries (without `.` and `..`), sorted by name.
pub(crate) fn list_dir(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut dir = rfs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Where xattrs are read from: an open file or directory, or (for what
/// cannot be opened) a path, without following a final symlink.
pub(crate) enum XattrSource<'a> {
    Fd(&'a OwnedFd),
    Path(&'a CStr),
}

/// Every xattr of an entry, names and values as bytes. A filesystem
/// without xattrs has none.
pub(crate) fn read_xattrs(src: XattrSource<'_>) -> io::Result<Vec<Xattr>> {
    let names = sized(
        || match &src {
            XattrSource::Fd(fd) => rfs::flistxattr_query(fd.as_fd()),
            XattrSource::Path(p) => rfs::llistxattr_query(*p),
        },
        |buf| match &src {
            XattrSource::Fd(fd) => rfs::flistxattr(fd.as_fd(), buf),
            XattrSource::Path(p) => rfs::llistxattr(*p, buf),
        },
    );
    let names = match names {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap_or_else(|_| unreachable!("split at NUL"));
        let value = sized(
            || match &src {
                XattrSource::Fd(fd) => rfs::fgetxattr_query(fd.as_fd(), &cname),
                XattrSource::Path(p) => rfs::lgetxattr_query(*p, &cname),
            },
            |buf| match &src {
                XattrSource::Fd(fd) => rfs::fgetxattr(fd.as_fd(), &cname, buf),
                XattrSource::Path(p) => rfs::lgetxattr(*p, &cname, buf),
            },
        );
        match value {
            Ok(value) => out.push((name.to_vec(), value)),
            Err(Errno::NODATA) => {} // removed meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// A size query, then the call that fills a buffer of that size, again
/// while the value grows in between.
fn sized(
    query: impl Fn() -> Result<usize, Errno>,
    fill: impl Fn(&mut [u8]) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    loop {
        let want = query()?;
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; want];
        match fill(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Fifo => "fifo",
            Kind::Whiteout => "whiteout",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Records what a walk reports.
    #[derive(Default)]
    struct Record(Vec<String>);
    impl Visit for Record {
        fn entry(
            &mut self,
            e: &Entry<'_>,
            _: &OwnedFd,
            _: Option<&OwnedFd>,
        ) -> Result<(), WalkError> {
            let mut s = format!("{} {}", display_path(e.path), e.kind);
            if let Some(l) = e.link {
                s += &format!(" => {}", display_path(l));
            }
            if e.opaque {
                s += " opaque";
            }
            for (k, v) in e.xattrs {
                s += &format!(" {}={}", display_path(k), String::from_utf8_lossy(v));
            }
            self.0.push(s);
            Ok(())
        }
        fn leave(&mut self, e: &Entry<'_>, _: &OwnedFd) -> Result<(), WalkError> {
            self.0.push(format!("leave {}", display_path(e.path)));
            Ok(())
        }
    }

    fn walk(root: &Path, layout: Layout) -> Result<Vec<String>, WalkError> {
        let mut r = Record::default();
        Walk {
            layout,
            max_path: None,
            tolerate_vanished: false,
            policy: &Everything,
        }
        .run(root, &mut r)?;
        Ok(r.0)
    }

    fn mknod0(p: &Path) {
        rfs::mknodat(rfs::CWD, p, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
    }

    #[test]
    fn order_kinds_links_and_raw_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let odd = std::ffi::OsStr::from_bytes(b"x\xff");
        std::fs::create_dir(r.join("b")).unwrap();
        std::fs::write(r.join("b").join(odd), b"1").unwrap();
        std::fs::write(r.join(std::ffi::OsStr::from_bytes(b"b/x\xfe")), b"2").unwrap();
        std::os::unix::fs::symlink("b", r.join("a")).unwrap();
        std::fs::hard_link(r.join("a"), r.join("c")).unwrap(); // a link to a symlink
        rfs::mknodat(
            rfs::CWD,
            r.join("f"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        std::fs::hard_link(r.join("f"), r.join("g")).unwrap();
        mknod0(&r.join("w1"));
        std::fs::hard_link(r.join("w1"), r.join("w2")).unwrap(); // shared whiteout inode
        let got = walk(r, Layout::Overlay).unwrap();
        assert_eq!(
            got,
            [
                "/a symlink",
                "/b directory",
                "/b/x\\xfe file",
                "/b/x\\xff file",
                "leave /b",
                "/c symlink => /a",
                "/f fifo",
                "/g fifo => /f",
                "/w1 whiteout",
                "/w2 whiteout",
            ]
        );
    }

    #[test]
    fn overlay_xattrs_follow_the_mount_namespace() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir(r.join("t")).unwrap();
        std::fs::create_dir(r.join("u")).unwrap();
        xattr::set(r.join("t"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(r.join("t"), "trusted.overlay.origin", b"o").unwrap();
        xattr::set(r.join("t"), "trusted.other", b"1").unwrap();
        xattr::set(r.join("t"), "trusted.overlay.overlay.opaque", b"y").unwrap();
        xattr::set(r.join("u"), "user.overlay.opaque", b"y").unwrap();
        xattr::set(r.join("u"), "user.overlay.overlay.x", b"esc").unwrap();
        xattr::set(r.join("u"), "user.note", b"n").unwrap();
        // Without userxattr, user.overlay.* is the user's.
        let got = walk(r, Layout::Overlay).unwrap();
        assert_eq!(got[0], "/t directory opaque");
        assert_eq!(
            got[2],
            "/u directory /user.note=n /user.overlay.opaque=y /user.overlay.overlay.x=esc"
        );
        // With userxattr, it is overlay's (escaped names are the user's).
        let got = walk(r, Layout::OverlayUserXattr).unwrap();
        assert_eq!(got[0], "/t directory");
        assert_eq!(
            got[2],
            "/u directory opaque /user.note=n /user.overlay.x=esc"
        );
        // A plain directory has no overlay markers at all.
        let got = walk(r, Layout::Plain).unwrap();
        assert_eq!(got[0], "/t directory");
        assert_eq!(
            got[2],
            "/u directory /user.note=n /user.overlay.opaque=y /user.overlay.overlay.x=esc"
        );
    }

    #[test]
    fn unreadable_overlay_features_are_unsupported() {
        for (attr, value) in [
            ("trusted.overlay.redirect", &b"/x"[..]),
            ("trusted.overlay.metacopy", b""),
            ("trusted.overlay.opaque", b"x"),
        ] {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir(d.path().join("d")).unwrap();
            xattr::set(d.path().join("d"), attr, value).unwrap();
            assert!(
                matches!(
                    walk(d.path(), Layout::Overlay),
                    Err(WalkError::Unsupported(_))
                ),
                "{attr}"
            );
            // Only overlay's namespace means anything.
            walk(d.path(), Layout::OverlayUserXattr).unwrap();
        }
    }

    #[test]
    fn what_no_layer_can_carry_is_refused_by_path() {
        let refused = |setup: &dyn Fn(&Path), layout: Layout, path: &str| {
            let d = tempfile::tempdir().unwrap();
            setup(d.path());
            match walk(d.path(), layout) {
                Err(e @ WalkError::Unrepresentable { .. }) => {
                    assert!(e.to_string().starts_with(path), "{e}");
                }
                other => panic!("{path}: {other:?}"),
            }
        };
        for name in [".wh.x", ".wh..wh..opq", ".wh.", ".wh.."] {
            refused(
                &|r| std::fs::write(r.join(name), b"").unwrap(),
                Layout::Overlay,
                &format!("/{name}"),
            );
        }
        refused(
            &|r| {
                std::fs::create_dir_all(r.join("d/.wh.sub")).unwrap();
            },
            Layout::Overlay,
            "/d/.wh.sub",
        );
        refused(
            &|r| {
                std::fs::write(r.join("f"), b"").unwrap();
                xattr::set(r.join("f"), "user.a=b", b"1").unwrap();
            },
            Layout::Overlay,
            "/f",
        );
        refused(&|r| mknod0(&r.join("dev0")), Layout::Plain, "/dev0");
    }

    #[test]
    fn paths_longer_than_the_applier_takes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("aaaa/bbbb")).unwrap();
        let walk = |max| {
            Walk {
                layout: Layout::Overlay,
                max_path: Some(max),
                tolerate_vanished: false,
                policy: &Everything,
            }
            .run(d.path(), &mut Record::default())
        };
        walk(9).unwrap();
        let e = walk(8).unwrap_err();
        assert!(
            e.to_string().starts_with("/aaaa/bbbb: the path is 9 bytes"),
            "{e}"
        );
        let upper =
            Path::new("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs");
        assert_eq!(
            applier_path_room(upper),
            4095 - "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/".len()
                - 20
                - 4
        );
    }

    /// Deeper than the open-directory window and longer than PATH_MAX.
    #[test]
    fn deep_trees_are_walked_with_few_descriptors() {
        let d = tempfile::tempdir().unwrap();
        let mut fd = open_dir_path(d.path()).unwrap();
        let depth = 3 * OPEN_DIRS + 7;
        let name = "d".repeat(40);
        for _ in 0..depth {
            rfs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            std::fs::write(format!("/proc/self/fd/{}/f", fd.as_raw_fd()), b"x").unwrap();
            fd = rfs::openat(
                &fd,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
        drop(fd);
        struct Longest(usize, u64);
        impl Visit for Longest {
            fn entry(
                &mut self,
                e: &Entry<'_>,
                _: &OwnedFd,
                data: Option<&OwnedFd>,
            ) -> Result<(), WalkError> {
                self.0 = self.0.max(e.path.len());
                if let Some(f) = data.filter(|_| e.kind == Kind::File) {
                    self.1 += rustix::io::pread(f, &mut [0u8; 4], 0).unwrap() as u64;
                }
                Ok(())
            }
        }
        let mut v = Longest(0, 0);
        let walked = Walk {
            layout: Layout::Overlay,
            max_path: None,
            tolerate_vanished: false,
            policy: &Everything,
        }
        .run(d.path(), &mut v)
        .unwrap();
        assert_eq!(walked.entries, 2 * depth as u64);
        assert!(v.0 > PATH_MAX, "{}", v.0);
        assert_eq!(v.1, depth as u64, "every file read");
        let got = walk(d.path(), Layout::Overlay).unwrap();
        assert_eq!(got.len(), depth * 3);
        assert_eq!(
            got[got.len() - 2],
            "leave /dddddddddddddddddddddddddddddddddddddddd"
        );
        assert_eq!(got[got.len() - 1], "/f file");
    }

    #[test]
    fn times_are_bounded_like_containerds_applier() {
        let t = |sec, nsec| Time { sec, nsec };
        assert_eq!(t(-1, 5).applied(), Time::EPOCH);
        assert_eq!(t(5, 7).applied(), t(5, 7));
        assert_eq!(Time::APPLIER_MAX.applied(), Time::APPLIER_MAX);
        assert_eq!(t(9_223_372_036, 854_775_808).applied(), Time::EPOCH);
        assert_eq!(t(32_503_680_000, 0).applied(), Time::EPOCH);
    }

    #[test]
    fn paths_display_unambiguously() {
        assert_eq!(display_path(b"a/b\xffc\nd/\xc3\xa9"), "/a/b\\xffc\\nd/é");
        let long = vec![b'a'; 1000];
        let shown = display_path(&long);
        assert!(shown.contains("…(760 bytes)…"), "{shown}");
    }
}
