//! The fast path's capture: copy a container's overlay upper directory into
//! the upper directory of a freshly prepared snapshot.
//!
//! The copy is both the capture and the apply: it is what the new image's
//! snapshot is made of, and the layer tar is written afterwards from the
//! copy, which nothing else touches, while the container runs again.
//!
//! **The pause does not grow with the change.** The copy is made while the
//! container runs ([`copy_running`]), remembering each entry's identity and
//! change time (inode, size, mtime, ctime — ctime cannot be set from
//! inside; a change of data, attributes, links or name sets it). Paused,
//! one more walk ([`copy_paused`]) compares every entry with what was
//! copied: what changed is copied again, what appeared is copied, what
//! vanished is removed, and directories whose copy changed get their
//! attributes again — the copy is then exactly what one walk of the frozen
//! tree makes. An entry whose ctime is within the kernel's clock tick of
//! the moment it was looked at ([`RACY`]) is copied again regardless (a
//! big file is looked at once more after the tick instead), and a
//! hard-link group is kept only whole. A write through a shared memory
//! mapping to a page already dirty sets no ctime (the kernel stamps the
//! time at a page's first write after writeback, or through a new
//! mapping), so a file that has dirty pages when the running copy comes to
//! it (`cachestat(2)`) and is open for writing somewhere (a writable
//! mapping holds its file open so; asked with a read lease, see
//! [`open_for_writing`]) is written back first (`sync_file_range(2)`, that
//! file alone: not the whole filesystem, which would wait behind every
//! other writer on the node), and one still dirty then is copied again
//! while paused; every other page is clean and write-protected, and
//! writing it moves the ctime. A dirty file open nowhere for writing has
//! no writable mapping: one made later writes each page first through a
//! fault that moves the ctime (on ext4, XFS and btrfs, whose `page_mkwrite`
//! stamps it: [`stamps_mapped_writes`]; elsewhere every dirty file is
//! written back as above, and on tmpfs, whose pages are all dirty,
//! everything is copied again).
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
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, SeekFrom, Timestamps};

pub(crate) use crate::walk::WalkError as CopyError;
use crate::walk::{
    self, DirStack, Entry, Kind, Layout, Policy, Time, Visit, Walk, WalkError, display_path,
};

/// What a copy saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Copied {
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
pub(crate) struct CopyOptions {
    /// The container's upper directory.
    pub from: Layout,
    /// The new snapshot's upper directory.
    pub to: Layout,
    /// The longest path a layer may hold (see [`walk::applier_path_room`]).
    pub max_path: Option<usize>,
}

/// Copies the tree under `src` into the empty directory `dst` in one walk
/// (the roots themselves are left as they are: their attributes come from
/// the snapshotter, as with an applied layer). What [`copy_paused`] makes
/// of an empty [`Precopy`].
#[cfg(test)]
pub(crate) fn copy_upper(src: &Path, dst: &Path, opts: CopyOptions) -> Result<Copied, CopyError> {
    copy_paused(src, dst, opts, &walk::Everything, &Precopy::default()).map(|(c, _)| c)
}

/// What a capture in two walks did: the copy made while the container
/// ran, then the walk made while it was paused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureWork {
    /// Entries copied while the container ran.
    pub copied_running: u64,
    /// Bytes of file data copied while the container ran.
    pub bytes_running: u64,
    /// Entries the paused walk compared with the copy.
    pub walked_paused: u64,
    /// Entries copied (again, or for the first time) while paused.
    pub copied_paused: u64,
    /// Bytes of file data copied while paused.
    pub bytes_paused: u64,
    /// Entries removed from the copy while paused: gone from the
    /// container, or old copies of what changed.
    pub removed_paused: u64,
}

/// A change time this close to (or after) the moment an entry was looked
/// at may hide a later change of the same clock tick: the kernel stamps
/// times from a coarse clock. Such an entry is copied again once paused.
const RACY: i128 = 50_000_000; // ns

/// A file this big, changed within [`RACY`] of being looked at, is worth a
/// wait of one clock tick and a second look ([`Recorder::look_again`])
/// rather than a copy again while paused: a file the container has just
/// finished writing is the common case of a commit made at once.
const LOOK_AGAIN_FROM: i64 = 4 << 20;

/// What the copy made while the container ran saw of each entry: enough
/// to tell, once the container is paused, whether the copy of an entry
/// still holds (see [`copy_running`]).
///
/// Held whole from the running copy to the end of the pause, so kept
/// compact: a record of fixed size an entry ([`Rec`], 72 bytes), its name
/// in one run of bytes and its directory's path once — 79 bytes an entry
/// for 50,000 files in 500 directories, where a map of paths to [`Seen`]
/// took 215. Records are added as the copy goes, then sorted by directory
/// and name ([`Precopy::finish`]) and looked up by binary search within
/// their directory: lookups are by exact path, as with the map.
#[derive(Debug, Default)]
pub(crate) struct Precopy {
    /// Directories holding entries, by path with its `/` (empty: the
    /// root; see [`split_path`]), to the number their records carry.
    dirs: HashMap<Box<[u8]>, u32>,
    /// Once finished: where each directory's records start, by number,
    /// then the end.
    starts: Vec<u32>,
    /// Every entry's name, one after another.
    names: Vec<u8>,
    recs: Vec<Rec>,
    /// Devices, by the number records carry.
    devs: Vec<u64>,
    /// An entry was met that no record can hold (more than 2³² entries,
    /// directories or bytes of names, a name over 64 KiB, more than
    /// 65,536 devices): it is not found, so copied again while paused,
    /// and any path not found may be it ([`Precopy::contains`]).
    overflow: bool,
    /// Entries copied.
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
}

/// One entry of a [`Precopy`]: its [`Seen`], packed. Times are
/// nanoseconds since the epoch. What does not fit (a time outside
/// 1677–2262, a link count of 2³² or more) is recorded racy: never taken
/// as settled, copied again while paused. What being racy does not guard
/// is exact: the kind, the owner (all that settles a whiteout), the
/// device and inode of the entry and of its copy.
#[derive(Debug, Clone, Copy)]
struct Rec {
    ino: u64,
    copy_ino: u64,
    size: i64,
    mtime: i64,
    ctime: i64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    /// The directory's number in [`Precopy::dirs`].
    dir: u32,
    /// Where the name starts in [`Precopy::names`].
    name: u32,
    name_len: u16,
    /// Numbers in [`Precopy::devs`].
    dev: u16,
    copy_dev: u16,
    kind: Kind,
    racy: bool,
}

/// Nanoseconds since the epoch, if they fit.
fn time_ns((s, ns): (i64, i64)) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ns) {
        return None;
    }
    s.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn time_of(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// A record's name in `names`.
fn name_in<'n>(names: &'n [u8], r: &Rec) -> &'n [u8] {
    let at = r.name as usize;
    &names[at..at + usize::from(r.name_len)]
}

/// A path's directory, with its `/` (an entry of the root: empty), and
/// name: the two make the path again, and no other two make it.
fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => path.split_at(i + 1),
        None => (b"", path),
    }
}

impl Precopy {
    /// Whether the running copy does not prove an entry settled as `st`
    /// shows it: not copied, changed within a clock tick of being looked
    /// at, hot (dirty pages), a hard link, or changed since.
    pub(crate) fn unsettled(&self, path: &[u8], st: &rfs::Stat) -> bool {
        match self.get(path) {
            Some(s) => s.racy || s.id != Identity::of(st),
            None => true,
        }
    }

    fn is_empty(&self) -> bool {
        self.recs.is_empty() && !self.overflow
    }

    /// Records what the running copy saw of `path` (before
    /// [`Precopy::finish`]).
    fn insert(&mut self, path: &[u8], s: &Seen) {
        let (dir, name) = split_path(path);
        let dir = self.dir_number(dir);
        self.push(dir, name, s);
    }

    /// The number of the directory at `path`, given on first sight;
    /// `None` past 2³² directories.
    fn dir_number(&mut self, path: &[u8]) -> Option<u32> {
        if let Some(&d) = self.dirs.get(path) {
            return Some(d);
        }
        let d = u32::try_from(self.dirs.len()).ok()?;
        self.dirs.insert(path.into(), d);
        Some(d)
    }

    fn dev_number(&mut self, dev: u64) -> Option<u16> {
        let i = match self.devs.iter().position(|&d| d == dev) {
            Some(i) => i,
            None => {
                self.devs.push(dev);
                self.devs.len() - 1
            }
        };
        u16::try_from(i).ok()
    }

    /// Adds a record of `name` in directory `dir` (before
    /// [`Precopy::finish`]), or notes that none can hold it.
    fn push(&mut self, dir: Option<u32>, name: &[u8], s: &Seen) {
        match self.rec(dir, name, s) {
            Some(r) => {
                self.names.extend_from_slice(name);
                self.recs.push(r);
            }
            None => self.overflow = true,
        }
    }

    /// `s` as a record, its name to be added at the end of
    /// [`Precopy::names`]; `None` if a record cannot hold it.
    fn rec(&mut self, dir: Option<u32>, name: &[u8], s: &Seen) -> Option<Rec> {
        let at = u32::try_from(self.names.len()).ok()?;
        // The name's end, and the count of records, fit too.
        u32::try_from(self.names.len() + name.len()).ok()?;
        u32::try_from(self.recs.len() + 1).ok()?;
        let (mtime, ctime) = (time_ns(s.id.mtime), time_ns(s.id.ctime));
        let nlink = u32::try_from(s.id.nlink).ok();
        Some(Rec {
            ino: s.id.ino,
            copy_ino: s.copy.1,
            size: s.id.size,
            mtime: mtime.unwrap_or(0),
            ctime: ctime.unwrap_or(0),
            mode: s.id.mode,
            uid: s.id.uid,
            gid: s.id.gid,
            nlink: nlink.unwrap_or(0),
            dir: dir?,
            name: at,
            name_len: u16::try_from(name.len()).ok()?,
            dev: self.dev_number(s.id.dev)?,
            copy_dev: self.dev_number(s.copy.0)?,
            kind: s.kind,
            racy: s.racy || mtime.is_none() || ctime.is_none() || nlink.is_none(),
        })
    }

