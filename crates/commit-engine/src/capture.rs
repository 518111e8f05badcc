//! The fast path's capture: copy a container's overlay upper directory into
//! the upper directory of a freshly prepared snapshot.
//!
//! The copy is both the capture and the apply. It is the only thing done
//! while the container is paused; it is what the new image's snapshot is
//! made of (containerd's own overlay applier writes into an upper directory
//! the same way); and the layer tar is written afterwards from the copy,
//! which nothing else touches, while the container runs again.
//!
//! Everything an upper directory means is kept: file types, overlay
//! whiteouts (0/0 character devices) and opaque markers
//! (`trusted.overlay.opaque`), owners, modes, nanosecond times, xattrs,
//! hard links and holes. An upper directory that needs more than its
//! entries to be read right — `redirect_dir`, `metacopy`, xattr whiteouts —
//! is refused with [`CopyError::Unsupported`], and the caller falls back to
//! the diff service.
//!
//! The source belongs to a container and may change under us when the
//! container is not paused, so it is walked with directory file
//! descriptors and `O_NOFOLLOW`: a directory swapped for a symlink
//! mid-walk fails the open instead of leading outside the upper directory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, SeekFrom, Stat, Timespec, Timestamps,
};

/// What a copy saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Entries below the root (files, directories, links, whiteouts …).
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The upper directory uses an overlay feature the fast path does not read.
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn ioerr(context: impl FnOnce() -> String) -> impl FnOnce(rustix::io::Errno) -> CopyError {
    move |e| CopyError::Io {
        context: context(),
        source: e.into(),
    }
}

/// Overlay's private xattrs (`trusted.overlay.*`, or `user.overlay.*` with
/// `userxattr`): which to keep, which to drop, which make the copy wrong.
enum OverlayXattr {
    NotOverlay,
    /// `opaque`: the directory hides its lower counterparts.
    Opaque,
    /// Bookkeeping (origin, impure, nlink, uuid …) that means nothing in
    /// another upper directory.
    Drop,
    /// Changes what an entry means (redirect, metacopy, xattr whiteouts).
    Unsupported,
}

fn classify(name: &OsStr) -> OverlayXattr {
    let n = name.as_bytes();
    let Some(rest) = n
        .strip_prefix(b"trusted.overlay.")
        .or_else(|| n.strip_prefix(b"user.overlay."))
    else {
        return OverlayXattr::NotOverlay;
    };
    match rest {
        b"opaque" => OverlayXattr::Opaque,
        b"redirect" | b"metacopy" | b"whiteout" | b"whiteouts" => OverlayXattr::Unsupported,
        _ => OverlayXattr::Drop,
    }
}

/// Whether an xattr is carried into the layer: not overlay's, and not the
/// SELinux label, which belongs to the host that wrote it.
pub fn portable_xattr(name: &OsStr) -> bool {
    matches!(classify(name), OverlayXattr::NotOverlay) && name.as_bytes() != b"security.selinux"
}

/// Whether a directory's xattrs mark it opaque.
pub fn is_opaque(xattrs: &[(OsString, Vec<u8>)]) -> bool {
    xattrs
        .iter()
        .any(|(k, v)| matches!(classify(k), OverlayXattr::Opaque) && v.as_slice() == b"y")
}

/// Whether a stat describes an overlay whiteout: a 0/0 character device.
#[cfg(test)]
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

struct Copier {
    dst_root: OwnedFd,
    /// First destination path (relative to the root) of each multiply
    /// linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
    stats: Copied,
    buf: Vec<u8>,
}

/// Copies the tree under `src` into the empty directory `dst`. The roots
/// themselves are left as they are (their attributes come from the
/// snapshotter, as with an applied layer).
pub fn copy_upper(src: &Path, dst: &Path) -> Result<Copied, CopyError> {
    let open_dir = |p: &Path| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(ioerr(|| format!("opening {}", p.display())))
    };
    let src_fd = open_dir(src)?;
    let dst_fd = open_dir(dst)?;
    let mut c = Copier {
        dst_root: dst_fd.try_clone().map_err(|e| CopyError::Io {
            context: "dup".into(),
            source: e,
        })?,
        links: HashMap::new(),
        stats: Copied::default(),
        buf: Vec::new(),
    };
    c.copy_dir(&src_fd, &dst_fd, Path::new(""))?;
    Ok(c.stats)
}

