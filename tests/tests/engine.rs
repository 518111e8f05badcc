#![allow(clippy::unwrap_used)]
//! The commit engine against a real containerd with real runc containers.
//! Each test has its own namespace of one private containerd per process.

use commit_engine::failpoint::{self, step};
use commit_engine::{CapturePath, Compression, Engine, Resolved};
use commitd_e2e::{LIST_FS, World, commit, request};
use commitd_testkit::grpc::Grpc;
use commitd_testkit::{SNAPSHOTTER, TaskStatus};
use docker_format::image::{ImageConfig, RunConfig, chain_id};
use docker_format::reference::ImageRef;
use sha2::{Digest, Sha256};

/// An image as the engine reads it (manifest and config), by record name.
async fn image(engine: &Engine, name: &str) -> std::sync::Arc<Resolved> {
    engine
        .images()
        .find(&ImageRef::Name {
            name: name.into(),
            or_id_prefix: None,
        })
        .await
        .unwrap_or_else(|e| panic!("image {name}: {e}"))
        .resolved
}

/// Every kind of change, committed by both capture paths: the new image
/// runs at once and sees exactly the container's filesystem.
const CHANGES: &str = r#"
set -e
echo added > /added
echo changed >> /etc/hostname
rm /etc/hosts
mkdir -p /tree/sub && echo old > /tree/sub/f && echo keep > /tree/k
rm -rf /etc && mkdir /etc && echo fresh > /etc/only
ln -s /added /link
echo shared > /h1 && ln /h1 /h2
echo x > /modes && chmod 4751 /modes && chown 12:34 /modes
mkdir -p /deep/a/b/c && touch /deep/a/b/c/empty
mkfifo /fifo
"#;