    fn name_of(&self, r: &Rec) -> &[u8] {
        name_in(&self.names, r)
    }

    fn seen_of(&self, r: &Rec) -> Seen {
        let dev = |i: u16| self.devs[usize::from(i)];
        Seen {
            kind: r.kind,
            id: Identity {
                dev: dev(r.dev),
                ino: r.ino,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
                nlink: u64::from(r.nlink),
                size: r.size,
                mtime: time_of(r.mtime),
                ctime: time_of(r.ctime),
            },
            racy: r.racy,
            copy: (dev(r.copy_dev), r.copy_ino),
        }
    }

    /// The parts of one copy (a thread's each) made one, finished: the
    /// others are folded into the largest, so that memory for one more
    /// part at most is needed, not for the whole again.
    fn fold(mut parts: Vec<Precopy>) -> Precopy {
        parts.sort_by_key(|p| std::cmp::Reverse(p.recs.len()));
        let mut parts = parts.into_iter();
        let mut pre = parts.next().unwrap_or_default();
        for part in parts {
            let dirs = {
                let mut by_number = vec![&[][..]; part.dirs.len()];
                for (path, &d) in &part.dirs {
                    by_number[d as usize] = &path[..];
                }
                by_number
                    .into_iter()
                    .map(|path| pre.dir_number(path))
                    .collect::<Vec<_>>()
            };
            pre.recs.reserve_exact(part.recs.len());
            for r in &part.recs {
                pre.push(dirs[r.dir as usize], part.name_of(r), &part.seen_of(r));
            }
            pre.overflow |= part.overflow;
            pre.entries += part.entries;
            pre.bytes += part.bytes;
        }
        pre.finish();
        pre
    }

    /// Done copying: the records sorted for lookups.
    fn finish(&mut self) {
        let (names, mut recs) = (&self.names, std::mem::take(&mut self.recs));
        let name = |r: &Rec| name_in(names, r);
        recs.sort_unstable_by(|a, b| a.dir.cmp(&b.dir).then_with(|| name(a).cmp(name(b))));
        // A walk meets each path once; were one met twice, neither
        // record is trusted (the entry is copied again while paused).
        for i in 1..recs.len() {
            if recs[i - 1].dir == recs[i].dir && name(&recs[i - 1]) == name(&recs[i]) {
                recs[i - 1].racy = true;
                recs[i].racy = true;
            }
        }
        recs.shrink_to_fit();
        self.names.shrink_to_fit();
        // The count of records fits a u32 ([`Precopy::rec`]).
        let mut starts = Vec::with_capacity(self.dirs.len() + 1);
        let mut at = 0;
        for d in 0..self.dirs.len() {
            while at < recs.len() && (recs[at].dir as usize) < d {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(recs.len() as u32);
        self.starts = starts;
        self.recs = recs;
    }

    /// What the running copy saw of `path` (once finished).
    fn get(&self, path: &[u8]) -> Option<Seen> {
        let (dir, name) = split_path(path);
        let d = *self.dirs.get(dir)? as usize;
        let (from, to) = (*self.starts.get(d)?, *self.starts.get(d + 1)?);
        let recs = &self.recs[from as usize..to as usize];
        let i = recs.binary_search_by(|r| self.name_of(r).cmp(name)).ok()?;
        Some(self.seen_of(&recs[i]))
    }

    /// Whether the running copy may hold `path` (once finished).
    fn contains(&self, path: &[u8]) -> bool {
        self.overflow || self.get(path).is_some()
    }
}

/// An entry as the running copy saw it: the stat its copy was made from
/// (for a hard link, the first path's) and the copy's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    kind: Kind,
    id: Identity,
    /// Changed within [`RACY`] of being looked at.
    racy: bool,
    copy: (u64, u64),
}

/// What tells an entry changed: identity and change time. ctime cannot be
/// set from inside a container, and any change of data, attributes, link
/// count or name of an inode sets it. Also what an incremental record
/// keeps of each entry ([`crate::incremental`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u64,
    pub(crate) size: i64,
    pub(crate) mtime: (i64, i64),
    pub(crate) ctime: (i64, i64),
}

impl Identity {
    pub(crate) fn of(st: &rfs::Stat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }

    fn ctime_ns(&self) -> i128 {
        i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1)
    }
}

/// Whether an open file has dirty pages in the page cache
/// (`cachestat(2)`, Linux 6.5).
fn dirty_pages(fd: &OwnedFd) -> io::Result<bool> {
    Ok(cachestat(fd)?.dirty > 0)
}

/// Starts writeback of an open file's dirty pages, if it has any and may
/// have them mapped writable, and says whether some are dirty still (hot:
/// written meanwhile, or a filesystem that keeps pages dirty, as tmpfs
/// does). Writeback of a page begins by marking it clean and
/// write-protecting it, so from then on a write to it, through a mapping
/// too, faults and moves the file's ctime: the writeback itself need not
/// be waited for. A page dirty and under writeback at once is skipped by
/// the kernel and stays dirty, so hot.
///
/// On a filesystem that `stamps` mapped writes, a dirty file that nobody
/// has open for writing is left as it is: it has no writable mapping, and
/// a mapping made later is written through a fault that moves the ctime.
/// Writing back 50,000 files just written was most of the running copy
/// (1.4-2.3 s of 3.6-4.4).
fn settle(fd: &OwnedFd, stamps: bool) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    if !dirty_pages(fd)? || (stamps && !open_for_writing(fd)) {
        return Ok(false);
    }
    // SAFETY: a plain syscall on an open descriptor; 0, 0 is the whole file.
    if unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
        let err = io::Error::last_os_error();
        // A file that cannot be written back this way stays hot.
        if matches!(
            err.raw_os_error(),
            Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS)
        ) {
            return Ok(true);
        }
        return Err(err);
    }
    dirty_pages(fd)
}

/// Whether anyone has the file of `fd` (opened read-only) open for
/// writing, its shared writable mappings included (a mapping holds the
/// file it maps): a read lease is refused exactly then (`fcntl(2)`,
/// `F_SETLEASE`; Linux's `inode_is_open_for_write`). The lease is given
/// back at once. Any answer but a lease taken counts as open: a
/// filesystem without leases, leases switched off, a lease held by
/// another.
///
/// While the lease is held, for the few microseconds of two system calls,
/// an open of the file for writing waits for it to be given back (or
/// fails with `EWOULDBLOCK` if it asked not to block), and the break is
/// signalled to this process: with `SIGURG` (`F_SETSIG`), ignored unless
/// handled, not the default `SIGIO`, which would end it. The lease is
/// also given back when `fd` is closed.
pub(crate) fn open_for_writing(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    /// `F_SETSIG` (Linux's `fcntl.h`; not in the libc crate).
    const F_SETSIG: libc::c_int = 10;
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl(2) on an open descriptor with integer arguments.
    unsafe {
        if libc::fcntl(fd, F_SETSIG, libc::SIGURG) != 0
            || libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) != 0
        {
            return true;
        }
        // Given back; if that failed, closing `fd` gives it back.
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
    false
}

/// Whether the filesystem of `fd` stamps a file's ctime at the first
/// write through a mapping to each page (`page_mkwrite` calls
/// `file_update_time`), a page already dirty included: ext4, XFS and
/// btrfs do. tmpfs does not, nor is it known of others.
pub(crate) fn stamps_mapped_writes(fd: &OwnedFd) -> bool {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    #[allow(clippy::unnecessary_cast)]
    rfs::fstatfs(fd).is_ok_and(|fs| matches!(fs.f_type as i64, EXT4 | XFS | BTRFS))
}

/// An open file's pages in the page cache (`cachestat(2)`, Linux 6.5):
/// `cachestat_range` and `cachestat` in the kernel's layout.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CacheStat {
    pub(crate) cache: u64,
    pub(crate) dirty: u64,
    pub(crate) writeback: u64,
    pub(crate) evicted: u64,
    pub(crate) recently_evicted: u64,
}

