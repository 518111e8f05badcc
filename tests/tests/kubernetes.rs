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

/// The busybox binary and its applets, and nothing else: no `/etc`, `/dev`, `/proc`,
/// `/sys`, `/run`, `/var` — every mount point the runtime needs is missing.
fn bare_image() -> commitd_testkit::ImageBuilder {
    let mut b = commitd_testkit::ImageBuilder::scratch()
        .layer()
        .dir("/bin", 0o755)
        .host_file("/bin/busybox", commitd_testkit::HOST_BUSYBOX, 0o755);
    for applet in commitd_testkit::APPLETS {
        b = b.symlink(&format!("/bin/{applet}"), "busybox");
    }
    b
}

/// The daemon with the fast path off: every commit goes through containerd's diff
/// service.
fn daemon_diff_service(node: &CriNode, dir: &std::path::Path) -> Daemon {
    let config = dir.join("commitd.toml");
    std::fs::write(&config, "[commit]\nfast_path = false\n").unwrap();
    Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &["--config", config.to_str().unwrap()],
    )
}

fn layer_paths(node: &CriNode, image: &str) -> Vec<String> {
    let mut paths: Vec<String> = node
        .ctr()
        .top_layer_entries(image)
        .unwrap()
        .into_iter()
        .map(|e| e.path.trim_end_matches('/').to_owned())
        .collect();
    paths.sort();
    paths
}

#[test]
fn runtime_mount_stubs_are_not_committed_and_the_images_files_survive() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let bare = node.publish(&bare_image(), "library/bare:1").unwrap();
    let pod = node.run_pod(KubePod::unique("team-a", "stubs")).unwrap();
    let name = pod.spec.name.clone();
    // kubelet's mounts (/etc/hosts, /dev/termination-log, the service-account token),
    // the CRI plugin's (/etc/hostname, /etc/resolv.conf, /dev/shm), and a volume.
    let on_base = pod
        .start(&sleeper("on-base", &base).empty_dir("/data/scratch"))
        .unwrap();
    let on_bare = pod
        .start(&sleeper("on-bare", &bare).empty_dir("/data/scratch"))
        .unwrap();
    for id in [&on_base, &on_bare] {
        node.sh(id, "echo trained > /model && echo v > /data/scratch/v")
            .unwrap();
    }
    node.sh(&on_base, "echo hi > /etc/motd").unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let fast = daemon(node);
    let diff = daemon_diff_service(node, tmp.path());
    let repo = "registry.local/team-a/stubs";
    for (d, path) in [(&fast, "fast"), (&diff, "diff")] {
        for c in ["on-base", "on-bare"] {
            d.docker_ok(&[
                "commit",
                &format!("team-a/{name}/{c}"),
                &format!("{repo}:{c}-{path}"),
            ]);
        }
    }

    // On the base, which has /etc/hosts, /etc/hostname and /etc/resolv.conf: the
    // runtime mounted over them; the layer holds what the user wrote, and the volume's
    // mount point (as Docker keeps it), never what is in the volume.
    let want_base = [
        "data",
        "data/scratch",
        "etc",
        "etc/motd",
        "model",
        "var",
        "var/run",
        "var/run/secrets",
        "var/run/secrets/kubernetes.io",
        "var/run/secrets/kubernetes.io/serviceaccount",
    ];
    // On the bare image, runc made /etc and its three files, /dev, /proc and /sys as
    // mount targets: none of them is committed.
    let want_bare = [
        "data",
        "data/scratch",
        "model",
        "var",
        "var/run",
        "var/run/secrets",
        "var/run/secrets/kubernetes.io",
        "var/run/secrets/kubernetes.io/serviceaccount",
    ];
    for path in ["fast", "diff"] {
        assert_eq!(
            layer_paths(node, &format!("{repo}:on-base-{path}")),
            want_base,
            "{path}"
        );
        assert_eq!(
            layer_paths(node, &format!("{repo}:on-bare-{path}")),
            want_bare,
            "{path}"
        );
    }

    // The image's own files survive the commit unchanged, in the new image's snapshot
    // (read by a container that mounts nothing over them).
    let ctr = node.ctr();
    for path in ["fast", "diff"] {
        let image = format!("{repo}:on-base-{path}");
        let out = ctr
            .run_image(
                &image,
                &format!("stubs-base-{path}"),
                &[
                    "sh",
                    "-c",
                    "cat /etc/hosts /etc/hostname /etc/resolv.conf /etc/motd /model",
                ],
            )
            .unwrap();
        assert_eq!(
            out,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\ncommitd-test\nhi\ntrained\n",
            "{path}"
        );
        let image = format!("{repo}:on-bare-{path}");
        let out = ctr
            .run_image(
                &image,
                &format!("stubs-bare-{path}"),
                &[
                    "sh",
                    "-c",
                    "ls -d /etc /etc/hosts 2>&1; cat /model; ls -a /data/scratch",
                ],
            )
            .unwrap();
        assert!(
            !out.contains("/etc/hosts\n") && out.contains("trained\n"),
            "{path}: {out}"
        );
        assert!(
            out.ends_with(".\n..\n"),
            "the volume's content is not committed: {out}"
        );
    }

    // And the bare image's commit runs as a new CRI container: the runtime makes its
    // mount targets again.
    let restored = node
        .run_pod(KubePod::unique("team-a", "stubs-restored"))
        .unwrap();
    let again = restored
        .start(&sleeper("on-bare", &format!("{repo}:on-bare-fast")))
        .unwrap();
    assert_eq!(node.sh(&again, "cat /model").unwrap(), "trained\n");
    assert!(
        node.sh(&again, "cat /etc/hosts")
            .unwrap()
            .contains("localhost")
    );
    drop(restored);
    drop(pod);
    assert_clean(node);
}

