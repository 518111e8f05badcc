//! Incremental commits (`incremental=1`): the new layer holds only what
//! changed in the container since this daemon last committed it, on top of
//! that commit's image.
//!
//! **What a commit remembers.** A commit that records ([`Record`]) keeps,
//! per container, the identity of every entry of the upper directory it
//! captured — kind, device and inode, mode, owner, link count, size,
//! modification and change times — as the paused walk saw it, and which
//! image it made. The change time is the key: it cannot be set from inside
//! a container, and any change of an inode's data, attributes, xattrs, link
//! count or name moves it (`touch -d` included). An entry whose identity is
//! what the record holds is the entry the previous image holds.
//!
//! **When an identity does not prove it.** An entry is recorded *racy* —
//! always taken again by the next incremental commit — when the capture's
//! running copy did not prove it settled ([`crate::capture::Precopy`]): it
//! changed within a clock tick of being looked at, it had dirty pages (a
//! shared writable mapping can write a dirty page again without moving the
//! change time), it changed between the running copy and the pause, or it
//! is a hard link. Hard-linked files are always taken whole (every link),
//! so a link group is never split across layers.
//!
//! **The layer** ([`Since`] as the capture's walk policy, then [`finish`]):
//! every entry whose identity differs from the record, or that the record
//! lacks or holds racy; directories along the way (with their own
//! attributes, dropped again when nothing below them was taken and they
//! did not change); an opaque directory that changed is taken whole;
//! whiteouts for what the record holds and the container no longer has. A
//! deletion the container's own lower layers would fill again (the base
//! shows a file the previous commit covered: only after an exclude or a
//! mount-stub rule changed) cannot be written as a whiteout: the commit is
//! then a plain one, and says why.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, Stat, Timestamps};

use crate::capture::{Identity, Precopy};
use crate::walk::{Entry, Kind, Layout, Policy};

/// An entry as a commit captured it: its kind and the identity the
/// capture's copies compare ([`Identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    kind: u8,
    /// Not proven settled: taken again next time.
    racy: bool,
    id: Identity,
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Dir => 1,
        Kind::File => 2,
        Kind::Symlink => 3,
        Kind::CharDevice => 4,
        Kind::BlockDevice => 5,
        Kind::Fifo => 6,
        Kind::Whiteout => 7,
    }
}

const DIR: u8 = 1;
const WHITEOUT: u8 = 7;

impl Mark {
    fn of(kind: Kind, st: &Stat, racy: bool) -> Mark {
        Mark {
            kind: kind_code(kind),
            racy,
            id: Identity::of(st),
        }
    }

    /// The same entry, unchanged (racy marks match nothing).
    fn holds(&self, now: &Mark) -> bool {
        !self.racy && self.kind == now.kind && self.id == now.id
    }
}

/// What a commit captured of a container, and the image it made.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The image's ID (config digest).
    pub image: String,
    /// The image's manifest digest.
    pub manifest: String,
    /// The container's snapshot parent when it was captured.
    pub base: String,
    pub entries: HashMap<Vec<u8>, Mark>,
}

/// A record's first bytes. Its layout (unchanged since version 1; a file
/// that does not read as one is no record: the next commit is a plain one,
/// "not committed with incremental=1 … before"): the image, manifest and
/// base as length-prefixed strings, the entry count, then per entry its
/// path, kind and racy bytes, dev, ino, nlink (u64), mode, uid, gid (u32),
/// size, mtime, ctime (i64 seconds and nanoseconds), little-endian.
const MAGIC: &[u8] = b"commitd-incremental 1\n";