/// Reads the data of every regular file under `src` into the page cache
/// (readahead), so the copy made while the container is paused runs at
/// memory speed instead of waiting on the disk. Done before pausing; a
/// file changed afterwards is simply read again by the copy. Errors are
/// ignored: this only makes the pause shorter. Returns the bytes read.
pub fn prewarm(src: &Path) -> u64 {
    fn walk(dir: &OwnedFd, total: &mut u64) {
        let Ok(names) = list_dir(dir) else { return };
        for name in names {
            let Ok(st) = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    if let Ok(d) = rfs::openat(dir, &name, flags, Mode::empty()) {
                        walk(&d, total);
                    }
                }
                FileType::RegularFile if st.st_size > 0 => {
                    let flags =
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOATIME;
                    let f = rfs::openat(dir, &name, flags, Mode::empty()).or_else(|_| {
                        rfs::openat(
                            dir,
                            &name,
                            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                    });
                    if let Ok(f) = f {
                        // Read it (readahead(2) only starts the I/O).
                        let mut buf = vec![0u8; 1 << 20];
                        let mut off = 0u64;
                        while let Ok(n) = rustix::io::pread(&f, &mut buf, off) {
                            if n == 0 {
                                break;
                            }
                            off += n as u64;
                        }
                        *total += off;
                    }
                }
                _ => {}
            }
        }
    }
    let mut total = 0;
    if let Ok(root) = rfs::open(
        src,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        walk(&root, &mut total);
    }
    total
}