/// `cachestat(2)` of a whole open file.
pub(crate) fn cachestat(fd: &OwnedFd) -> io::Result<CacheStat> {
    use std::os::fd::AsRawFd;
    /// `cachestat`'s number in Linux's unified syscall table.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    #[derive(Default)]
    struct Range {
        off: u64,
        len: u64,
    }
    let range = Range::default(); // len 0: to the end
    let mut st = CacheStat::default();
    // SAFETY: the arguments are cachestat(2)'s: an open descriptor and
    // pointers to a range and a result of the kernel's layout.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut CacheStat,
            0u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn open_copier(dst: &Path, to: Layout) -> Result<Copier, CopyError> {
    let dst_root = walk::open_dir_path(dst)?;
    let root_stat = rfs::fstat(&dst_root).map_err(|e| WalkError::io("stat of the copy", e))?;
    let mut dirs = DirStack::default();
    dirs.push(
        dst_root
            .try_clone()
            .map_err(|e| WalkError::io("dup of the copy's root", e))?,
        &root_stat,
    );
    Ok(Copier::new(dst_root, dirs, to))
}

/// The first half of a capture that pauses only for a metadata walk:
/// copies the tree under `src` into the empty directory `dst` while the
/// container runs, remembering what each entry was when it was copied.
/// Entries that vanish or are replaced mid-walk are skipped (the paused
/// walk makes them). What no layer can carry, or the walk cannot read,
/// is found here, before anything is paused.
///
/// On an I/O error the copy is unfinished: empty `dst` ([`clear_dir`])
/// and call [`copy_paused`] with an empty [`Precopy`].
pub(crate) fn copy_running(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    policy: &dyn Policy,
) -> Result<Precopy, CopyError> {
    let stamps = stamps_mapped_writes(&walk::open_dir_path(src)?);
    let mut r = Recorder {
        copier: open_copier(dst, opts.to)?,
        pre: Precopy::default(),
        firsts: HashMap::new(),
        looked: now_ns(),
        stamps,
        jobs: None,
    };
    let walked = Walk {
        layout: opts.from,
        max_path: opts.max_path,
        tolerate_vanished: true,
        policy,
    }
    .run(src, &mut r)?;
    r.pre.entries = walked.entries;
    r.pre.bytes = r.copier.copied.bytes;
    r.pre.finish();
    Ok(r.pre)
}

/// [`copy_running`] on every core: directories are shared out among
/// threads, each copying the entries of one directory at a time (creating
/// files in different directories does not contend for one directory's
/// lock), and a directory's copy gets its attributes once its own entries
/// are made. Hard links are linked within a directory; a group whose
/// paths lie in different directories is copied once per directory here,
/// and linked by the paused walk (a link each, no data). What the copy
/// holds is the same as [`copy_running`]'s; the order it was made in is
/// not, and nothing depends on it: the paused walk and the layer's tar
/// walk the copy in one sorted order.
pub(crate) fn copy_running_parallel(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    policy: &(dyn Policy + Sync),
) -> Result<Precopy, CopyError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_COPY_THREADS);
    let src_root = walk::open_dir_path(src)?;
    let dst_root = walk::open_dir_path(dst)?;
    let root_stat = rfs::fstat(&src_root).map_err(|e| WalkError::io("stat of the root", e))?;
    let stamps = stamps_mapped_writes(&src_root);
    let jobs = Jobs {
        state: std::sync::Mutex::new(JobState {
            queue: vec![DirJob {
                path: Vec::new(),
                id: (root_stat.st_dev, root_stat.st_ino),
                attrs: None,
            }],
            active: 0,
            failed: None,
        }),
        ready: std::sync::Condvar::new(),
    };
    let worker = || -> Result<Precopy, WalkError> {
        let walk = Walk {
            layout: opts.from,
            max_path: opts.max_path,
            tolerate_vanished: true,
            policy,
        };
        let root = dst_root
            .try_clone()
            .map_err(|e| WalkError::io("dup of the copy's root", e))?;
        let mut r = Recorder {
            copier: Copier::new(root, DirStack::default(), opts.to),
            pre: Precopy::default(),
            firsts: HashMap::new(),
            looked: now_ns(),
            stamps,
            jobs: Some(&jobs),
        };
        while let Some(job) = jobs.next() {
            let mut running = Running(&jobs, None);
            let done = r.run_job(job, &src_root, &walk);
            let failed = done.is_err();
            running.1 = Some(done.err());
            drop(running);
            if failed {
                break;
            }
        }
        r.pre.bytes = r.copier.copied.bytes;
        Ok(r.pre)
    };
    let parts: Vec<Result<Precopy, WalkError>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads)
            .map(|_| {
                std::thread::Builder::new()
                    .name("copy".into())
                    .spawn_scoped(scope, worker)
            })
            .collect();
        let mut parts = vec![worker()];
        for h in others {
            parts.push(match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(WalkError::io("a copy thread", io::Error::other("panicked")))
                }),
                // Fewer threads: the others did the work.
                Err(_) => Ok(Precopy::default()),
            });
        }
        parts
    });
    let failed = jobs
        .state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .failed;
    if let Some(e) = failed {
        return Err(e);
    }
    let parts = parts
        .into_iter()
        .collect::<Result<Vec<Precopy>, WalkError>>()?;
    Ok(Precopy::fold(parts))
}

/// Threads a running copy uses at most.
const MAX_COPY_THREADS: usize = 4;

/// A directory made by the parallel running copy, whose entries are still
/// to be copied.
struct DirJob {
    /// Below the roots (empty: the roots themselves).
    path: Vec<u8>,
    /// The source directory (device, inode) as listed.
    id: (u64, u64),
    /// Its attributes, set on the copy once its entries are made (`None`
    /// for the root: the snapshotter's).
    attrs: Option<DirAttrs>,
}

/// A directory entry as the walk reported it, kept for its copy's
/// attributes.
struct DirAttrs {
    name: std::ffi::CString,
    stat: rfs::Stat,
    mtime: Time,
    xattrs: Vec<walk::Xattr>,
    opaque: bool,
}

/// Directories waiting to be copied, shared by the copy's threads.
struct Jobs {
    state: std::sync::Mutex<JobState>,
    ready: std::sync::Condvar,
}

struct JobState {
    /// Last in, first out: depth first, so the queue stays short.
    queue: Vec<DirJob>,
    /// Jobs being run (each may add more).
    active: usize,
    failed: Option<WalkError>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, job: DirJob) {
        self.lock().queue.push(job);
        self.ready.notify_one();
    }

    /// The next job; `None` once every job is done or one failed.
    fn next(&self) -> Option<DirJob> {
        let mut st = self.lock();
        loop {
            if st.failed.is_some() {
                return None;
            }
            if let Some(job) = st.queue.pop() {
                st.active += 1;
                return Some(job);
            }
            if st.active == 0 {
                return None;
            }
            st = self
                .ready
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn finish(&self, failed: Option<WalkError>) {
        let mut st = self.lock();
        st.active -= 1;
        if st.failed.is_none() {
            st.failed = failed;
        }
        drop(st);
        self.ready.notify_all();
    }
}

/// A job being run: finished when dropped, with its outcome, or as failed
/// if its thread panicked (so that the other threads stop instead of
/// waiting for it).
struct Running<'j>(&'j Jobs, Option<Option<WalkError>>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let failed = self
            .1
            .take()
            .unwrap_or_else(|| Some(WalkError::io("a copy thread", io::Error::other("panicked"))));
        self.0.finish(failed);
    }
}

/// The running copy's visitor: copies each entry and remembers what it
/// was.
struct Recorder<'j> {
    copier: Copier,
    pre: Precopy,
    /// What was seen of the first path of each hard-link group met: the
    /// walk reports a later link with its first path, and it is recorded
    /// as that was.
    firsts: HashMap<Vec<u8>, Seen>,
    /// A clock read before the current entry's stat.
    looked: i128,
    /// The source's filesystem [`stamps_mapped_writes`].
    stamps: bool,
    /// Where directories go when the copy is shared out among threads:
    /// made here, filled by whichever thread takes them.
    jobs: Option<&'j Jobs>,
}

impl Recorder<'_> {
    /// When to measure the racy rule of a file from: `self.looked`, or,
    /// for a big file whose ctime is within [`RACY`] of it, a later look.
    /// The clock's tick is waited out, the time read, and the open file
    /// stat'ed again; if nothing of its identity moved, that second look
    /// is the moment the file was seen as it is: a change after it stamps
    /// a ctime of a later tick, which the paused walk tells apart. (Its
    /// data is copied after this, so what changed before is in the copy.)
    /// Without it, the file just written before a commit made at once is
    /// copied again while paused: 0.31 s of pause for 1 GiB.
    fn look_again(&self, e: &Entry<'_>, fd: &OwnedFd) -> Result<i128, WalkError> {
        let id = Identity::of(e.stat);
        if id.size < LOOK_AGAIN_FROM || id.ctime_ns() < self.looked - RACY {
            return Ok(self.looked);
        }
        let wait = (id.ctime_ns() + RACY + 1_000_000 - now_ns()).clamp(0, RACY + 1_000_000);
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
        let looked = now_ns();
        let st = rfs::fstat(fd)
            .map_err(|err| WalkError::io(format!("stat of {}", display_path(e.path)), err))?;
        if Identity::of(&st) == id && id.ctime_ns() < looked - RACY {
            Ok(looked)
        } else {
            Ok(self.looked)
        }
    }

    /// Copies the entries of one directory (made already), then sets the
    /// copy's attributes. A source directory gone or replaced since it
    /// was listed leaves its copy empty (the paused walk fills it).
    fn run_job(
        &mut self,
        job: DirJob,
        src_root: &OwnedFd,
        walk: &Walk<'_>,
    ) -> Result<(), WalkError> {
        let ctx = |what: &str| format!("{what} {}", display_path(&job.path));
        let dst = walk::open_dir_beneath(&self.copier.root, &job.path)
            .map_err(|e| WalkError::io(ctx("opening the copy of"), e))?;
        let src = match walk::open_dir_beneath(src_root, &job.path) {
            Ok(fd) => match rfs::fstat(&fd) {
                Ok(st) if (st.st_dev, st.st_ino) == job.id => Some(fd),
                Ok(_) => None,
                Err(e) => return Err(WalkError::io(ctx("stat"), e)),
            },
            // Gone, or a symlink (or a file) on the way now.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
                ) =>
            {
                None
            }
            Err(e) => return Err(WalkError::io(ctx("opening"), e)),
        };
        let st = rfs::fstat(&dst).map_err(|e| WalkError::io(ctx("stat of the copy of"), e))?;
        self.copier.dirs = DirStack::default();
        self.copier.dirs.push(dst, &st);
        if let Some(src) = src {
            self.looked = now_ns();
            let walked = walk.run_dir(src, &job.path, self)?;
            self.pre.entries += walked.entries;
        }
        let dst = self.copier.dirs.pop();
        if let Some(a) = &job.attrs {
            let e = Entry {
                path: &job.path,
                name: &a.name,
                kind: Kind::Dir,
                stat: &a.stat,
                mtime: a.mtime,
                xattrs: &a.xattrs,
                opaque: a.opaque,
                target: b"",
                link: None,
            };
            self.copier.finish_fd(&dst, &e, a.opaque)?;
        }
        Ok(())
    }
}

