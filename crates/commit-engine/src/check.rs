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
    let snapshotters = plugins
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
    let content_root = ContentRoot::discover(c)
        .await
        .map(|r| r.path().to_path_buf());
    Ok(Report {
        containerd_version,
        snapshotters,
        content_root,
        overlay_redirect_dir: kernel_param("redirect_dir"),
        overlay_metacopy: kernel_param("metacopy"),
    })
}
