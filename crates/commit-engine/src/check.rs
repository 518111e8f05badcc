//! `commitd --check`: what this host and its containerd offer a commit.

use std::path::PathBuf;

use containerd_client::services::v1::PluginsRequest;

use crate::client::Containerd;
use crate::error::Result;
use crate::layer::ContentRoot;

/// A snapshotter containerd runs, and whether its files are visible here.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    pub name: String,
    pub root: Option<PathBuf>,
    pub visible: bool,
    /// Why containerd could not load it, if it could not.
    pub error: Option<String>,
}

/// The answers of a check.
#[derive(Debug, Clone)]
pub struct Report {
    pub containerd_version: String,
    pub snapshotters: Vec<Snapshotter>,
    /// containerd's content store, when visible here (direct layer writes).
    pub content_root: Option<PathBuf>,
    /// The overlay module's defaults that would disable the fast path.
    pub overlay_redirect_dir: bool,
    pub overlay_metacopy: bool,
    /// Whether the overlayfs snapshotter's copies share extents: the
    /// fast path copies with `copy_file_range`, which clones extents on
    /// filesystems with reflinks (XFS with `reflink=1`, btrfs), so a
    /// file's copy costs no data. `None` when its files are not visible.
    pub reflink: Option<Result<Reflink, String>>,
}

/// What a probe copy in a directory showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflink {
    /// The filesystem's name (`xfs`, `ext4`, `btrfs`, …, or its magic).
    pub filesystem: String,
    /// The copy's extents are shared with the original's.
    pub shared: bool,
}

impl Report {
    /// Whether overlayfs containers are captured from their upper directory.
    pub fn fast_path(&self) -> Result<(), String> {
        let overlay = self.snapshotters.iter().find(|s| s.name == "overlayfs");
        match overlay {
            None => Err("containerd has no overlayfs snapshotter".into()),
            Some(s) if s.error.is_some() => Err(format!("the overlayfs snapshotter failed to load: {}", s.error.clone().unwrap_or_default())),
            Some(s) if !s.visible => Err("the overlayfs snapshotter's directory is not visible from here (mount it at the same path)".into()),
            Some(_) if self.overlay_redirect_dir || self.overlay_metacopy => {
                Err("the kernel's overlay module enables redirect_dir or metacopy by default".into())
            }
            Some(_) => Ok(()),
        }
    }
}

fn kernel_param(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/module/overlay/parameters/{name}"))
        .map(|v| matches!(v.trim(), "Y" | "y" | "1" | "on"))
        .unwrap_or(false)
}

/// Asks containerd and looks at this host.
pub async fn run(c: &Containerd) -> Result<Report> {
    let containerd_version = c.server_version().await?;
    let req = c.request(PluginsRequest {
        filters: vec!["type==io.containerd.snapshotter.v1".into()],
    });
    let plugins = c
        .introspection()
        .plugins(req)
        .await
        .map_err(|s| c.err("introspection", s))?
        .into_inner()
        .plugins;
    let snapshotters: Vec<Snapshotter> = plugins
        .into_iter()
        .map(|p| {
            let root = p.exports.get("root").map(PathBuf::from);
            let visible = root.as_ref().is_some_and(|r| r.join("snapshots").is_dir());
            let error = p.init_err.map(|e| e.message).filter(|m| !m.is_empty());
            Snapshotter {
                name: p.id,
                root,
                visible,
                error,
            }
        })
        .collect();
    let reflink = snapshotters
        .iter()
        .find(|s| s.name == "overlayfs" && s.visible)
        .and_then(|s| s.root.as_ref())
        .map(|r| reflinks(&r.join("snapshots")).map_err(|e| e.to_string()));
    let content_root = ContentRoot::discover(c)
        .await
        .map(|r| r.path().to_path_buf());
    Ok(Report {
        containerd_version,
        snapshotters,
        content_root,
        overlay_redirect_dir: kernel_param("redirect_dir"),
        overlay_metacopy: kernel_param("metacopy"),
        reflink,
    })
}

/// Whether a copy made in `dir` the way the fast path copies (with
/// `copy_file_range`) shares its extents with the original: a probe file
/// of 1 MiB is written and synced, copied, and the copy's extent map read
/// (`FIEMAP`, synced) for the shared flag. The probe files are removed.
pub fn reflinks(dir: &std::path::Path) -> std::io::Result<Reflink> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let fs = rustix::fs::statfs(dir)?;
    #[allow(clippy::unnecessary_cast)]
    let magic = fs.f_type as i64;
    let filesystem = match magic {
        0x5846_5342 => "xfs".to_string(),
        0xEF53 => "ext4".to_string(),
        0x9123_683E => "btrfs".to_string(),
        0x0102_1994 => "tmpfs".to_string(),
        0x794C_7630 => "overlay".to_string(),
        m => format!("{m:#x}"),
    };
    let unique = crate::unique();
    let (a, b) = (
        dir.join(format!(".commitd-reflink-probe-{unique}-a")),
        dir.join(format!(".commitd-reflink-probe-{unique}-b")),
    );
    let result = (|| {
        let mut src = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&a)?;
        src.write_all(&vec![0x5a; 1 << 20])?;
        src.sync_all()?;
        let dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&b)?;
        let (mut off_in, mut off_out) = (0u64, 0u64);
        while off_in < 1 << 20 {
            let want = (1usize << 20) - off_in as usize;
            let n = rustix::fs::copy_file_range(
                &src,
                Some(&mut off_in),
                &dst,
                Some(&mut off_out),
                want,
            )?;
            if n == 0 {
                break;
            }
        }
        fiemap_shared(dst.as_raw_fd())
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    Ok(Reflink {
        filesystem,
        shared: result?,
    })
}

/// Whether any extent of the open file is shared (`FIEMAP_EXTENT_SHARED`).
fn fiemap_shared(fd: std::os::fd::RawFd) -> std::io::Result<bool> {
    // struct fiemap with room for 32 extents (struct fiemap_extent: 56 bytes).
    const EXTENTS: usize = 32;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 0x1;
    const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
    #[repr(C)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }
    // SAFETY: all-zero bytes are a valid `Fiemap` (plain integers).
    let mut map: Fiemap = unsafe { std::mem::zeroed() };
    map.length = u64::MAX;
    map.flags = FIEMAP_FLAG_SYNC;
    map.extent_count = EXTENTS as u32;
    // SAFETY: `map` is a `struct fiemap` with room for `extent_count`
    // extents, as FS_IOC_FIEMAP expects; `fd` is open.
    let rc = unsafe { libc::ioctl(fd, FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = (map.mapped_extents as usize).min(EXTENTS);
    Ok(map.extents[..n]
        .iter()
        .any(|e| e.flags & FIEMAP_EXTENT_SHARED != 0))
}