impl Visit for Recorder<'_> {
    fn entry(
        &mut self,
        e: &Entry<'_>,
        dir: &OwnedFd,
        data: Option<&OwnedFd>,
    ) -> Result<(), WalkError> {
        // A file with dirty pages may have one mapped writable, which
        // the container can write again without moving its ctime: if it
        // is open for writing it is written back first, and if still
        // dirty it is hot, copied again while paused. Every other page is
        // clean and write-protected, or not mapped writable and a new
        // mapping's first write moves the ctime.
        let (looked, hot) = match (e.kind, e.link, data) {
            (Kind::File, None, Some(fd)) => (
                self.look_again(e, fd)?,
                settle(fd, self.stamps)
                    .map_err(|err| WalkError::io("writing back a container's file", err))?,
            ),
            _ => (self.looked, false),
        };
        self.copier.last_copy = None;
        match (self.jobs, e.kind) {
            (Some(jobs), Kind::Dir) => {
                // Made here, filled by whichever thread takes it.
                let ctx = |what: &str| format!("{what} {}", display_path(e.path));
                let dst = self.copier.dirs.top();
                rfs::mkdirat(dst, e.name, Mode::from_raw_mode(0o700))
                    .map_err(|err| WalkError::io(ctx("mkdir"), err))?;
                let st = rfs::statat(dst, e.name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| WalkError::io(ctx("stat of the copy of"), err))?;
                self.copier.last_copy = Some((st.st_dev, st.st_ino));
                jobs.push(DirJob {
                    path: e.path.to_vec(),
                    id: (e.stat.st_dev, e.stat.st_ino),
                    attrs: Some(DirAttrs {
                        name: e.name.to_owned(),
                        stat: *e.stat,
                        mtime: e.mtime,
                        xattrs: e.xattrs.to_vec(),
                        opaque: e.opaque,
                    }),
                });
            }
            _ => self.copier.entry(e, dir, data)?,
        }
        let seen = match e.link.and_then(|first| self.firsts.get(first)) {
            Some(first) => *first,
            None => {
                let id = Identity::of(e.stat);
                Seen {
                    kind: e.kind,
                    racy: hot || e.link.is_some() || id.ctime_ns() >= looked - RACY,
                    id,
                    copy: self.copier.last_copy.unwrap_or_default(),
                }
            }
        };
        let first_of_group = e.link.is_none()
            && e.kind != Kind::Dir
            && e.kind != Kind::Whiteout
            && e.stat.st_nlink > 1;
        if first_of_group {
            self.firsts.insert(e.path.to_vec(), seen);
        }
        self.pre.insert(e.path, &seen);
        self.looked = now_ns();
        Ok(())
    }

    fn leave(&mut self, e: &Entry<'_>, fd: &OwnedFd) -> Result<(), WalkError> {
        self.copier.leave(e, fd)?;
        self.looked = now_ns();
        Ok(())
    }
}

/// The second half, while the container is paused: walks `src` once
/// more and brings the copy in `dst` to exactly what [`copy_upper`] would
/// make of it now. An entry whose identity and change time are what
/// `pre` saw is left as copied; what changed is copied again, what
/// appeared is copied, what vanished is removed, and directories whose
/// contents the copy changed get their times again. The pause costs a
/// walk of metadata plus the copy of what changed meanwhile.
pub(crate) fn copy_paused(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    policy: &dyn Policy,
    pre: &Precopy,
) -> Result<(Copied, CaptureWork), CopyError> {
    // What the policy leaves out now but the running copy holds (it may
    // have decided otherwise then) is removed from the copy.
    let left_out = LeftOut {
        policy,
        pre,
        names: std::cell::RefCell::new(Vec::new()),
    };
    let mut s = Syncer {
        copier: open_copier(dst, opts.to)?,
        pre,
        left_out: &left_out.names,
        frames: vec![SyncFrame {
            made: false,
            fresh: pre.is_empty(),
            reconcile: true,
            reattr: false,
            touched: false,
            names: Vec::new(),
        }],
        groups: HashMap::new(),
        work: CaptureWork {
            copied_running: pre.entries,
            bytes_running: pre.bytes,
            ..CaptureWork::default()
        },
    };
    let walked = Walk {
        layout: opts.from,
        max_path: opts.max_path,
        tolerate_vanished: false,
        policy: &left_out,
    }
    .run(src, &mut s)?;
    s.remove_left_out()?;
    // The root's own attributes are the snapshotter's; only its entries.
    let root = s
        .frames
        .pop()
        .unwrap_or_else(|| unreachable!("the root frame"));
    let top = s.copier.dirs.pop();
    s.remove_unseen(&top, &root.names)?;
    s.work.walked_paused = walked.entries;
    s.work.bytes_paused = s.copier.copied.bytes;
    let mut copied = std::mem::take(&mut s.copier.copied);
    copied.entries = walked.entries;
    copied.bytes = pre.bytes + s.work.bytes_paused;
    Ok((copied, s.work))
}

/// Copies the tree under `src` into `dst`, which already holds a copy of
/// higher layers (a squash, see `crate::squash`), in one walk: a
/// directory already there is entered, keeping its attributes and times,
/// and only made opaque if the entry is. The policy leaves out whatever
/// the copy already shadows. For committed snapshots, which nothing
/// changes.
pub(crate) fn merge_upper_with(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    policy: &dyn Policy,
) -> Result<Copied, CopyError> {
    let mut copier = open_copier(dst, opts.to)?;
    copier.merge = true;
    let walked = Walk {
        layout: opts.from,
        max_path: opts.max_path,
        tolerate_vanished: false,
        policy,
    }
    .run(src, &mut copier)?;
    let mut copied = copier.copied;
    copied.entries = walked.entries;
    Ok(copied)
}

/// Removes everything in the directory `dst` (not `dst` itself).
pub(crate) fn clear_dir(dst: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dst)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A directory of the paused walk.
struct SyncFrame {
    /// Made by this walk (the copier sets its attributes).
    made: bool,
    /// Everything below is copied anew (the directory is new or replaced).
    fresh: bool,
    /// Its entries may differ from the copy's: names not seen are removed.
    reconcile: bool,
    /// Its own attributes changed: all set again.
    reattr: bool,
    /// An entry of its copy was made or removed (its times moved).
    touched: bool,
    /// Names seen, when reconciling (in walk order, which is sorted).
    names: Vec<std::ffi::CString>,
}

/// A policy that notes the names it leaves out of the directory being
/// walked when the running copy holds them.
struct LeftOut<'p> {
    policy: &'p dyn Policy,
    pre: &'p Precopy,
    names: std::cell::RefCell<Vec<std::ffi::CString>>,
}

impl Policy for LeftOut<'_> {
    fn include(&self, path: &[u8], kind: Kind, stat: &rfs::Stat) -> bool {
        let included = self.policy.include(path, kind, stat);
        if !included && self.pre.contains(path) {
            let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
            if let Ok(name) = std::ffi::CString::new(name) {
                self.names.borrow_mut().push(name);
            }
        }
        included
    }

    fn mtime(&self, path: &[u8], stat: &rfs::Stat, t: Time) -> Time {
        self.policy.mtime(path, stat, t)
    }

    fn seen(&self, e: &Entry<'_>) {
        self.policy.seen(e);
    }
}

struct Syncer<'p> {
    copier: Copier,
    pre: &'p Precopy,
    /// Names [`LeftOut`] noted in the directory being walked.
    left_out: &'p std::cell::RefCell<Vec<std::ffi::CString>>,
    frames: Vec<SyncFrame>,
    /// Hard-link groups by source inode: their copy, and whether this walk
    /// made it.
    groups: HashMap<(u64, u64), ((u64, u64), bool)>,
    work: CaptureWork,
}

impl Syncer<'_> {
    /// Removes from the copy's current directory what the policy left out
    /// of it since the last entry.
    fn remove_left_out(&mut self) -> Result<(), WalkError> {
        let names = std::mem::take(&mut *self.left_out.borrow_mut());
        for name in names {
            let top = self.copier.dirs.top();
            if remove_at(top, &name).map_err(|e| WalkError::io("removing a left-out entry", e))? {
                self.work.removed_paused += 1;
                if let Some(f) = self.frames.last_mut() {
                    f.touched = true;
                }
            }
        }
        Ok(())
    }

    /// Removes the entries of the copy's directory `dir` whose names the
    /// source no longer has.
    fn remove_unseen(
        &mut self,
        dir: &OwnedFd,
        seen: &[std::ffi::CString],
    ) -> Result<bool, WalkError> {
        let names = walk::list_dir(dir).map_err(|e| WalkError::io("listing the copy", e))?;
        let mut removed = false;
        for name in names {
            if seen.binary_search(&name).is_err() {
                remove_at(dir, &name)
                    .map_err(|e| WalkError::io("removing what vanished from the copy", e))?;
                self.work.removed_paused += 1;
                removed = true;
            }
        }
        Ok(removed)
    }
}