impl Record {
    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        for s in [&self.image, &self.manifest, &self.base] {
            put_bytes(w, s.as_bytes())?;
        }
        w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        for (path, m) in &self.entries {
            put_bytes(w, path)?;
            let id = &m.id;
            w.write_all(&[m.kind, u8::from(m.racy)])?;
            for v in [id.dev, id.ino, id.nlink] {
                w.write_all(&v.to_le_bytes())?;
            }
            for v in [id.mode, id.uid, id.gid] {
                w.write_all(&v.to_le_bytes())?;
            }
            for v in [id.size, id.mtime.0, id.mtime.1, id.ctime.0, id.ctime.1] {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    }

    fn read_from(r: &mut impl Read) -> io::Result<Record> {
        let mut magic = vec![0; MAGIC.len()];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a record"));
        }
        let text = |b: Vec<u8>| {
            String::from_utf8(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        };
        let image = text(get_bytes(r)?)?;
        let manifest = text(get_bytes(r)?)?;
        let base = text(get_bytes(r)?)?;
        let n = u64::from_le_bytes(get::<8>(r)?);
        let mut entries = HashMap::with_capacity(n.min(1 << 20) as usize);
        for _ in 0..n {
            let path = get_bytes(r)?;
            let [kind, racy] = get::<2>(r)?;
            let u = |r: &mut _| get::<8>(r).map(u64::from_le_bytes);
            let (dev, ino, nlink) = (u(r)?, u(r)?, u(r)?);
            let w = |r: &mut _| get::<4>(r).map(u32::from_le_bytes);
            let (mode, uid, gid) = (w(r)?, w(r)?, w(r)?);
            let i = |r: &mut _| get::<8>(r).map(i64::from_le_bytes);
            let (size, ms, mn, cs, cn) = (i(r)?, i(r)?, i(r)?, i(r)?, i(r)?);
            entries.insert(
                path,
                Mark {
                    kind,
                    racy: racy != 0,
                    id: Identity {
                        dev,
                        ino,
                        mode,
                        uid,
                        gid,
                        nlink,
                        size,
                        mtime: (ms, mn),
                        ctime: (cs, cn),
                    },
                },
            );
        }
        Ok(Record {
            image,
            manifest,
            base,
            entries,
        })
    }
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    w.write_all(&(b.len() as u32).to_le_bytes())?;
    w.write_all(b)
}

fn get<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let n = u32::from_le_bytes(get::<4>(r)?) as usize;
    let mut b = vec![0; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Where records are kept: one file per container under
/// `<dir>/<namespace>/<container>` (none without a directory).
#[derive(Debug, Clone, Default)]
pub struct Records {
    dir: Option<PathBuf>,
}

impl Records {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Records { dir }
    }

    pub(crate) fn is_kept(&self) -> bool {
        self.dir.is_some()
    }

    fn path(&self, namespace: &str, container: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(namespace).join(container))
    }

    /// The container's record, if it has a readable one.
    pub(crate) fn load(&self, namespace: &str, container: &str) -> Option<Record> {
        let p = self.path(namespace, container)?;
        let f = std::fs::File::open(p).ok()?;
        Record::read_from(&mut BufReader::new(f)).ok()
    }

