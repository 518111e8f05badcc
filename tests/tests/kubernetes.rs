//! Kubernetes nodes: containers made the way the CRI plugin makes them
//! (namespace `k8s.io`, a sandbox container per pod, names in
//! `io.kubernetes.*` labels), committed by pod and container name.
#![allow(clippy::unwrap_used)]

use commitd_e2e::{World, daemon};
use commitd_testkit::TaskStatus;

#[test]
fn cri_containers_commit_by_pod_and_container_name() {
    // The only test of this binary in `k8s.io`.
    let w = World::in_namespace("k8s.io");
    let pod = [
        ("io.kubernetes.pod.name", "notebook-0"),
        ("io.kubernetes.pod.namespace", "team-a"),
        (
            "io.kubernetes.pod.uid",
            "0f6c3c5e-7f5b-4b8e-9d1a-2b6f0d1e9a11",
        ),
    ];
    let mut sandbox = pod.to_vec();
    sandbox.push(("io.cri-containerd.kind", "sandbox"));
    let mut app = pod.to_vec();
    app.extend([
        ("io.cri-containerd.kind", "container"),
        ("io.kubernetes.container.name", "jupyter"),
    ]);
    // CRI names containers by 64-hex IDs.
    let sandbox_id = format!("{:0<64}", "5a");
    let app_id = format!("{:0<64}", "a99");
    w.ctr
        .run_detached(&w.image, &sandbox_id, &["sleep", "100000"], &sandbox)
        .unwrap();
    w.ctr
        .run_detached(&w.image, &app_id, &["sh", "-c", "sleep 100000"], &app)
        .unwrap();
    w.ctr
        .exec(&app_id, &["sh", "-c", "echo trained > /model"])
        .unwrap();

    let d = daemon!(w);
    let by_full = d.docker_ok(&[
        "commit",
        "team-a/notebook-0/jupyter",
        "registry.local/team-a/notebook:1",
    ]);
    let by_pod = d.docker_ok(&[
        "commit",
        "notebook-0/jupyter",
        "registry.local/team-a/notebook:2",
    ]);
    let by_id = d.docker_ok(&["commit", &app_id[..12], "registry.local/team-a/notebook:3"]);
    for id in [&by_full, &by_pod, &by_id] {
        assert!(id.trim().starts_with("sha256:"), "{id}");
    }
    // The pod's sandbox is not the container: its name does not match.
    let (ok, _, err) = d.docker(&["commit", "team-a/notebook-0/pause", "x"]);
    assert!(!ok && err.contains("No such container"), "{err}");
    assert_eq!(w.ctr.task_status(&app_id).unwrap(), TaskStatus::Running);
    assert_eq!(
        w.run("registry.local/team-a/notebook:1", "cat /model"),
        "trained\n"
    );
    w.assert_clean();
}