/// Lists a directory's entries (without `.` and `..`), sorted by name.
pub fn list_dir(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut dir = rfs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

impl Copier {
    fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<(), CopyError> {
        let names = list_dir(src).map_err(|e| CopyError::Io {
            context: format!("reading {}", rel.display()),
            source: e,
        })?;
        for name in names {
            let path = rel.join(&name);
            let st = rfs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(ioerr(|| format!("stat {}", path.display())))?;
            self.stats.entries += 1;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    rfs::mkdirat(dst, &name, Mode::from_raw_mode(0o700))
                        .map_err(ioerr(|| format!("mkdir {}", path.display())))?;
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let s = rfs::openat(src, &name, flags, Mode::empty())
                        .map_err(ioerr(|| format!("opening {}", path.display())))?;
                    let d = rfs::openat(dst, &name, flags, Mode::empty())
                        .map_err(ioerr(|| format!("opening copy of {}", path.display())))?;
                    same_inode(&s, &st, &path)?;
                    self.copy_dir(&s, &d, &path)?;
                    // Attributes last: children must not bump the times, and
                    // a read-only mode must not stop the children's copy.
                    let xattrs = fd_xattrs(&s, &path)?;
                    set_fd_attrs(&d, &st, &xattrs, &path)?;
                }
                FileType::RegularFile => {
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&key) {
                            rfs::linkat(&self.dst_root, first, dst, &name, AtFlags::empty())
                                .map_err(ioerr(|| format!("linking {}", path.display())))?;
                            continue;
                        }
                        self.links.insert(key, path.clone());
                    }
                    let s = rfs::openat(
                        src,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(ioerr(|| format!("opening {}", path.display())))?;
                    same_inode(&s, &st, &path)?;
                    let d = rfs::openat(
                        dst,
                        &name,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(ioerr(|| format!("creating copy of {}", path.display())))?;
                    self.stats.bytes += copy_data(&s, &d, st.st_size as u64, &mut self.buf)
                        .map_err(|e| CopyError::Io {
                            context: format!("copying {}", path.display()),
                            source: e,
                        })?;
                    let xattrs = fd_xattrs(&s, &path)?;
                    set_fd_attrs(&d, &st, &xattrs, &path)?;
                }
                FileType::Symlink => {
                    let target = rfs::readlinkat(src, &name, Vec::new())
                        .map_err(ioerr(|| format!("readlink {}", path.display())))?;
                    rfs::symlinkat(target.as_c_str(), dst, &name)
                        .map_err(ioerr(|| format!("symlink {}", path.display())))?;
                    self.finish_special(src, dst, &name, &st, &path)?;
                }
                FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                    let kind = FileType::from_raw_mode(st.st_mode);
                    rfs::mknodat(
                        dst,
                        &name,
                        kind,
                        Mode::from_raw_mode(st.st_mode & 0o7777),
                        st.st_rdev,
                    )
                    .map_err(ioerr(|| format!("mknod {}", path.display())))?;
                    self.finish_special(src, dst, &name, &st, &path)?;
                }
                // Sockets cannot be put in a layer; Docker skips them too.
                FileType::Socket | FileType::Unknown => self.stats.entries -= 1,
            }
        }
        Ok(())
    }

    /// Owner, xattrs, mode and times of an entry that cannot be opened
    /// (symlink, device, fifo), by name relative to its directory.
    fn finish_special(
        &self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &OsStr,
        st: &Stat,
        path: &Path,
    ) -> Result<(), CopyError> {
        let proc_src = proc_path(src, name);
        let proc_dst = proc_path(dst, name);
        let xattrs = list_xattrs(
            || xattr::list(&proc_src),
            |n| xattr::get(&proc_src, n),
            path,
        )?;
        rfs::chownat(
            dst,
            name,
            Some(uid(st)),
            Some(gid(st)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(ioerr(|| format!("chown {}", path.display())))?;
        for (k, v) in &xattrs {
            xattr::set(&proc_dst, k, v).map_err(|e| CopyError::Io {
                context: format!("setxattr {} {:?}", path.display(), k),
                source: e,
            })?;
        }
        let is_link = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
        if !is_link {
            // chown cleared set-id bits; put the mode back.
            rfs::chmodat(
                dst,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(ioerr(|| format!("chmod {}", path.display())))?;
        }
        rfs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(ioerr(|| format!("utimes {}", path.display())))?;
        Ok(())
    }
}

/// Refuses an entry replaced between its stat and its open.
fn same_inode(fd: &OwnedFd, st: &Stat, path: &Path) -> Result<(), CopyError> {
    let now = rfs::fstat(fd).map_err(ioerr(|| format!("fstat {}", path.display())))?;
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        return Err(CopyError::Io {
            context: format!("{} changed while being copied", path.display()),
            source: io::Error::from(io::ErrorKind::Interrupted),
        });
    }
    Ok(())
}

fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

fn uid(st: &Stat) -> rfs::Uid {
    rfs::Uid::from_raw(st.st_uid)
}
fn gid(st: &Stat) -> rfs::Gid {
    rfs::Gid::from_raw(st.st_gid)
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// The xattrs of an open file worth copying into another upper directory
/// (opaque markers included).
fn fd_xattrs(fd: &OwnedFd, path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, CopyError> {
    use xattr::FileExt;
    let file = File::from(fd.try_clone().map_err(|e| CopyError::Io {
        context: "dup".into(),
        source: e,
    })?);
    list_xattrs(|| file.list_xattr(), |n| file.get_xattr(n), path)
}

fn list_xattrs<L, I, G>(list: L, get: G, path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, CopyError>
where
    L: FnOnce() -> io::Result<I>,
    I: Iterator<Item = OsString>,
    G: Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
{
    let names = match list() {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CopyError::Io {
                context: format!("listxattr {}", path.display()),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for name in names {
        match classify(&name) {
            OverlayXattr::Drop => continue,
            OverlayXattr::Unsupported => {
                return Err(CopyError::Unsupported(format!(
                    "{} carries {:?}: the upper directory is not self-contained",
                    path.display(),
                    name
                )));
            }
            OverlayXattr::NotOverlay if name.as_bytes() == b"security.selinux" => continue,
            OverlayXattr::NotOverlay | OverlayXattr::Opaque => {}
        }
        if let Some(v) = get(&name).map_err(|e| CopyError::Io {
            context: format!("getxattr {} {name:?}", path.display()),
            source: e,
        })? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Owner, xattrs, mode and times of an open copy.
fn set_fd_attrs(
    fd: &OwnedFd,
    st: &Stat,
    xattrs: &[(OsString, Vec<u8>)],
    path: &Path,
) -> Result<(), CopyError> {
    use xattr::FileExt;
    rfs::fchown(fd, Some(uid(st)), Some(gid(st)))
        .map_err(ioerr(|| format!("chown {}", path.display())))?;
    let file = File::from(fd.try_clone().map_err(|e| CopyError::Io {
        context: "dup".into(),
        source: e,
    })?);
    for (k, v) in xattrs {
        file.set_xattr(k, v).map_err(|e| CopyError::Io {
            context: format!("setxattr {} {k:?}", path.display()),
            source: e,
        })?;
    }
    rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(ioerr(|| format!("chmod {}", path.display())))?;
    rfs::futimens(fd, &times(st)).map_err(ioerr(|| format!("utimes {}", path.display())))?;
    Ok(())
}

/// Copies a file's data, keeping holes: only the data extents are copied
/// (in the kernel where it can), then the length is set. Returns the bytes
/// copied.
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    let mut copied = 0;
    let mut pos = 0u64;
    while pos < size {
        let start = match rfs::seek(src, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => pos, // no SEEK_DATA: copy all
            Err(e) => return Err(e.into()),
        };
        let end = match rfs::seek(src, SeekFrom::Hole(start)) {
            Ok(p) => p.min(size),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        let n = copy_range(src, dst, start, end - start, buf)?;
        copied += n;
        if n < end - start {
            break; // the file shrank (an unpaused container): keep what is there
        }
        pos = end;
    }
    rfs::ftruncate(dst, size)?;
    Ok(copied)
}

fn copy_range(
    src: &OwnedFd,
    dst: &OwnedFd,
    start: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut done = 0u64;
    let (mut off_in, mut off_out) = (start, start);
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => return Ok(done),
            Ok(n) => done += n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                return copy_range_rw(src, dst, off_in, len - done, buf).map(|n| done + n);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

fn copy_range_rw(
    src: &OwnedFd,
    dst: &OwnedFd,
    mut off: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    buf.resize(1 << 20, 0);
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = rustix::io::pread(src.as_fd(), &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            written += rustix::io::pwrite(dst.as_fd(), &buf[written..n], off + written as u64)?;
        }
        off += n as u64;
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    #[test]
    fn overlay_xattrs_are_classified() {
        assert!(matches!(
            classify(OsStr::new("trusted.overlay.opaque")),
            OverlayXattr::Opaque
        ));
        assert!(matches!(
            classify(OsStr::new("user.overlay.opaque")),
            OverlayXattr::Opaque
        ));
        assert!(matches!(
            classify(OsStr::new("trusted.overlay.redirect")),
            OverlayXattr::Unsupported
        ));
        assert!(matches!(
            classify(OsStr::new("trusted.overlay.metacopy")),
            OverlayXattr::Unsupported
        ));
        assert!(matches!(
            classify(OsStr::new("trusted.overlay.origin")),
            OverlayXattr::Drop
        ));
        assert!(matches!(
            classify(OsStr::new("user.mime")),
            OverlayXattr::NotOverlay
        ));
        assert!(portable_xattr(OsStr::new("security.capability")));
        assert!(!portable_xattr(OsStr::new("security.selinux")));
        assert!(!portable_xattr(OsStr::new("trusted.overlay.opaque")));
    }

    /// A plain directory tree (no overlay involved) copies with its
    /// metadata, links and holes intact.
    #[test]
    fn copies_a_tree_faithfully() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join("a/b/f"), b"hello").unwrap();
        std::fs::set_permissions(s.join("a/b/f"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        std::fs::hard_link(s.join("a/b/f"), s.join("a/g")).unwrap();
        symlink("b/f", s.join("a/l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.join("wh"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(s.join("a"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(s.join("a/b/f"), "user.note", b"kept").unwrap();
        // A sparse file: 1 MiB hole, 4 bytes, 1 MiB hole.
        let f = File::create(s.join("sparse")).unwrap();
        rustix::io::pwrite(&f, b"data", 1 << 20).unwrap();
        f.set_len(2 << 20).unwrap();
        std::fs::set_permissions(s.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();

        let stats = copy_upper(s, dst.path()).unwrap();
        let d = dst.path();
        assert_eq!(stats.entries, 7);
        assert_eq!(std::fs::read(d.join("a/b/f")).unwrap(), b"hello");
        let m = std::fs::metadata(d.join("a/b/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4751);
        assert_eq!(
            m.ino(),
            std::fs::metadata(d.join("a/g")).unwrap().ino(),
            "hard link kept"
        );
        assert_eq!(std::fs::read_link(d.join("a/l")).unwrap(), Path::new("b/f"));
        let wh = rfs::stat(d.join("wh")).unwrap();
        assert!(is_whiteout(&wh));
        assert_eq!(
            xattr::get(d.join("a"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            xattr::get(d.join("a/b/f"), "user.note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        let sp = std::fs::metadata(d.join("sparse")).unwrap();
        assert_eq!(sp.len(), 2 << 20);
        assert!(
            sp.blocks() * 512 < 1 << 20,
            "holes kept ({} blocks)",
            sp.blocks()
        );
        assert_eq!(
            std::fs::metadata(d.join("a/b")).unwrap().mode() & 0o777,
            0o555
        );
        let (sm, dm) = (
            std::fs::symlink_metadata(s.join("a")).unwrap(),
            std::fs::symlink_metadata(d.join("a")).unwrap(),
        );
        assert_eq!(
            (sm.mtime(), sm.mtime_nsec()),
            (dm.mtime(), dm.mtime_nsec()),
            "dir times kept"
        );
    }

    #[test]
    fn redirects_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("moved")).unwrap();
        xattr::set(
            src.path().join("moved"),
            "trusted.overlay.redirect",
            b"/old",
        )
        .unwrap();
        assert!(matches!(
            copy_upper(src.path(), dst.path()),
            Err(CopyError::Unsupported(_))
        ));
    }
}