    /// Replaces the container's record (written whole, then renamed).
    pub(crate) fn save(&self, namespace: &str, container: &str, r: &Record) -> io::Result<()> {
        let Some(p) = self.path(namespace, container) else {
            return Ok(());
        };
        let dir = p.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{container}.{}", crate::unique()));
        let written = (|| {
            let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
            r.write_to(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match written.and_then(|()| std::fs::rename(&tmp, &p)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Forgets every container of `namespace` that is not in `alive` (it
    /// was deleted since its last commit; a record serves only its own
    /// container). Files being written (dot names) are left alone. A record
    /// removed by a race with a new container's first commit costs that
    /// container one plain commit, nothing more. Returns how many went.
    pub(crate) fn keep_only(
        &self,
        namespace: &str,
        alive: &std::collections::HashSet<String>,
    ) -> usize {
        let Some(dir) = self.dir.as_ref().map(|d| d.join(namespace)) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut gone = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.')
                && !alive.contains(&name)
                && std::fs::remove_file(e.path()).is_ok()
            {
                gone += 1;
            }
        }
        gone
    }

    /// Forgets the container (its record no longer holds).
    pub(crate) fn forget(&self, namespace: &str, container: &str) {
        if let Some(p) = self.path(namespace, container) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The capture's walk policy of an incremental commit (and the recorder of
/// any commit that records): asked after the commit's other policies, so
/// it sees exactly the entries the layer may hold.
pub(crate) struct Since<'a> {
    /// The previous commit's entries (empty: everything is taken).
    prev: &'a HashMap<Vec<u8>, Mark>,
    /// The running copy, in the paused walk: what it proves settled. `None`
    /// in the running walk, which records nothing.
    pre: Option<&'a Precopy>,
    next: RefCell<HashMap<Vec<u8>, Mark>>,
    /// Changed opaque directories: everything below them is taken.
    whole: RefCell<Vec<Vec<u8>>>,
    /// Unchanged directories walked through (walk order).
    through: RefCell<Vec<Vec<u8>>>,
}

/// What the paused walk saw: the next record's entries, and what
/// [`finish`] needs.
pub(crate) struct Seen {
    pub next: HashMap<Vec<u8>, Mark>,
    whole: Vec<Vec<u8>>,
    through: Vec<Vec<u8>>,
}

fn below(prefixes: &[Vec<u8>], path: &[u8]) -> bool {
    prefixes
        .iter()
        .any(|p| path.len() > p.len() && path.starts_with(p) && path[p.len()] == b'/')
}

impl<'a> Since<'a> {
    pub(crate) fn new(prev: &'a HashMap<Vec<u8>, Mark>, pre: Option<&'a Precopy>) -> Self {
        Since {
            prev,
            pre,
            next: RefCell::default(),
            whole: RefCell::default(),
            through: RefCell::default(),
        }
    }

    pub(crate) fn into_seen(self) -> Seen {
        Seen {
            next: self.next.into_inner(),
            whole: self.whole.into_inner(),
            through: self.through.into_inner(),
        }
    }
}

impl Policy for Since<'_> {
    fn include(&self, path: &[u8], kind: Kind, st: &Stat) -> bool {
        let now = Mark::of(kind, st, false);
        let same = self.prev.get(path).is_some_and(|m| m.holds(&now));
        if let Some(pre) = self.pre {
            let racy = !same && pre.unsettled(path, st);
            self.next
                .borrow_mut()
                .insert(path.to_vec(), Mark { racy, ..now });
        }
        if below(&self.whole.borrow(), path) {
            return true;
        }
        match kind {
            Kind::Dir => {
                if same {
                    self.through.borrow_mut().push(path.to_vec());
                }
                true
            }
            Kind::Whiteout => !same,
            _ => !same || st.st_nlink > 1,
        }
    }

    fn seen(&self, e: &Entry<'_>) {
        if e.kind == Kind::Dir
            && e.opaque
            && self.through.borrow().last().map(Vec::as_slice) != Some(e.path)
        {
            self.whole.borrow_mut().push(e.path.to_vec());
        }
    }
}

/// Why an incremental layer cannot be written.
#[derive(Debug)]
pub(crate) enum Finish {
    /// A plain commit is needed (the reason).
    Plain(String),
    Io(io::Error),
}

impl From<io::Error> for Finish {
    fn from(e: io::Error) -> Self {
        Finish::Io(e)
    }
}

fn join(root: &Path, path: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(path))
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Runs `f` on a directory of the copy and puts the directory's times back
/// as they were (the copy's times are the layer's).
fn keeping_times<T>(dir: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let m = std::fs::symlink_metadata(dir)?;
    let out = f()?;
    let t = |s: i64, n: i64| rfs::Timespec {
        tv_sec: s,
        tv_nsec: n as _,
    };
    rfs::utimensat(
        rfs::CWD,
        dir,
        &Timestamps {
            last_access: t(m.atime(), m.atime_nsec()),
            last_modification: t(m.mtime(), m.mtime_nsec()),
        },
        rfs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(out)
}

/// Whether a lower directory shows something at `path` (a whiteout shows
/// nothing; an unreadable answer counts as something).
fn lower_has(lowers: &[PathBuf], path: &[u8]) -> bool {
    lowers
        .iter()
        .any(|l| match std::fs::symlink_metadata(join(l, path)) {
            Ok(m) => !(m.file_type().is_char_device() && m.rdev() == 0),
            Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)),
        })
}

/// Completes the incremental layer in the copy `root` after the paused
/// walk: whiteouts for what the previous commit held and the container
/// no longer has, and the unchanged directories walked through either
/// dropped (nothing below them taken) or kept without an opaque marker
/// (what is below them in the previous image is theirs). `lowers`: the
/// container's lower directories.
pub(crate) fn finish(
    root: &Path,
    to: Layout,
    lowers: &[PathBuf],
    prev: &HashMap<Vec<u8>, Mark>,
    seen: &Seen,
) -> Result<(), Finish> {
    let mut gone: Vec<(&Vec<u8>, &Mark)> = prev
        .iter()
        .filter(|(p, _)| !seen.next.contains_key(*p))
        .filter(|(p, _)| {
            let parent = parent_of(p);
            parent.is_empty() || seen.next.get(parent).is_some_and(|m| m.kind == DIR)
        })
        .filter(|(p, _)| !below(&seen.whole, p))
        .collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    for (p, m) in gone {
        if lower_has(lowers, p) {
            return Err(Finish::Plain(format!(
                "{} is gone from the container but its image's layers still have it \
                 (an exclude or mount-stub rule changed since the last commit)",
                crate::walk::display_path(p)
            )));
        }
        if m.kind == WHITEOUT {
            continue; // nothing there before, nothing now
        }
        let at = join(root, p);
        keeping_times(&join(root, parent_of(p)), || {
            rfs::mknodat(rfs::CWD, &at, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(io::Error::from)
        })?;
    }
    let opaque = to.private_prefix().map(|p| [p, b"opaque"].concat());
    for d in seen.through.iter().rev() {
        let at = join(root, d);
        let empty = match std::fs::read_dir(&at) {
            Ok(mut r) => r.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if empty {
            keeping_times(&join(root, parent_of(d)), || std::fs::remove_dir(&at))?;
        } else if let Some(name) = &opaque {
            match xattr::remove(&at, OsStr::from_bytes(name)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let st = rfs::stat("/").unwrap();
        let mut r = Record {
            image: "sha256:a".into(),
            manifest: "sha256:b".into(),
            base: "sha256:c".into(),
            ..Record::default()
        };
        r.entries
            .insert(b"a/\xffb".to_vec(), Mark::of(Kind::Dir, &st, true));
        r.entries
            .insert(b"f".to_vec(), Mark::of(Kind::File, &st, false));
        let mut buf = Vec::new();
        r.write_to(&mut buf).unwrap();
        let back = Record::read_from(&mut buf.as_slice()).unwrap();
        assert_eq!(back.image, r.image);
        assert_eq!(back.manifest, r.manifest);
        assert_eq!(back.base, r.base);
        assert_eq!(back.entries, r.entries);
        assert!(Record::read_from(&mut &buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn racy_marks_hold_nothing() {
        let st = rfs::stat("/").unwrap();
        let m = Mark::of(Kind::Dir, &st, false);
        assert!(m.holds(&m));
        assert!(!Mark { racy: true, ..m }.holds(&m));
        let touched = Identity {
            ctime: (0, 1),
            ..m.id
        };
        assert!(!m.holds(&Mark { id: touched, ..m }));
        assert!(!m.holds(&Mark { kind: DIR + 1, ..m }));
    }

    /// A record as the previous version wrote it, byte by byte.
    fn version_1_record() -> Vec<u8> {
        let mut b = b"commitd-incremental 1\n".to_vec();
        for s in ["sha256:i", "sha256:m", "base"] {
            b.extend((s.len() as u32).to_le_bytes());
            b.extend(s.as_bytes());
        }
        b.extend(1u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(b"etc");
        b.extend([DIR, 0]);
        for v in [11u64, 12, 2] {
            b.extend(v.to_le_bytes());
        }
        for v in [0o40755u32, 1000, 1001] {
            b.extend(v.to_le_bytes());
        }
        for v in [4096i64, 1_700_000_000, 5, 1_700_000_001, 6] {
            b.extend(v.to_le_bytes());
        }
        b
    }

    #[test]
    fn records_of_the_previous_version_still_load() {
        let r = Record::read_from(&mut version_1_record().as_slice()).unwrap();
        assert_eq!((r.image.as_str(), r.base.as_str()), ("sha256:i", "base"));
        let want = Mark {
            kind: DIR,
            racy: false,
            id: Identity {
                dev: 11,
                ino: 12,
                mode: 0o40755,
                uid: 1000,
                gid: 1001,
                nlink: 2,
                size: 4096,
                mtime: (1_700_000_000, 5),
                ctime: (1_700_000_001, 6),
            },
        };
        assert_eq!(r.entries.get(&b"etc"[..]), Some(&want));
        let mut again = Vec::new();
        r.write_to(&mut again).unwrap();
        assert_eq!(again, version_1_record(), "written as it was read");
    }

    #[test]
    fn a_record_that_does_not_read_is_none() {
        let dir = std::env::temp_dir().join(format!("commitd-records-{}", crate::unique()));
        let records = Records::new(Some(dir.clone()));
        let file = dir.join("ns").join("ct");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mut other = version_1_record();
        other[MAGIC.len() - 2] = b'2';
        for bytes in [other, b"junk".to_vec(), version_1_record()[..40].to_vec()] {
            std::fs::write(&file, bytes).unwrap();
            assert!(records.load("ns", "ct").is_none());
        }
        std::fs::write(&file, version_1_record()).unwrap();
        assert!(records.load("ns", "ct").is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
