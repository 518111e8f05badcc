//! What operators watch: metrics, Docker events, `commitd --check`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use commitd_e2e::{World, daemon};

/// The value of one sample line of the text exposition (0 when absent).
fn sample(metrics: &str, line_prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_move_with_commits() {
    let w = World::new("metrics");
    let d = daemon!(w);
    w.running("c", "seq 1 100000 > /numbers");
    let (code, before) = d.curl("GET", "/metrics", None, &[]);
    assert_eq!(code, 200);
    let ok = r#"commitd_commits_total{outcome="success",capture="overlay"}"#;
    assert_eq!(sample(&before, ok), 0.0);

    d.docker_ok(&["commit", "c", "m:1"]);
    let (code, _) = d.curl("POST", "/commit?container=nope", None, &[]);
    assert_eq!(code, 404);
    let (_, after) = d.curl("GET", "/metrics", None, &[]);
    assert_eq!(sample(&after, ok), 1.0, "{after}");
    assert_eq!(
        sample(
            &after,
            r#"commitd_commits_total{outcome="error",capture=""}"#
        ),
        1.0
    );
    assert_eq!(sample(&after, "commitd_commits_in_flight"), 0.0);
    assert!(
        sample(&after, "commitd_captured_bytes_total") > 500_000.0,
        "{after}"
    );
    assert!(sample(&after, "commitd_stored_bytes_total") > 0.0);
    assert_eq!(
        sample(
            &after,
            r#"commitd_commit_phase_duration_seconds_count{phase="total"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"commitd_commit_phase_duration_seconds_count{phase="pause"}"#
        ),
        1.0
    );
    assert_eq!(sample(&after, "commitd_paused_seconds_count"), 1.0);
    assert!(
        sample(&after, "commitd_paused_seconds_sum") > 0.0,
        "the container was paused"
    );
    assert_eq!(
        sample(
            &after,
            r#"commitd_http_requests_total{method="POST",route="/commit",code="201"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"commitd_http_requests_total{method="POST",route="/commit",code="404"}"#
        ),
        1.0
    );
}

/// The pause does not grow with the change: 2,000 files written before
/// the commit are copied while the container runs; the paused walk copies
/// again only what a writer changes during the commit (its 8 files, rewritten in
/// place in a loop), as the `pause` stage's counters show.
#[test]
fn the_pause_copies_only_what_changes_during_the_commit() {
    let w = World::new("metrics-pause");
    let d = daemon!(w);
    w.running(
        "c",
        "for d in $(seq 0 19); do mkdir -p /many/$d; for f in $(seq 0 99); do echo $d-$f > /many/$d/$f; done; done; \
         mkdir /w; sleep 1; \
         (n=0; while :; do for i in 0 1 2 3 4 5 6 7; do echo $n > /w/$i; done; n=$((n+1)); done > /dev/null 2>&1 &); \
         sleep 0.5; test -e /w/7",
    );
    d.docker_ok(&["commit", "c", "pausing:1"]);
    let (_, m) = d.curl("GET", "/metrics", None, &[]);
    let work = |stage: &str, work: &str| {
        sample(
            &m,
            &format!(r#"commitd_capture_entries_total{{stage="{stage}",work="{work}"}}"#),
        )
    };
    let (running, walked) = (work("running", "copied"), work("paused", "walked"));
    let (again, removed) = (work("paused", "copied"), work("paused", "removed"));
    println!(
        "copied while running {running}, walked while paused {walked}, copied while paused {again}, removed {removed}"
    );
    // 2,000 files, 21 directories, /w and its 8 files (+ what runc made).
    assert!(running >= 2_030.0, "{m}");
    assert!(walked >= 2_030.0, "{m}");
    assert!(
        (1.0..=8.0).contains(&again),
        "the paused walk copied only the writer's files: {again} of {walked}\n{m}"
    );
    assert!(removed <= 8.0, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"commitd_commit_phase_duration_seconds_count{phase="pause"}"#
        ),
        1.0
    );
    assert!(sample(&m, "commitd_paused_seconds_sum") > 0.0, "paused");
    // The layer is the frozen moment: the writer's files hold one round,
    // or the first ones the next round (one may be caught empty).
    let out = w.run(
        "docker.io/library/pausing:1",
        "for i in 0 1 2 3 4 5 6 7; do echo \"$(cat /w/$i)\"; done; ls /many/* | wc -l",
    );
    let lines: Vec<&str> = out.lines().collect();
    let values: Vec<Option<u64>> = lines[..8].iter().map(|l| l.trim().parse().ok()).collect();
    let known: Vec<u64> = values.iter().flatten().copied().collect();
    let (lo, hi) = (known.iter().min().unwrap(), known.iter().max().unwrap());
    assert!(
        hi - lo <= 1 && values.iter().filter(|v| v.is_none()).count() <= 1,
        "{values:?}"
    );
    assert!(lines[8].trim().parse::<u64>().unwrap() >= 2_000, "{out}");
}

#[test]
fn metrics_on_a_loopback_port_serve_nothing_else() {
    let w = World::new("metrics-tcp");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("commitd.toml");
    std::fs::write(&cfg, format!("metrics_address = \"127.0.0.1:{port}\"\n")).unwrap();
    let _d = daemon!(w, ["--config", cfg.to_str().unwrap()]);
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = get("/metrics");
    assert!(
        metrics.contains("# TYPE commitd_commits_in_flight gauge") && metrics.ends_with("\n200"),
        "{metrics}"
    );
    assert!(get("/version").ends_with("\n404"), "the API is not on TCP");
}

#[test]
fn commit_events_stream_like_dockers() {
    let w = World::new("events");
    let d = daemon!(w);
    w.running("c", "echo x > /x");
    let mut events = Command::new("docker")
        .args([
            "-H",
            &format!("unix://{}", d.socket.display()),
            "events",
            "--filter",
            "event=commit",
            "--format",
            "{{json .}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Give the stream a moment to subscribe.
    std::thread::sleep(Duration::from_millis(500));
    let id = d
        .docker_ok(&["commit", "-m", "evented", "c", "ev:1"])
        .trim()
        .to_string();
    d.docker_ok(&["tag", "ev:1", "ev:2"]);
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a commit event");
    let _ = events.kill();
    let _ = events.wait();
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["Type"], "container");
    assert_eq!(ev["Action"], "commit");
    assert_eq!(ev["Actor"]["ID"], "c");
    assert_eq!(ev["Actor"]["Attributes"]["imageID"], id);
    assert_eq!(ev["Actor"]["Attributes"]["imageRef"], "ev:1");
    assert_eq!(ev["Actor"]["Attributes"]["comment"], "evented");
    assert_eq!(ev["Actor"]["Attributes"]["name"], "c-name");

    // Replay of what happened, bounded in time (`--since … --until …`).
    let since = (chrono_now() - 60).to_string();
    let until = (chrono_now() + 1).to_string();
    let replay = d.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--format",
        "{{.Type}} {{.Action}}",
    ]);
    assert_eq!(replay, "container commit\nimage tag\n");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn check_reports_containerd_and_the_fast_path() {
    let w = World::new("check");
    let out = Command::new(env!("CARGO_BIN_EXE_commitd-under-test"))
        .args(["--check", "--containerd"])
        .arg(&w.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("answers (version 1."), "{text}");
    assert!(
        text.contains("snapshotter overlayfs: files visible at"),
        "{text}"
    );
    assert!(
        text.contains("fast path: usable for overlayfs containers"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_commitd-under-test"))
        .args(["--check", "--containerd", "/nonexistent/containerd.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("not answering at /nonexistent/containerd.sock")
    );
}

/// A filesystem of `fs` on a loop file, mounted in a temp dir; unmounted
/// (and the loop device freed) on drop.
struct LoopMount {
    dir: tempfile::TempDir,
}

impl LoopMount {
    fn new(fs: &str, mkfs: &[&str]) -> LoopMount {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&image)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/deps.sh --test installs it)", mkfs[0]));
        assert!(out.status.success(), "{fs}: {out:?}");
        let out = Command::new("mount")
            .args(["-t", fs, "-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting {fs}: {out:?}");
        LoopMount { dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// A containerd of this test's own, with its root (and so its snapshots)
/// in `root`; killed on drop.
struct RootedContainerd {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RootedContainerd {
    fn start(root: &std::path::Path) -> RootedContainerd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\n[grpc]\n  address = {:?}\n",
                root.join("root"),
                dir.path().join("state"),
                socket
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = RootedContainerd {
            child,
            socket,
            _dir: dir,
        };
        for _ in 0..200 {
            let ok = Command::new("ctr")
                .arg("-a")
                .arg(&me.socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return me;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("containerd on {} did not answer", root.display());
    }
}

impl Drop for RootedContainerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `commitd --check` says whether the snapshot root reflinks, as a probe
/// copy shows it: yes on XFS made with `reflink=1`, no on ext4.
#[test]
fn check_says_whether_the_snapshot_root_reflinks() {
    let xfs = LoopMount::new("xfs", &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"]);
    let ext4 = LoopMount::new("ext4", &["mkfs.ext4", "-q", "-F"]);
    // The probe itself.
    assert_eq!(
        commit_engine::check::reflinks(&xfs.path()).unwrap(),
        commit_engine::check::Reflink {
            filesystem: "xfs".into(),
            shared: true
        }
    );
    assert_eq!(
        commit_engine::check::reflinks(&ext4.path()).unwrap(),
        commit_engine::check::Reflink {
            filesystem: "ext4".into(),
            shared: false
        }
    );
    assert_eq!(
        std::fs::read_dir(xfs.path()).unwrap().count(),
        0,
        "no probe file left"
    );
    // And as `commitd --check` reports it, for a containerd on each.
    for (mount, fs, answer) in [
        (&xfs, "xfs", "reflinks: yes"),
        (&ext4, "ext4", "reflinks: no"),
    ] {
        let c = RootedContainerd::start(&mount.path());
        let out = Command::new(env!("CARGO_BIN_EXE_commitd-under-test"))
            .args(["--check", "--containerd"])
            .arg(&c.socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("reflinks:"))
            .unwrap_or_else(|| panic!("no reflinks line: {text}"));
        assert!(
            line.starts_with(answer) && line.contains(&format!("({fs})")),
            "{fs}: {line}"
        );
        drop(c);
    }
}
