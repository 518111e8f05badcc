#![allow(clippy::unwrap_used)]
//! Lineages committed again and again (issue 14): squash, against real
//! containerd and runc containers.
//!
//! Each round changes a container of the previous round's image and
//! commits it twice: as it is (one more layer) and with `squash=new` (every
//! layer above the base folded into one). Both images are of the same
//! container, so their filesystems must be identical, entry for entry and
//! attribute for attribute; and the squashed image's own snapshot must be
//! exactly what containerd's unpacker makes of its layers on another
//! namespace (the local image is the pulled image).

use commit_engine::{
    BASE_DIGEST, BASE_LAYERS, BASE_NAME, CapturePath, CommitRequest, Committed, Containerd, Engine,
    EngineConfig, Incremental, Records, Squash,
};
use commitd_e2e::fidelity::{Compare, Difference, Generator, Lab, Script, Tree, diff};
use commitd_e2e::{commit, request};

const VIEWS: Compare = Compare {
    nlink: false,
    whiteout_times: false,
};
const RAW: Compare = Compare {
    nlink: true,
    whiteout_times: false,
};

/// What each round does, in a container of the previous round's image:
/// adds, edits, deletes of base and lineage files, type swaps, hard and
/// symbolic links, opaque directories over the base and over the lineage.
const ROUNDS: &[&str] = &[
    "mkdir -p /data/d1 /data/d2 /data/keep; echo one > /data/f1; echo x > /data/d1/a; \
     echo k > /data/keep/k; ln /data/f1 /data/hl; ln -s f1 /data/sl; rm /fidelity/a.sh",
    "echo two >> /data/f1; rm /data/d1/a; rm -rf /data/d2; echo y > /data/d2; \
     mkdir /data/newdir; echo z > /data/newdir/z; mkfifo /data/fifo",
    "rm /data/d2; mkdir /data/d2; echo w > /data/d2/w; rm -rf /fidelity; mkdir /fidelity; \
     echo n > /fidelity/n; rm /data/hl; touch -d @1000000000 /data/keep/k",
    "rm -rf /data/newdir; mkdir /data/newdir; echo q > /data/newdir/q; echo a > /data/d1/a; \
     chmod 700 /data/d1; rm /data/sl; mkdir /data/sl",
    "rm -rf /data/d1; echo gone > /data/d1; rm /data/fifo; echo again > /fidelity/a.sh",
];

fn lab(name: &str) -> (Lab, usize) {
    let mut a = Script::default();
    a.sh("true");
    let lab = Lab::new(name, &[("a", &a), ("b", &a)]);
    (lab, 0)
}

async fn commit_as(lab: &Lab, id: &str, name: &str, squash: Squash) -> Committed {
    commit_with(lab, true, id, name, squash).await
}

async fn commit_with(lab: &Lab, fast: bool, id: &str, name: &str, squash: Squash) -> Committed {
    let req = CommitRequest {
        squash: Some(squash),
        ..request(id, Some(name))
    };
    commit(if fast { &lab.fast } else { &lab.service }, req)
        .await
        .unwrap_or_else(|e| panic!("commit of {id} as {name} (squash {squash:?}): {e}"))
}

async fn view(lab: &Lab, image: &str) -> Tree {
    lab.image_trees(image).await.1
}

fn assert_same(what: &str, a: &Tree, b: &Tree, cmp: Compare) {
    assert_same_but(what, a, b, cmp, |_| false);
}

/// containerd 1.6's differ writes times in whole seconds (a blind spot the
/// README lists): the only difference allowed through the diff service.
fn whole_seconds(d: &Difference) -> bool {
    d.field == "mtime"
        && match (d.left.split_once('.'), d.right.split_once('.')) {
            (Some((ls, _)), Some((rs, rn))) => ls == rs && rn.bytes().all(|b| b == b'0'),
            _ => false,
        }
}

