//! `docker export`: a container's whole root filesystem as one tar,
//! produced as it is read.
//!
//! The container's snapshot is mounted read-only, privately: a thread of
//! its own enters a new mount namespace (`unshare(CLONE_NEWNS)`, every
//! mount made private), mounts the snapshot's layers there — an overlay
//! whose lower directories are the container's upper directory on top of
//! its image's, so nothing of the container's own mount is shared and no
//! work directory is needed; a bind mount for a snapshot without a parent
//! — and writes the tar with the layer writer ([`crate::tarball`]) from
//! that tree. The mount lives only in that namespace: nobody else sees it,
//! and it is gone with the thread, whatever happens to the daemon.
//!
//! Memory is bounded: the tar goes out in chunks through a small channel,
//! and the walk waits while the client reads. The container is not paused
//! unless asked: like Docker's, an export of a running container reads its
//! files as they are while it runs (entries that vanish meanwhile are
//! skipped). Asked (`pause=1`), its task is paused before the first byte
//! and resumed after the last — or when the client hangs up, or, should the
//! daemon die meanwhile, by the pause journal when it starts again
//! ([`PauseHold`]); the container's capture turn is held meanwhile, so a
//! commit of it waits for the export to end.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use containerd_client::types::Mount;
use tokio::sync::mpsc;
use tracing::warn;

use crate::client::Containerd;
use crate::container;
use crate::error::{Error, Result};
use crate::keyed::{Key, KeyedLocks};
use crate::snapshot::{self, Snapshots};
use crate::task::{PauseHold, PauseJournal};

/// Chunks of the tar handed to the client at once.
const CHUNK: usize = 256 << 10;
/// Chunks in flight (the memory one export holds: `CHUNK` × this).
const IN_FLIGHT: usize = 4;

/// How the snapshot is mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReadOnly {
    /// `lowerdir=` these (top first), with `userxattr` when the snapshot
    /// uses it.
    Overlay {
        lowers: Vec<PathBuf>,
        userxattr: bool,
    },
    Bind(PathBuf),
}

/// How an export asked to pause the container pauses it.
pub(crate) struct Pausing<'a> {
    pub(crate) journal: &'a PauseJournal,
    pub(crate) locks: &'a KeyedLocks,
}

/// The container's filesystem as a tar stream; with `pausing`, and a
/// running task, the container paused until the hold is released or
/// dropped.
pub(crate) async fn start(
    c: &Containerd,
    query: &str,
    pausing: Option<Pausing<'_>>,
) -> Result<(mpsc::Receiver<io::Result<Bytes>>, Option<PauseHold>)> {
    let ct = container::resolve(c, query).await?;
    if ct.snapshot_key.is_empty() {
        return Err(Error::Conflict(format!(
            "container {} has no root filesystem snapshot to export",
            ct.id
        )));
    }
    let sn = Snapshots::new(c, container::snapshotter_of(&ct.snapshotter));
    let info = sn.stat(&ct.snapshot_key).await?;
    if !snapshot::is_active(&info) {
        return Err(Error::Conflict(format!(
            "container {}'s snapshot is not active",
            ct.id
        )));
    }
    let plan = read_only(&sn.mounts(&ct.snapshot_key).await?).map_err(|why| {
        Error::Conflict(format!(
            "cannot export container {}: its snapshot cannot be read here ({why})",
            ct.id
        ))
    })?;
    let hold = match pausing {
        Some(p) => {
            let turn = p.locks.lock(Key::Container(&ct.id)).await;
            PauseHold::pause(c, p.journal, &ct.id, turn).await?
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let id = ct.id.clone();
    std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = export_in_own_namespace(&plan, &mut out).and_then(|_| out.flush());
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    warn!(container = %id, cause = %e, "export failed");
                    let _ = tx.blocking_send(Err(e));
                }
            }
        })
        .map_err(|e| Error::io("starting the export thread", e))?;
    Ok((rx, hold))
}

/// A read-only mount of a snapshot, from its mounts.
fn read_only(mounts: &[Mount]) -> std::result::Result<ReadOnly, String> {
    let [m] = mounts else {
        return Err(format!("{} mounts, want one", mounts.len()));
    };
    let plan = match m.r#type.as_str() {
        "overlay" => {
            let o = crate::overlay::options(&m.options);
            let mut lowers = o.lower;
            lowers.splice(0..0, o.upper);
            ReadOnly::Overlay {
                lowers,
                userxattr: o.layout == crate::walk::Layout::OverlayUserXattr,
            }
        }
        "bind" | "rbind" => ReadOnly::Bind(PathBuf::from(&m.source)),
        other => return Err(format!("it mounts as {other:?}")),
    };
    let dirs = match &plan {
        ReadOnly::Overlay { lowers, .. } => lowers.clone(),
        ReadOnly::Bind(d) => vec![d.clone()],
    };
    match dirs.iter().find(|d| !d.is_dir()) {
        Some(d) => Err(format!("{} is not a directory here", d.display())),
        None => Ok(plan),
    }
}