#[test]
fn a_restarted_container_is_committed_by_name_as_its_running_attempt_else_the_newest() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team-a", "nb")).unwrap();
    let name = pod.spec.name.clone();
    let worker = sleeper("worker", &base);
    let first = pod.start(&worker).unwrap();
    node.sh(&first, "echo 0 > /attempt").unwrap();
    // kubelet restarts it: attempt 0 stays, exited, beside attempt 1 (same labels).
    let second = pod.restart(&worker, &first).unwrap();
    node.sh(&second, "echo 1 > /attempt").unwrap();
    let attempts = node.list_containers(Some(&pod.id)).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");

    let d = daemon(node);
    let repo = "registry.local/team-a/nb";
    let attempt_in = |image: &str| {
        let entries = node.ctr().top_layer_entries(image).unwrap();
        entries
            .iter()
            .find(|e| e.path == "attempt")
            .map(|e| e.size)
            .unwrap_or_else(|| panic!("no /attempt in {image}: {entries:?}"))
    };
    // The running attempt, by every form of its name.
    for (tag, query) in [
        ("a", format!("team-a/{name}/worker")),
        ("b", format!("{name}/worker")),
    ] {
        let id = d.docker_ok(&["commit", &query, &format!("{repo}:{tag}")]);
        assert!(id.trim().starts_with("sha256:"), "{id}");
    }
    // Attempt 1's "1\n", not the exited attempt's "0\n" (same size): read back.
    let out = node
        .ctr()
        .run_image(&format!("{repo}:a"), "nb-attempt-a", &["cat", "/attempt"])
        .unwrap();
    assert_eq!(out, "1\n");
    assert_eq!(attempt_in(&format!("{repo}:b")), 2);

    // Both exited: the newest attempt.
    node.stop_container(&second, 0).unwrap();
    d.docker_ok(&[
        "commit",
        &format!("team-a/{name}/worker"),
        &format!("{repo}:c"),
    ]);
    let out = node
        .ctr()
        .run_image(&format!("{repo}:c"), "nb-attempt-c", &["cat", "/attempt"])
        .unwrap();
    assert_eq!(out, "1\n");
    // An ID still names exactly the attempt it names.
    d.docker_ok(&["commit", &first[..16], &format!("{repo}:d")]);
    let out = node
        .ctr()
        .run_image(&format!("{repo}:d"), "nb-attempt-d", &["cat", "/attempt"])
        .unwrap();
    assert_eq!(out, "0\n");
    drop(pod);
    assert_clean(node);
}