fn assert_same_but(
    what: &str,
    a: &Tree,
    b: &Tree,
    cmp: Compare,
    allowed: impl Fn(&Difference) -> bool,
) {
    let d: Vec<Difference> = diff(a, b, cmp)
        .into_iter()
        .filter(|d| !allowed(d))
        .collect();
    assert!(
        d.is_empty(),
        "{what}: {} differences:\n{}",
        d.len(),
        d.iter()
            .take(30)
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The squashed image's snapshot is what containerd's unpacker makes of its
/// layers elsewhere: raw upper directory and mounted view.
async fn assert_pulled_is_local(lab: &Lab, image: &str) {
    let (raw, mounted) = lab.image_trees(image).await;
    let (applied_raw, applied) = lab.applied_elsewhere(image).await;
    assert_same(
        &format!("{image}: local vs pulled (raw)"),
        &raw,
        &applied_raw,
        RAW,
    );
    assert_same(
        &format!("{image}: local vs pulled (view)"),
        &mounted,
        &applied,
        VIEWS,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squash_new_folds_a_lineage_into_one_layer_over_the_base() {
    let (lab, _) = lab("lineage-squash");
    let base = lab.resolved(&lab.image).await;
    let base_layers = base.manifest.layers.len();
    let mut parent = lab.image.clone();
    for (i, round) in ROUNDS.iter().enumerate() {
        let id = format!("c{i}");
        lab.start(&parent, &id);
        lab.sh(&id, round);
        let plain = format!("docker.io/library/lineage-plain:{i}");
        let squashed = format!("docker.io/library/lineage-squashed:{i}");
        let p = commit_as(&lab, &id, &plain, Squash::No).await;
        let s = commit_as(&lab, &id, &squashed, Squash::New).await;
        assert_eq!(p.depth, base_layers + i + 1, "round {i}: one more layer");
        assert_eq!(
            s.depth,
            base_layers + 1,
            "round {i}: squash=new keeps base + 1"
        );
        assert_eq!(s.squash, Squash::New);
        assert_eq!(
            s.capture,
            CapturePath::Overlay,
            "squashed from the snapshots"
        );

        let r = lab.resolved(&squashed).await;
        assert_eq!(r.manifest.layers.len(), base_layers + 1);
        assert_eq!(
            r.manifest.layers[..base_layers],
            base.manifest.layers[..],
            "round {i}: the base's layers are shared"
        );
        assert_eq!(r.config.rootfs.diff_ids.len(), base_layers + 1);
        assert_eq!(
            r.config.history.iter().filter(|h| !h.empty_layer).count(),
            base_layers + 1,
            "round {i}: one history entry per layer"
        );
        let a = r.manifest.annotations.clone().expect("annotations");
        assert_eq!(a.get(BASE_NAME), Some(&lab.image), "round {i}");
        assert_eq!(a.get(BASE_DIGEST), Some(&base.target.digest), "round {i}");
        assert_eq!(a.get(BASE_LAYERS), Some(&base_layers.to_string()));
        // The unsquashed lineage inherits its base too.
        let pa = lab.resolved(&plain).await.manifest.annotations.clone();
        assert_eq!(pa.expect("annotations").get(BASE_NAME), Some(&lab.image));

        assert_same(
            &format!("round {i}: squash=new vs unsquashed"),
            &view(&lab, &plain).await,
            &view(&lab, &squashed).await,
            VIEWS,
        );
        assert_pulled_is_local(&lab, &squashed).await;

        // Through containerd's diff service (other snapshotters): the same
        // filesystem.
        let via = format!("docker.io/library/lineage-service:{i}");
        let v = commit_with(&lab, false, &id, &via, Squash::New).await;
        assert_eq!(v.capture, CapturePath::DiffService);
        assert_eq!(v.depth, base_layers + 1);
        assert_same_but(
            &format!("round {i}: squash=new through the diff service vs unsquashed"),
            &view(&lab, &plain).await,
            &view(&lab, &via).await,
            VIEWS,
            whole_seconds,
        );
        parent = plain;
    }

    // squash=all: one layer, the same filesystem.
    let last = format!("c{}", ROUNDS.len() - 1);
    let all = "docker.io/library/lineage-all:1";
    let a = commit_as(&lab, &last, all, Squash::All).await;
    assert_eq!(a.depth, 1);
    let r = lab.resolved(all).await;
    assert_eq!(r.manifest.layers.len(), 1);
    assert_eq!(
        r.config.history.iter().filter(|h| !h.empty_layer).count(),
        1
    );
    assert!(
        r.manifest
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(BASE_NAME)),
        "a squash=all image is its own base"
    );
    assert_same(
        "squash=all vs unsquashed",
        &view(&lab, &parent).await,
        &view(&lab, all).await,
        VIEWS,
    );
    assert_pulled_is_local(&lab, all).await;

    // An image of squash=all runs.
    lab.start(all, "runs-all");
    assert_eq!(
        lab.sh("runs-all", "cat /data/d1 /fidelity/a.sh"),
        "gone\nagain\n"
    );
}

/// A lineage committed again and again with `squash=new` stays at base + 1
/// layers, runs, and keeps every round's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squashed_lineage_stays_at_base_plus_one() {
    let rounds: usize = std::env::var("COMMITD_LINEAGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (lab, _) = lab("lineage-deep");
    let base_layers = lab.resolved(&lab.image).await.manifest.layers.len();
    let mut parent = lab.image.clone();
    for i in 0..rounds {
        let id = format!("d{i}");
        lab.start(&parent, &id);
        lab.sh(
            &id,
            &format!(
                "mkdir -p /r; echo {i} > /r/{i}; rm -f /r/{}; echo {i} > /last",
                i.wrapping_sub(2)
            ),
        );
        let name = format!("docker.io/library/lineage-deep:{i}");
        let s = commit_as(&lab, &id, &name, Squash::New).await;
        assert_eq!(s.depth, base_layers + 1, "round {i}");
        lab.w.ctr.delete_container(&id).unwrap();
        parent = name;
    }
    lab.start(&parent, "final");
    let listed = lab.sh("final", "ls /r; cat /last");
    let want = format!("{}\n{}\n{}\n", rounds - 2, rounds - 1, rounds - 1);
    assert_eq!(listed, want);
    assert_pulled_is_local(&lab, &parent).await;
}

/// The layer-depth guard: beyond the configured maximum (or what the node's
/// overlay can mount) a commit is refused with a message naming the depth
/// and `squash=new`, before anything is paused or written; or squashed by
/// itself when the configuration says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_guard_refuses_or_squashes() {
    let (lab, _) = lab("lineage-guard");
    let base_layers = lab.resolved(&lab.image).await.manifest.layers.len();
    let engine = |auto_squash| {
        Engine::new(
            Containerd::lazy(&lab.w.socket, &lab.w.ns).unwrap(),
            EngineConfig {
                max_depth: base_layers + 2,
                auto_squash,
                ..EngineConfig::default()
            },
        )
    };
    let (guarded, auto) = (engine(false), engine(true));
    let mut parent = lab.image.clone();
    for i in 0..2 {
        let id = format!("g{i}");
        lab.start(&parent, &id);
        lab.sh(&id, &format!("echo {i} > /g{i}"));
        let name = format!("docker.io/library/lineage-guard:{i}");
        let c = commit(&guarded, request(&id, Some(&name))).await.unwrap();
        assert_eq!(c.depth, base_layers + 1 + i);
        parent = name;
    }
    lab.start(&parent, "g2");
    lab.sh("g2", "echo 2 > /g2");
    let images_before = lab.w.ctr.images().unwrap().len();
    let err = commit(
        &guarded,
        request("g2", Some("docker.io/library/lineage-guard:2")),
    )
    .await
    .expect_err("one layer too many");
    assert!(
        matches!(err, commit_engine::Error::InvalidArgument(_)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} layers", base_layers + 3))
            && msg.contains(&format!("maximum ({})", base_layers + 2))
            && msg.contains("squash=new"),
        "{msg}"
    );
    assert_eq!(
        lab.w.ctr.images().unwrap().len(),
        images_before,
        "nothing written"
    );
    assert_eq!(
        lab.w.ctr.task_status("g2").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
    lab.w.assert_clean();

    // The way out the message names.
    let req = CommitRequest {
        squash: Some(Squash::New),
        ..request("g2", Some("docker.io/library/lineage-guard:2"))
    };
    let c = commit(&guarded, req).await.unwrap();
    assert_eq!((c.depth, c.squash), (base_layers + 1, Squash::New));
    // Configured to squash by itself.
    let c = commit(
        &auto,
        request("g2", Some("docker.io/library/lineage-guard:3")),
    )
    .await
    .unwrap();
    assert_eq!((c.depth, c.squash), (base_layers + 1, Squash::New));
    lab.start("docker.io/library/lineage-guard:3", "g3");
    assert_eq!(lab.sh("g3", "cat /g0 /g1 /g2"), "0\n1\n2\n");
}

/// Without a configured maximum the guard stops an unsquashed lineage at
/// what this node's overlay snapshotter can mount, measured from the
/// container's own mount: every 25th image the lineage made up to there,
/// and the deepest, start and run (the others are committed from created
/// containers, their change written into the upper directory: some 430
/// task starts through the shim's forking mount cost minutes, and CI once
/// lost one to an `unexpected EOF`); the next commit answers 400 naming the
/// depth and the way out, instead of writing an image no container could
/// mount; `squash=new` then goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsquashed_lineage_stops_at_the_measured_mount_limit() {
    let (lab, _) = lab("lineage-limit");
    let base_layers = lab.resolved(&lab.image).await.manifest.layers.len();
    let mut parent = lab.image.clone();
    let mut last = String::new();
    for i in 0..500 {
        let id = format!("m{i}");
        if i % 25 == 0 {
            // The image is mounted here (the start fails loudly).
            lab.start(&parent, &id);
            lab.sh(&id, &format!("echo {i} > /m{i}"));
        } else {
            lab.w.ctr.create(&parent, &id, &[]).unwrap();
            let upper = lab.w.ctr.upper_dir(&id).unwrap();
            std::fs::write(upper.join(format!("m{i}")), format!("{i}\n")).unwrap();
        }
        if !last.is_empty() {
            lab.w.ctr.delete_container(&last).unwrap();
        }
        last.clone_from(&id);
        let name = format!("docker.io/library/lineage-limit:{i}");
        match commit(&lab.fast, request(&id, Some(&name))).await {
            Ok(c) => {
                assert_eq!(c.depth, base_layers + 1 + i);
                parent = name;
            }
            Err(e) => {
                assert!(matches!(e, commit_engine::Error::InvalidArgument(_)), "{e}");
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("{} layers", base_layers + 1 + i))
                        && msg.contains("what this node's overlay snapshotter can mount")
                        && msg.contains("squash=new"),
                    "{msg}"
                );
                assert!(
                    i >= 10,
                    "a limit of {} layers is not overlay's",
                    base_layers + i
                );
                // The deepest image runs and holds the whole lineage.
                lab.start(&parent, "deepest");
                assert_eq!(
                    lab.sh("deepest", &format!("cat /m0 /m1 /m{}", i - 1)),
                    format!("0\n1\n{}\n", i - 1)
                );
                lab.w.ctr.delete_container("deepest").unwrap();
                lab.w.assert_clean();
                let req = CommitRequest {
                    squash: Some(Squash::New),
                    ..request(&id, Some(&name))
                };
                let c = commit(&lab.fast, req).await.unwrap();
                assert_eq!(c.depth, base_layers + 1);
                lab.start(&name, "after");
                assert_eq!(lab.sh("after", &format!("cat /m{i}")), format!("{i}\n"));
                return;
            }
        }
    }
    panic!("no depth limit met in 500 layers");
}

