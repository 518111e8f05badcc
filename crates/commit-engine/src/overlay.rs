//! When the fast path applies: the container's snapshot is an overlay (or
//! parentless bind) mount whose upper directory this process can read, with
//! no overlay feature that makes an upper directory mean more than its
//! entries (`redirect_dir`, `metacopy`). The mount also says which xattr
//! namespace is overlay's own ([`Layout`]): `trusted.overlay.*`, or
//! `user.overlay.*` when mounted with `userxattr`; in the other one, and in
//! a bind-mounted directory, every xattr is the user's.

use std::path::{Path, PathBuf};

use containerd_client::types::Mount;

use crate::walk::Layout;

/// The directories of an overlay snapshot as containerd mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverlayDirs {
    /// Where the snapshot's own changes live.
    pub upper: PathBuf,
    /// Lower layers, top first; empty for a parentless snapshot.
    pub lower: Vec<PathBuf>,
    /// How the upper directory is to be read.
    pub layout: Layout,
}

/// Reads the upper (and lower) directories from a snapshot's mounts: one
/// `overlay` mount, or one `bind` mount for a snapshot with no parent.
/// `Err` says why the mounts do not qualify.
pub(crate) fn dirs(mounts: &[Mount]) -> Result<OverlayDirs, String> {
    let [m] = mounts else {
        return Err(format!("{} mounts, want one", mounts.len()));
    };
    match m.r#type.as_str() {
        "overlay" => {
            for opt in &m.options {
                if let Some(("redirect_dir" | "metacopy", v)) = opt.split_once('=')
                    && v != "off"
                {
                    return Err(format!(
                        "overlay option {opt} makes the upper directory incomplete"
                    ));
                }
            }
            let Options {
                upper,
                lower,
                layout,
            } = options(&m.options);
            let upper = upper.ok_or("overlay mount has no upperdir (a read-only view)")?;
            for feature in ["redirect_dir", "metacopy"] {
                let off = m.options.iter().any(|o| *o == format!("{feature}=off"));
                if !off && kernel_default_on(feature) {
                    return Err(format!(
                        "the kernel's overlay module enables {feature} by default"
                    ));
                }
            }
            Ok(OverlayDirs {
                upper,
                lower,
                layout,
            })
        }
        "bind" | "rbind" if !m.options.iter().any(|o| o == "ro") => Ok(OverlayDirs {
            upper: PathBuf::from(&m.source),
            lower: Vec::new(),
            layout: Layout::Plain,
        }),
        other => Err(format!("snapshot mounts as {other:?}")),
    }
}

/// [`dirs`] of an active snapshot whose parent is `parent` (empty: none).
/// A bind mount is an upper directory only without a parent: with one, it
/// is a whole tree (the native snapshotter copies the parent into every
/// snapshot), and taking it as the changes would bring back every file the
/// container deleted.
pub(crate) fn upper_dirs(mounts: &[Mount], parent: &str) -> Result<OverlayDirs, String> {
    let dirs = dirs(mounts)?;
    if dirs.layout == Layout::Plain && !parent.is_empty() {
        return Err("a bind-mounted snapshot with a parent holds a whole tree".into());
    }
    Ok(dirs)
}

/// The directories of a read-only view's mounts, top first, and how to
/// read them: an `overlay` mount's `lowerdir`, or the source of a `bind`
/// mount (a one-layer view). `Err` says why the mounts are of another
/// shape.
pub(crate) fn view(mounts: &[Mount]) -> Result<(Vec<PathBuf>, Layout), String> {
    let [m] = mounts else {
        return Err(format!("{} mounts", mounts.len()));
    };
    match m.r#type.as_str() {
        "bind" | "rbind" => Ok((vec![PathBuf::from(&m.source)], Layout::Plain)),
        "overlay" => {
            let o = options(&m.options);
            if !m.options.iter().any(|o| o.starts_with("lowerdir=")) {
                return Err("an overlay view without lowerdir".into());
            }
            Ok((o.lower, o.layout))
        }
        other => Err(format!("it mounts as {other:?}")),
    }
}