async fn every_kind_of_change(fast: bool) {
    let w = World::new(if fast {
        "changes-fast"
    } else {
        "changes-service"
    });
    let engine = w.engine(fast);
    w.running("c", CHANGES);
    let before = w
        .ctr
        .exec("c", &["sh", "-c", LIST_FS])
        .expect("listing the container");

    let done = commit(
        &engine,
        request("c", Some("docker.io/library/changed:latest")),
    )
    .await
    .expect("commit");
    assert_eq!(
        done.capture,
        if fast {
            CapturePath::Overlay
        } else {
            CapturePath::DiffService
        }
    );
    assert!(done.layer.is_some(), "a layer");
    assert!(
        done.paused > std::time::Duration::ZERO,
        "paused while capturing"
    );
    assert_eq!(
        w.ctr.task_status("c").unwrap(),
        TaskStatus::Running,
        "resumed"
    );

    let after = w.run("docker.io/library/changed:latest", LIST_FS);
    assert_eq!(after, before, "the image's filesystem is the container's");
    let etc = w.run(
        "docker.io/library/changed:latest",
        "ls /etc; cat /added; test ! -e /etc/hosts && echo gone",
    );
    assert_eq!(etc, "only\nadded\ngone\n", "opaque /etc, whiteout of hosts");
    w.assert_clean();

    // The config: the container's run config, a history entry, one more diff ID.
    let resolved = image(&engine, "docker.io/library/changed:latest").await;
    assert_eq!(
        format!("{}", resolved.manifest.config.digest),
        done.image_id
    );
    let parent = image(&engine, &w.image).await;
    assert_eq!(
        resolved.config.rootfs.diff_ids.len(),
        parent.config.rootfs.diff_ids.len() + 1
    );
    // The container's config (Docker's behaviour): its command, over the parent's.
    let mut expected = parent.config.config.clone().unwrap();
    expected.cmd = Some(vec!["sh".into(), "-c".into(), "sleep 100000".into()]);
    assert_eq!(resolved.config.config, Some(expected));
    let last = resolved.config.history.last().unwrap();
    assert_eq!(last.created_by.as_deref(), Some("sh -c sleep 100000"));
    assert!(!last.empty_layer);
    // The chain-ID snapshot exists, so the image runs without an unpack.
    let chain = chain_id(&resolved.config.rootfs.diff_ids).unwrap();
    assert!(
        w.ctr
            .snapshots(SNAPSHOTTER)
            .unwrap()
            .iter()
            .any(|s| s.key == chain && s.kind == "Committed")
    );

    // The layer itself, applied by containerd's own unpacker in a namespace
    // that has never seen the snapshots: the same filesystem again.
    let archive = tempfile::NamedTempFile::new().unwrap();
    w.ctr
        .run(&[
            "images",
            "export",
            archive.path().to_str().unwrap(),
            "docker.io/library/changed:latest",
        ])
        .unwrap();
    let other = World::new(if fast {
        "reimport-fast"
    } else {
        "reimport-service"
    });
    other.ctr.import_archive(archive.path()).unwrap();
    assert_eq!(
        other.run("docker.io/library/changed:latest", LIST_FS),
        before,
        "containerd's apply of our layer gives the container's filesystem"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_overlay_path() {
    every_kind_of_change(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_diff_service_path() {
    every_kind_of_change(false).await;
}

/// Our chain IDs are containerd's: the imported base image's snapshot is
/// named by `chain_id` of its diff IDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_ids_match_containerd() {
    let w = World::new("chain-ids");
    let engine = w.engine(true);
    let resolved = image(&engine, &w.image).await;
    let chain = resolved.chain_id().unwrap();
    let snaps = w.ctr.snapshots(SNAPSHOTTER).unwrap();
    assert!(
        snaps.iter().any(|s| s.key == chain),
        "{chain} not in {snaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_diff_adds_no_layer() {
    for fast in [true, false] {
        let w = World::new(if fast { "empty-fast" } else { "empty-service" });
        let engine = w.engine(fast);
        w.running("c", "");
        let done = commit(&engine, request("c", Some("docker.io/library/same:latest")))
            .await
            .expect("commit");
        assert!(done.layer.is_none(), "no layer for an untouched container");
        let cfg = image(&engine, "docker.io/library/same:latest")
            .await
            .config
            .clone();
        let base = image(&engine, &w.image).await.config.clone();
        assert_eq!(cfg.rootfs.diff_ids, base.rootfs.diff_ids);
        assert!(cfg.history.last().unwrap().empty_layer);
        assert_eq!(w.run("docker.io/library/same:latest", "echo ok"), "ok\n");
        w.assert_clean();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_container_stays_paused() {
    let w = World::new("already-paused");
    let engine = w.engine(true);
    w.running("c", "echo x > /x");
    w.ctr.pause("c").unwrap();
    let done = commit(&engine, request("c", Some("docker.io/library/p:1")))
        .await
        .expect("commit");
    assert_eq!(
        done.paused,
        std::time::Duration::ZERO,
        "not paused by the commit"
    );
    assert_eq!(w.ctr.task_status("c").unwrap(), TaskStatus::Paused);
    w.ctr.resume("c").unwrap();
    assert_eq!(w.run("docker.io/library/p:1", "cat /x"), "x\n");
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_taskless_containers_commit_without_pausing() {
    let w = World::new("stopped");
    let engine = w.engine(true);
    w.running("c", "echo gone > /left");
    w.ctr.kill_task("c").unwrap();
    assert_eq!(w.ctr.task_status("c").unwrap(), TaskStatus::Stopped);
    let done = commit(&engine, request("c", Some("docker.io/library/stopped:1")))
        .await
        .expect("commit stopped");
    assert_eq!(done.paused, std::time::Duration::ZERO);
    assert_eq!(w.run("docker.io/library/stopped:1", "cat /left"), "gone\n");

    w.ctr.create(&w.image, "fresh", &[]).unwrap();
    assert_eq!(w.ctr.task_status("fresh").unwrap(), TaskStatus::None);
    let done = commit(&engine, request("fresh", Some("docker.io/library/fresh:1")))
        .await
        .expect("commit taskless");
    assert!(done.layer.is_none());
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_prefixes_resolve_like_docker() {
    let w = World::new("names");
    let engine = w.engine(true);
    w.running("abc123", "");
    w.running("abd456", "");
    // By name (nerdctl's label), by unique prefix.
    commit(&engine, request("abc123-name", None))
        .await
        .expect("by name");
    commit(&engine, request("abc", None))
        .await
        .expect("by prefix");
    match commit(&engine, request("ab", None)).await {
        Err(commit_engine::Error::AmbiguousContainer { prefix, matches }) => {
            assert_eq!(prefix, "ab");
            assert_eq!(matches.len(), 2);
        }
        other => panic!("want ambiguous, got {other:?}"),
    }
    assert!(matches!(
        commit(&engine, request("nope", None)).await,
        Err(commit_engine::Error::ContainerNotFound(_))
    ));
    // Untagged images stay listed under Docker's dangling name (two: their
    // configs differ in their creation time).
    let untagged: Vec<_> = w
        .ctr
        .images()
        .unwrap()
        .into_iter()
        .filter(|i| i.name.starts_with("moby-dangling@"))
        .collect();
    assert_eq!(untagged.len(), 2, "two untagged commits: {untagged:?}");
    w.assert_clean();
}

const VICTIM: &str = "failpoint-victim";

/// A failure in the middle of a commit, while the container is paused:
/// the container runs again, nothing of the commit remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_resume_and_leave_nothing() {
    for (fast, point) in [
        (true, step::WHILE_PAUSED),
        (false, step::WHILE_PAUSED),
        (true, step::BEFORE_FILL),
        (true, step::BEFORE_NAME),
        (false, step::BEFORE_NAME),
    ] {
        let w = World::new(&format!("fail-{point}-{fast}"));
        let engine = w.engine(fast);
        // Failpoints are process-wide, keyed by container ID: an ID no other
        // test in this binary uses, so a parallel test never hits them.
        w.running(VICTIM, "echo data > /data");
        let images_before = w.ctr.images().unwrap();
        failpoint::arm(VICTIM, point);
        let err = commit(&engine, request(VICTIM, Some("docker.io/library/never:1")))
            .await
            .expect_err("injected failure");
        assert!(err.to_string().contains("failpoint"), "{err}");
        assert_eq!(
            w.ctr.task_status(VICTIM).unwrap(),
            TaskStatus::Running,
            "{point}: resumed"
        );
        assert_eq!(
            w.ctr.images().unwrap(),
            images_before,
            "{point}: no image made"
        );
        w.assert_clean();
        // And the next commit works.
        commit(&engine, request(VICTIM, Some("docker.io/library/after:1")))
            .await
            .expect("commit after a failure");
        assert_eq!(w.run("docker.io/library/after:1", "cat /data"), "data\n");
    }
}

/// A container with no image (`FROM scratch`): the layer holds the whole
/// filesystem and the image has no parent layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_scratch() {
    use commitd_testkit::grpc::api::services::v1::snapshots::PrepareSnapshotRequest;
    use commitd_testkit::grpc::api::services::v1::{
        Container, CreateContainerRequest, container::Runtime,
    };
    let w = World::new("scratch");
    let engine = w.engine(true);
    let c = Grpc::lazy(&w.socket, &w.ns);
    let mounts = c
        .snapshots()
        .prepare(c.request(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "scratch-rootfs".into(),
            // A root until the container references it: a collection run
            // by another test's lease meanwhile would take it.
            labels: [("containerd.io/gc.root".to_string(), "test".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let root = std::path::PathBuf::from(&mounts[0].source);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("hello"), "from scratch\n").unwrap();
    let spec = br#"{"ociVersion":"1.0.2","process":{"args":["/bin/sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
    c.containers()
        .create(c.request(CreateContainerRequest {
            container: Some(Container {
                id: "scratch".into(),
                snapshotter: SNAPSHOTTER.into(),
                snapshot_key: "scratch-rootfs".into(),
                runtime: Some(Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: spec.to_vec(),
                }),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let done = commit(
        &engine,
        request("scratch", Some("docker.io/library/scratch:1")),
    )
    .await
    .expect("commit");
    assert!(done.layer.is_some());
    let cfg: ImageConfig = image(&engine, "docker.io/library/scratch:1")
        .await
        .config
        .clone();
    assert_eq!(
        cfg.rootfs.diff_ids.len(),
        1,
        "one layer: the whole filesystem"
    );
    // The container's command is the image's.
    assert_eq!(
        cfg.config,
        Some(RunConfig {
            cmd: Some(vec!["/bin/sh".into()]),
            ..RunConfig::default()
        })
    );
    assert_eq!(
        w.run("docker.io/library/scratch:1", "/bin/busybox cat /hello"),
        "from scratch\n"
    );
    w.assert_clean();
}

/// Every compression gives an image that runs; the layer's media type and
/// digest say what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressions() {
    let w = World::new("compressions");
    let engine = w.engine(true);
    w.running("c", "seq 1 20000 > /numbers");
    for (comp, media) in [
        (
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (Compression::None, "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let name = format!("docker.io/library/comp:{comp:?}").to_lowercase();
        let mut req = request("c", Some(&name));
        req.compression = Some(comp);
        let done = commit(&engine, req).await.expect("commit");
        let layer = done.layer.unwrap();
        assert_eq!(layer.media_type, media);
        let blob = engine.blobs().read(&layer.digest).await.unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&blob))),
            layer.digest
        );
        if comp == Compression::None {
            assert_eq!(Some(layer.digest.clone()), done.diff_id);
        }
        assert_eq!(w.run(&name, "wc -l < /numbers"), "20000\n");
    }
    w.assert_clean();
    // Each layer written into the store's directory was taken as it is
    // (registered in place), not refused and streamed over again:
    // containerd logs a refused registration as a failed size validation.
    let log = commitd_testkit::shared()
        .log_path()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .unwrap_or_default();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("commitd-layer-") && l.contains("failed size validation"))
        .collect();
    assert!(refused.is_empty(), "registrations refused: {refused:#?}");
}

/// A container on containerd's `native` snapshotter (every snapshot a bind
/// mount of a whole copy of its parent): its snapshot is not taken as an
/// upper directory (that would bring back what the container deleted); the
/// commit goes through the diff service and the image is exactly the
/// container's filesystem, deletions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_snapshotter_containers_commit_exactly() {
    let w = World::new("changes-native");
    let engine = w.engine(true);
    let mut run = w.ctr.command();
    run.args(["run", "-d", "--null-io", "--snapshotter", "native"])
        .args([w.image.as_str(), "n", "sh", "-c", "sleep 100000"]);
    let out = run.output().unwrap();
    assert!(
        out.status.success(),
        "ctr run --snapshotter native: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.ctr.exec("n", &["sh", "-c", CHANGES]).expect("changes");
    let before = w.ctr.exec("n", &["sh", "-c", LIST_FS]).unwrap();

    let done = commit(&engine, request("n", Some("docker.io/library/native:1")))
        .await
        .expect("commit");
    assert_eq!(done.capture, CapturePath::DiffService, "not a fast path");
    assert_eq!(w.ctr.task_status("n").unwrap(), TaskStatus::Running);
    let after = w.run("docker.io/library/native:1", LIST_FS);
    assert_eq!(after, before, "the image's filesystem is the container's");
    let gone = w.run(
        "docker.io/library/native:1",
        "test ! -e /etc/hosts && test ! -e /etc/passwd && echo gone",
    );
    assert_eq!(gone, "gone\n", "what the container deleted stays deleted");
    w.ctr.kill_task("n").unwrap();
    w.ctr.delete_container("n").unwrap();
    w.assert_clean();
}

/// A commit labels its layer blob with Docker's unpacked size, read from
/// the tar's headers as the layer was written (no `docker images` reads a
/// 10 GiB blob afterwards); the label is what measuring the blob gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_labels_its_layer_with_its_unpacked_size() {
    let w = World::new("unpacked-label");
    let engine = w.engine(true);
    let long = "n".repeat(150);
    w.running(
        "c",
        &format!(
            "{CHANGES}\nmkdir -p /long/{long}/{long} && head -c 5000 /dev/urandom > /long/{long}/{long}/f \
             && ln -s /{long}/{long}/{long} /long/sym && dd if=/dev/zero of=/zeros bs=1k count=3000 2>/dev/null"
        ),
    );
    let done = commit(&engine, request("c", Some("docker.io/library/sized:1")))
        .await
        .expect("commit");
    let layer = done.layer.expect("a layer").digest.to_string();
    let label = |ctr: &commitd_testkit::Ctr| -> Option<i64> {
        let out = ctr.run(&["content", "ls"]).unwrap();
        let line = out.lines().find(|l| l.starts_with(&layer))?.to_string();
        line.split_whitespace()
            .last()?
            .split(',')
            .find_map(|kv| kv.strip_prefix("commitd.io/unpacked-size="))
            .map(|v| v.parse().unwrap())
    };
    let at_commit = label(&w.ctr).expect("labelled at commit");
    assert!(at_commit > 3_000 * 1024 + 5_000, "{at_commit}");
    // Measured from the blob by an engine that knows nothing yet.
    w.ctr
        .run(&["content", "label", &layer, "commitd.io/unpacked-size="])
        .unwrap();
    assert_eq!(label(&w.ctr), None);
    let fresh = w.engine(true);
    let img = fresh
        .images()
        .find(&ImageRef::Name {
            name: "docker.io/library/sized:1".into(),
            or_id_prefix: None,
        })
        .await
        .unwrap();
    let sizes = fresh.images().layer_sizes(&img).await.unwrap();
    assert_eq!(
        *sizes.last().unwrap(),
        at_commit,
        "the sizer agrees with the measure"
    );
    assert_eq!(label(&w.ctr), Some(at_commit), "kept again");
}