/// `timestamp=`: the same change committed in separate containers, by
/// separate engines (a daemon restarted), gives the same image, for every
/// compression; and the image's snapshot is what its layer gives elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reproducible_commits_give_the_same_digest() {
    let (lab, _) = lab("lineage-repro");
    const T: i64 = 1_700_000_000;
    let change = "mkdir -p /app/d; echo hi > /app/x; ln -s x /app/l; ln /app/x /app/h; \
                  echo z > /app/d/z; rm /fidelity/a.sh; chmod 700 /app/d";
    for (n, compression) in [
        commit_engine::Compression::Gzip,
        commit_engine::Compression::Zstd,
        commit_engine::Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let mut seen: Option<Committed> = None;
        for k in 0..2 {
            let id = format!("r{n}-{k}");
            lab.start(&lab.image, &id);
            lab.sh(&id, change);
            // A fresh engine each time: nothing carried between commits.
            let engine = lab.w.engine(true);
            let name = format!("docker.io/library/repro-{n}:{k}");
            let req = CommitRequest {
                timestamp: Some(T),
                compression: Some(compression),
                ..request(&id, Some(&name))
            };
            let c = commit(&engine, req).await.unwrap();
            let r = lab.resolved(&name).await;
            assert_eq!(r.config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
            assert!(
                r.config.history.iter().last().unwrap().created.as_deref()
                    == Some("2023-11-14T22:13:20Z")
            );
            if let Some(first) = &seen {
                assert_eq!(
                    (
                        &c.layer.as_ref().unwrap().digest,
                        &c.manifest.digest,
                        &c.image_id
                    ),
                    (
                        &first.layer.as_ref().unwrap().digest,
                        &first.manifest.digest,
                        &first.image_id
                    ),
                    "{compression:?}: the same change, the same image"
                );
            } else {
                assert_pulled_is_local(&lab, &name).await;
                let (_, v) = lab.image_trees(&name).await;
                let x = v.nodes.get(&b"app/x"[..]).expect("app/x");
                assert_eq!(x.mtime, (T, 0), "times clamped");
            }
            seen = Some(c);
            lab.w.ctr.delete_container(&id).unwrap();
        }
    }
    // Without a timestamp the two differ (the test can fail).
    let mut ids = Vec::new();
    for k in 0..2 {
        let id = format!("nr-{k}");
        lab.start(&lab.image, &id);
        lab.sh(&id, change);
        let c = commit(&lab.fast, request(&id, None)).await.unwrap();
        ids.push(c.image_id);
    }
    assert_ne!(ids[0], ids[1]);
}

