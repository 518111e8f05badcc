//! The benchmark's "containerd commit path" peer: the whole of what a
//! commit through containerd's own services costs, in nerdctl's order
//! (`nerdctl commit`, pkg/imgutil/commit: pause, a lease, the diff
//! service's Compare, the parent's config read, the new snapshot made by
//! Prepare + Apply + Commit, config and manifest written, the image record,
//! the lease dropped, resume). The rows' "containerd diff gzip" and
//! "containerd apply gzip" time two of these steps alone; this one is the
//! commit a user of that path waits for, image included. nerdctl itself is
//! not installable here (see MACHINE-NOTES), so its steps are made over
//! gRPC, as it makes them.

use std::collections::HashMap;
use std::time::Instant;

use commitd_testkit::SNAPSHOTTER;
use commitd_testkit::grpc::Grpc;
use commitd_testkit::grpc::api::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, ViewSnapshotRequest,
};
use commitd_testkit::grpc::api::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest, DeleteContentRequest, DeleteImageRequest,
    DeleteRequest, DiffRequest, GetImageRequest, Image, InfoRequest, PauseTaskRequest,
    ReadContentRequest, ResumeTaskRequest, WriteAction, WriteContentRequest,
};
use commitd_testkit::grpc::api::types::{Descriptor, Mount};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

async fn read(c: &Grpc, digest: &str) -> Vec<u8> {
    let mut s = c
        .content()
        .read(c.request(ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        }))
        .await
        .expect("content read")
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend_from_slice(&m.expect("content read").data);
    }
    out
}

async fn write(c: &Grpc, lease: &str, data: Vec<u8>, labels: HashMap<String, String>) -> String {
    let digest = sha256(&data);
    let msg = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: format!("bench-{digest}"),
        total: data.len() as i64,
        expected: digest.clone(),
        offset: 0,
        data,
        labels,
    };
    let req = c.leased(futures::stream::iter([msg]), lease);
    match c.content().write(req).await {
        Ok(r) => {
            let mut r = r.into_inner();
            while let Some(m) = r.next().await {
                if let Err(s) = m {
                    assert_eq!(s.code(), tonic::Code::AlreadyExists, "content write: {s}");
                }
            }
        }
        Err(s) => assert_eq!(s.code(), tonic::Code::AlreadyExists, "content write: {s}"),
    }
    digest
}

/// What a diff of container `id` compares, as containerd's
/// `rootfs.CreateDiff` makes it: its snapshot's parent, its own mounts
/// (the right side) and the mounts of a view `view` of that parent made
/// under `lease` (the left side; the caller removes it).
pub struct Sides {
    pub parent: String,
    pub upper: Vec<Mount>,
    pub lower: Vec<Mount>,
}

pub async fn diff_sides(c: &Grpc, id: &str, view: &str, lease: &str) -> Sides {
    let parent = c
        .snapshots()
        .stat(c.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        }))
        .await
        .expect("snapshot stat")
        .into_inner()
        .info
        .expect("snapshot info")
        .parent;
    let upper = c
        .snapshots()
        .mounts(c.request(MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        }))
        .await
        .expect("mounts")
        .into_inner()
        .mounts;
    let lower = c
        .snapshots()
        .view(c.leased(
            ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: view.into(),
                parent: parent.clone(),
                labels: HashMap::new(),
            },
            lease,
        ))
        .await
        .expect("view")
        .into_inner()
        .mounts;
    Sides {
        parent,
        upper,
        lower,
    }
}

