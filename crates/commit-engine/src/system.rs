//! What containerd says about itself, for `docker info`.

use std::path::PathBuf;

use containerd_client::services::v1::PluginsRequest;

use crate::client::Containerd;
use crate::error::Result;

/// The snapshotter images are unpacked into and containers are assumed to
/// use when they name none: containerd's default.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// containerd as `docker info` shows it.
#[derive(Debug, Clone, Default)]
pub struct SystemInfo {
    pub containerd_version: String,
    /// containerd's git revision.
    pub containerd_revision: String,
    /// containerd's root directory (the parent of its plugins' roots), when
    /// it says.
    pub root: Option<PathBuf>,
    /// The snapshotter images are unpacked into.
    pub snapshotter: String,
    /// Its root directory, when containerd says.
    pub snapshotter_root: Option<PathBuf>,
}

pub(crate) async fn info(c: &Containerd) -> Result<SystemInfo> {
    let version = c
        .version()
        .version(tonic::Request::new(()))
        .await
        .map_err(|s| c.err("version", s))?
        .into_inner();
    let plugins = c
        .introspection()
        .plugins(c.request(PluginsRequest {
            filters: vec![format!(
                "type==io.containerd.snapshotter.v1,id=={DEFAULT_SNAPSHOTTER}"
            )],
        }))
        .await
        .map_err(|s| c.err("introspection", s))?
        .into_inner()
        .plugins;
    let snapshotter_root = plugins
        .iter()
        .find_map(|p| p.exports.get("root"))
        .map(PathBuf::from);
    // `<root>/io.containerd.snapshotter.v1.overlayfs`.
    let root = snapshotter_root
        .as_ref()
        .and_then(|r| r.parent())
        .map(PathBuf::from);
    Ok(SystemInfo {
        containerd_version: version.version,
        containerd_revision: version.revision,
        root,
        snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
        snapshotter_root,
    })
}