/// `exclude=`: matching entries are left out of the layer and the snapshot
/// and counted; what is below them in the image stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes_leave_entries_out() {
    let (lab, _) = lab("lineage-exclude");
    lab.start(&lab.image, "x");
    lab.sh(
        "x",
        "mkdir -p /tmp/cache/a /root/.cache/pip /data; echo 1 > /tmp/cache/a/f; echo 2 > /tmp/f; \
         echo 3 > /root/.cache/pip/x; echo keep > /data/keep; echo log > /data/a.log; \
         echo changed > /fidelity/b.sh",
    );
    let name = "docker.io/library/exclude:1";
    let req = CommitRequest {
        exclude: vec![
            "/tmp/**".into(),
            "/root/.cache/**".into(),
            "/data/*.log".into(),
            "/fidelity/b.sh".into(),
        ],
        ..request("x", Some(name))
    };
    let c = commit(&lab.fast, req).await.unwrap();
    // tmp/cache, tmp/f, root/.cache/pip, data/a.log, fidelity/b.sh
    assert_eq!(c.excluded, 5);
    let (_, v) = lab.image_trees(name).await;
    let has = |p: &str| v.nodes.contains_key(p.as_bytes());
    assert!(has("tmp") && has("root") && has("data/keep"));
    assert!(has("root/.cache"), "/root/.cache/** leaves the directory");
    for p in ["tmp/f", "tmp/cache", "root/.cache/pip", "data/a.log"] {
        assert!(!has(p), "{p} left out: {:?}", v.nodes.get(p.as_bytes()));
    }
    lab.start(name, "y");
    assert_eq!(
        lab.sh("y", "cat /fidelity/b.sh; ls /tmp | wc -l"),
        "true\n0\n",
        "the image's own file stays"
    );
    assert_pulled_is_local(&lab, name).await;

    let bad = CommitRequest {
        exclude: vec!["tmp/**".into()],
        ..request("x", None)
    };
    let err = commit(&lab.fast, bad)
        .await
        .expect_err("a relative pattern");
    assert!(
        matches!(
            err,
            commit_engine::Error::Option(commit_engine::OptionError::Exclude { .. })
        ),
        "{err}"
    );
    // Through containerd's diff service (other snapshotters): the same
    // entries left out, the same filesystem; with a timestamp, the same
    // change in another container gives the same image.
    const T: i64 = 1_700_000_000;
    let via = |id: &str, name: &str| CommitRequest {
        exclude: vec![
            "/tmp/**".into(),
            "/root/.cache/**".into(),
            "/data/*.log".into(),
            "/fidelity/b.sh".into(),
        ],
        timestamp: Some(T),
        ..request(id, Some(name))
    };
    let s = commit(&lab.service, via("x", "docker.io/library/exclude:service"))
        .await
        .unwrap();
    assert_eq!(s.capture, CapturePath::DiffService);
    assert_eq!(s.excluded, 5);
    let f = commit(&lab.fast, via("x", "docker.io/library/exclude:fast"))
        .await
        .unwrap();
    assert_eq!(f.excluded, 5);
    let (_, sv) = lab.image_trees("docker.io/library/exclude:service").await;
    let (_, fv) = lab.image_trees("docker.io/library/exclude:fast").await;
    assert_same_but(
        "exclude + timestamp: diff service vs fast path",
        &fv,
        &sv,
        VIEWS,
        whole_seconds,
    );
    let x = sv.nodes.get(&b"data/keep"[..]).expect("data/keep");
    assert_eq!(x.mtime, (T, 0), "times clamped");
    assert!(!sv.nodes.contains_key(&b"tmp/f"[..]));
    assert_pulled_is_local(&lab, "docker.io/library/exclude:service").await;
    lab.start(&lab.image, "x2");
    lab.sh(
        "x2",
        "mkdir -p /tmp/cache/a /root/.cache/pip /data; echo 1 > /tmp/cache/a/f; echo 2 > /tmp/f; \
         echo 3 > /root/.cache/pip/x; echo keep > /data/keep; echo log > /data/a.log; \
         echo changed > /fidelity/b.sh",
    );
    let s2 = commit(
        &lab.service,
        via("x2", "docker.io/library/exclude:service2"),
    )
    .await
    .unwrap();
    assert_eq!(s2.image_id, s.image_id, "the same change, the same image");
    lab.w.assert_clean();
}

