//! A walk of every attribute of a directory tree, and the differences of
//! two. Written apart from the engine's walker on purpose: it is the
//! oracle's eye, not the code under test.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, SeekFrom};
use sha2::{Digest, Sha256};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
    /// A 0/0 character device in an upper directory.
    Whiteout,
}

/// Every attribute of one entry that a layer could carry, and a few it
/// cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits with set-id and sticky bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files only (a directory's size is the filesystem's business).
    pub size: u64,
    /// Files: a hash of the bytes (holes and written zeros alike).
    pub content: [u8; 32],
    /// Files of at most 256 bytes: the bytes.
    pub data: Vec<u8>,
    /// Symlinks: the target.
    pub target: Vec<u8>,
    pub mtime: (i64, i64),
    /// Devices: major, minor.
    pub rdev: (u32, u32),
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub nlink: u64,
    /// 512-byte blocks allocated (not compared: holes are the
    /// filesystem's business).
    pub blocks: u64,
    /// For an inode with more than one path in the tree: the first of them
    /// (in byte order); empty otherwise.
    pub group: Vec<u8>,
    ino: (u64, u64),
}

/// A tree: every entry below the root by its path (bytes, no leading `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// How to walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOpts {
    /// An upper directory: a 0/0 character device is a whiteout.
    pub raw: bool,
    /// Leave out `/proc`, `/sys`, `/dev` and `/run` (a container's mounts
    /// there).
    pub skip_mounts: bool,
}

/// The top-level names a container's runtime mounts over (containerd's
/// default spec: proc, sysfs, tmpfs on /dev and /run).
pub const MOUNTED: &[&[u8]] = &[b"proc", b"sys", b"dev", b"run"];

impl Tree {
    /// Walks everything below `root` (not `root` itself). Runs on a thread
    /// with a large stack: trees are deep.
    pub fn walk(root: &Path, opts: WalkOpts) -> Tree {
        raise_nofile();
        let root = root.to_path_buf();
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let fd = rfs::open(
                    &root,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .unwrap_or_else(|e| panic!("opening {}: {e}", root.display()));
                let mut t = Tree::default();
                let mut path = Vec::new();
                walk_dir(&fd, &mut path, &mut t, opts, true);
                t.group_links();
                t
            })
            .expect("walker thread")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn group_links(&mut self) {
        let mut by_ino: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
        for (p, n) in &self.nodes {
            if n.kind != Kind::Dir && n.kind != Kind::Whiteout {
                by_ino.entry(n.ino).or_default().push(p.clone());
            }
        }
        for paths in by_ino.values().filter(|p| p.len() > 1) {
            let first = paths.iter().min().cloned().unwrap_or_default();
            for p in paths {
                if let Some(n) = self.nodes.get_mut(p) {
                    n.group = first.clone();
                }
            }
        }
    }

    /// Entries at or below `prefix` (a path without leading `/`).
    pub fn under(&self, prefix: &[u8]) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        self.nodes
            .iter()
            .filter(move |(p, _)| p.as_slice() == prefix || p.starts_with(&[prefix, b"/"].concat()))
    }
}

/// Lets a deep tree be walked with one descriptor per level.
fn raise_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}

fn walk_dir(dir: &OwnedFd, path: &mut Vec<u8>, t: &mut Tree, opts: WalkOpts, top: bool) {
    let mut names = Vec::new();
    let mut d = rfs::Dir::read_from(dir).expect("reading a directory");
    while let Some(e) = d.read() {
        let e = e.expect("directory entry");
        let n = e.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    names.sort();
    let len = path.len();
    for name in names {
        if top && opts.skip_mounts && MOUNTED.contains(&name.to_bytes()) {
            continue;
        }
        path.truncate(len);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // A merged view may list a name overlay then hides (a whiteout
            // in a directory of one layer): it is not there.
            Err(rustix::io::Errno::NOENT) if !opts.raw => continue,
            Err(e) => panic!("stat {}: {e}", show(path)),
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::CharacterDevice if opts.raw && st.st_rdev == 0 => Kind::Whiteout,
            FileType::CharacterDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::Unknown => panic!("{}: unknown file type", show(path)),
        };
        let mut node = Node {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: 0,
            content: [0; 32],
            data: Vec::new(),
            target: Vec::new(),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            rdev: (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)),
            xattrs: xattrs(dir, &name),
            nlink: st.st_nlink,
            blocks: st.st_blocks as u64,
            group: Vec::new(),
            ino: (st.st_dev, st.st_ino),
        };
        match kind {
            Kind::File => {
                let f = rfs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOATIME,
                    Mode::empty(),
                )
                .unwrap_or_else(|e| panic!("open {}: {e}", show(path)));
                node.size = st.st_size as u64;
                node.content = content_hash(&f, node.size);
                if node.size <= 256 {
                    let mut buf = vec![0u8; node.size as usize];
                    let n = rustix::io::pread(&f, &mut buf, 0).expect("read");
                    buf.truncate(n);
                    node.data = buf;
                }
            }
            Kind::Symlink => {
                node.target = rfs::readlinkat(dir, &name, Vec::new())
                    .expect("readlink")
                    .into_bytes();
            }
            _ => {}
        }
        t.nodes.insert(path.clone(), node);
        if kind == Kind::Dir {
            let sub = rfs::openat(
                dir,
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap_or_else(|e| panic!("open {}: {e}", show(path)));
            walk_dir(&sub, path, t, opts, false);
        }
    }
    path.truncate(len);
}

fn xattrs(dir: &OwnedFd, name: &CStr) -> BTreeMap<Vec<u8>, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let p = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&p));
    let Ok(names) = xattr::list(&p) else {
        return BTreeMap::new();
    };
    names
        .filter_map(|n| {
            let v = xattr::get(&p, &n).ok()??;
            Some((n.as_bytes().to_vec(), v))
        })
        .collect()
}

