//! The commit's lease: everything a commit creates (views, the extract
//! snapshot, blobs, ingests) belongs to it, so containerd's garbage
//! collector leaves it alone mid-commit, and collects it if the commit fails
//! and the lease is deleted, or expires because the daemon died.
//!
//! Leases cannot be extended in containerd, so a long commit renews by
//! chaining: every third of the expiry a new lease is made, subsequent
//! requests use it, and the resources of the older leases are added to it.
//! Older leases are kept until the commit ends (they expire on their own),
//! so a request that started under one of them stays covered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, ListResourcesRequest, Resource,
};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::client::Containerd;
use crate::error::Result;

/// containerd's label that makes the garbage collector drop a lease.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

pub(crate) struct Lease {
    c: Containerd,
    state: Arc<Mutex<Chain>>,
    renewer: Option<JoinHandle<()>>,
}

struct Chain {
    /// Every lease of this commit, newest last.
    ids: Vec<String>,
}

impl Lease {
    /// Creates a lease expiring after `expiry`, renewed every third of it
    /// for as long as this value lives.
    pub(crate) async fn create(c: &Containerd, expiry: Duration) -> Result<Self> {
        let first = create_one(c, expiry).await?;
        let state = Arc::new(Mutex::new(Chain { ids: vec![first] }));
        let renewer = tokio::spawn(renew(c.clone(), Arc::clone(&state), expiry));
        Ok(Self {
            c: c.clone(),
            state,
            renewer: Some(renewer),
        })
    }

    /// The lease new resources should go to.
    pub(crate) fn id(&self) -> String {
        let chain = self.state.lock().unwrap_or_else(|p| p.into_inner());
        chain.ids.last().cloned().unwrap_or_default()
    }

    /// Deletes every lease of the chain. Whatever the commit made that is not
    /// referenced from an image becomes garbage.
    pub(crate) async fn release(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
            let _ = r.await;
        }
        let ids = std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).ids);
        let mut left = Vec::new();
        for id in ids {
            if let Err(s) = delete_one(&self.c, &id).await {
                warn!(lease = %id, cause = %s.message(), "could not delete lease; retrying in the background");
                left.push(id);
            }
        }
        if !left.is_empty() {
            // containerd is away (restarting, say): keep trying, so what the
            // commit held is collected when it is back rather than at expiry.
            // Bounded: the lease expires by itself anyway.
            let c = self.c.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(200);
                for _ in 0..40 {
                    tokio::time::sleep(delay).await;
                    let mut still = Vec::new();
                    for id in left {
                        match delete_one(&c, &id).await {
                            Ok(()) => debug!(lease = %id, "lease deleted after a retry"),
                            Err(s) if s.code() == tonic::Code::NotFound => {}
                            Err(_) => still.push(id),
                        }
                    }
                    if still.is_empty() {
                        return;
                    }
                    left = still;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                warn!(leases = ?left, "leases not deleted; they expire by themselves");
            });
        }
    }
}

async fn delete_one(c: &Containerd, id: &str) -> std::result::Result<(), tonic::Status> {
    let req = c.request(DeleteRequest {
        id: id.to_string(),
        sync: false,
    });
    c.leases().delete(req).await.map(|_| ())
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

async fn create_one(c: &Containerd, expiry: Duration) -> Result<String> {
    let id = format!("commitd-{}", crate::unique());
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::hours(1));
    let labels = HashMap::from([(
        EXPIRE_LABEL.to_string(),
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )]);
    let req = c.request(CreateRequest {
        id: id.clone(),
        labels,
    });
    c.leases()
        .create(req)
        .await
        .map_err(|s| c.err("lease create", s))?;
    debug!(lease = %id, ?expiry, "lease created");
    Ok(id)
}

async fn renew(c: Containerd, state: Arc<Mutex<Chain>>, expiry: Duration) {
    let period = (expiry / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let new = match create_one(&c, expiry).await {
            Ok(id) => id,
            Err(e) => {
                warn!(cause = %e, "could not renew commit lease; will retry");
                continue;
            }
        };
        let older = {
            let mut chain = state.lock().unwrap_or_else(|p| p.into_inner());
            let older = chain.ids.clone();
            chain.ids.push(new.clone());
            older
        };
        for old in older {
            if let Err(e) = copy_resources(&c, &old, &new).await {
                warn!(from = %old, to = %new, cause = %e, "could not carry resources to the renewed lease");
            }
        }
        debug!(lease = %new, "commit lease renewed");
    }
}

async fn copy_resources(c: &Containerd, from: &str, to: &str) -> Result<()> {
    let req = c.request(ListResourcesRequest {
        id: from.to_string(),
    });
    let resources = c
        .leases()
        .list_resources(req)
        .await
        .map_err(|s| c.err("lease list resources", s))?;
    for r in resources.into_inner().resources {
        add_resource(c, to, r).await?;
    }
    Ok(())
}

async fn add_resource(c: &Containerd, lease: &str, resource: Resource) -> Result<()> {
    let req = c.request(AddResourceRequest {
        id: lease.to_string(),
        resource: Some(resource),
    });
    c.leases()
        .add_resource(req)
        .await
        .map_err(|s| c.err("lease add resource", s))?;
    Ok(())
}

/// Attaches an existing snapshot to a lease.
pub(crate) async fn add_snapshot(
    c: &Containerd,
    lease: &str,
    snapshotter: &str,
    key: &str,
) -> Result<()> {
    add_resource(
        c,
        lease,
        Resource {
            id: key.to_string(),
            r#type: format!("snapshots/{snapshotter}"),
        },
    )
    .await
}

/// Attaches an existing blob to a lease.
pub(crate) async fn add_content(c: &Containerd, lease: &str, digest: &str) -> Result<()> {
    add_resource(
        c,
        lease,
        Resource {
            id: digest.to_string(),
            r#type: "content".into(),
        },
    )
    .await
}
