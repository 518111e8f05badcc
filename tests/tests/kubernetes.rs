//! Kubernetes nodes for real: pods and containers made through containerd's CRI
//! plugin as kubelet makes them (kubelet's labels, annotations and mounts; images
//! pulled through CRI from a registry, their layer blobs discarded after unpacking),
//! committed through the daemon by `namespace/pod/container`, and the image run as a
//! new CRI container in a new pod. See `commitd_testkit::CriNode`.
//!
//! Every test here shares the process's CRI node (containerd's `k8s.io` namespace)
//! and takes [`serial`] first, so that what one test asserts about the namespace
//! (leases, snapshots, images) is not disturbed by another.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, MutexGuard};

use commitd_e2e::Daemon;
use commitd_testkit::cri_api::ContainerState;
use commitd_testkit::{
    CRI_NAMESPACE, CriNode, EntryKind, KubeContainer, KubePod, SNAPSHOTTER, shared_cri,
};

/// One test at a time on the shared node.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The daemon on the CRI node's containerd, namespace `k8s.io`, as the DaemonSet
/// runs it.
fn daemon(node: &CriNode) -> Daemon {
    Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &[],
    )
}

/// A long-running app container of the node's base image.
fn sleeper(name: &str, image: &str) -> KubeContainer {
    KubeContainer::new(name, image).command(&["sh", "-c", "sleep 100000"])
}

/// Nothing a commit makes temporarily is left in `k8s.io`: no lease, no view, no
/// `extract-` snapshot.
fn assert_clean(node: &CriNode) {
    let ctr = node.ctr();
    let leases = ctr.leases().unwrap();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let snaps = ctr.snapshots(SNAPSHOTTER).unwrap();
    let temp: Vec<_> = snaps
        .iter()
        .filter(|s| s.key.starts_with("extract-") || s.key.contains("-view-"))
        .collect();
    assert!(temp.is_empty(), "temporary snapshots left: {temp:?}");
}

#[test]
fn cri_containers_commit_by_pod_and_container_name_and_run_as_new_pods() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team-a", "notebook")).unwrap();
    let name = pod.spec.name.clone();
    let app = pod.start(&sleeper("jupyter", &base)).unwrap();
    node.sh(&app, "echo trained > /model").unwrap();

    let d = daemon(node);
    let repo = "registry.local/team-a/notebook";
    let by_full = d.docker_ok(&[
        "commit",
        &format!("team-a/{name}/jupyter"),
        &format!("{repo}:1"),
    ]);
    let by_pod = d.docker_ok(&["commit", &format!("{name}/jupyter"), &format!("{repo}:2")]);
    let by_id = d.docker_ok(&["commit", &app[..12], &format!("{repo}:3")]);
    for id in [&by_full, &by_pod, &by_id] {
        assert!(id.trim().starts_with("sha256:"), "{id}");
    }
    // The pod's sandbox is no container of the pod: kubelet gives it no container name.
    let (ok, _, err) = d.docker(&["commit", &format!("team-a/{name}/POD"), "x"]);
    assert!(!ok && err.contains("No such container"), "{err}");
    let (ok, _, err) = d.docker(&["commit", &format!("team-b/{name}/jupyter"), "x"]);
    assert!(!ok && err.contains("No such container"), "{err}");
    // Paused for the commit, running again.
    assert_eq!(
        node.container_status(&app).unwrap().state(),
        ContainerState::ContainerRunning
    );

    // The new layer holds the change.
    let entries = node.ctr().top_layer_entries(&format!("{repo}:1")).unwrap();
    let model = entries
        .iter()
        .find(|e| e.path == "model")
        .unwrap_or_else(|| {
            panic!(
                "no /model in the layer:\n{}",
                entries
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    assert_eq!((model.kind, model.size), (EntryKind::File, 8));

    // The image starts as a new CRI container in a new pod, as kubelet would start it
    // (found by name in the CRI plugin's image store, no pull).
    let restored = node
        .run_pod(KubePod::unique("team-a", "notebook-restored"))
        .unwrap();
    let image_id = node.image_id(&format!("{repo}:1")).unwrap();
    assert_eq!(
        image_id.as_deref(),
        Some(by_full.trim()),
        "CRI sees the commit"
    );
    let again = restored
        .start(&sleeper("jupyter", &format!("{repo}:1")))
        .unwrap();
    assert_eq!(node.sh(&again, "cat /model").unwrap(), "trained\n");
    assert_eq!(
        node.sh(&again, "cat /bin/busybox | wc -c").unwrap().trim(),
        {
            std::fs::metadata(commitd_testkit::HOST_BUSYBOX)
                .unwrap()
                .len()
                .to_string()
        }
    );
    drop(restored);
    drop(pod);
    assert_clean(node);
}

#[test]
fn commit_through_the_http_api_keeps_kubelet_containers_running() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("ml", "trainer")).unwrap();
    let name = pod.spec.name.clone();
    let worker = pod
        .start(
            &sleeper("worker", &base)
                .env("EPOCHS", "3")
                .empty_dir("/scratch"),
        )
        .unwrap();
    let sidecar = pod.start(&sleeper("logs", &base)).unwrap();
    node.sh(
        &worker,
        "mkdir -p /out && echo w > /out/w && echo s > /scratch/s",
    )
    .unwrap();
    node.sh(&sidecar, "echo side > /side").unwrap();

    let d = daemon(node);
    let (status, body) = d.curl(
        "POST",
        &format!("/commit?container=ml/{name}/worker&repo=registry.local/ml/trainer&tag=e3&comment=nightly"),
        None,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(id["Id"].as_str().unwrap().starts_with("sha256:"), "{body}");

    let entries = node
        .ctr()
        .top_layer_entries("registry.local/ml/trainer:e3")
        .unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"out/w"), "{paths:?}");
    // The other container's change is not in this one's image; nor is what the
    // container wrote into its emptyDir volume.
    assert!(!paths.contains(&"side"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("scratch/s")), "{paths:?}");
    for c in [&worker, &sidecar] {
        assert_eq!(
            node.container_status(c).unwrap().state(),
            ContainerState::ContainerRunning
        );
    }
    drop(pod);
    assert_clean(node);
}