fn skopeo(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The manifest digest of `image` in its registry, read with skopeo.
fn remote_manifest_digest(image: &str) -> String {
    let (ok, raw) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{image}"),
    ]);
    assert!(ok, "{raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(v["layers"].is_array(), "{raw}");
    let out = std::process::Command::new("sha256sum")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(raw.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
}

#[test]
fn images_on_discarded_base_layers_push_and_save() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team-a", "ship")).unwrap();
    let name = pod.spec.name.clone();
    let app = pod.start(&sleeper("app", &base)).unwrap();
    node.sh(&app, "echo shipped > /shipped").unwrap();

    let d = daemon(node);
    let host = node.registry().host();
    let same = format!("{host}/team-a/ship:1");
    d.docker_ok(&["commit", &format!("team-a/{name}/app"), &same]);
    let manifest = node.ctr().image_manifest(&same).unwrap();
    let base_layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let content = node.ctr().content().unwrap();
    assert!(
        !content.iter().any(|c| c.contains(&base_layer)),
        "the base layer was discarded after unpacking: {content:?}"
    );

    // Into the registry the base came from: the base layer is mounted from its
    // repository, never read locally.
    let out = d.docker_ok(&["push", &same]);
    assert!(
        out.contains("Mounted from library/commitd-busybox"),
        "{out}"
    );
    assert_eq!(remote_manifest_digest(&same), manifest_digest(node, &same));

    // Into another registry: fetched from the base's registry and streamed through.
    let tmp = tempfile::tempdir().unwrap();
    let other = commitd_testkit::Registry::start_in(tmp.path()).unwrap();
    let elsewhere = format!("{}/ml/ship:1", other.host());
    d.docker_ok(&["tag", &same, &elsewhere]);
    let out = d.docker_ok(&["push", &elsewhere]);
    assert!(out.contains("Pushed"), "{out}");
    assert!(other.has_blob(&base_layer), "{out}");
    assert_eq!(
        remote_manifest_digest(&elsewhere),
        manifest_digest(node, &same)
    );

    // docker save fetches it the same way: the archive holds every blob.
    let archive = tmp.path().join("ship.tar");
    d.docker_ok(&["save", "-o", archive.to_str().unwrap(), &same]);
    let (ok, listing) = {
        let out = std::process::Command::new("tar")
            .arg("tf")
            .arg(&archive)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ok, "{listing}");
    let hex = base_layer.trim_start_matches("sha256:");
    assert!(
        listing.contains(&format!("blobs/sha256/{hex}")),
        "{listing}"
    );
    let (ok, out) = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert!(ok, "{out}");
    // Still not kept locally: the node's choice to discard layers stands.
    assert!(
        !node
            .ctr()
            .content()
            .unwrap()
            .iter()
            .any(|c| c.contains(&base_layer))
    );
    drop(pod);
    assert_clean(node);
}

/// A base pulled (with an image pull secret) from a registry that requires a login,
/// its layers discarded: pushing a commit on it elsewhere reads the base layers from
/// that registry with the configured `config.json` (kubelet's), and without one the
/// push fails naming the source.
#[test]
fn base_layers_are_fetched_from_a_source_that_needs_a_login_with_the_configured_credentials() {
    let _serial = serial();
    let node = shared_cri();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("private")).unwrap();
    let (user, password) = ("kubelet", "pull-s3cret");
    let private =
        commitd_testkit::Registry::start_with_login(&tmp.path().join("private"), user, password)
            .unwrap();
    // A base of its own (its layer is nowhere else), published with the login.
    let archive = tmp.path().join("base.tar");
    commitd_testkit::ImageBuilder::busybox()
        .layer()
        .file("/etc/private-base", format!("{:?}\n", tmp.path()))
        .write_archive(&archive, "private-base")
        .unwrap();
    let base = format!("{}/team-a/private-base:1", private.host());
    let creds = format!("{user}:{password}");
    let (ok, out) = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{base}"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{base}"),
    ]);
    assert!(!ok, "the registry requires a login: {out}");
    node.pull_with_login(&base, user, password).unwrap();

    let pod = node.run_pod(KubePod::unique("team-a", "private")).unwrap();
    let name = pod.spec.name.clone();
    let app = pod.start(&sleeper("app", &base)).unwrap();
    node.sh(&app, "echo mine > /mine").unwrap();
    let target = format!("{}/team-a/private-app:1", node.registry().host());

    // Without credentials: refused before anything is sent, naming the source.
    let d = daemon(node);
    d.docker_ok(&["commit", &format!("team-a/{name}/app"), &target]);
    let manifest = node.ctr().image_manifest(&target).unwrap();
    // The base's own layer (its busybox layer may be on the target already).
    let base_layer = manifest["layers"][1]["digest"].as_str().unwrap().to_owned();
    assert!(
        !node
            .ctr()
            .content()
            .unwrap()
            .iter()
            .any(|c| c.contains(&base_layer)),
        "the base layer was discarded after unpacking"
    );
    let (_, stdout, stderr) = d.docker(&["push", &target]);
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains(&base_layer)
            && text.contains(&format!("{}/team-a/private-base", private.host())),
        "{text}"
    );
    assert!(!node.registry().has_blob(&base_layer), "{text}");
    drop(d);

    // With kubelet's config.json: fetched from the source with its login.
    let config_json = tmp.path().join("config.json");
    let auth = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{creds}' | base64 -w0")])
        .output()
        .unwrap();
    let auth = String::from_utf8(auth.stdout).unwrap();
    std::fs::write(
        &config_json,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            private.host()
        ),
    )
    .unwrap();
    let config = tmp.path().join("commitd.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nsource_credentials = \"{}\"\n",
            config_json.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &["--config", config.to_str().unwrap()],
    );
    let out = d.docker_ok(&["push", &target]);
    assert!(node.registry().has_blob(&base_layer), "{out}");
    assert_eq!(
        remote_manifest_digest(&target),
        manifest_digest(node, &target)
    );
    // docker save reads it the same way.
    let saved = tmp.path().join("app.tar");
    d.docker_ok(&["save", "-o", saved.to_str().unwrap(), &target]);
    let (ok, out) = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}", saved.display()),
    ]);
    assert!(ok, "{out}");
    drop(pod);
    assert_clean(node);
}

