//! The fast path's capture: copy a container's overlay upper directory into
//! the upper directory of a freshly prepared snapshot.
//!
//! The copy is both the capture and the apply. It is the only thing done
//! while the container is paused; it is what the new image's snapshot is
//! made of; and the layer tar is written afterwards from the copy, which
//! nothing else touches, while the container runs again.
//!
//! **The copy is what containerd's applier would make of the layer**, entry
//! for entry and attribute for attribute, so that the image on this node is
//! the image another node pulls. What [`crate::walk`] reports is written the
//! way containerd 1.6's `archive.Apply` writes a layer into an overlay
//! snapshot: owner first, then xattrs (a `chown` clears file
//! capabilities), then the mode (a `chown` clears set-id bits), then times
//! bounded as the applier bounds them ([`Time::applied`]) with the access
//! time equal to the modification time; whiteouts as fresh 0/0 character
//! devices (mode 0, the whiteout's owner, no times); opaque directories
//! with overlay's `opaque=y` in the new snapshot's namespace; hard links as
//! links, of every type. Holes are kept (the applier writes zeros: the same
//! bytes). A time the applier bounds is remembered with its true value
//! ([`Copied::true_times`]) so that the layer still records it.
//!
//! The source belongs to a container and may change under us when the
//! container is not paused, so it is walked with directory file
//! descriptors and `O_NOFOLLOW` (see [`crate::walk`]).

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, SeekFrom, Timestamps};

pub use crate::walk::WalkError as CopyError;
use crate::walk::{
    self, DirStack, Entry, Everything, Kind, Layout, Policy, Time, Visit, Walk, WalkError,
    display_path,
};

/// What a copy saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Entries below the root (files, directories, links, whiteouts …).
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    /// Entries whose time the snapshot holds bounded (see [`Time::applied`]),
    /// by their inode in the copy: the time the layer records.
    pub true_times: HashMap<(u64, u64), Time>,
}

/// How to copy an upper directory.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// The container's upper directory.
    pub from: Layout,
    /// The new snapshot's upper directory.
    pub to: Layout,
    /// The longest path a layer may hold (see [`walk::applier_path_room`]).
    pub max_path: Option<usize>,
}

/// Copies the tree under `src` into the empty directory `dst`. The roots
/// themselves are left as they are (their attributes come from the
/// snapshotter, as with an applied layer).
#[cfg(test)]
pub fn copy_upper(src: &Path, dst: &Path, opts: CopyOptions) -> Result<Copied, CopyError> {
    copy_upper_with(src, dst, opts, &Everything)
}

/// [`copy_upper`] with a [`Policy`] deciding what is left out and which
/// times are recorded.
pub fn copy_upper_with(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    policy: &dyn Policy,
) -> Result<Copied, CopyError> {
    let dst_root = walk::open_dir_path(dst)?;
    let root_stat = rfs::fstat(&dst_root).map_err(|e| WalkError::io("stat of the copy", e))?;
    let mut dirs = DirStack::default();
    dirs.push(
        dst_root
            .try_clone()
            .map_err(|e| WalkError::io("dup of the copy's root", e))?,
        &root_stat,
    );
    let mut c = Copier {
        root: dst_root,
        dirs,
        to: opts.to,
        copied: Copied::default(),
        buf: Vec::new(),
    };
    let walked = Walk {
        layout: opts.from,
        max_path: opts.max_path,
        tolerate_vanished: false,
        policy,
    }
    .run(src, &mut c)?;
    c.copied.entries = walked.entries;
    Ok(c.copied)
}