/// A hash of a file's bytes by 1 MiB block, where a block of zeros (a hole
/// or written zeros, the same bytes) hashes the same without being read
/// when it is a hole.
fn content_hash(f: &OwnedFd, size: u64) -> [u8; 32] {
    const BLOCK: u64 = 1 << 20;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    let mut off = 0;
    while off < size {
        let len = BLOCK.min(size - off);
        // A block entirely in a hole is not read.
        let data = match rfs::seek(f, SeekFrom::Data(off)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => size,
            Err(_) => off,
        };
        if data >= off + len {
            h.update(b"Z");
            off += len;
            continue;
        }
        let mut got = 0;
        while (got as u64) < len {
            let n =
                rustix::io::pread(f, &mut buf[got..len as usize], off + got as u64).expect("read");
            assert!(n > 0, "file shorter than its size");
            got += n;
        }
        static ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
        let block = &buf[..len as usize];
        if block == &ZEROS[..block.len()] {
            h.update(b"Z");
        } else {
            h.update(b"D");
            h.update(Sha256::digest(block));
        }
        off += len;
    }
    h.finalize().into()
}

/// A path for people: `/` first, bytes that are not UTF-8 as `\xNN`,
/// control characters escaped, long paths shortened.
pub fn show(path: &[u8]) -> String {
    let mut out = String::from("/");
    let cut = path.len() > 300;
    let shown = if cut { &path[..200] } else { path };
    for chunk in shown.utf8_chunks() {
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
    if cut {
        out.push_str(&format!("…({} bytes)", path.len()));
    }
    out
}

/// One difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: Vec<u8>,
    /// `missing` (only left), `extra` (only right), `kind`, `mode`,
    /// `owner`, `size`, `content`, `target`, `mtime`, `rdev`, `nlink`,
    /// `links` (hard-link group), or `xattr <name>`.
    pub field: String,
    pub left: String,
    pub right: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} ≠ {}",
            show(&self.path),
            self.field,
            self.left,
            self.right
        )
    }
}

/// What a comparison looks at.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Link counts (of upper directories; a merged view's are overlay's).
    pub nlink: bool,
    /// Times of whiteouts (an applier does not set them).
    pub whiteout_times: bool,
}

/// Every difference between `a` and `b`.
pub fn diff(a: &Tree, b: &Tree, cmp: Compare) -> Vec<Difference> {
    let mut out = Vec::new();
    let d = |path: &[u8], field: &str, l: String, r: String| Difference {
        path: path.to_vec(),
        field: field.to_string(),
        left: l,
        right: r,
    };
    for (p, x) in &a.nodes {
        let Some(y) = b.nodes.get(p) else {
            out.push(d(p, "missing", format!("{:?}", x.kind), "-".into()));
            continue;
        };
        if x.kind != y.kind {
            out.push(d(
                p,
                "kind",
                format!("{:?}", x.kind),
                format!("{:?}", y.kind),
            ));
            continue;
        }
        if x.kind != Kind::Symlink && x.mode != y.mode {
            out.push(d(
                p,
                "mode",
                format!("{:o}", x.mode),
                format!("{:o}", y.mode),
            ));
        }
        if (x.uid, x.gid) != (y.uid, y.gid) {
            out.push(d(
                p,
                "owner",
                format!("{}:{}", x.uid, x.gid),
                format!("{}:{}", y.uid, y.gid),
            ));
        }
        if x.kind == Kind::File {
            if x.size != y.size {
                out.push(d(p, "size", x.size.to_string(), y.size.to_string()));
            } else if x.content != y.content {
                out.push(d(
                    p,
                    "content",
                    hex::encode(&x.content[..6]),
                    hex::encode(&y.content[..6]),
                ));
            }
        }
        if x.target != y.target {
            out.push(d(p, "target", show(&x.target), show(&y.target)));
        }
        if (x.kind != Kind::Whiteout || cmp.whiteout_times) && x.mtime != y.mtime {
            out.push(d(p, "mtime", time(x.mtime), time(y.mtime)));
        }
        if matches!(x.kind, Kind::Char | Kind::Block) && x.rdev != y.rdev {
            out.push(d(
                p,
                "rdev",
                format!("{:?}", x.rdev),
                format!("{:?}", y.rdev),
            ));
        }
        if cmp.nlink && x.nlink != y.nlink {
            out.push(d(p, "nlink", x.nlink.to_string(), y.nlink.to_string()));
        }
        if x.group != y.group {
            out.push(d(p, "links", show(&x.group), show(&y.group)));
        }
        for (k, v) in &x.xattrs {
            match y.xattrs.get(k) {
                Some(w) if w == v => {}
                other => out.push(d(
                    p,
                    &format!("xattr {}", show(k).trim_start_matches('/')),
                    value(Some(v)),
                    value(other),
                )),
            }
        }
        for (k, w) in &y.xattrs {
            if !x.xattrs.contains_key(k) {
                out.push(d(
                    p,
                    &format!("xattr {}", show(k).trim_start_matches('/')),
                    "-".into(),
                    value(Some(w)),
                ));
            }
        }
    }
    for (p, y) in &b.nodes {
        if !a.nodes.contains_key(p) {
            out.push(d(p, "extra", "-".into(), format!("{:?}", y.kind)));
        }
    }
    out
}

fn time((s, ns): (i64, i64)) -> String {
    format!("{s}.{ns:09}")
}

fn value(v: Option<&Vec<u8>>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.len() > 24 => format!("{}…({} bytes)", hex::encode(&v[..12]), v.len()),
        Some(v) => hex::encode(v),
    }
}
