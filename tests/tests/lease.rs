//! The commit's lease: renewed while a long commit works, and gone (with
//! everything it held) when the daemon dies; a container the dead daemon
//! left paused is resumed by the next start.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use commit_engine::failpoint::{self, step};
use commit_engine::{Containerd, Engine, EngineConfig};
use commitd_e2e::{World, commit, daemon, request};
use commitd_testkit::{Ctr, SNAPSHOTTER, TaskStatus};

/// Asks containerd to collect garbage now: deleting a lease synchronously
/// runs the collector.
fn collect_garbage(ctr: &Ctr) {
    let id = format!("gc-trigger-{}", std::process::id());
    ctr.run(&["leases", "create", "--id", &id]).unwrap();
    ctr.run(&["leases", "delete", "--sync", &id]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_outlives_its_lease_expiry() {
    let w = World::new("lease-renew");
    let expiry = Duration::from_secs(3);
    let engine = Engine::new(
        Containerd::lazy(&w.socket, &w.ns).unwrap(),
        EngineConfig {
            lease_expiry: expiry,
            ..EngineConfig::default()
        },
    );
    w.running("c", "seq 1 50000 > /data");
    // The commit waits 3× the expiry after its layer is written, with only
    // the lease keeping layer and snapshot alive.
    failpoint::arm_delay("c", step::BEFORE_FILL, expiry * 3);
    let started = Instant::now();
    let committing = tokio::spawn({
        let engine = engine.clone();
        async move { commit(&engine, request("c", Some("docker.io/library/long:1"))).await }
    });
    // Past the first lease's expiry: collect garbage while the commit waits.
    tokio::time::sleep(expiry * 2).await;
    let ctr = w.ctr.clone();
    let leases = tokio::task::spawn_blocking(move || {
        collect_garbage(&ctr);
        ctr.leases().unwrap()
    })
    .await
    .unwrap();
    assert!(
        leases.iter().filter(|l| l.starts_with("commitd-")).count() >= 2,
        "the lease was renewed (chained): {leases:?}"
    );
    let done = committing
        .await
        .unwrap()
        .expect("the commit survives its first lease's expiry");
    assert!(started.elapsed() >= expiry * 3);
    assert!(done.layer.is_some());
    assert_eq!(
        w.run("docker.io/library/long:1", "wc -l < /data"),
        "50000\n"
    );
    w.assert_clean();
}

#[test]
fn a_dead_daemon_leaves_nothing_and_its_paused_container_is_resumed() {
    let w = World::new("lease-death");
    let state = tempfile::tempdir().unwrap();
    let cfg = state.path().join("commitd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[commit]\nlease_expiry_secs = 3\ncompression = \"none\"\n",
            state.path().display()
        ),
    )
    .unwrap();
    // A change big enough that the commit takes a while.
    w.running(
        "big",
        "dd if=/dev/zero of=/big bs=1M count=1024 2>/dev/null && sync",
    );
    // The pause is a metadata walk now (the copy runs before it): hold it
    // open with a delay at the paused step, so the kill lands inside it.
    let mut d = daemon!(
        w,
        ["--config", cfg.to_str().unwrap()],
        [(failpoint::ENV, "big:while-paused:delay=20000")]
    );
    let socket = d.socket.clone();
    let client = std::thread::spawn(move || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-X", "POST", "--unix-socket"])
            .arg(&socket)
            .arg("http://d/commit?container=big&repo=dead&tag=1")
            .status()
    });
    // Kill the daemon while the container is paused for the capture.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if w.ctr.task_status("big").unwrap() == TaskStatus::Paused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the commit never paused the container"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let _ = d.terminate();
    let _ = client.join();
    assert_eq!(
        w.ctr.task_status("big").unwrap(),
        TaskStatus::Paused,
        "left paused by the dead daemon"
    );
    let journal = state.path().join("paused").join(&w.ns).join("big");
    assert!(
        journal.exists(),
        "the pause was journaled at {}",
        journal.display()
    );

    // The lease expires by itself; then the collector takes what it held.
    std::thread::sleep(Duration::from_secs(4));
    collect_garbage(&w.ctr);
    assert!(
        w.ctr.leases().unwrap().is_empty(),
        "the dead daemon's lease expired"
    );
    let snaps = w.ctr.snapshots(SNAPSHOTTER).unwrap();
    assert!(
        !snaps.iter().any(|s| s.key.starts_with("extract-")),
        "nothing half-made: {snaps:?}"
    );
    assert!(
        !w.ctr
            .images()
            .unwrap()
            .iter()
            .any(|i| i.name.contains("dead"))
    );

    // The next start resumes what the dead one paused.
    let _d2 = daemon!(w, ["--config", cfg.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.ctr.task_status("big").unwrap() != TaskStatus::Running {
        assert!(Instant::now() < deadline, "not resumed by the next start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!journal.exists(), "the journal forgets a resumed container");
}
