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
pub struct OverlayDirs {
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
pub fn dirs(mounts: &[Mount]) -> Result<OverlayDirs, String> {
    let [m] = mounts else {
        return Err(format!("{} mounts, want one", mounts.len()));
    };
    match m.r#type.as_str() {
        "overlay" => {
            let mut upper = None;
            let mut lower = Vec::new();
            let mut layout = Layout::Overlay;
            for opt in &m.options {
                if opt == "userxattr" {
                    layout = Layout::OverlayUserXattr;
                }
                match opt.split_once('=') {
                    Some(("upperdir", v)) => upper = Some(PathBuf::from(v)),
                    Some(("lowerdir", v)) => lower = v.split(':').map(PathBuf::from).collect(),
                    Some(("redirect_dir" | "metacopy", v)) if v != "off" => {
                        return Err(format!(
                            "overlay option {opt} makes the upper directory incomplete"
                        ));
                    }
                    _ => {}
                }
            }
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

/// The directories of a read-only view's mounts, top first: an `overlay`
/// mount's `lowerdir`, or the source of a `bind` mount (a one-layer view).
/// `None` for any other shape.
pub fn view_lowers(mounts: &[Mount]) -> Option<Vec<PathBuf>> {
    let [m] = mounts else {
        return None;
    };
    match m.r#type.as_str() {
        "overlay" => m.options.iter().find_map(|o| {
            o.strip_prefix("lowerdir=")
                .map(|v| v.split(':').map(PathBuf::from).collect())
        }),
        "bind" | "rbind" => Some(vec![PathBuf::from(&m.source)]),
        _ => None,
    }
}

/// Whether the overlay module enables a feature by default on this host.
fn kernel_default_on(param: &str) -> bool {
    std::fs::read_to_string(Path::new("/sys/module/overlay/parameters").join(param))
        .map(|v| matches!(v.trim(), "Y" | "y" | "1" | "on"))
        .unwrap_or(false)
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