/// Removes `name` in `dir`, a whole tree if it is a directory; nothing if
/// there is nothing. Returns whether something was removed.
fn remove_at(dir: &OwnedFd, name: &CStr) -> io::Result<bool> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(rustix::io::Errno::ISDIR) => {
            let p = walk::proc_path(dir, name);
            std::fs::remove_dir_all(std::ffi::OsStr::from_bytes(p.as_bytes()))?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

impl Syncer<'_> {
    /// Whether the running copy of an entry still holds: the same kind,
    /// identity and change time (a whiteout: the same owner), not racy,
    /// and a hard link linked to the copy this walk keeps for its group.
    fn holds(&self, path: &[u8], kind: Kind, st: &rfs::Stat, link: Option<&[u8]>) -> bool {
        let fresh = self.frames.last().is_none_or(|f| f.fresh);
        let Some(s) = self.pre.get(path).filter(|_| !fresh) else {
            return false;
        };
        s.kind == kind
            && match kind {
                // A whiteout's copy is a fresh device with its owner.
                Kind::Whiteout => (s.id.uid, s.id.gid) == (st.st_uid, st.st_gid),
                _ => !s.racy && s.id == Identity::of(st),
            }
            && match link {
                // Linked to the copy this walk keeps for the group.
                Some(_) => self.groups.get(&(st.st_dev, st.st_ino)) == Some(&(s.copy, false)),
                None => true,
            }
    }
}

impl Visit for Syncer<'_> {
    /// What the copy holds is not read again: no open, no xattrs (a
    /// change of either moves the change time).
    fn skim(&mut self, path: &[u8], kind: Kind, st: &rfs::Stat, link: Option<&[u8]>) -> bool {
        self.holds(path, kind, st, link)
    }

    fn entry(
        &mut self,
        e: &Entry<'_>,
        dir: &OwnedFd,
        data: Option<&OwnedFd>,
    ) -> Result<(), WalkError> {
        self.remove_left_out()?;
        let ctx = |what: &str| format!("{what} {}", display_path(e.path));
        let unchanged = self.holds(e.path, e.kind, e.stat, e.link);
        let parent = self
            .frames
            .last_mut()
            .unwrap_or_else(|| unreachable!("a frame per directory"));
        if parent.reconcile {
            parent.names.push(e.name.to_owned());
        }
        let seen = match parent.fresh {
            true => None,
            false => self.pre.get(e.path),
        };
        let key = (e.stat.st_dev, e.stat.st_ino);
        let first_of_group = e.link.is_none()
            && e.kind != Kind::Dir
            && e.kind != Kind::Whiteout
            && e.stat.st_nlink > 1;
        let same_inode = seen.is_some_and(|s| {
            s.kind == e.kind && (s.id.dev, s.id.ino) == (e.stat.st_dev, e.stat.st_ino)
        });

        if e.kind == Kind::Dir && same_inode {
            // The same directory: kept, its entries compared one by one.
            let top = self.copier.dirs.top();
            let d = rfs::openat(
                top,
                e.name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| WalkError::io(ctx("opening the copy of"), err))?;
            let st = rfs::fstat(&d).map_err(|err| WalkError::io(ctx("stat"), err))?;
            if unchanged && e.mtime.applied() != e.mtime {
                self.copier
                    .copied
                    .true_times
                    .insert((st.st_dev, st.st_ino), e.mtime);
            }
            self.copier.dirs.push(d, &st);
            self.frames.push(SyncFrame {
                made: false,
                fresh: false,
                reconcile: !unchanged,
                reattr: !unchanged,
                touched: false,
                names: Vec::new(),
            });
            return Ok(());
        }
        if let (true, Some(s)) = (unchanged, seen) {
            if first_of_group {
                self.groups.insert(key, (s.copy, false));
            }
            if e.link.is_none() && e.kind != Kind::Whiteout && e.mtime.applied() != e.mtime {
                self.copier.copied.true_times.insert(s.copy, e.mtime);
            }
            return Ok(());
        }
        // New or changed: made again, as the copy makes it.
        let top = self.copier.dirs.top();
        let replaced = match parent.fresh {
            true => false,
            false => remove_at(top, e.name).map_err(|err| WalkError::io(ctx("replacing"), err))?,
        };
        parent.touched = true;
        self.copier.last_copy = None;
        self.copier.entry(e, dir, data)?;
        self.work.copied_paused += 1;
        if replaced {
            self.work.removed_paused += 1;
        }
        if first_of_group {
            let copy = self.copier.last_copy.unwrap_or_default();
            self.groups.insert(key, (copy, true));
        }
        if e.kind == Kind::Dir {
            self.frames.push(SyncFrame {
                made: true,
                fresh: true,
                reconcile: false,
                reattr: false,
                touched: false,
                names: Vec::new(),
            });
        }
        Ok(())
    }

    fn leave(&mut self, e: &Entry<'_>, src: &OwnedFd) -> Result<(), WalkError> {
        self.remove_left_out()?;
        let frame = self
            .frames
            .pop()
            .unwrap_or_else(|| unreachable!("a frame per directory"));
        if frame.made {
            return self.copier.leave(e, src);
        }
        let d = self.copier.dirs.pop();
        let mut touched = frame.touched;
        if frame.reconcile {
            touched |= self.remove_unseen(&d, &frame.names)?;
        }
        if frame.reattr {
            // Xattrs the container removed go from the copy too.
            let keep: Vec<Vec<u8>> = self
                .copier
                .stored(e, e.opaque)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let names = walk::read_xattrs(walk::XattrSource::Fd(&d))
                .map_err(|err| WalkError::io("reading xattrs of a copy", err))?;
            for (k, _) in names {
                if !keep.contains(&k) {
                    rfs::fremovexattr(&d, k.as_slice())
                        .map_err(|err| WalkError::io("removing an xattr of a copy", err))?;
                }
            }
            self.copier.finish_fd(&d, e, e.opaque)?;
        } else if touched {
            let t = self.copier.time(e, &d)?;
            rfs::futimens(&d, &t).map_err(|err| WalkError::io("utimes of a copy", err))?;
        }
        self.copier.dirs.reopen_top(&d)
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
    /// The inode (device, number) of the copy the last entry made.
    last_copy: Option<(u64, u64)>,
    /// Directories that exist already are entered, not made (a squash).
    merge: bool,
    /// For each directory entered: its times if it was there before (a
    /// merge must not change them).
    merged: Vec<Option<Timestamps>>,
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
                let existed = match rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => false,
                    Err(rustix::io::Errno::EXIST) if self.merge => true,
                    Err(err) => return Err(WalkError::io(ctx("mkdir"), err)),
                };
                let d = rfs::openat(
                    dst,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| WalkError::io(ctx("opening the copy of"), err))?;
                let st = rfs::fstat(&d).map_err(|err| WalkError::io(ctx("stat"), err))?;
                self.last_copy = Some((st.st_dev, st.st_ino));
                if self.merge {
                    self.merged.push(existed.then_some(Timestamps {
                        last_access: rfs::Timespec {
                            tv_sec: st.st_atime,
                            tv_nsec: st.st_atime_nsec as _,
                        },
                        last_modification: rfs::Timespec {
                            tv_sec: st.st_mtime,
                            tv_nsec: st.st_mtime_nsec as _,
                        },
                    }));
                }
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
                self.copied.bytes += copy_data(src, &d, e.stat, &mut self.buf)
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
        if let Some(times) = self.merged.pop().flatten() {
            // A higher layer's directory: its attributes stand.
            if e.opaque {
                self.make_opaque(&d, e)?;
            }
            rfs::futimens(&d, &times)
                .map_err(|err| WalkError::io(format!("utimes {}", display_path(e.path)), err))?;
            return self.dirs.reopen_top(&d);
        }
        // Attributes last: the contents must not bump the times, and a
        // read-only mode must not stop their copy.
        self.finish_fd(&d, e, e.opaque)?;
        self.dirs.reopen_top(&d)
    }
}

impl Copier {
    fn new(root: OwnedFd, dirs: DirStack, to: Layout) -> Copier {
        Copier {
            root,
            dirs,
            to,
            copied: Copied::default(),
            buf: Vec::new(),
            last_copy: None,
            merge: false,
            merged: Vec::new(),
        }
    }

    /// Overlay's opaque marker on a directory of the copy (where the copy
    /// has overlay's namespace).
    fn make_opaque(&self, fd: &OwnedFd, e: &Entry<'_>) -> Result<(), WalkError> {
        if let Some(p) = self.to.private_prefix() {
            let name = [p, b"opaque"].concat();
            rfs::fsetxattr(fd, name.as_slice(), b"y", rfs::XattrFlags::empty()).map_err(|err| {
                WalkError::io(format!("marking {} opaque", display_path(e.path)), err)
            })?;
        }
        Ok(())
    }

    /// Owner, xattrs, mode and times of an open copy (file or directory).
    fn finish_fd(&mut self, fd: &OwnedFd, e: &Entry<'_>, opaque: bool) -> Result<(), WalkError> {
        let ctx = |what: &str| format!("{what} {}", display_path(e.path));
        let st = rfs::fstat(fd).map_err(|err| WalkError::io(ctx("stat of the copy of"), err))?;
        // Owned as it should be already (made by us, as most entries
        // are): no chown. One would clear nothing here either — a file
        // just made has no set-id bits or capabilities yet, and a chown
        // clears neither on a directory.
        if (st.st_uid, st.st_gid) != (e.stat.st_uid, e.stat.st_gid) {
            rfs::fchown(
                fd,
                Some(rfs::Uid::from_raw(e.stat.st_uid)),
                Some(rfs::Gid::from_raw(e.stat.st_gid)),
            )
            .map_err(|err| WalkError::io(ctx("chown"), err))?;
        }
        for (k, v) in self.stored(e, opaque) {
            rfs::fsetxattr(fd, k.as_slice(), &v, rfs::XattrFlags::empty()).map_err(|err| {
                WalkError::io(ctx(&format!("setxattr {}", display_path(&k))), err)
            })?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(e.mode()))
            .map_err(|err| WalkError::io(ctx("chmod"), err))?;
        let t = self.time_for(e, &st);
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
        self.last_copy = Some((copy.st_dev, copy.st_ino));
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
fn copy_data(src: &OwnedFd, dst: &OwnedFd, st: &rfs::Stat, buf: &mut Vec<u8>) -> io::Result<u64> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(0);
    }
    if (st.st_blocks as u64).saturating_mul(512) >= size {
        // Blocks for every byte: no holes to look for (most files; two
        // system calls fewer each), and no length to set when it is all
        // there.
        let n = copy_range(src, dst, 0, size, buf)?;
        if n < size {
            rfs::ftruncate(dst, size)?;
        }
        return Ok(n);
    }
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
            // Truncated below `start` since SEEK_DATA (an unpaused
            // container): keep what is there, as a short copy does.
            Err(rustix::io::Errno::NXIO) => break,
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
    use crate::walk::Everything;
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