/// [`view`]'s directories, if the mounts are a view's.
pub(crate) fn view_lowers(mounts: &[Mount]) -> Option<Vec<PathBuf>> {
    view(mounts).ok().map(|(dirs, _)| dirs)
}

/// An overlay mount's options, read once for every reader of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// `upperdir`: none for a read-only view.
    pub upper: Option<PathBuf>,
    /// `lowerdir`, top first.
    pub lower: Vec<PathBuf>,
    /// Which xattr namespace is overlay's (`userxattr`).
    pub layout: Layout,
}

/// Reads an `overlay` mount's options.
pub(crate) fn options(options: &[String]) -> Options {
    let mut out = Options {
        upper: None,
        lower: Vec::new(),
        layout: Layout::Overlay,
    };
    for opt in options {
        if opt == "userxattr" {
            out.layout = Layout::OverlayUserXattr;
        }
        match opt.split_once('=') {
            Some(("upperdir", v)) => out.upper = Some(PathBuf::from(v)),
            Some(("lowerdir", v)) => out.lower = v.split(':').map(PathBuf::from).collect(),
            _ => {}
        }
    }
    out
}

/// Whether `p`, a directory in a tree of `layout`, is marked opaque
/// (overlay's `opaque` xattr is `y`): it hides what the layers below hold
/// at its path. Never in a plain tree.
pub(crate) fn is_opaque(layout: Layout, p: &Path) -> bool {
    let Some(prefix) = layout.private_prefix() else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new([prefix, b"opaque"].concat()) else {
        return false;
    };
    let mut buf = [0u8; 2];
    matches!(rustix::fs::lgetxattr(p, name.as_c_str(), &mut buf), Ok(1) if buf[0] == b'y')
}

/// Whether the overlay module enables a feature by default on this host.
fn kernel_default_on(param: &str) -> bool {
    std::fs::read_to_string(Path::new("/sys/module/overlay/parameters").join(param))
        .map(|v| matches!(v.trim(), "Y" | "y" | "1" | "on"))
        .unwrap_or(false)
}

/// overlayfs's most lower layers (the kernel's `OVL_MAX_STACK`).
pub(crate) const OVL_MAX_STACK: usize = 500;

/// The most layers an image may have for its containers to mount on this
/// node, from the mount of one of its containers (`m`) and the page size:
/// containerd (1.6 `mount_linux.go`) passes overlay's options in one page,
/// and when they come near it, names the lower directories relative to
/// their common directory (`N/fs`); beyond a page the mount fails ("mount
/// options is too long"); the kernel stacks at most [`OVL_MAX_STACK`].
/// Each lower directory is counted one digit longer than the snapshot
/// directory's own name, as new snapshots get larger numbers. `None` when
/// the snapshot does not mount as overlay.
pub(crate) fn max_depth(m: &Mount, page_size: usize) -> Option<usize> {
    if m.r#type != "overlay" {
        return None;
    }
    let upper = m.options.iter().find_map(|o| o.strip_prefix("upperdir="))?;
    // `…/snapshots/N/fs` → `N/fs`, the name a lower directory gets.
    let mut parts = upper.rsplitn(3, '/');
    let (fs, n) = (parts.next()?, parts.next()?);
    let per_lower = n.len() + 1 + fs.len() + 1 + 1; // a digit more, and ':'
    // Every option but lowerdir, with its comma; upperdir and workdir a
    // digit longer too.
    let fixed: usize = m
        .options
        .iter()
        .filter(|o| !o.starts_with("lowerdir="))
        .map(|o| o.len() + 1 + usize::from(o.starts_with("upperdir=") || o.starts_with("workdir=")))
        .sum();
    let room = page_size.checked_sub(1 + fixed + "lowerdir=".len())?;
    Some((room / per_lower).min(OVL_MAX_STACK))
}

