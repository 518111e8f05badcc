//! Squashing: several overlay layers folded into one, from the snapshots
//! already on this node.
//!
//! A squash is a copy, as a commit's capture is (see [`crate::capture`]):
//! the container's upper directory first, then each lower directory to be
//! folded, top down, into the upper directory of one freshly prepared
//! snapshot. A [`Merge`] policy leaves out of each lower layer whatever the
//! copy already shadows, the way overlay itself resolves the stack:
//! - the topmost entry of a path wins;
//! - a directory merges with the directories of that path below it, down
//!   to the first layer where it is opaque, or where the path is not a
//!   directory (a file or a whiteout ends a directory's history: the copy's
//!   directory is then made opaque, so the base's contents of that path
//!   stay hidden);
//! - a whiteout hides the path in every layer below.
//!
//! The result is the layer of all folded layers at once, and the copy is
//! the snapshot an applier would make of it on the kept parent (the base
//! image's snapshot, or nothing for `squash=all`): the new image's
//! snapshot is made as cheaply as a commit's, and the layer tar is written
//! from it, streamed. For `squash=all` nothing is below, so whiteouts and
//! opaque markers are not written; they are only remembered while the lower
//! layers are copied.
//!
//! Memory: the paths of whiteouts and of opaque or replaced directories
//! (few in practice); everything else is looked up in the copy itself.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Stat};

use crate::capture::{self, Copied, CopyError, CopyOptions};
use crate::walk::{self, Entry, Kind, Layout, Policy};

/// How layers are folded into the copy.
pub(crate) struct Merge {
    /// The copy's root.
    root: OwnedFd,
    /// The copy's layout: whether it can hold whiteouts and opaque markers.
    to: Layout,
    /// Paths a higher layer deleted (when the copy holds no whiteouts).
    deleted: RefCell<HashSet<Vec<u8>>>,
    /// Directories whose history ended in a layer already copied: nothing
    /// below merges into them.
    closed: RefCell<HashSet<Vec<u8>>>,
    /// Error from a side effect of a decision (the walk's `include`
    /// cannot fail).
    failed: RefCell<Option<CopyError>>,
}

impl Merge {
    pub(crate) fn new(dst: &Path, to: Layout) -> Result<Self, CopyError> {
        Ok(Merge {
            root: walk::open_dir_path(dst)?,
            to,
            deleted: RefCell::default(),
            closed: RefCell::default(),
            failed: RefCell::default(),
        })
    }

    fn keeps_whiteouts(&self) -> bool {
        self.to.private_prefix().is_some()
    }

    fn take_error(&self) -> Result<(), CopyError> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A directory of the copy whose lower history ends here.
    fn close(&self, path: &[u8]) {
        if !self.closed.borrow_mut().insert(path.to_vec()) {
            return;
        }
        if let Some(prefix) = self.to.private_prefix() {
            let name = [prefix, b"opaque"].concat();
            let set = rfs::openat(
                &self.root,
                path,
                rfs::OFlags::RDONLY
                    | rfs::OFlags::DIRECTORY
                    | rfs::OFlags::NOFOLLOW
                    | rfs::OFlags::CLOEXEC,
                rfs::Mode::empty(),
            )
            .and_then(|fd| rfs::fsetxattr(&fd, name.as_slice(), b"y", rfs::XattrFlags::empty()));
            if let Err(e) = set {
                self.failed.borrow_mut().get_or_insert(CopyError::io(
                    format!("marking {} opaque", walk::display_path(path)),
                    e,
                ));
            }
        }
    }
}

/// The policy of the container's own upper directory, copied first (as a
/// commit copies it, see [`Merge::top`]).
pub(crate) struct Top<'a>(&'a Merge);

impl Merge {
    /// The policy for the copy of the top layer (into an empty copy):
    /// everything goes in, but for whiteouts where the copy holds none;
    /// whiteouts and opaque directories are remembered for the layers
    /// below.
    pub(crate) fn top(&self) -> Top<'_> {
        Top(self)
    }
}

impl Policy for Top<'_> {
    fn include(&self, path: &[u8], kind: Kind, _stat: &Stat) -> bool {
        if kind == Kind::Whiteout && !self.0.keeps_whiteouts() {
            self.0.deleted.borrow_mut().insert(path.to_vec());
            return false;
        }
        true
    }

    fn seen(&self, e: &Entry<'_>) {
        self.0.seen(e);
    }
}

impl Policy for Merge {
    fn include(&self, path: &[u8], kind: Kind, _stat: &Stat) -> bool {
        if self.deleted.borrow().contains(path) {
            return false;
        }
        match rfs::statat(&self.root, path, AtFlags::SYMLINK_NOFOLLOW) {
            Err(_) => {
                if kind == Kind::Whiteout && !self.keeps_whiteouts() {
                    self.deleted.borrow_mut().insert(path.to_vec());
                    return false;
                }
                true
            }
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if !is_dir || self.closed.borrow().contains(path) {
                    return false;
                }
                if kind == Kind::Dir {
                    return true; // merged into the higher layer's directory
                }
                // A file or whiteout below a higher directory: that
                // directory replaced it, and hides everything below.
                self.close(path);
                false
            }
        }
    }

    fn seen(&self, e: &Entry<'_>) {
        if e.kind == Kind::Dir && e.opaque {
            self.closed.borrow_mut().insert(e.path.to_vec());
        }
    }
}

/// Two policies: an entry is included when both include it (the second
/// is asked only if the first does: `Merge` records what it includes), and
/// the times are the first's then the second's.
pub(crate) struct Both<'a, A: Policy + ?Sized, B: Policy + ?Sized>(pub &'a A, pub &'a B);

impl<A: Policy + ?Sized, B: Policy + ?Sized> Policy for Both<'_, A, B> {
    fn include(&self, path: &[u8], kind: Kind, stat: &Stat) -> bool {
        self.0.include(path, kind, stat) && self.1.include(path, kind, stat)
    }

    fn mtime(&self, path: &[u8], stat: &Stat, t: walk::Time) -> walk::Time {
        self.1.mtime(path, stat, self.0.mtime(path, stat, t))
    }

    fn seen(&self, e: &Entry<'_>) {
        self.0.seen(e);
        self.1.seen(e);
    }
}

/// Folds `lowers` (top first; committed snapshots, which nothing changes)
/// into `dst`, which already holds the copy of the layers above them made
/// with the same `merge` policy; `outer` decides first (excludes, times).
pub(crate) fn fold_lowers(
    lowers: &[PathBuf],
    dst: &Path,
    opts: CopyOptions,
    outer: &dyn Policy,
    merge: &Merge,
    into: &mut Copied,
) -> Result<(), CopyError> {
    for lower in lowers {
        let copied = capture::merge_upper_with(lower, dst, opts, &Both(outer, merge))?;
        merge.take_error()?;
        into.entries += copied.entries;
        into.bytes += copied.bytes;
        into.true_times.extend(copied.true_times);
    }
    Ok(())
}
