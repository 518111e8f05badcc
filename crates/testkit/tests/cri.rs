//! The CRI node against the real CRI plugin: pods and containers as kubelet makes
//! them, images pulled through CRI with their layer blobs discarded.

use commitd_testkit::cri_api::ContainerState;
use commitd_testkit::{CRI_NAMESPACE, KubeContainer, KubePod, SERVICE_LINKS, shared_cri};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[test]
fn pods_and_containers_as_kubelet_makes_them() -> Result {
    let node = shared_cri();
    let image = node.base_image()?;
    let pod = node.run_pod(KubePod::unique("team-a", "nb"))?;
    let spec = KubeContainer::new("worker", &image)
        .command(&["sh", "-c", "sleep 100000"])
        .env("MODE", "train");
    let id = pod.start(&spec)?;
    assert_eq!(id.len(), 64, "{id}");

    // kubelet's labels reach containerd's container record; the CRI plugin adds its kind.
    let info = node.ctr().container_info(&id)?;
    let labels = &info["Labels"];
    assert_eq!(labels["io.kubernetes.container.name"], "worker");
    assert_eq!(labels["io.kubernetes.pod.name"], pod.spec.name.as_str());
    assert_eq!(labels["io.kubernetes.pod.namespace"], "team-a");
    assert_eq!(labels["io.kubernetes.pod.uid"], pod.spec.uid.as_str());
    assert_eq!(labels["io.cri-containerd.kind"], "container");
    // kubelet passes the image ID; the CRI plugin records the image's name.
    assert!(
        node.image_id(&image)?
            .is_some_and(|id| id.starts_with("sha256:"))
    );
    assert_eq!(info["Image"], image.as_str());

    // Mounts and environment as kubelet asked.
    let mounts = node.sh(&id, "cat /proc/self/mounts")?;
    for target in [
        "/etc/hosts",
        "/dev/termination-log",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/etc/hostname",
        "/etc/resolv.conf",
    ] {
        assert!(
            mounts.contains(&format!(" {target} ")),
            "{target} not mounted:\n{mounts}"
        );
    }
    assert_eq!(
        node.sh(
            &id,
            "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"
        )?,
        "team-a"
    );
    assert!(
        node.sh(&id, "head -1 /etc/hosts")?
            .contains("Kubernetes-managed")
    );
    let env = node.sh(&id, "env")?;
    assert!(env.contains("MODE=train\n"), "{env}");
    for (k, v) in SERVICE_LINKS {
        assert!(env.contains(&format!("{k}={v}\n")), "{k} missing:\n{env}");
    }

    // A restart: attempt 1 beside the exited attempt 0, same labels.
    let second = pod.restart(&spec, &id)?;
    let first = node.container_status(&id)?;
    assert_eq!(first.state(), ContainerState::ContainerExited);
    assert_eq!(first.exit_code, 137);
    let now = node.container_status(&second)?;
    assert_eq!(now.state(), ContainerState::ContainerRunning);
    assert_eq!(now.metadata.as_ref().map(|m| m.attempt), Some(1));
    assert_eq!(now.labels, first.labels);
    assert_eq!(node.list_containers(Some(&pod.id))?.len(), 2);
    Ok(())
}

#[test]
fn pulled_layers_are_discarded_after_unpacking() -> Result {
    let node = shared_cri();
    let image = node.base_image()?;
    let ctr = node.ctr();
    assert_eq!(ctr.namespace(), CRI_NAMESPACE);
    let manifest_digest = ctr
        .images()?
        .into_iter()
        .find(|i| i.name == image)
        .map(|i| i.digest)
        .ok_or("the pulled image has no record")?;
    let manifest: serde_json::Value =
        serde_json::from_str(&ctr.run(&["content", "get", &manifest_digest])?)?;
    let layer = manifest["layers"][0]["digest"].as_str().ok_or("no layer")?;
    let content = ctr.content()?;
    assert!(content.contains(&manifest_digest), "{content:?}");
    assert!(
        !content.iter().any(|c| c == layer),
        "{layer} was kept: {content:?}"
    );
    assert!(node.registry().has_blob(layer));
    Ok(())
}

/// Pids of live processes whose command line contains `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        if pid != std::process::id()
            && !zombie
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_dropped_node_leaves_nothing() -> Result {
    let node = commitd_testkit::CriNode::start()?;
    let dir = node.containerd().dir().ok_or("private")?.to_path_buf();
    let needle = format!("{}/", dir.display());
    let pod = node.run_pod(KubePod::unique("team-a", "gone"))?;
    let id =
        pod.start(&KubeContainer::new("app", &node.base_image()?).command(&["sleep", "100000"]))?;
    assert!(node.sh(&id, "echo ok")?.contains("ok"));
    // containerd, its shims and the registry all name the directory.
    assert!(
        pids_mentioning(&needle).len() >= 3,
        "{:?}",
        pids_mentioning(&needle)
    );
    std::mem::forget(pod); // the node goes with the pod still running
    drop(node);
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(pids_mentioning(&needle), Vec::<u32>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(&needle), "mounts left under {needle}");
    Ok(())
}