/// Commits container `id` (made from image `image`) as `name` through
/// containerd's services, in nerdctl's steps; answers the wall seconds from
/// the pause to the image record (and the resume), then removes what it made.
pub async fn commit(c: &Grpc, id: &str, image: &str, name: &str) -> f64 {
    let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let t = Instant::now();
    c.tasks()
        .pause(c.request(PauseTaskRequest {
            container_id: id.into(),
        }))
        .await
        .expect("task pause");
    let lease = format!("bench-path-{id}");
    c.leases()
        .create(c.request(CreateRequest {
            id: lease.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        }))
        .await
        .expect("lease create");
    // rootfs.CreateDiff: the container's mounts, a view of its parent,
    // Compare; the diff ID from the blob's uncompressed label.
    let view = format!("bench-path-view-{id}");
    let Sides {
        parent: snapshot_parent,
        upper,
        lower,
    } = diff_sides(c, id, &view, &lease).await;
    let layer = c
        .diff()
        .diff(c.leased(
            DiffRequest {
                left: lower,
                right: upper,
                media_type: GZIP_LAYER.into(),
                r#ref: format!("bench-path-{id}"),
                labels: HashMap::new(),
                source_date_epoch: None,
            },
            &lease,
        ))
        .await
        .expect("diff")
        .into_inner()
        .diff
        .expect("diff descriptor");
    let _ = c
        .snapshots()
        .remove(c.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: view,
        }))
        .await;
    let diff_id = c
        .content()
        .info(c.request(InfoRequest {
            digest: layer.digest.clone(),
        }))
        .await
        .expect("content info")
        .into_inner()
        .info
        .expect("info")
        .labels
        .get("containerd.io/uncompressed")
        .cloned()
        .expect("the diff's uncompressed label");
    // The parent's manifest and config, and the child's.
    let parent = c
        .images()
        .get(c.request(GetImageRequest { name: image.into() }))
        .await
        .expect("image get")
        .into_inner()
        .image
        .expect("image")
        .target
        .expect("target");
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(c, &parent.digest).await).expect("manifest");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let mut config: serde_json::Value =
        serde_json::from_slice(&read(c, config_digest).await).expect("config");
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(diff_id.clone().into());
    if let Some(h) = config["history"].as_array_mut() {
        h.push(serde_json::json!({"created_by": "bench"}));
    }
    let chain = match snapshot_parent.as_str() {
        "" => diff_id.clone(),
        p => sha256(format!("{p} {diff_id}").as_bytes()),
    };
    // applyDiffLayer: the new image's snapshot.
    let key = format!("bench-path-apply-{id}");
    let mounts = c
        .snapshots()
        .prepare(c.leased(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: snapshot_parent.clone(),
                labels: HashMap::new(),
            },
            &lease,
        ))
        .await
        .expect("prepare")
        .into_inner()
        .mounts;
    c.diff()
        .apply(c.leased(
            ApplyRequest {
                diff: Some(layer.clone()),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
            &lease,
        ))
        .await
        .expect("apply");
    c.snapshots()
        .commit(c.leased(
            CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: chain.clone(),
                key,
                labels: HashMap::new(),
            },
            &lease,
        ))
        .await
        .expect("snapshot commit");
    // writeContentsForImage: config, then manifest.
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    let config_size = config_bytes.len();
    let config_digest = write(
        c,
        &lease,
        config_bytes,
        HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            chain.clone(),
        )]),
    )
    .await;
    let mut child = manifest.clone();
    child["config"]["digest"] = config_digest.clone().into();
    child["config"]["size"] = config_size.into();
    child["layers"].as_array_mut().expect("layers").push(
        serde_json::json!({"mediaType": GZIP_LAYER, "digest": layer.digest, "size": layer.size}),
    );
    let mut refs = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config_digest.clone(),
    )]);
    for (i, l) in child["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .enumerate()
    {
        refs.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l["digest"].as_str().unwrap_or_default().to_string(),
        );
    }
    let child_bytes = serde_json::to_vec(&child).expect("manifest json");
    let child_size = child_bytes.len() as i64;
    let child_digest = write(c, &lease, child_bytes, refs).await;
    c.images()
        .create(c.leased(
            CreateImageRequest {
                image: Some(Image {
                    name: name.into(),
                    labels: HashMap::new(),
                    target: Some(Descriptor {
                        media_type: parent.media_type.clone(),
                        digest: child_digest.clone(),
                        size: child_size,
                        annotations: HashMap::new(),
                    }),
                    created_at: None,
                    updated_at: None,
                }),
                source_date_epoch: None,
            },
            &lease,
        ))
        .await
        .expect("image create");
    c.leases()
        .delete(c.request(DeleteRequest {
            id: lease,
            sync: false,
        }))
        .await
        .expect("lease delete");
    c.tasks()
        .resume(c.request(ResumeTaskRequest {
            container_id: id.into(),
        }))
        .await
        .expect("task resume");
    let secs = t.elapsed().as_secs_f64();

    // Not timed: what it made goes.
    let _ = c
        .images()
        .delete(c.request(DeleteImageRequest {
            name: name.into(),
            sync: false,
            target: None,
        }))
        .await;
    let _ = c
        .snapshots()
        .remove(c.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: chain,
        }))
        .await;
    for d in [child_digest, config_digest, layer.digest] {
        let _ = c
            .content()
            .delete(c.request(DeleteContentRequest { digest: d }))
            .await;
    }
    secs
}