fn manifest_digest(node: &CriNode, image: &str) -> String {
    node.ctr()
        .images()
        .unwrap()
        .into_iter()
        .find(|i| i.name == image)
        .map(|i| i.digest)
        .unwrap_or_else(|| panic!("no image {image}"))
}

#[test]
fn exited_cri_containers_sandboxes_and_cri_image_records_show_as_docker_shows_them() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team-a", "job")).unwrap();
    let name = pod.spec.name.clone();
    let job = pod
        .start(&KubeContainer::new("once", &base).command(&[
            "sh",
            "-c",
            "echo done > /done; exit 3",
        ]))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while node.container_status(&job).unwrap().state() != ContainerState::ContainerExited {
        assert!(std::time::Instant::now() < deadline, "the job never exited");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let d = daemon(node);

    // The CRI plugin deleted its task; the exit comes from the plugin.
    let ps = d.docker_ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}}",
    ]);
    let line = ps
        .lines()
        .find(|l| l.starts_with(&job))
        .unwrap_or_else(|| panic!("{job} not listed:\n{ps}"));
    assert!(
        line.contains(&format!("team-a/{name}/once Exited (3) ")),
        "{line}"
    );
    // The sandbox, by its pod, as nerdctl shows it.
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&pod.id) && l.contains(&format!(" k8s://team-a/{name} Up"))),
        "{ps}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["inspect", &format!("team-a/{name}/once")])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited", "{v}");
    assert_eq!(v[0]["State"]["ExitCode"], 3, "{v}");
    assert_eq!(v[0]["State"]["Running"], false, "{v}");
    let exited = d.docker_ok(&["ps", "-a", "-q", "--no-trunc", "--filter", "status=exited"]);
    assert!(exited.lines().any(|l| l == job), "{exited}");

    // The CRI plugin's `sha256:<id>` records are no repositories.
    let image = "registry.local/team-a/job:1";
    let id = d.docker_ok(&["commit", &format!("team-a/{name}/once"), image]);
    let id = id.trim();
    let id_record = |present: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let names: Vec<String> = node
                .ctr()
                .images()
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect();
            if names.iter().any(|n| n == id) == present {
                return names;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "record {id} present={present}: {names:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    id_record(true);
    let images = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!images.contains("sha256"), "{images}");
    assert!(images.lines().any(|l| l == image), "{images}");
    // rmi of its only tag removes the image, its ID record with it.
    let out = d.docker_ok(&["rmi", image]);
    assert!(
        out.contains(&format!("Untagged: {image}")) && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let names = id_record(false);
    assert!(!names.iter().any(|n| n.contains("team-a/job")), "{names:?}");
    let (ok, _, err) = d.docker(&["image", "inspect", id]);
    assert!(!ok && err.contains("No such image"), "{err}");
    drop(pod);
    assert_clean(node);
}