/// Reads the data of every regular file under `src` into the page cache,
/// so the copy made while the container is paused runs at memory speed
/// instead of waiting on the disk. Done before pausing; a file changed
/// afterwards is simply read again by the copy. Returns the bytes read.
///
/// I/O errors only end the read-ahead early; but what the copy would
/// refuse or not read ([`CopyError::Unrepresentable`],
/// [`CopyError::Unsupported`]) is returned, so a commit can answer before
/// it pauses anything.
pub fn prewarm(src: &Path, opts: CopyOptions) -> Result<u64, CopyError> {
    struct Warm {
        total: u64,
        buf: Vec<u8>,
    }
    impl Visit for Warm {
        fn entry(
            &mut self,
            e: &Entry<'_>,
            _: &OwnedFd,
            data: Option<&OwnedFd>,
        ) -> Result<(), WalkError> {
            if let (Kind::File, Some(f)) = (e.kind, data) {
                // Read it (readahead(2) only starts the I/O).
                self.buf.resize(1 << 20, 0);
                let mut off = 0u64;
                while let Ok(n) = rustix::io::pread(f, &mut self.buf, off) {
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                }
                self.total += off;
            }
            Ok(())
        }
    }
    let mut w = Warm {
        total: 0,
        buf: Vec::new(),
    };
    match (Walk {
        layout: opts.from,
        max_path: opts.max_path,
        tolerate_vanished: true,
        policy: &Everything,
    })
    .run(src, &mut w)
    {
        Ok(_) | Err(WalkError::Io { .. }) => Ok(w.total),
        Err(e) => Err(e),
    }
}

struct Copier {
    /// The copy's root, for hard links to earlier paths.
    root: OwnedFd,
    /// The copy's directories from the root to where the walk is.
    dirs: DirStack,
    /// The copy's layout (which namespace overlay's xattrs use there).
    to: Layout,
    copied: Copied,
    buf: Vec<u8>,
}

impl Visit for Copier {
    fn entry(
        &mut self,
        e: &Entry<'_>,
        _src_dir: &OwnedFd,
        data: Option<&OwnedFd>,
    ) -> Result<(), WalkError> {
        let ctx = |what: &str| format!("{what} {}", display_path(e.path));
        let dst = self.dirs.top();
        if let Some(first) = e.link {
            return link_at(&self.root, first, dst, e.name)
                .map_err(|err| WalkError::io(ctx("linking"), err));
        }
        let name = e.name;
        match e.kind {
            Kind::Dir => {
                rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700))
                    .map_err(|err| WalkError::io(ctx("mkdir"), err))?;
                let d = rfs::openat(
                    dst,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| WalkError::io(ctx("opening the copy of"), err))?;
                let st = rfs::fstat(&d).map_err(|err| WalkError::io(ctx("stat"), err))?;
                self.dirs.push(d, &st);
                // Attributes when its contents are done (leave).
            }
            Kind::File => {
                let src =
                    data.ok_or_else(|| WalkError::io(ctx("no data for"), io::ErrorKind::NotFound))?;
                let d = rfs::openat(
                    dst,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|err| WalkError::io(ctx("creating the copy of"), err))?;
                self.copied.bytes += copy_data(src, &d, e.stat.st_size as u64, &mut self.buf)
                    .map_err(|err| WalkError::io(ctx("copying"), err))?;
                self.finish_fd(&d, e, false)?;
            }
            Kind::Symlink => {
                rfs::symlinkat(e.target, dst, name)
                    .map_err(|err| WalkError::io(ctx("symlink"), err))?;
                self.finish_at(e)?;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                let ft = match e.kind {
                    Kind::CharDevice => FileType::CharacterDevice,
                    Kind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                rfs::mknodat(dst, name, ft, Mode::from_raw_mode(e.mode()), e.stat.st_rdev)
                    .map_err(|err| WalkError::io(ctx("mknod"), err))?;
                self.finish_at(e)?;
            }
            Kind::Whiteout => {
                // As containerd's OverlayConvertWhiteout makes one.
                rfs::mknodat(dst, name, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(|err| WalkError::io(ctx("mknod"), err))?;
                rfs::chownat(
                    dst,
                    name,
                    Some(rfs::Uid::from_raw(e.stat.st_uid)),
                    Some(rfs::Gid::from_raw(e.stat.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|err| WalkError::io(ctx("chown"), err))?;
            }
        }
        Ok(())
    }

    fn leave(&mut self, e: &Entry<'_>, _src: &OwnedFd) -> Result<(), WalkError> {
        let d = self.dirs.pop();
        // Attributes last: the contents must not bump the times, and a
        // read-only mode must not stop their copy.
        self.finish_fd(&d, e, e.opaque)?;
        self.dirs.reopen_top(&d)
    }
}

impl Copier {
    /// Owner, xattrs, mode and times of an open copy (file or directory).
    fn finish_fd(&mut self, fd: &OwnedFd, e: &Entry<'_>, opaque: bool) -> Result<(), WalkError> {
        let ctx = |what: &str| format!("{what} {}", display_path(e.path));
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(e.stat.st_uid)),
            Some(rfs::Gid::from_raw(e.stat.st_gid)),
        )
        .map_err(|err| WalkError::io(ctx("chown"), err))?;
        for (k, v) in self.stored(e, opaque) {
            rfs::fsetxattr(fd, k.as_slice(), &v, rfs::XattrFlags::empty()).map_err(|err| {
                WalkError::io(ctx(&format!("setxattr {}", display_path(&k))), err)
            })?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(e.mode()))
            .map_err(|err| WalkError::io(ctx("chmod"), err))?;
        let t = self.time(e, fd)?;
        rfs::futimens(fd, &t).map_err(|err| WalkError::io(ctx("utimes"), err))
    }