/// An engine that remembers its commits for `incremental=1`.
/// The incremental records of containers removed since their last commit
/// go (the daemon sweeps at start and hourly); the others stay and still
/// serve their container's next incremental commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_removed_containers_are_swept() {
    let (lab, _) = lab("lineage-records");
    let records = tempfile::tempdir().unwrap();
    let engine = recording(&lab, records.path());
    for id in ["kept", "removed"] {
        lab.start(&lab.image, id);
        lab.sh(id, "echo x > /x");
        let name = format!("docker.io/library/lineage-records:{id}");
        commit_incremental(&engine, id, &name, true).await;
    }
    let file = |id: &str| records.path().join(&lab.w.ns).join(id);
    assert!(file("kept").exists() && file("removed").exists());
    lab.w.ctr.delete_container("removed").unwrap();
    assert_eq!(engine.forget_removed_containers().await.unwrap(), 1);
    assert!(file("kept").exists(), "a live container's record stays");
    assert!(
        !file("removed").exists(),
        "a removed container's record goes"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    lab.sh("kept", "echo y > /y");
    let c = commit_incremental(&engine, "kept", "docker.io/library/lineage-records:2", true).await;
    assert!(
        matches!(c.incremental, Incremental::On(_)),
        "{:?}",
        c.incremental
    );
}