/// The README's node-agent walkthrough ("Commit and push from a node agent with
/// curl"), run as written: its shell block with the socket, the registry's host and
/// a token put in, against pods made through CRI.
#[test]
fn the_readmes_node_agent_walkthrough_runs_as_written() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("**Commit and push from a node agent with curl.**")
        .expect("the walkthrough is in the README");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    assert!(block.contains("team-a/notebook-0/jupyter"), "{block}");

    // The pod the walkthrough names.
    let pod = node.run_pod(KubePod::new("team-a", "notebook-0")).unwrap();
    let app = pod.start(&sleeper("jupyter", &base)).unwrap();
    node.sh(&app, "echo trained > /model").unwrap();
    let d = daemon(node);
    let host = node.registry().host();
    let script = block
        .replace(
            "S=/run/commitd/commitd.sock",
            &format!("S={}", d.socket.display()),
        )
        .replace("registry.example.com", &host);
    let out = std::process::Command::new("bash")
        .arg("-euc")
        .arg(&script)
        .env("TOKEN", "s3cret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The commit's answer, then the push's progress lines ending with the digest.
    // curl prints the commit's answer with no newline before the push's lines.
    let id = stdout
        .strip_prefix("{\"Id\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no commit answer first: {stdout}"));
    assert!(id.starts_with("sha256:"), "{stdout}");
    let image = format!("{host}/team-a/notebook:2026-11-24");
    let digest = manifest_digest(node, &image);
    assert!(
        stdout.contains(&format!("2026-11-24: digest: {digest}")),
        "{stdout}"
    );
    assert!(!stdout.contains("\"error\""), "{stdout}");
    assert_eq!(remote_manifest_digest(&image), digest);
    drop(pod);
    assert_clean(node);
}