/// This host's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_bounded_by_the_page_and_the_kernel() {
        let root = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
        let m = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                &format!("workdir={root}/1234/work"),
                &format!("upperdir={root}/1234/fs"),
                &format!("lowerdir={root}/12/fs:{root}/11/fs"),
            ],
        );
        // "12345/fs:" is 9 bytes: a page of 4096 holds about 440 after the
        // other options.
        let fixed = "index=off,".len()
            + root.len() * 2
            + "/12345/work,".len()
            + "/12345/fs,".len()
            + "workdir=".len()
            + "upperdir=".len();
        let want = (4096 - 1 - fixed - "lowerdir=".len()) / 9;
        assert_eq!(max_depth(&m, 4096), Some(want));
        assert!(want < OVL_MAX_STACK);
        // Short names: the kernel's stack is the limit.
        let short = mount(
            "overlay",
            "overlay",
            &["upperdir=/s/5/fs", "workdir=/s/5/work", "lowerdir=/s/4/fs"],
        );
        assert_eq!(max_depth(&short, 4096), Some(OVL_MAX_STACK));
        assert_eq!(max_depth(&mount("bind", "/s/1/fs", &["rbind"]), 4096), None);
    }

    fn mount(ty: &str, source: &str, opts: &[&str]) -> Mount {
        Mount {
            r#type: ty.into(),
            source: source.into(),
            target: String::new(),
            options: opts.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overlay_mounts_give_upper_and_lowers() {
        let m = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/s/snapshots/5/work",
                "upperdir=/s/snapshots/5/fs",
                "lowerdir=/s/snapshots/4/fs:/s/snapshots/1/fs",
            ],
        );
        let d = dirs(&[m]).unwrap();
        assert_eq!(d.layout, Layout::Overlay);
        assert_eq!(d.upper, Path::new("/s/snapshots/5/fs"));
        assert_eq!(
            d.lower,
            [
                Path::new("/s/snapshots/4/fs"),
                Path::new("/s/snapshots/1/fs")
            ]
        );
    }

    #[test]
    fn parentless_snapshots_are_binds() {
        let d = dirs(&[mount("bind", "/s/snapshots/7/fs", &["rbind", "rw"])]).unwrap();
        assert_eq!(d.upper, Path::new("/s/snapshots/7/fs"));
        assert!(d.lower.is_empty());
        assert_eq!(d.layout, Layout::Plain, "nothing in it is overlay's");
    }

    #[test]
    fn a_bind_with_a_parent_is_a_whole_tree_not_an_upper() {
        let bind = [mount("bind", "/s/snapshots/8/fs", &["rbind", "rw"])];
        assert!(upper_dirs(&bind, "").is_ok());
        let e = upper_dirs(&bind, "sha256:base").unwrap_err();
        assert!(e.contains("whole tree"), "{e}");
    }

    #[test]
    fn userxattr_moves_overlays_namespace() {
        let d = dirs(&[mount(
            "overlay",
            "overlay",
            &["userxattr", "upperdir=/u", "workdir=/w", "lowerdir=/l"],
        )])
        .unwrap();
        assert_eq!(d.layout, Layout::OverlayUserXattr);
    }

    #[test]
    fn unsuitable_mounts_are_refused() {
        assert!(dirs(&[]).is_err());
        assert!(
            dirs(&[mount("overlay", "overlay", &["lowerdir=/a:/b"])]).is_err(),
            "view without upper"
        );
        assert!(
            dirs(&[mount(
                "overlay",
                "overlay",
                &["upperdir=/u", "lowerdir=/l", "metacopy=on"]
            )])
            .is_err()
        );
        assert!(
            dirs(&[mount(
                "overlay",
                "overlay",
                &["upperdir=/u", "lowerdir=/l", "redirect_dir=on"]
            )])
            .is_err()
        );
        assert!(dirs(&[mount("bind", "/x", &["rbind", "ro"])]).is_err());
        assert!(dirs(&[mount("btrfs", "/dev/sda", &[])]).is_err());
    }
}