/// Enters a mount namespace of this thread's own, mounts, writes the tar.
fn export_in_own_namespace(plan: &ReadOnly, out: &mut ChannelWriter) -> io::Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_change};
    use rustix::thread::{UnshareFlags, unshare_unsafe};

    // SAFETY: this thread is ours alone and runs nothing else; unsharing
    // its filesystem attributes and mount namespace affects only it.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::FS) }
        .map_err(|e| io::Error::other(format!("unshare of the mount namespace: {e}")))?;
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| io::Error::other(format!("making mounts private: {e}")))?;
    let root = std::env::temp_dir().join(format!("commitd-export-{}", crate::unique()));
    std::fs::create_dir(&root)?;
    let written = mount_and_write(plan, &root, out);
    let _ = std::fs::remove_dir(&root);
    written
}

fn mount_and_write(plan: &ReadOnly, root: &Path, out: &mut ChannelWriter) -> io::Result<()> {
    use rustix::mount::{MountFlags, mount};
    match plan {
        ReadOnly::Bind(src) => {
            mount(src, root, "", MountFlags::BIND | MountFlags::RDONLY, None)
                .map_err(|e| io::Error::other(format!("bind mount of {}: {e}", src.display())))?;
            // A bind mount is made read-only by remounting it.
            rustix::mount::mount_remount(root, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(|e| io::Error::other(format!("read-only remount: {e}")))?;
        }
        ReadOnly::Overlay { lowers, userxattr } => {
            let data = overlay_options(lowers, *userxattr)?;
            mount(
                "overlay",
                root,
                "overlay",
                MountFlags::RDONLY,
                Some(data.as_c_str()),
            )
            .map_err(|e| io::Error::other(format!("read-only overlay mount: {e}")))?;
        }
    }
    let written = crate::tarball::write_tree(root, out).map(drop);
    // The namespace dies with the thread; unmount now so the directory
    // can go.
    let _ = rustix::mount::unmount(root, rustix::mount::UnmountFlags::DETACH);
    written
}

/// `lowerdir=…` for the mount. A page is all the kernel reads of it: when
/// the list is longer, the directories are named relative to their common
/// parent, made this thread's working directory (as containerd does).
fn overlay_options(lowers: &[PathBuf], userxattr: bool) -> io::Result<CString> {
    let extra = if userxattr { ",userxattr" } else { "" };
    let join = |dirs: &[&Path]| -> Vec<u8> {
        let mut v = b"lowerdir=".to_vec();
        for (i, d) in dirs.iter().enumerate() {
            if i > 0 {
                v.push(b':');
            }
            v.extend_from_slice(d.as_os_str().as_bytes());
        }
        v.extend_from_slice(extra.as_bytes());
        v
    };
    // The container's upper directory and at least one image layer: the
    // two layers an overlay without an upper directory needs.
    let mut lowers_ref: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let mut data = join(&lowers_ref);
    if data.len() >= 4096 {
        let common = common_parent(lowers)
            .ok_or_else(|| io::Error::other("the layers' directories have no common parent"))?;
        std::env::set_current_dir(&common)?;
        lowers_ref = lowers
            .iter()
            .map(|d| d.strip_prefix(&common).unwrap_or(d))
            .collect();
        data = join(&lowers_ref);
    }
    Ok(CString::new(data)?)
}

fn common_parent(dirs: &[PathBuf]) -> Option<PathBuf> {
    let first = dirs.first()?;
    let mut common = first.parent()?.to_path_buf();
    while !dirs.iter().all(|d| d.starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    Some(common)
}

/// Bytes handed to the async side in chunks; a dropped receiver (the
/// client hung up) is a broken pipe that stops the walk.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client hung up"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(ty: &str, source: &str, opts: &[&str]) -> Mount {
        Mount {
            r#type: ty.into(),
            source: source.into(),
            target: String::new(),
            options: opts.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_upper_directory_becomes_the_top_lower_one() {
        let t = tempfile::tempdir().unwrap();
        let d = |n: &str| {
            let p = t.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p.to_str().unwrap().to_string()
        };
        let (u, l1, l2) = (d("u"), d("l1"), d("l2"));
        let m = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                &format!("workdir={}", d("w")),
                &format!("upperdir={u}"),
                &format!("lowerdir={l1}:{l2}"),
            ],
        );
        assert_eq!(
            read_only(&[m]).unwrap(),
            ReadOnly::Overlay {
                lowers: vec![u.into(), l1.into(), l2.into()],
                userxattr: false
            }
        );
        assert!(read_only(&[mount("btrfs", "/dev/x", &[])]).is_err());
        assert!(read_only(&[mount("bind", "/nonexistent/x", &[])]).is_err());
    }

    #[test]
    fn long_lower_lists_are_named_from_their_common_parent() {
        let dirs: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/containerd/snapshots/{i}/fs")))
            .collect();
        assert_eq!(
            common_parent(&dirs).unwrap(),
            Path::new("/var/lib/containerd/snapshots")
        );
    }
}