#[test]
fn a_pod_snapshot_commits_every_app_container_at_one_moment() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("ml", "trainer")).unwrap();
    let name = pod.spec.name.clone();
    let worker = pod.start(&sleeper("worker", &base)).unwrap();
    let logs = pod.start(&sleeper("logs", &base)).unwrap();
    node.sh(&worker, "echo w > /w").unwrap();
    node.sh(&logs, "echo l > /l").unwrap();
    let d = daemon(node);
    let running = |ids: &[&String]| {
        for id in ids {
            assert_eq!(
                node.container_status(id).unwrap().state(),
                ContainerState::ContainerRunning
            );
            assert_eq!(
                node.ctr().task_status(id).unwrap(),
                commitd_testkit::TaskStatus::Running
            );
        }
    };

    let (status, body) = d.curl(
        "POST",
        &format!("/v1.47/pods/ml/{name}/commit?repo=registry.local/ml/snap&tag=t1&comment=nightly"),
        None,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["Container"], "logs", "{body}");
    assert_eq!(items[1]["Container"], "worker", "{body}");
    for (c, file, other) in [("logs", "l", "w"), ("worker", "w", "l")] {
        let paths = layer_paths(node, &format!("registry.local/ml/snap/{c}:t1"));
        assert!(paths.iter().any(|p| p == file), "{c}: {paths:?}");
        assert!(!paths.iter().any(|p| p == other), "{c}: {paths:?}");
    }
    let id = d.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "registry.local/ml/snap/worker:t1",
    ]);
    assert_eq!(id.trim(), items[1]["Id"].as_str().unwrap());
    running(&[&worker, &logs]);

    // One container by name.
    let (status, body) = d.curl(
        "POST",
        &format!("/pods/ml/{name}/commit?repo=registry.local/ml/snap&tag=t2&container=worker"),
        None,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Errors pause nothing and leave nothing paused.
    let (status, body) = d.curl(
        "POST",
        &format!("/pods/ml/{name}/commit?repo=registry.local/ml/snap&tag=t3&container=nope"),
        None,
        &[],
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such container"), "{body}");
    let (status, body) = d.curl("POST", "/pods/ml/no-such-pod/commit?repo=r", None, &[]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = d.curl("POST", &format!("/pods/ml/{name}/commit"), None, &[]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.curl(
        "POST",
        &format!("/pods/ml/{name}/commit?repo=Bad"),
        None,
        &[],
    );
    assert_eq!(status, 400, "{body}");
    running(&[&worker, &logs]);
    drop(d);

    // The pause covers the captures only: with each commit held before its image
    // is named, both containers run again while no image exists yet.
    let held = format!("{worker}:before-name:delay=6000;{logs}:before-name:delay=6000");
    let d = Daemon::start_env(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &[],
        &[("COMMITD_FAILPOINTS", held.as_str())],
    );
    let image = "registry.local/ml/snap/worker:t4";
    std::thread::scope(|scope| {
        let commit = scope.spawn(|| {
            d.curl(
                "POST",
                &format!("/pods/ml/{name}/commit?repo=registry.local/ml/snap&tag=t4"),
                None,
                &[],
            )
        });
        let started = std::time::Instant::now();
        while d.log_text().matches("upper directory captured").count() < 2 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the captures never ended: {}",
                d.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let captured = std::time::Instant::now();
        let all_running = || {
            [&worker, &logs].iter().all(|id| {
                node.ctr().task_status(id).unwrap() == commitd_testkit::TaskStatus::Running
            })
        };
        while !all_running() {
            assert!(
                captured.elapsed() < std::time::Duration::from_secs(3),
                "still paused after every capture"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (exists, _, _) = d.docker(&["image", "inspect", image]);
        assert!(
            !exists,
            "resumed only after the images were written: the delay before naming is 6 s"
        );
        let (status, body) = commit.join().unwrap();
        assert_eq!(status, 201, "{body}");
    });
    d.docker_ok(&["image", "inspect", image]);
    running(&[&worker, &logs]);
    drop(d);

    // A capture that fails while the pod is paused: an error, both run again.
    let failing = format!("{worker}:while-paused:fail");
    let d = Daemon::start_env(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &[],
        &[("COMMITD_FAILPOINTS", failing.as_str())],
    );
    let (status, body) = d.curl(
        "POST",
        &format!("/pods/ml/{name}/commit?repo=registry.local/ml/snap&tag=t5"),
        None,
        &[],
    );
    assert_eq!(status, 500, "{body}");
    let (exists, _, _) = d.docker(&["image", "inspect", "registry.local/ml/snap/worker:t5"]);
    assert!(!exists);
    running(&[&worker, &logs]);
    drop(pod);
    assert_clean(node);
}

/// Docker's views of a CRI container, named as kubelet's labels name it:
/// `docker ps` shows `namespace/pod/container`, the name and label filters
/// find it, inspect answers by short and full ID, by `namespace/pod/container`
/// and `pod/container` (slashes as the Docker CLI sends them or escaped as other
/// clients do), and docker-py's get-then-commit-by-ID works.
#[test]
fn docker_views_name_cri_containers_by_pod_and_container() {
    let _serial = serial();
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team", "nb")).unwrap();
    let pod_name = pod.spec.name.clone();
    let id = pod.start(&sleeper("app", &base)).unwrap();
    let d = daemon(node);
    let full_name = format!("team/{pod_name}/app");
    let short_name = format!("{pod_name}/app");

    let ps = d.docker_ok(&["ps", "--no-trunc", "--format", "{{.Names}} {{.ID}}"]);
    assert!(
        ps.lines().any(|l| l == format!("{full_name} {id}")),
        "{full_name} {id} not in:\n{ps}"
    );
    let by_name = d.docker_ok(&[
        "ps",
        "--filter",
        &format!("name={short_name}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(by_name.trim(), full_name);
    let by_label = d.docker_ok(&[
        "ps",
        "--filter",
        &format!("label=io.kubernetes.pod.name={pod_name}"),
        "--filter",
        "label=io.kubernetes.container.name=app",
        "-q",
    ]);
    assert_eq!(by_label.trim(), &id[..12]);
    for name in [&id[..12], id.as_str(), &full_name, &short_name] {
        let out = d.docker_ok(&["inspect", "--type", "container", name]);
        let c: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(c[0]["Id"], id.as_str(), "{name}");
        assert_eq!(c[0]["Name"], format!("/{full_name}"), "{name}");
        assert_eq!(c[0]["State"]["Status"], "running", "{name}");
    }
    for name in [
        full_name.replace('/', "%2F"),
        short_name.replace('/', "%2F"),
    ] {
        let (code, body) = d.curl("GET", &format!("/containers/{name}/json"), None, &[]);
        assert_eq!(code, 200, "{name}: {body}");
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(c["Id"], id.as_str(), "{name}");
    }
    // What docker-py does: get the container, commit it by its full ID.
    let (_, body) = d.curl(
        "GET",
        &format!("/containers/{}/json", short_name.replace('/', "%2F")),
        None,
        &[],
    );
    let full = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(full, id);
    let image = d.docker_ok(&["commit", &full, "registry.local/team/nb-views:1"]);
    assert!(image.trim().starts_with("sha256:"), "{image}");
    assert_eq!(
        node.container_status(&id).unwrap().state(),
        ContainerState::ContainerRunning
    );
    assert_clean(node);
}