    /// What the running copy saw of an entry of `kind` at inode `ino`.
    fn seen_at(ino: u64, kind: Kind) -> Seen {
        Seen {
            kind,
            id: Identity {
                dev: 2049,
                ino,
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
                nlink: 1,
                size: 4096,
                mtime: (1_700_000_000, 5),
                ctime: (1_700_000_001, 999_999_999),
            },
            racy: false,
            copy: (77, ino + 1_000_000),
        }
    }

    /// A stat showing `id`.
    fn stat_of(id: &Identity) -> rfs::Stat {
        // SAFETY: a stat is plain integers; all zeros is a valid one.
        let mut st: rfs::Stat = unsafe { std::mem::zeroed() };
        st.st_dev = id.dev;
        st.st_ino = id.ino;
        st.st_mode = id.mode;
        st.st_uid = id.uid;
        st.st_gid = id.gid;
        st.st_nlink = id.nlink;
        st.st_size = id.size;
        st.st_mtime = id.mtime.0;
        st.st_mtime_nsec = id.mtime.1 as _;
        st.st_ctime = id.ctime.0;
        st.st_ctime_nsec = id.ctime.1 as _;
        st
    }

    /// The running copy's records answer every lookup as the map of paths
    /// they replace did (a map built from the same inserts): entries of
    /// the root, nested directories, a hard-link group across directories
    /// (each link recorded as its first path was seen), names of 255
    /// bytes and of odd bytes, paths past PATH_MAX, times before 1970,
    /// and the parts of a parallel copy folded together (here a
    /// directory's entries spread over several parts, one part empty);
    /// and what is not there is not found.
    #[test]
    fn precopy_answers_as_a_map_of_paths() {
        let mut paths: Vec<(Vec<u8>, Kind)> = Vec::new();
        let mut at = |p: &[u8], kind: Kind| paths.push((p.to_vec(), kind));
        for (p, kind) in [
            ("a", Kind::Dir),
            ("ab", Kind::File),
            ("a.b", Kind::File),
            ("b", Kind::Dir),
            ("z", Kind::Symlink),
            ("a/b", Kind::Dir),
            ("a/bb", Kind::File),
            ("a/b/c", Kind::File),
            ("a/b/c2", Kind::Whiteout),
            ("b/a", Kind::Dir),
            ("b/a/b", Kind::Fifo),
            ("many", Kind::Dir),
            ("long", Kind::Dir),
        ] {
            at(p.as_bytes(), kind);
        }
        at(b"\xff\n", Kind::File);
        at(b"a/\x01", Kind::CharDevice);
        for i in 0..300 {
            at(format!("many/f{i:03}.js").as_bytes(), Kind::File);
        }
        for (c, n) in [(b'l', 255), (b'l', 254), (b'm', 255)] {
            at(&[&b"long/"[..], &vec![c; n]].concat(), Kind::File);
        }
        // Twenty directories of 250-byte names: past PATH_MAX (4096).
        let mut deep = b"long".to_vec();
        for level in 0..20u8 {
            deep.push(b'/');
            deep.extend(std::iter::repeat_n(b'a' + level, 250));
            at(&deep, Kind::Dir);
            at(&[&deep[..], b"/f"].concat(), Kind::File);
        }
        assert!(deep.len() > 4096);

        let mut inserts: Vec<(Vec<u8>, Seen)> = Vec::new();
        for (i, (p, kind)) in paths.into_iter().enumerate() {
            let mut s = seen_at(1000 + i as u64, kind);
            s.racy = i % 5 == 0;
            s.id.mtime = match i % 7 {
                0 => (-(i as i64), 5),
                _ => (1_700_000_000 - i as i64 * 1_003, i as i64),
            };
            inserts.push((p, s));
        }
        // A hard-link group: the later links as the walk reports them,
        // recorded as the first path was.
        let mut grp = seen_at(7, Kind::File);
        grp.id.nlink = 4;
        for p in ["grp", "grp.1", "many/grp2", "a/b/grp3"] {
            inserts.push((p.as_bytes().to_vec(), grp));
        }

        let mut parts: Vec<Precopy> = (0..4).map(|_| Precopy::default()).collect();
        for (i, (p, s)) in inserts.iter().enumerate() {
            parts[i % 3].insert(p, s);
            parts[i % 3].entries += 1;
        }
        let pre = Precopy::fold(parts);
        let map: HashMap<Vec<u8>, Seen> = inserts.iter().cloned().collect();
        assert_eq!(map.len(), inserts.len(), "one insert a path");
        assert_eq!(pre.entries, inserts.len() as u64);
        assert_eq!(std::mem::size_of::<Rec>(), 72);

        let mut probes: Vec<Vec<u8>> = ["", "/", "a/", "/a", "a//b", "c", "b/b", "many/f300.js"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        probes.push([&b"long/"[..], &[b'l'; 256]].concat());
        for (p, _) in &inserts {
            probes.push(p.clone());
            probes.push([&p[..], b"x"].concat());
            probes.push([&p[..], b"/f"].concat());
            probes.push([&b"/"[..], &p[..]].concat());
            probes.push(p[..p.len() - 1].to_vec());
        }
        for p in &probes {
            let old = map.get(p).copied();
            assert_eq!(pre.get(p), old, "{}", display_path(p));
            assert_eq!(pre.contains(p), old.is_some(), "{}", display_path(p));
            let seen = old.unwrap_or_else(|| seen_at(1, Kind::File));
            let mut st = stat_of(&seen.id);
            let unsettled = |st: &rfs::Stat| match map.get(p) {
                Some(s) => s.racy || s.id != Identity::of(st),
                None => true,
            };
            assert_eq!(pre.unsettled(p, &st), unsettled(&st));
            st.st_ctime_nsec -= 1;
            assert!(pre.unsettled(p, &st), "changed since");
        }
    }

    /// What a record cannot hold is never taken as settled: a time out
    /// of range or a link count past 2³² is recorded racy (found, copied
    /// again while paused, its kind, owner and inodes exact); an entry no
    /// record can hold (here a name over 64 KiB, which no filesystem
    /// has) is not found, and then any path not found may be held.
    #[test]
    fn what_a_record_cannot_hold_is_copied_again() {
        let mut part = Precopy::default();
        let mut odd = seen_at(1, Kind::Whiteout);
        odd.id.mtime = (i64::MAX / 2, 0);
        part.insert(b"a/w", &odd);
        let mut linked = seen_at(2, Kind::File);
        linked.id.nlink = 1 << 40;
        part.insert(b"a/l", &linked);
        part.insert(b"a/f", &seen_at(3, Kind::File));
        let pre = Precopy::fold(vec![part]);
        let w = pre.get(b"a/w").unwrap();
        assert!(w.racy);
        assert_eq!((w.kind, w.id.uid, w.id.gid), (Kind::Whiteout, 1000, 1000));
        assert_eq!(((w.id.dev, w.id.ino), w.copy), ((2049, 1), odd.copy));
        assert!(pre.get(b"a/l").unwrap().racy);
        assert!(pre.unsettled(b"a/l", &stat_of(&linked.id)));
        assert_eq!(pre.get(b"a/f"), Some(seen_at(3, Kind::File)));
        assert!(!pre.contains(b"a/x"));

        let long = [&b"a/"[..], &vec![b'n'; 70_000]].concat();
        let (mut one, mut other) = (Precopy::default(), Precopy::default());
        one.insert(b"a/f", &seen_at(3, Kind::File));
        other.insert(&long, &seen_at(4, Kind::File));
        let pre = Precopy::fold(vec![one, other]);
        assert_eq!(pre.get(&long), None);
        assert!(pre.unsettled(&long, &stat_of(&seen_at(4, Kind::File).id)));
        assert!(pre.contains(&long) && pre.contains(b"a/x"));
        assert_eq!(pre.get(b"a/f"), Some(seen_at(3, Kind::File)));
        let mut alone = Precopy::default();
        alone.insert(&long, &seen_at(4, Kind::File));
        assert!(!Precopy::fold(vec![alone]).is_empty(), "not a fresh copy");
    }

    /// Memory the running copy's records take an entry, and the map of
    /// paths they replace, for the benchmark's 50,000 files in 500
    /// directories: malloc's bytes in use, so run alone (`cargo test -p
    /// commit-engine --lib precopy_bytes_an_entry -- --ignored
    /// --nocapture`). 79 and 215 bytes when written.
    #[test]
    #[ignore = "a measurement; run alone with --ignored --nocapture"]
    fn precopy_bytes_an_entry() {
        let in_use = || {
            // SAFETY: mallinfo2 only reads malloc's counters.
            let m = unsafe { libc::mallinfo2() };
            m.uordblks + m.hblkhd
        };
        let mut inserts = vec![(b"node_modules".to_vec(), seen_at(1, Kind::Dir))];
        for d in 0..500 {
            let dir = format!("node_modules/p{d:03}");
            inserts.push((dir.clone().into_bytes(), seen_at(2, Kind::Dir)));
            for i in 0..100 {
                let p = format!("{dir}/f{i:03}.js").into_bytes();
                inserts.push((p, seen_at(3 + inserts.len() as u64, Kind::File)));
            }
        }
        let n = inserts.len();
        let before = in_use();
        let mut pre = Precopy::default();
        for (p, s) in &inserts {
            pre.insert(p, s);
        }
        let pre = Precopy::fold(vec![pre]);
        let records = in_use() - before;
        let before = in_use();
        let mut map = HashMap::new();
        for (p, s) in &inserts {
            map.insert(p.to_vec(), *s);
        }
        let paths = in_use() - before;
        eprintln!(
            "{n} entries: records {} B an entry, map of paths {} B an entry",
            records / n,
            paths / n
        );
        assert_eq!((pre.recs.len(), map.len()), (n, n));
        assert!(records < paths);
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
        let dst2 = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy_running(src.path(), dst2.path(), OVERLAY, &Everything),
            Err(CopyError::Unsupported(_))
        ));
    }

    #[test]
    fn unrepresentable_names_are_found_before_the_pause() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/.wh.x"), b"").unwrap();
        let dst = tempfile::tempdir().unwrap();
        match copy_running(src.path(), dst.path(), OVERLAY, &Everything) {
            Err(e @ CopyError::Unrepresentable { .. }) => {
                assert!(e.to_string().starts_with("/d/.wh.x: "), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // On several threads, among other directories: the same error,
        // and every thread stops.
        for i in 0..20 {
            std::fs::create_dir_all(src.path().join(format!("e{i}/f"))).unwrap();
        }
        let dst = tempfile::tempdir().unwrap();
        match copy_running_parallel(src.path(), dst.path(), OVERLAY, &Everything) {
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

    /// Everything a copy holds, for comparing two copies: each entry's
    /// path, kind, mode, owner, size, times, xattrs, data or target, and
    /// its hard-link group (by first path) and link count.
    fn listing(root: &Path) -> Vec<String> {
        struct L {
            out: Vec<String>,
            groups: HashMap<(u64, u64), Vec<u8>>,
        }
        impl Visit for L {
            fn entry(
                &mut self,
                e: &Entry<'_>,
                dir: &OwnedFd,
                _: Option<&OwnedFd>,
            ) -> Result<(), WalkError> {
                let st = e.stat;
                let group = self
                    .groups
                    .entry((st.st_dev, st.st_ino))
                    .or_insert_with(|| e.path.to_vec())
                    .clone();
                let data = match e.kind {
                    Kind::File => {
                        let p = walk::proc_path(dir, e.name);
                        std::fs::read(std::ffi::OsStr::from_bytes(p.as_bytes())).unwrap()
                    }
                    _ => e.target.to_vec(),
                };
                let times = match e.kind {
                    Kind::Whiteout => (0, 0),
                    _ => (st.st_mtime, st.st_mtime_nsec),
                };
                self.out.push(format!(
                    "{} {} {:o} {}:{} {} {:?} {:?} {:?} {} nlink={} opaque={}",
                    display_path(e.path),
                    e.kind,
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    times,
                    e.xattrs,
                    String::from_utf8_lossy(&data),
                    display_path(&group),
                    if e.kind == Kind::Dir { 0 } else { st.st_nlink },
                    e.opaque,
                ));
                Ok(())
            }
            fn leave(&mut self, e: &Entry<'_>, fd: &OwnedFd) -> Result<(), WalkError> {
                let st = rfs::fstat(fd).unwrap();
                self.out.push(format!(
                    "leave {} {:?}",
                    display_path(e.path),
                    (st.st_mtime, st.st_mtime_nsec)
                ));
                Ok(())
            }
        }
        let mut l = L {
            out: Vec::new(),
            groups: HashMap::new(),
        };
        Walk {
            layout: Layout::Overlay,
            max_path: None,
            tolerate_vanished: false,
            policy: &Everything,
        }
        .run(root, &mut l)
        .unwrap();
        l.out
    }

    /// The copy made while running, then brought up to date while paused,
    /// is exactly a copy made in one walk of the final tree; and the paused
    /// walk copies only what changed after the running copy saw it.
    #[test]
    fn a_copy_brought_up_to_date_equals_a_fresh_copy() {
        brought_up_to_date(false);
    }

    /// The same with the running copy on several threads: the same copy;
    /// the hard-link group whose paths lie in two directories (grp,
    /// keep/grp2) was copied twice and is linked while paused.
    #[test]
    fn a_parallel_copy_brought_up_to_date_equals_a_fresh_copy() {
        brought_up_to_date(true);
    }

    /// A big file written just before the copy reached it is looked at
    /// again after the clock tick, not copied again while paused; a small
    /// one is copied again (a second look costs a tick, a copy little);
    /// and either written after the copy is unsettled.
    #[test]
    fn a_big_file_just_written_is_looked_at_again() {
        let copy = |name: &str, len: usize| {
            let src = tempfile::tempdir().unwrap();
            let dst = tempfile::tempdir().unwrap();
            std::fs::write(src.path().join(name), vec![7u8; len]).unwrap();
            let pre = copy_running(src.path(), dst.path(), OVERLAY, &Everything).unwrap();
            (src, pre)
        };
        // The small file is racy when it was looked at within RACY of its
        // ctime, which a stalled test thread may miss: such a try says
        // nothing and is made again.
        let tried = (0..20).find(|_| {
            let (src, pre) = copy("small", LOOK_AGAIN_FROM as usize - 1);
            let small = rfs::lstat(src.path().join("small")).unwrap();
            if now_ns() - Identity::of(&small).ctime_ns() >= RACY {
                return false;
            }
            assert!(pre.get(b"small").unwrap().racy, "just written");
            assert!(pre.unsettled(b"small", &small));
            true
        });
        assert!(tried.is_some(), "no try copied the small file within RACY");
        let (src, pre) = copy("big", LOOK_AGAIN_FROM as usize);
        let s = src.path();
        let st = |p: &str| rfs::lstat(s.join(p)).unwrap();
        assert!(!pre.get(b"big").unwrap().racy, "looked at again");
        assert!(!pre.unsettled(b"big", &st("big")));
        std::fs::OpenOptions::new()
            .write(true)
            .open(s.join("big"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"changed"))
            .unwrap();
        assert!(pre.unsettled(b"big", &st("big")), "changed after its copy");
    }

    /// A shared writable mapping of `f`'s first page.
    struct Mapped(*mut libc::c_void);

    impl Mapped {
        fn new(f: &std::fs::File) -> Mapped {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh shared mapping of a page of an open file.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "{}", io::Error::last_os_error());
            Mapped(p)
        }

        fn write(&self, b: u8) {
            // SAFETY: the mapping is 4096 bytes and alive.
            unsafe { self.0.cast::<u8>().write_volatile(b) }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(self.0, 4096) };
        }
    }

    /// A read lease tells whether a file is open for writing anywhere, a
    /// shared writable mapping whose descriptor was closed included, and
    /// is given back at once.
    #[test]
    fn a_file_open_for_writing_is_told_by_a_read_lease() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8; 8192]).unwrap();
        let ro = || -> OwnedFd { std::fs::File::open(&p).unwrap().into() };
        let rw = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap()
        };
        assert!(!open_for_writing(&ro()), "open nowhere");
        let w = rw();
        assert!(open_for_writing(&ro()), "open for writing");
        let map = Mapped::new(&w);
        drop(w);
        assert!(
            open_for_writing(&ro()),
            "mapped writable, its descriptor closed"
        );
        drop(map);
        assert!(!open_for_writing(&ro()), "unmapped");
        // The lease was given back: an open for writing does not wait,
        // nor fail when it asks not to.
        let held = ro();
        assert!(!open_for_writing(&held));
        let nonblocking = std::os::unix::fs::OpenOptionsExt::custom_flags(
            std::fs::OpenOptions::new().write(true),
            libc::O_NONBLOCK,
        )
        .open(&p);
        assert!(nonblocking.is_ok(), "{nonblocking:?}");
    }

    /// A file with dirty pages is unsettled once written through a
    /// mapping after its copy: held open and mapped, it was written back
    /// (its page write-protected), and open nowhere it was not, but a new
    /// mapping's first write faults; either way the ctime moves.
    #[test]
    fn a_dirty_file_written_through_a_mapping_after_its_copy_is_unsettled() {
        for parallel in [false, true] {
            let src = tempfile::tempdir().unwrap();
            let dst = tempfile::tempdir().unwrap();
            let s = src.path();
            std::fs::write(s.join("closed"), [1u8; 8192]).unwrap();
            std::fs::write(s.join("held"), [1u8; 8192]).unwrap();
            let held = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(s.join("held"))
                .unwrap();
            let map = Mapped::new(&held);
            map.write(2);
            // Neither is racy.
            std::thread::sleep(std::time::Duration::from_nanos(RACY as u64 + 5_000_000));
            let pre = if parallel {
                copy_running_parallel(s, dst.path(), OVERLAY, &Everything)
            } else {
                copy_running(s, dst.path(), OVERLAY, &Everything)
            }
            .unwrap();
            let st = |p: &str| rfs::lstat(s.join(p)).unwrap();
            // (tmpfs keeps every page dirty: all is copied again there.)
            if stamps_mapped_writes(&walk::open_dir_path(s).unwrap()) {
                for p in ["closed", "held"] {
                    assert!(!pre.unsettled(p.as_bytes(), &st(p)), "{p}: unchanged");
                }
            }
            std::thread::sleep(std::time::Duration::from_nanos(RACY as u64));
            map.write(3);
            assert!(
                pre.unsettled(b"held", &st("held")),
                "written through its mapping"
            );
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(s.join("closed"))
                .unwrap();
            Mapped::new(&f).write(3);
            assert!(
                pre.unsettled(b"closed", &st("closed")),
                "written through a new mapping"
            );
        }
    }

    fn brought_up_to_date(parallel: bool) {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        let w = |p: &str, data: &[u8]| std::fs::write(s.join(p), data).unwrap();
        for d in ["keep", "gone", "chmod", "xat", "replaced", "moved", "opq"] {
            std::fs::create_dir(s.join(d)).unwrap();
        }
        for i in 0..50 {
            w(&format!("keep/{i}"), format!("{i}").as_bytes());
        }
        w("gone/a", b"a");
        w("gone/b", b"b");
        w("chmod/f", b"f");
        w("xat/f", b"x");
        w("replaced/f", b"r");
        w("moved/f", b"m");
        w("inplace", b"1234");
        w("tofile", b"t");
        w("todir", b"t");
        w("linked", b"l");
        w("unlinked", b"u");
        std::fs::hard_link(s.join("unlinked"), s.join("unlinked2")).unwrap();
        w("grp", b"g");
        std::fs::hard_link(s.join("grp"), s.join("keep/grp2")).unwrap();
        symlink("keep/0", s.join("sym")).unwrap();
        mknod_whiteout(&s.join("wh"));
        set_mtime(&s.join("keep/1"), -7, 0);
        set_mtime(&s.join("keep"), 1_600_000_000, 1);
        // Older than the racy window: the running copy of these holds.
        std::thread::sleep(std::time::Duration::from_millis(120));

        let dst = tempfile::tempdir().unwrap();
        let pre = match parallel {
            false => copy_running(s, dst.path(), OVERLAY, &Everything).unwrap(),
            true => copy_running_parallel(s, dst.path(), OVERLAY, &Everything).unwrap(),
        };
        assert_eq!(pre.entries, 73);
        if parallel {
            // Made on several threads, it is what one walk makes.
            let one = tempfile::tempdir().unwrap();
            copy_running(s, one.path(), OVERLAY, &Everything).unwrap();
            let unlinked = |l: Vec<String>| {
                l.into_iter()
                    .map(|e| e.replace(" /keep/grp2 nlink=1", " /grp nlink=2"))
                    .map(|e| e.replace(" /grp nlink=1", " /grp nlink=2"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(unlinked(listing(dst.path())), unlinked(listing(one.path())));
        }

        // What the container does meanwhile.
        std::fs::remove_dir_all(s.join("gone")).unwrap();
        std::fs::set_permissions(s.join("chmod/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        xattr::set(s.join("xat"), "user.new", b"1").unwrap();
        xattr::set(s.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
        // A new directory (made before the old one goes, so its inode
        // number is not the old one's again).
        std::fs::rename(s.join("replaced"), s.join("replaced.old")).unwrap();
        std::fs::create_dir(s.join("replaced")).unwrap();
        std::fs::remove_dir_all(s.join("replaced.old")).unwrap();
        w("replaced/g", b"new");
        std::fs::rename(s.join("moved"), s.join("moved2")).unwrap();
        // Same size, mtime put back: only ctime tells.
        let before = std::fs::metadata(s.join("inplace")).unwrap();
        w("inplace", b"5678");
        set_mtime(
            &s.join("inplace"),
            before.mtime(),
            before.mtime_nsec() as u32,
        );
        std::fs::remove_file(s.join("tofile")).unwrap();
        std::fs::create_dir(s.join("tofile")).unwrap();
        std::fs::remove_file(s.join("todir")).unwrap();
        std::fs::create_dir(s.join("todir")).unwrap();
        w("todir/in", b"in");
        std::fs::hard_link(s.join("linked"), s.join("keep/linked2")).unwrap();
        std::fs::remove_file(s.join("unlinked2")).unwrap();
        w("new", b"new");
        std::fs::remove_file(s.join("wh")).unwrap();
        w("wh", b"no longer a whiteout");

        let (copied, work) = copy_paused(s, dst.path(), OVERLAY, &Everything, &pre).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let one = copy_upper(s, fresh.path(), OVERLAY).unwrap();
        assert_eq!(listing(dst.path()), listing(fresh.path()));
        assert_eq!(copied.entries, one.entries);
        assert_eq!(copied.true_times.len(), 1, "keep/1's time, kept");
        let kept_time = copied.true_times.values().next().unwrap();
        assert_eq!(*kept_time, Time { sec: -7, nsec: 0 });
        assert_eq!(work.copied_running, 73);
        assert_eq!(work.walked_paused, one.entries);
        // Copied while paused: chmod/f, replaced + replaced/g, moved2 +
        // moved2/f, inplace, tofile, todir + todir/in, linked +
        // keep/linked2, unlinked, new, wh.
        // (In parallel also keep/grp2, linked to grp.)
        let linked_again = u64::from(parallel);
        assert_eq!(work.copied_paused, 14 + linked_again, "{work:?}");
        // Removed: gone (a tree), moved, unlinked2; and the old copies of
        // chmod/f, replaced, inplace, tofile, todir, linked, unlinked, wh.
        assert_eq!(work.removed_paused, 11 + linked_again, "{work:?}");
    }

    fn mknod_whiteout(p: &Path) {
        rfs::mknodat(rfs::CWD, p, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
    }

    /// A measurement, not a test: `MEASURE_COPY_SRC=<dir>` (on the
    /// filesystem of `MEASURE_COPY_DST`, default the temp dir) is copied
    /// while "running", walked while "paused", and written as a tar.
    #[test]
    #[ignore = "a measurement; run with --ignored --nocapture"]
    fn measure_copy() {
        let Some(src) = std::env::var_os("MEASURE_COPY_SRC") else {
            return;
        };
        let src = Path::new(&src);
        let parent = std::env::var_os("MEASURE_COPY_DST").unwrap_or_else(|| "/tmp".into());
        let dst = tempfile::tempdir_in(parent).unwrap();
        let cpu = || {
            // SAFETY: getrusage fills the struct it is given.
            let u = unsafe {
                let mut u = std::mem::zeroed::<libc::rusage>();
                libc::getrusage(libc::RUSAGE_SELF, &mut u);
                u
            };
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(u.ru_utime) + t(u.ru_stime)
        };
        let (t, c) = (std::time::Instant::now(), cpu());
        let pre = match std::env::var_os("MEASURE_COPY_SEQUENTIAL") {
            Some(_) => copy_running(src, dst.path(), OVERLAY, &Everything).unwrap(),
            None => copy_running_parallel(src, dst.path(), OVERLAY, &Everything).unwrap(),
        };
        eprintln!(
            "running copy: {} entries {:.3} s wall {:.3} s cpu",
            pre.entries,
            t.elapsed().as_secs_f64(),
            cpu() - c
        );
        let (t, c) = (std::time::Instant::now(), cpu());
        let (copied, work) = copy_paused(src, dst.path(), OVERLAY, &Everything, &pre).unwrap();
        eprintln!(
            "paused walk: {work:?} {:.3} s wall {:.3} s cpu",
            t.elapsed().as_secs_f64(),
            cpu() - c
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:"));
        eprintln!("peak RSS so far: {}", hwm.unwrap_or("?"));
        let (t, c) = (std::time::Instant::now(), cpu());
        let w = crate::tarball::write_layer(
            dst.path(),
            Layout::Overlay,
            &copied.true_times,
            std::io::BufWriter::new(std::io::sink()),
        )
        .unwrap();
        eprintln!(
            "tar: {} entries {:.3} s wall {:.3} s cpu",
            w.entries,
            t.elapsed().as_secs_f64(),
            cpu() - c
        );
    }

    /// With nothing copied while running (or the running copy given up),
    /// the paused walk copies everything.
    #[test]
    fn an_empty_precopy_copies_everything_while_paused() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), b"f").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (copied, work) = copy_paused(
            src.path(),
            dst.path(),
            OVERLAY,
            &Everything,
            &Precopy::default(),
        )
        .unwrap();
        assert_eq!(copied.entries, 2);
        assert_eq!(
            work,
            CaptureWork {
                walked_paused: 2,
                copied_paused: 2,
                bytes_paused: 1,
                ..CaptureWork::default()
            }
        );
        // A running copy given up half-way is cleared first.
        clear_dir(dst.path()).unwrap();
        assert_eq!(std::fs::read_dir(dst.path()).unwrap().count(), 0);
    }

    /// What the policy leaves out once paused is removed from the running
    /// copy, and its directory's times are set again.
    #[test]
    fn what_the_paused_policy_leaves_out_is_removed() {
        struct Without(&'static [u8]);
        impl Policy for Without {
            fn include(&self, path: &[u8], _: Kind, _: &rfs::Stat) -> bool {
                path != self.0
            }
        }
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir(s.join("d")).unwrap();
        std::fs::write(s.join("d/stub"), b"").unwrap();
        std::fs::write(s.join("d/z"), b"z").unwrap();
        set_mtime(&s.join("d"), 1_600_000_000, 7);
        std::thread::sleep(std::time::Duration::from_millis(120));
        let dst = tempfile::tempdir().unwrap();
        let pre = copy_running(s, dst.path(), OVERLAY, &Everything).unwrap();
        let (_, work) = copy_paused(s, dst.path(), OVERLAY, &Without(b"d/stub"), &pre).unwrap();
        assert_eq!(work.removed_paused, 1, "{work:?}");
        assert_eq!(work.copied_paused, 0, "{work:?}");
        assert!(!dst.path().join("d/stub").exists());
        let m = std::fs::metadata(dst.path().join("d")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 7));
    }
}
