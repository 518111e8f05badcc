//! The snapshot service calls a commit makes, on one snapshotter.

use std::collections::HashMap;

pub(crate) use containerd_client::services::v1::snapshots::Info;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, Kind, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::types::Mount;
use tonic::Code;
use tracing::warn;

use crate::client::Containerd;
use crate::error::{Error, Result};

/// containerd's prefix for snapshots being filled from a layer; its
/// garbage collector and `ctr snapshots` know them by it.
pub(crate) const UNPACK_PREFIX: &str = "extract";

/// Snapshot calls bound to one snapshotter.
#[derive(Clone)]
pub(crate) struct Snapshots<'a> {
    c: &'a Containerd,
    snapshotter: String,
}

impl<'a> Snapshots<'a> {
    pub(crate) fn new(c: &'a Containerd, snapshotter: &str) -> Self {
        Self {
            c,
            snapshotter: snapshotter.to_string(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.snapshotter
    }

    pub(crate) async fn stat(&self, key: &str) -> Result<Info> {
        let req = self.c.request(StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        let resp = self
            .c
            .snapshots()
            .stat(req)
            .await
            .map_err(|s| self.c.err("snapshot stat", s))?;
        resp.into_inner()
            .info
            .ok_or_else(|| Error::Malformed(format!("snapshot {key} has no info")))
    }

    /// Whether a snapshot exists.
    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        match self.stat(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Some(crate::error::Kind::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let req = self.c.request(MountsRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        let resp = self
            .c
            .snapshots()
            .mounts(req)
            .await
            .map_err(|s| self.c.err("snapshot mounts", s))?;
        Ok(resp.into_inner().mounts)
    }

    pub(crate) async fn view(&self, lease: &str, key: &str, parent: &str) -> Result<Vec<Mount>> {
        let req = self.c.leased(
            ViewSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.into(),
                parent: parent.into(),
                labels: HashMap::new(),
            },
            lease,
        );
        let resp = self
            .c
            .snapshots()
            .view(req)
            .await
            .map_err(|s| self.c.err("snapshot view", s))?;
        Ok(resp.into_inner().mounts)
    }

    pub(crate) async fn prepare(&self, lease: &str, key: &str, parent: &str) -> Result<Vec<Mount>> {
        let req = self.c.leased(
            PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.into(),
                parent: parent.into(),
                labels: HashMap::new(),
            },
            lease,
        );
        let resp = self
            .c
            .snapshots()
            .prepare(req)
            .await
            .map_err(|s| self.c.err("snapshot prepare", s))?;
        Ok(resp.into_inner().mounts)
    }

    /// Commits an active snapshot under `name`. `Ok(false)` when a snapshot
    /// of that name already exists (same chain ID, same content): the
    /// active one is then removed and the existing one serves.
    #[tracing::instrument(skip_all, fields(phase = "apply", snapshot = %name))]
    pub(crate) async fn commit(&self, lease: &str, name: &str, key: &str) -> Result<bool> {
        let req = self.c.leased(
            CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: name.into(),
                key: key.into(),
                labels: HashMap::new(),
            },
            lease,
        );
        match self.c.snapshots().commit(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::AlreadyExists => {
                // The same layer committed before (e.g. by a commit that
                // failed later): nothing references that snapshot, so it is
                // taken into this lease before `key` goes; if it was
                // collected meanwhile, `key` is committed after all.
                crate::lease::add_snapshot(self.c, lease, &self.snapshotter, name).await?;
                match self.stat(name).await {
                    Ok(_) => {
                        self.remove_quietly(key).await;
                        Ok(false)
                    }
                    Err(e) if e.kind() == Some(crate::error::Kind::NotFound) => {
                        Box::pin(self.commit(lease, name, key)).await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(s) => Err(self.c.err("snapshot commit", s)),
        }
    }

    pub(crate) async fn remove(&self, key: &str) -> Result<()> {
        let req = self.c.request(RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        match self.c.snapshots().remove(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.c.err("snapshot remove", s)),
        }
    }

    /// Removes a temporary snapshot; a failure is logged, not returned: the
    /// snapshot belongs to the commit's lease and is collected with it.
    pub(crate) async fn remove_quietly(&self, key: &str) {
        if let Err(e) = self.remove(key).await {
            warn!(snapshot = %key, cause = %e, "could not remove temporary snapshot; the lease's expiry will");
        }
    }
}

pub(crate) fn is_active(info: &Info) -> bool {
    info.kind == Kind::Active as i32
}
