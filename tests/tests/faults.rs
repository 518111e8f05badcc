//! Nothing lost when things go wrong around a commit: a client that hangs
//! up, containerd killed mid-commit or down at start, SIGTERM with commits
//! in flight, commits racing for one container or one tag, a full disk.
//!
//! Slow commits are made with the daemon's failpoints
//! ([`commit_engine::failpoint::ENV`]): a delay while the container is
//! paused holds a commit in flight for as long as a test needs.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use commit_engine::failpoint::ENV as FAILPOINTS;
use commitd_e2e::{World, curl, daemon};
use commitd_testkit::{Containerd, SNAPSHOTTER, TaskStatus};
use serde_json::Value;

/// Polls `f` every 50 ms until it holds, failing after `secs`.
fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /commit` from a thread: (status, body).
fn commit_in_background(socket: &Path, query: &str) -> thread::JoinHandle<(u16, String)> {
    let socket = socket.to_path_buf();
    let query = query.to_string();
    thread::spawn(move || curl(&socket, "POST", &format!("/commit?{query}"), None, &[]))
}

fn image_id(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["Id"].as_str().unwrap().to_string()
}

fn wait_paused(w: &World, id: &str) {
    eventually(&format!("{id} paused by the commit"), 30, || {
        w.ctr.task_status(id).unwrap() == TaskStatus::Paused
    });
}

fn image_names(w: &World) -> Vec<String> {
    w.ctr
        .images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// The client gives up while the container is paused: the commit runs on
/// to its end (commits are tasks of their own), the image is registered,
/// the container runs again and nothing temporary remains.
#[test]
fn a_client_that_hangs_up_still_gets_a_whole_image() {
    let w = World::new("hangup");
    w.running("hang", "echo kept > /kept");
    let d = daemon!(w, [], [(FAILPOINTS, "hang:while-paused:delay=3000")]);
    let mut client = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-X", "POST", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://d/commit?container=hang&repo=hungup&tag=1")
        .spawn()
        .unwrap();
    // The client hangs up while its container is paused.
    wait_paused(&w, "hang");
    client.kill().unwrap();
    client.wait().unwrap();
    assert_eq!(w.ctr.task_status("hang").unwrap(), TaskStatus::Paused);
    eventually("the image registered after the client left", 30, || {
        image_names(&w).contains(&"docker.io/library/hungup:1".to_string())
    });
    eventually("the container resumed", 10, || {
        w.ctr.task_status("hang").unwrap() == TaskStatus::Running
    });
    eventually("no lease or temporary snapshot", 10, || {
        w.ctr.leases().unwrap().is_empty()
    });
    w.assert_clean();
    assert_eq!(w.run("docker.io/library/hungup:1", "cat /kept"), "kept\n");
    // The daemon serves on.
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
}

/// containerd dies while a container is paused for a commit: the request
/// gets a clear 5xx, the daemon keeps serving, and once containerd is back
/// the container is resumed, the failed commit's lease is gone, and the
/// next commit works over a fresh connection.
#[test]
fn containerd_killed_mid_commit() {
    let mut containerd = Containerd::start().unwrap();
    let w = World::on(&containerd, "ctd-killed");
    w.running("victim", "echo survived > /survived");
    let d = daemon!(w, [], [(FAILPOINTS, "victim:while-paused:delay=2000")]);
    let committing = commit_in_background(&d.socket, "container=victim&repo=lost&tag=1");
    wait_paused(&w, "victim");
    containerd.kill().unwrap();
    let (code, body) = committing.join().unwrap();
    assert!((500..600).contains(&code), "a 5xx: {code} {body}");
    assert!(body.contains("\"message\""), "Docker's error body: {body}");
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
    // While containerd is away: 503 naming the socket.
    let (code, body) = d.curl(
        "POST",
        "/commit?container=victim&repo=lost&tag=2",
        None,
        &[],
    );
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&containerd.socket().display().to_string()),
        "{body}"
    );

    containerd.restart().unwrap();
    eventually("the container resumed once containerd is back", 30, || {
        w.ctr.task_status("victim").unwrap() == TaskStatus::Running
    });
    eventually("the failed commit's lease deleted", 30, || {
        w.ctr.leases().unwrap().is_empty()
    });
    let (code, body) = d.curl(
        "POST",
        "/commit?container=victim&repo=after&tag=1",
        None,
        &[],
    );
    assert_eq!(code, 201, "{body}");
    assert!(
        !image_names(&w).iter().any(|n| n.contains("lost")),
        "no half image"
    );
    assert_eq!(
        w.run("docker.io/library/after:1", "cat /survived"),
        "survived\n"
    );
    w.assert_clean();
    assert_eq!(w.ctr.task_status("victim").unwrap(), TaskStatus::Running);
    let metrics = d.curl("GET", "/metrics", None, &[]).1;
    let reconnects = metrics
        .lines()
        .find(|l| l.starts_with("commitd_containerd_reconnects_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no reconnect counter in:\n{metrics}"));
    assert!(reconnects >= 1.0, "reconnects counted: {reconnects}");
}

/// The daemon starts before containerd: it serves `/_ping`, answers
/// commits with 503 naming the socket, and commits once containerd is up.
#[test]
fn containerd_down_at_start() {
    let mut containerd = Containerd::start().unwrap();
    let w = World::on(&containerd, "ctd-late");
    w.running("early", "echo up > /up");
    containerd.kill().unwrap();
    let d = daemon!(w);
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
    let (code, body) = d.curl("POST", "/commit?container=early&repo=late&tag=1", None, &[]);
    assert_eq!(code, 503, "{body}");
    let msg: Value = serde_json::from_str(&body).unwrap();
    let msg = msg["message"].as_str().unwrap();
    assert!(
        msg.contains(&containerd.socket().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("containerd"), "{msg}");

    containerd.restart().unwrap();
    let mut last = (0, String::new());
    eventually("a commit once containerd is up", 30, || {
        last = d.curl("POST", "/commit?container=early&repo=late&tag=1", None, &[]);
        last.0 == 201
    });
    assert_eq!(w.run("docker.io/library/late:1", "cat /up"), "up\n");
    w.assert_clean();
}

/// SIGTERM with a commit in flight: it finishes (within the shutdown
/// timeout), the answer is 201, the daemon exits 0 and removes its socket.
#[test]
fn sigterm_lets_a_commit_finish() {
    let w = World::new("sigterm-finish");
    w.running("busy", "echo done > /done");
    let mut d = daemon!(w, [], [(FAILPOINTS, "busy:while-paused:delay=1500")]);
    let committing = commit_in_background(&d.socket, "container=busy&repo=drained&tag=1");
    wait_paused(&w, "busy");
    let started = Instant::now();
    let status = d.terminate();
    let (code, body) = committing.join().unwrap();
    assert_eq!(code, 201, "{body}");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded drain");
    assert!(!d.socket.exists(), "socket removed");
    assert_eq!(w.ctr.task_status("busy").unwrap(), TaskStatus::Running);
    assert_eq!(w.run("docker.io/library/drained:1", "cat /done"), "done\n");
    w.assert_clean();
}

/// SIGTERM with a commit slower than the shutdown timeout: it is rolled
/// back, the container runs again, no image, nothing left, exit 0.
#[test]
fn sigterm_rolls_back_a_commit_past_the_timeout() {
    let w = World::new("sigterm-abort");
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "shutdown_timeout_secs = 1\n").unwrap();
    w.running("slow", "echo x > /x");
    let mut d = daemon!(
        w,
        ["--config", cfg.path().to_str().unwrap()],
        [(FAILPOINTS, "slow:while-paused:delay=4000")]
    );
    let committing = commit_in_background(&d.socket, "container=slow&repo=aborted&tag=1");
    wait_paused(&w, "slow");
    let images_before = image_names(&w);
    let started = Instant::now();
    let status = d.terminate();
    let elapsed = started.elapsed();
    let (code, body) = committing.join().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(elapsed < Duration::from_secs(15), "bounded: {elapsed:?}");
    assert_ne!(code, 201, "not committed: {body}");
    assert!(!d.socket.exists(), "socket removed");
    assert_eq!(w.ctr.task_status("slow").unwrap(), TaskStatus::Running);
    assert_eq!(image_names(&w), images_before, "no image");
    assert!(
        d.log_text().contains("rolling them back"),
        "{}",
        d.log_text()
    );
    w.assert_clean();
}

/// Two commits of one container at once, and two containers committed to
/// one tag at once: every answer is right, the tag ends on one of the two
/// images, the other stays reachable by ID, and every image runs.
#[test]
fn concurrent_commits_of_one_container_and_to_one_tag() {
    let w = World::new("race");
    w.running("a", "echo from-a > /who");
    w.running("b", "echo from-b > /who");
    let d = daemon!(w);
    // One container, two commits.
    let one = commit_in_background(&d.socket, "container=a&repo=twice&tag=1");
    let two = commit_in_background(&d.socket, "container=a&repo=twice&tag=2");
    let (one, two) = (one.join().unwrap(), two.join().unwrap());
    assert_eq!((one.0, two.0), (201, 201), "{one:?} {two:?}");
    assert!(image_id(&one.1).starts_with("sha256:") && image_id(&two.1).starts_with("sha256:"));
    for tag in ["1", "2"] {
        assert_eq!(
            w.run(&format!("docker.io/library/twice:{tag}"), "cat /who"),
            "from-a\n"
        );
    }
    assert_eq!(w.ctr.task_status("a").unwrap(), TaskStatus::Running);

    // One tag, two containers.
    let ca = commit_in_background(&d.socket, "container=a&repo=contested&tag=1");
    let cb = commit_in_background(&d.socket, "container=b&repo=contested&tag=1");
    let (ca, cb) = (ca.join().unwrap(), cb.join().unwrap());
    assert_eq!((ca.0, cb.0), (201, 201), "{ca:?} {cb:?}");
    let (ia, ib) = (image_id(&ca.1), image_id(&cb.1));
    assert_ne!(ia, ib);
    let inspect: Value =
        serde_json::from_str(&d.docker_ok(&["image", "inspect", "contested:1"])).unwrap();
    let tagged = inspect[0]["Id"].as_str().unwrap().to_string();
    assert!(tagged == ia || tagged == ib, "{tagged} is one of {ia} {ib}");
    let who = w.run("docker.io/library/contested:1", "cat /who");
    assert_eq!(who, if tagged == ia { "from-a\n" } else { "from-b\n" });
    // The other one is still there, by ID.
    let other = if tagged == ia { &ib } else { &ia };
    d.docker_ok(&["image", "inspect", other]);
    w.assert_clean();
    for c in ["a", "b"] {
        assert_eq!(w.ctr.task_status(c).unwrap(), TaskStatus::Running);
    }
}

/// Unmounts a test's small filesystem when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every file under `dir`, recursively (to compare before and after).
fn files(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(dir)
        .args(["-type", "f"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let mut all: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    all.sort();
    all
}

/// The content store fills up mid-commit (a 24 MiB tmpfs under a private
/// containerd's content root, a 40 MiB incompressible change): a clear
/// error, no image, no partial blob, the container running; with the change
/// made small, the next commit works.
#[test]
fn a_full_disk_is_a_clear_error_and_nothing_half_made() {
    let containerd = Containerd::start().unwrap();
    let content = containerd.root().join("io.containerd.content.v1.content");
    std::fs::create_dir_all(&content).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&content)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a small tmpfs on {}",
        content.display()
    );
    let _unmount = Unmount(content.clone());
    std::fs::create_dir_all(content.join("blobs/sha256")).unwrap();
    std::fs::create_dir_all(content.join("ingest")).unwrap();

    let w = World::on(&containerd, "disk-full");
    w.running(
        "full",
        "head -c 41943040 /dev/urandom > /big && echo small > /small",
    );
    let d = daemon!(w);
    let images_before = image_names(&w);
    // `ctr images import` also stores the archive's index, which nothing
    // references: containerd collects it a moment later, maybe in the
    // middle of this test (seen in CI: one blob fewer after the failed
    // commit than before). A synchronous collection first.
    w.collect_garbage();
    let files_before = files(&content);
    let (code, body) = d.curl(
        "POST",
        "/commit?container=full&repo=toobig&tag=1&compression=none",
        None,
        &[],
    );
    assert!((500..600).contains(&code), "a 5xx: {code} {body}");
    let msg: Value = serde_json::from_str(&body).unwrap();
    let msg = msg["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("no space left"), "says why: {msg}");
    assert_eq!(image_names(&w), images_before, "no image");
    assert_eq!(
        files(&content),
        files_before,
        "no partial blob or ingest left"
    );
    assert_eq!(w.ctr.task_status("full").unwrap(), TaskStatus::Running);
    w.assert_clean();
    let extract: Vec<_> = w
        .ctr
        .snapshots(SNAPSHOTTER)
        .unwrap()
        .into_iter()
        .filter(|s| s.key.contains("extract"))
        .collect();
    assert!(extract.is_empty(), "{extract:?}");

    // Fine afterwards.
    w.ctr.exec("full", &["rm", "/big"]).unwrap();
    let (code, body) = d.curl("POST", "/commit?container=full&repo=fits&tag=1", None, &[]);
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        w.run(
            "docker.io/library/fits:1",
            "cat /small; ls /big 2>&1 || true"
        ),
        "small\nls: /big: No such file or directory\n"
    );
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
    drop(d);
    drop(w);
}

/// containerd's content collector keeps working while a layer is being
/// written: the layer's temporary file lives in the content store's root,
/// not in `blobs/sha256` (where containerd 1.6 gives up its whole sweep on a
/// name that is not a digest, so nothing unreferenced would be collected on
/// a node that commits all the time). An import whose body is held open
/// half-way keeps a layer being written for as long as the test needs.
#[test]
fn the_content_collector_runs_while_a_layer_is_written() {
    use sha2::Digest;
    use std::io::{Read, Write};

    let containerd = Containerd::start().unwrap();
    let content = containerd.root().join("io.containerd.content.v1.content");
    let blobs = content.join("blobs/sha256");
    let w = World::on(&containerd, "gc-while-writing");
    let d = daemon!(w);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let noise: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("noise"), &noise).unwrap();
    let tar = dir.path().join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let tar = std::fs::read(&tar).unwrap();
    let (head, tail) = tar.split_at(tar.len() / 2);

    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(
        b"POST /v1.41/images/create?fromSrc=-&repo=gc/held&tag=1 HTTP/1.1\r\n\
          Host: commitd\r\nContent-Type: application/x-tar\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let chunk = |s: &mut std::os::unix::net::UnixStream, data: &[u8]| {
        s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .unwrap();
        s.write_all(data).unwrap();
        s.write_all(b"\r\n").unwrap();
    };
    chunk(&mut s, head);
    let temp_files = || -> Vec<String> {
        [&content, &blobs]
            .into_iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".commitd-"))
            .collect()
    };
    eventually("the import's layer file being written", 30, || {
        !temp_files().is_empty()
    });
    let not_digests: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() != 64 || !n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(
        not_digests.is_empty(),
        "non-digest names in blobs/sha256: {not_digests:?}"
    );

    // Content nothing refers to, then a collection: it is gone, from the
    // metadata and from the disk.
    let orphan = b"nothing refers to this\n";
    let hex = hex::encode(sha2::Sha256::digest(orphan));
    let mut ingest = w
        .ctr
        .command()
        .args(["content", "ingest", "--expected-digest"])
        .arg(format!("sha256:{hex}"))
        .arg("orphan-ref")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ingest.stdin.take().unwrap().write_all(orphan).unwrap();
    assert!(ingest.wait().unwrap().success());
    assert!(blobs.join(&hex).exists());
    w.collect_garbage();
    assert!(
        !blobs.join(&hex).exists(),
        "the collector swept nothing while a layer was being written; containerd's log:\n{}",
        containerd.log_tail(40)
    );
    assert!(
        !temp_files().is_empty(),
        "the held import was still writing"
    );

    // The import then finishes as any other.
    chunk(&mut s, tail);
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(image_names(&w).iter().any(|n| n == "docker.io/gc/held:1"));
    assert!(temp_files().is_empty(), "no temporary file left");
    w.assert_clean();
}