fn recording(lab: &Lab, dir: &std::path::Path) -> Engine {
    Engine::new(
        Containerd::lazy(&lab.w.socket, &lab.w.ns).unwrap(),
        EngineConfig {
            records: Records::new(Some(dir.to_path_buf())),
            ..EngineConfig::default()
        },
    )
}

async fn commit_incremental(engine: &Engine, id: &str, name: &str, incremental: bool) -> Committed {
    let req = CommitRequest {
        incremental: Some(incremental),
        ..request(id, Some(name))
    };
    commit(engine, req)
        .await
        .unwrap_or_else(|e| panic!("commit of {id} as {name} (incremental {incremental}): {e}"))
}

/// Runs a generated script in a container.
fn run_script(lab: &Lab, id: &str, s: &Script) {
    lab.sh(id, &format!("set -e\n{}", s.text()));
}

/// Incremental commits of one container across generated change sequences
/// (adds, edits, deletes, type swaps, opaque directories, renames, modes,
/// owners, times, xattrs, hard links), and of the base image's files:
/// after each, the incremental image's filesystem is the full commit's of
/// the same moment, and its snapshot is what containerd's applier makes
/// of its layers elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_commits_equal_full_ones() {
    let seed: u64 = std::env::var("COMMITD_INCREMENTAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("incremental commits: COMMITD_INCREMENTAL_SEED={seed}");
    let (lab, _) = lab("lineage-incremental");
    let records = tempfile::tempdir().unwrap();
    let engine = recording(&lab, records.path());
    let base_layers = lab.resolved(&lab.image).await.manifest.layers.len();
    let mut gens: Vec<Generator> = (0..8u64)
        .map(|i| Generator::new(seed.wrapping_add(i), format!("/g/{i}").as_bytes()))
        .collect();
    lab.start(&lab.image, "inc");
    let mut lower = Script::default();
    for g in &mut gens {
        lower.extend(&g.lower());
    }
    run_script(&lab, "inc", &lower);
    // Besides the generated trees: the base's files edited, deleted and
    // restored, a base directory made opaque, files that come back.
    const BASE_CHANGES: &[&str] = &[
        "",
        "rm /fidelity/a.sh; echo x > /bin/new; echo keep > /kept",
        "echo again > /fidelity/a.sh; rm /bin/new; echo y > /bin/new2",
        "rm -rf /fidelity; mkdir /fidelity; echo o > /fidelity/o; rm /kept; mkdir /kept",
        "rm -rf /kept; echo back > /kept; rm /fidelity/o; echo x > /bin/new",
        "rm -rf /fidelity /bin/new; mkdir -p /fidelity/d; touch -d @1000000000 /bin/new2",
    ];
    let mut previous: Option<String> = None;
    for (r, base_change) in BASE_CHANGES.iter().enumerate() {
        if r > 0 {
            let mut change = Script::default();
            for g in &mut gens {
                change.extend(&g.change());
            }
            change.sh(base_change);
            run_script(&lab, "inc", &change);
        }
        let inc = format!("docker.io/library/lineage-inc:{r}");
        let full = format!("docker.io/library/lineage-full:{r}");
        let i = commit_incremental(&engine, "inc", &inc, true).await;
        let f = commit_incremental(&engine, "inc", &full, false).await;
        match (&previous, &i.incremental) {
            (None, Incremental::Plain(why)) => {
                assert!(why.contains("not committed"), "round {r}: {why}")
            }
            (Some(p), Incremental::On(on)) => assert_eq!(on, p, "round {r}"),
            (p, other) => panic!("round {r}: {other:?} (previous {p:?})"),
        }
        assert_eq!(f.incremental, Incremental::NotAsked);
        assert_eq!(i.depth, base_layers + 1 + r, "round {r}: one layer more");
        assert_eq!(f.depth, base_layers + 1);
        println!(
            "round {r}: incremental layer {} bytes, full layer {} bytes",
            i.uncompressed_size, f.uncompressed_size
        );
        assert_same(
            &format!("round {r} (seed {seed}): incremental vs full"),
            &view(&lab, &full).await,
            &view(&lab, &inc).await,
            VIEWS,
        );
        assert_pulled_is_local(&lab, &inc).await;
        previous = Some(i.image_id.clone());
    }
    // Nothing changed: what the last commit could not prove settled (hard
    // links, entries changed just before it) at most, on the previous image.
    let same = commit_incremental(&engine, "inc", "docker.io/library/lineage-inc:same", true).await;
    assert_eq!(same.incremental, Incremental::On(previous.clone().unwrap()));
    let full = format!("docker.io/library/lineage-full:{}", BASE_CHANGES.len() - 1);
    assert_same(
        &format!("no change (seed {seed}): incremental vs full"),
        &view(&lab, &full).await,
        &view(&lab, "docker.io/library/lineage-inc:same").await,
        VIEWS,
    );
    // The last incremental image runs.
    let last = format!("docker.io/library/lineage-inc:{}", BASE_CHANGES.len() - 1);
    lab.start(&last, "inc-runs");
    assert_eq!(lab.sh("inc-runs", "cat /bin/new2; ls /fidelity"), "y\nd\n");
}