    /// Owner, xattrs, mode and times of what cannot be opened (symlink,
    /// device, fifo), by name in the current directory.
    fn finish_at(&mut self, e: &Entry<'_>) -> Result<(), WalkError> {
        let ctx = |what: &str| format!("{what} {}", display_path(e.path));
        let dst = self.dirs.top();
        rfs::chownat(
            dst,
            e.name,
            Some(rfs::Uid::from_raw(e.stat.st_uid)),
            Some(rfs::Gid::from_raw(e.stat.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| WalkError::io(ctx("chown"), err))?;
        let proc = walk::proc_path(dst, e.name);
        for (k, v) in self.stored(e, false) {
            rfs::lsetxattr(proc.as_c_str(), k.as_slice(), &v, rfs::XattrFlags::empty()).map_err(
                |err| WalkError::io(ctx(&format!("setxattr {}", display_path(&k))), err),
            )?;
        }
        if e.kind != Kind::Symlink {
            rfs::chmodat(dst, e.name, Mode::from_raw_mode(e.mode()), AtFlags::empty())
                .map_err(|err| WalkError::io(ctx("chmod"), err))?;
        }
        let st = rfs::statat(dst, e.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| WalkError::io(ctx("stat"), err))?;
        let t = self.time_for(e, &st);
        let dst = self.dirs.top();
        rfs::utimensat(dst, e.name, &t, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| WalkError::io(ctx("utimes"), err))
    }

    /// The xattrs as stored in the copy: names in overlay's namespace
    /// escaped, and overlay's opaque marker.
    fn stored(&self, e: &Entry<'_>, opaque: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<_> = e
            .xattrs
            .iter()
            .map(|(k, v)| (self.to.stored_name(k), v.clone()))
            .collect();
        if opaque {
            if let Some(p) = self.to.private_prefix() {
                out.push(([p, b"opaque"].concat(), b"y".to_vec()));
            }
        }
        out
    }

    fn time(&mut self, e: &Entry<'_>, fd: &OwnedFd) -> Result<Timestamps, WalkError> {
        let st = rfs::fstat(fd).map_err(|err| WalkError::io("stat of a copy", err))?;
        Ok(self.time_for(e, &st))
    }

    /// The copy's times: what the applier sets ([`Time::applied`], access
    /// time = modification time); a bounded time is remembered by the
    /// copy's inode.
    fn time_for(&mut self, e: &Entry<'_>, copy: &rfs::Stat) -> Timestamps {
        let t = e.mtime.applied();
        if t != e.mtime {
            self.copied
                .true_times
                .insert((copy.st_dev, copy.st_ino), e.mtime);
        }
        Timestamps {
            last_access: t.timespec(),
            last_modification: t.timespec(),
        }
    }
}

/// Hard-links `first` (a path below `root`) as `name` in `dir`. A path too
/// long for one system call is resolved a directory at a time.
fn link_at(root: &OwnedFd, first: &[u8], dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    if first.len() < walk::PATH_MAX - 1 {
        return Ok(rfs::linkat(root, first, dir, name, AtFlags::empty())?);
    }
    let (parent, base) = match first.iter().rposition(|&b| b == b'/') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b""[..], first),
    };
    let mut fd = root.try_clone()?;
    for part in parent.split(|&b| b == b'/') {
        fd = rfs::openat(
            &fd,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(rfs::linkat(&fd, base, dir, name, AtFlags::empty())?)
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
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    const OVERLAY: CopyOptions = CopyOptions {
        from: Layout::Overlay,
        to: Layout::Overlay,
        max_path: None,
    };

    fn set_mtime(p: &Path, sec: i64, nsec: u32) {
        let t = Time { sec, nsec }.timespec();
        rfs::utimensat(
            rfs::CWD,
            p,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// A tree copies with its metadata, links and holes intact, the way
    /// containerd's applier would write it.
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
        std::fs::hard_link(s.join("a/l"), s.join("a/l2")).unwrap();
        rfs::mknodat(
            rfs::CWD,
            s.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        std::fs::hard_link(s.join("fifo"), s.join("fifo2")).unwrap();
        rfs::mknodat(
            rfs::CWD,
            s.join("wh"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::hard_link(s.join("wh"), s.join("wh2")).unwrap(); // overlay shares whiteouts
        xattr::set(s.join("a"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(s.join("a"), "trusted.overlay.origin", b"o").unwrap();
        xattr::set(s.join("a"), "trusted.mine", b"t").unwrap();
        xattr::set(s.join("a/b/f"), "user.note", b"kept").unwrap();
        xattr::set(
            s.join("a/b/f"),
            std::ffi::OsStr::from_bytes(b"user.bad\xffname"),
            b"raw",
        )
        .unwrap();
        // A sparse file: 1 MiB hole, 4 bytes, 1 MiB hole.
        let f = File::create(s.join("sparse")).unwrap();
        rustix::io::pwrite(&f, b"data", 1 << 20).unwrap();
        f.set_len(2 << 20).unwrap();
        std::fs::set_permissions(s.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&s.join("sparse"), 1_700_000_000, 123_456_789);
        set_mtime(&s.join("a/l"), -5, 0);
        set_mtime(&s.join("a"), 1_600_000_000, 5);

        let copied = copy_upper(s, dst.path(), OVERLAY).unwrap();
        let d = dst.path();
        assert_eq!(copied.entries, 11);
        assert_eq!(std::fs::read(d.join("a/b/f")).unwrap(), b"hello");
        let m = std::fs::metadata(d.join("a/b/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4751);
        let ino = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap().ino();
        assert_eq!(ino("a/b/f"), ino("a/g"), "hard link kept");
        assert_eq!(ino("a/l"), ino("a/l2"), "hard-linked symlink kept");
        assert_eq!(ino("fifo"), ino("fifo2"), "hard-linked fifo kept");
        assert_ne!(ino("wh"), ino("wh2"), "whiteouts are made one by one");
        assert_eq!(std::fs::read_link(d.join("a/l")).unwrap(), Path::new("b/f"));
        let wh = rfs::stat(d.join("wh")).unwrap();
        assert_eq!(
            wh.st_mode,
            libc::S_IFCHR,
            "a whiteout as the applier makes it"
        );
        assert_eq!(wh.st_rdev, 0);
        let names = xattr::list(d.join("a")).unwrap().collect::<Vec<_>>();
        assert_eq!(names, ["trusted.overlay.opaque"], "only the opaque marker");
        assert_eq!(
            xattr::get(d.join("a/b/f"), "user.note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(
            xattr::get(
                d.join("a/b/f"),
                std::ffi::OsStr::from_bytes(b"user.bad\xffname")
            )
            .unwrap()
            .as_deref(),
            Some(&b"raw"[..])
        );
        let sp = std::fs::metadata(d.join("sparse")).unwrap();
        assert_eq!(sp.len(), 2 << 20);
        assert!(
            sp.blocks() * 512 < 1 << 20,
            "holes kept ({} blocks)",
            sp.blocks()
        );
        assert_eq!((sp.mtime(), sp.mtime_nsec()), (1_700_000_000, 123_456_789));
        assert_eq!(
            (sp.atime(), sp.atime_nsec()),
            (1_700_000_000, 123_456_789),
            "atime = mtime"
        );
        assert_eq!(
            std::fs::metadata(d.join("a/b")).unwrap().mode() & 0o777,
            0o555
        );
        // Writing the layer from the copy lists its directories without
        // touching their access times (= mtime, as the applier sets them).
        crate::tarball::write_layer(d, Layout::Overlay, &copied.true_times, std::io::sink())
            .unwrap();
        let dm = std::fs::symlink_metadata(d.join("a")).unwrap();
        assert_eq!(
            (dm.mtime(), dm.mtime_nsec()),
            (1_600_000_000, 5),
            "dir times kept"
        );
        assert_eq!(
            (dm.atime(), dm.atime_nsec()),
            (1_600_000_000, 5),
            "dir atime = mtime"
        );
        // A time before the epoch is the epoch, as the applier sets it;
        // its true value is kept for the layer.
        let lm = std::fs::symlink_metadata(d.join("a/l")).unwrap();
        assert_eq!((lm.mtime(), lm.mtime_nsec()), (0, 0));
        assert_eq!(
            copied.true_times.get(&(lm.dev(), lm.ino())),
            Some(&Time { sec: -5, nsec: 0 })
        );
        assert_eq!(copied.true_times.len(), 1);
    }

    #[test]
    fn user_xattrs_in_overlays_namespace_are_escaped_in_the_copy() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        xattr::set(src.path().join("d"), "user.overlay.opaque", b"y").unwrap();
        // Source without userxattr (the user's), copy with it.
        copy_upper(
            src.path(),
            dst.path(),
            CopyOptions {
                from: Layout::Overlay,
                to: Layout::OverlayUserXattr,
                max_path: None,
            },
        )
        .unwrap();
        let names = xattr::list(dst.path().join("d"))
            .unwrap()
            .collect::<Vec<_>>();
        assert_eq!(names, ["user.overlay.overlay.opaque"]);
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
            copy_upper(src.path(), dst.path(), OVERLAY),
            Err(CopyError::Unsupported(_))
        ));
        assert!(matches!(
            prewarm(src.path(), OVERLAY),
            Err(CopyError::Unsupported(_))
        ));
    }

    #[test]
    fn unrepresentable_names_are_found_before_the_pause() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/.wh.x"), b"").unwrap();
        match prewarm(src.path(), OVERLAY) {
            Err(e @ CopyError::Unrepresentable { .. }) => {
                assert!(e.to_string().starts_with("/d/.wh.x: "), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Hard links whose first path is longer than a system call takes.
    #[test]
    fn links_to_paths_beyond_path_max() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let name = "n".repeat(200);
        let mut fd = walk::open_dir_path(src.path()).unwrap();
        for _ in 0..25 {
            rfs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            fd = rfs::openat(
                &fd,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
        let f = rfs::openat(
            &fd,
            "f",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        drop(f);
        // "nnn…" sorts before "zlink": the deep file is the first path.
        rfs::linkat(
            &fd,
            "f",
            walk::open_dir_path(src.path()).unwrap(),
            "zlink",
            AtFlags::empty(),
        )
        .unwrap();
        copy_upper(src.path(), dst.path(), OVERLAY).unwrap();
        let st = rfs::stat(dst.path().join("zlink")).unwrap();
        assert_eq!(st.st_nlink, 2, "linked to the deep copy");
    }
}