/// The second commit of a container that wrote a lot and then a little
/// holds the little; plain commits when there is nothing to stand on, and
/// the answer says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_commits_hold_only_what_changed_or_say_why_not() {
    let (lab, _) = lab("lineage-incremental-size");
    let records = tempfile::tempdir().unwrap();
    let engine = recording(&lab, records.path());
    lab.start(&lab.image, "big");
    lab.sh(
        "big",
        "mkdir /big && busybox dd if=/dev/urandom of=/big/blob bs=1M count=32 2>/dev/null && sync",
    );
    // Older than a clock tick when the commit looks (what changed just
    // before a commit is taken again by the next one).
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Never committed: a plain commit, which says so.
    let c0 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:0", true).await;
    assert!(
        matches!(&c0.incremental, Incremental::Plain(why) if why.contains("not committed")),
        "{:?}",
        c0.incremental
    );
    assert!(c0.uncompressed_size > 32 << 20);
    // 4 KiB more: the incremental layer is about 4 KiB.
    lab.sh(
        "big",
        "busybox dd if=/dev/urandom of=/big/small bs=4096 count=1 2>/dev/null",
    );
    let c1 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:1", true).await;
    assert_eq!(c1.incremental, Incremental::On(c0.image_id.clone()));
    assert!(
        c1.uncompressed_size < 16 << 10,
        "incremental layer of a 4 KiB change: {} bytes",
        c1.uncompressed_size
    );
    let f1 = commit_incremental(&engine, "big", "docker.io/library/lineage-bigfull:1", false).await;
    assert!(f1.uncompressed_size > 32 << 20);
    assert_same(
        "incremental vs full",
        &view(&lab, "docker.io/library/lineage-bigfull:1").await,
        &view(&lab, "docker.io/library/lineage-big:1").await,
        VIEWS,
    );
    // The previous image deleted: a plain commit, which says so.
    lab.w
        .ctr
        .run(&["images", "rm", "docker.io/library/lineage-big:1"])
        .unwrap();
    lab.sh("big", "echo more > /big/more");
    let c2 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:2", true).await;
    assert!(
        matches!(&c2.incremental, Incremental::Plain(why) if why.contains("no longer exists")),
        "{:?}",
        c2.incremental
    );
    assert!(c2.uncompressed_size > 32 << 20);
    // …and it is remembered: the next one is incremental again.
    lab.sh("big", "rm /big/small");
    let c3 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:3", true).await;
    assert_eq!(c3.incremental, Incremental::On(c2.image_id.clone()));
    assert!(c3.uncompressed_size < 16 << 10);
    // Nothing changed since: no layer at all (once the last change is
    // older than a clock tick when a commit looks at it).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let c4 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:4", true).await;
    assert_eq!(c4.incremental, Incremental::On(c3.image_id.clone()));
    let c5 = commit_incremental(&engine, "big", "docker.io/library/lineage-big:5", true).await;
    assert_eq!(c5.incremental, Incremental::On(c4.image_id.clone()));
    assert!(c5.layer.is_none(), "nothing changed: no layer");
    assert_eq!(c5.depth, c4.depth);
    lab.start("docker.io/library/lineage-big:3", "big-runs");
    assert_eq!(lab.sh("big-runs", "ls /big"), "blob\nmore\n");
    // A squash captures everything; so does an engine that keeps no records.
    let s = commit(
        &engine,
        CommitRequest {
            incremental: Some(true),
            squash: Some(Squash::New),
            ..request("big", Some("docker.io/library/lineage-big:squashed"))
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(&s.incremental, Incremental::Plain(why) if why.contains("squash")),
        "{:?}",
        s.incremental
    );
    let n = commit_incremental(
        &lab.fast,
        "big",
        "docker.io/library/lineage-big:norec",
        true,
    )
    .await;
    assert!(
        matches!(&n.incremental, Incremental::Plain(why) if why.contains("no records")),
        "{:?}",
        n.incremental
    );
    // [commit] incremental = true: commits that do not say are incremental
    // (here on the squashed image, the last one recorded).
    let by_default = Engine::new(
        Containerd::lazy(&lab.w.socket, &lab.w.ns).unwrap(),
        EngineConfig {
            records: Records::new(Some(records.path().to_path_buf())),
            incremental: true,
            ..EngineConfig::default()
        },
    );
    lab.sh("big", "echo d > /big/d; rm /big/more");
    let d = commit(
        &by_default,
        request("big", Some("docker.io/library/lineage-big:default")),
    )
    .await
    .unwrap();
    assert_eq!(d.incremental, Incremental::On(s.image_id.clone()));
    let full =
        commit_incremental(&engine, "big", "docker.io/library/lineage-big:full2", false).await;
    assert!(d.uncompressed_size < 16 << 10);
    assert!(full.uncompressed_size > 32 << 20);
    assert_same(
        "incremental on a squashed image vs full",
        &view(&lab, "docker.io/library/lineage-big:full2").await,
        &view(&lab, "docker.io/library/lineage-big:default").await,
        VIEWS,
    );
}
