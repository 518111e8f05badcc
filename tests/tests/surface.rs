//! The rest of Docker's surface around a commit, driven by the real Docker
//! CLI against the daemon and a real containerd with runc containers:
//! `docker info`, `docker system df`, `docker ps -s`, `docker diff`,
//! `docker export`, `docker load`, `docker import`, `docker image prune`
//! (also side by side with Docker's engine, for `docker diff` and prune).
#![allow(clippy::unwrap_used)]

use commitd_e2e::{World, daemon};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The lower directories of container `id`'s overlay snapshot, top first.
fn lower_dirs(w: &World, id: &str) -> Vec<std::path::PathBuf> {
    let info = w.ctr.container_info(id).unwrap();
    let key = info["SnapshotKey"].as_str().unwrap();
    let mounts = w
        .ctr
        .run(&[
            "snapshots",
            "--snapshotter",
            "overlayfs",
            "mounts",
            "/",
            key,
        ])
        .unwrap();
    mounts
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_else(|| panic!("{mounts}"))
        .split(':')
        .map(std::path::PathBuf::from)
        .collect()
}

/// `du -s -B1` of a directory: bytes of its blocks, each inode once.
fn du(dir: &std::path::Path) -> i64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "du {}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn docker_info_counts_containerds_containers_and_images() {
    let w = World::new("surface-info");
    let d = daemon!(w);
    w.running("up", "");
    w.running("frozen", "");
    w.ctr.pause("frozen").unwrap();
    w.ctr.create(&w.image, "made", &[]).unwrap();

    let info = json(&d.docker_ok(&["info", "--format", "{{json .}}"]));
    assert_eq!(info["Containers"], 3, "{info}");
    assert_eq!(info["ContainersRunning"], 1);
    assert_eq!(info["ContainersPaused"], 1);
    assert_eq!(info["ContainersStopped"], 1);
    assert_eq!(info["Images"], 1);
    assert_eq!(info["Driver"], "overlayfs");
    assert_eq!(info["OSType"], "linux");
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    let nproc: i64 =
        String::from_utf8_lossy(&std::process::Command::new("nproc").output().unwrap().stdout)
            .trim()
            .parse()
            .unwrap();
    assert_eq!(info["NCPU"], nproc);
    assert!(info["MemTotal"].as_i64().unwrap() > 0);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(info["Name"], hostname.trim());
    assert_eq!(info["Containerd"]["Namespaces"]["Containers"], w.ns);
    assert!(info["ID"].as_str().unwrap().len() == 36, "{}", info["ID"]);

    // The CLI's own rendering reads it without complaint.
    let (ok, out, err) = d.docker(&["info"]);
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("Storage Driver: overlayfs"), "{out}");
    assert!(out.contains("Containers: 3"), "{out}");
    assert!(!err.contains("ERROR"), "{err}");
    w.ctr.resume("frozen").unwrap();
}

#[test]
fn ps_s_and_system_df_sizes_are_du_of_the_upper_directory() {
    let w = World::new("surface-df");
    let d = daemon!(w);
    w.running(
        "big",
        "head -c 3000000 /dev/zero > /blob && mkdir -p /d && echo x > /d/x && ln /blob /blob2",
    );
    w.running("small", "echo hi > /hi");
    let upper = w.ctr.upper_dir("big").unwrap();
    let want = du(&upper);

    // docker ps -s: SizeRw of each container.
    let rows = d.docker_ok(&["ps", "-s", "--no-trunc", "--format", "{{json .}}"]);
    let ps = json(&d.curl("GET", "/containers/json?size=1", None, &[]).1);
    let big = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Names"][0] == "/big-name")
        .unwrap_or_else(|| panic!("{ps}"));
    assert_eq!(big["SizeRw"], want, "SizeRw vs du of {}", upper.display());
    assert!(big["SizeRootFs"].as_i64().unwrap() > want, "{big}");
    assert!(rows.contains("big-name"), "{rows}");
    // inspect -s.
    let inspect = json(&d.docker_ok(&["inspect", "-s", "big-name"]));
    assert_eq!(inspect[0]["SizeRw"], want);
    assert_eq!(inspect[0]["SizeRootFs"], big["SizeRootFs"]);
    // Without size=1 no sizes.
    let plain = json(&d.curl("GET", "/containers/json", None, &[]).1);
    assert!(plain[0].get("SizeRw").is_none(), "{plain}");

    // docker system df -v: the same sizes, the image with its sizes.
    let df = json(&d.curl("GET", "/v1.50/system/df", None, &[]).1);
    let c = df["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Names"][0] == "/big-name")
        .unwrap_or_else(|| panic!("{df}"));
    assert_eq!(c["SizeRw"], want);
    let images = df["Images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{df}");
    assert_eq!(images[0]["Containers"], 2);
    assert_eq!(images[0]["SharedSize"], 0);
    // An image holds its blobs and its unpacked snapshots.
    let manifest = w.ctr.image_manifest(&w.image).unwrap();
    let blobs: i64 = images[0]["Descriptor"]["size"].as_i64().unwrap()
        + manifest["config"]["size"].as_i64().unwrap()
        + manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_i64().unwrap())
            .sum::<i64>();
    let unpacked: i64 = lower_dirs(&w, "big").iter().map(|d| du(d)).sum();
    assert_eq!(images[0]["Size"], blobs + unpacked, "{}", images[0]);
    assert_eq!(df["LayersSize"], blobs + unpacked);
    assert_eq!(df["Volumes"], serde_json::json!([]));
    assert_eq!(df["BuildCache"], serde_json::json!([]));
    let text = d.docker_ok(&["system", "df", "-v"]);
    assert!(text.contains("big-name"), "{text}");
    let text = d.docker_ok(&["system", "df"]);
    assert!(
        text.contains("Images") && text.contains("Containers"),
        "{text}"
    );
    // The new shape (API 1.52, verbose).
    let new = json(&d.curl("GET", "/v1.52/system/df?verbose=1", None, &[]).1);
    assert!(new.get("Images").is_none(), "{new}");
    assert_eq!(new["ContainerUsage"]["TotalCount"], 2, "{new}");
    assert_eq!(new["ContainerUsage"]["ActiveCount"], 2, "{new}");
    assert_eq!(new["ImageUsage"]["TotalCount"], 1, "{new}");
    let (status, body) = d.curl("GET", "/system/df?type=bogus", None, &[]);
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"unknown object type: bogus"}"#)
    );
}

/// `ctr images ls`: name → target digest.
fn targets(w: &World) -> std::collections::BTreeMap<String, String> {
    w.ctr
        .images()
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.digest))
        .collect()
}

/// Nothing a load or import makes temporarily is left: no lease, no
/// ingest, no `extract-` snapshot.
fn assert_nothing_left(w: &World) {
    w.assert_clean();
    let active = w.ctr.run(&["content", "active"]).unwrap();
    assert_eq!(active.lines().skip(1).count(), 0, "ingests left: {active}");
}

#[test]
fn docker_save_then_load_into_another_namespace_keeps_every_digest() {
    let w = World::new("surface-save");
    let d = daemon!(w);
    w.running(
        "app",
        "echo saved > /greeting && mkdir -p /srv && echo x > /srv/x",
    );
    d.docker_ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/greeting\"]",
        "app-name",
        "acc/app:1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    d.docker_ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "acc/app:1",
        w.image.as_str(),
    ]);

    let w2 = World::new("surface-load");
    let d2 = daemon!(w2);
    let before = targets(&w2);
    let out = d2.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: acc/app:1\n"), "{out}");
    assert!(
        out.contains("Loaded image: commitd-busybox:latest\n"),
        "{out}"
    );
    // The same records, pointing at the same manifests.
    let (a, b) = (targets(&w), targets(&w2));
    assert_eq!(a["docker.io/acc/app:1"], b["docker.io/acc/app:1"]);
    assert_eq!(a[&w.image], b[&w2.image]);
    assert_eq!(before[&w2.image], b[&w2.image]);
    let inspect = |d: &commitd_e2e::Daemon| {
        let v = json(&d.docker_ok(&["image", "inspect", "acc/app:1"]));
        (
            v[0]["Id"].clone(),
            v[0]["RootFS"].clone(),
            v[0]["Config"].clone(),
        )
    };
    assert_eq!(inspect(&d), inspect(&d2));
    // Unpacked: it runs at once, from its own snapshots.
    assert_eq!(
        w2.run("docker.io/acc/app:1", "cat /greeting /srv/x"),
        "saved\nx\n"
    );
    assert_nothing_left(&w2);

    // Progress when not quiet; gzip archives load too.
    let gz = dir.path().join("app.tar.gz");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let w3 = World::new("surface-load-gz");
    let d3 = daemon!(w3);
    let (status, body) = d3.curl(
        "POST",
        "/images/load?quiet=0",
        Some(&format!("@{}", gz.display())),
        &["Content-Type: application/x-tar"],
    );
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body.lines().map(json).collect();
    assert!(
        lines.iter().any(|l| l["status"] == "Loading layer"),
        "{body}"
    );
    assert_eq!(
        lines.last().unwrap()["stream"],
        "Loaded image: commitd-busybox:latest\n",
        "{body}"
    );
    assert_eq!(
        targets(&w3)["docker.io/acc/app:1"],
        a["docker.io/acc/app:1"]
    );
    assert_nothing_left(&w3);
}

#[test]
fn a_truncated_or_malformed_load_leaves_nothing_behind() {
    let w = World::new("surface-save-cut");
    let d = daemon!(w);
    w.running("app", "head -c 2000000 /dev/urandom > /noise");
    d.docker_ok(&["commit", "app-name", "acc/cut:1"]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cut.tar");
    d.docker_ok(&["save", "-o", archive.to_str().unwrap(), "acc/cut:1"]);
    let bytes = std::fs::read(&archive).unwrap();

    let w2 = World::new("surface-load-cut");
    let d2 = daemon!(w2);
    let images = targets(&w2);
    let snapshots = w2.ctr.snapshots("overlayfs").unwrap().len();
    let cut = dir.path().join("half.tar");
    let cases: [(&str, Vec<u8>); 3] = [
        // Cut inside the big layer blob.
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec()),
        (
            "garbage",
            b"this is not an image archive at all".repeat(100),
        ),
        // A tar with no image in it.
        ("no image", {
            let mut t = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            h.set_cksum();
            t.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
            t.into_inner().unwrap()
        }),
    ];
    for (what, data) in cases {
        std::fs::write(&cut, &data).unwrap();
        let (ok, out, err) = d2.docker(&["load", "-i", cut.to_str().unwrap()]);
        assert!(!ok, "{what}: {out}");
        eprintln!("{what}: {}", err.trim());
        assert!(!err.trim().is_empty(), "{what}");
        assert_eq!(targets(&w2), images, "{what}: no image");
        assert_eq!(
            w2.ctr.snapshots("overlayfs").unwrap().len(),
            snapshots,
            "{what}: no snapshot"
        );
        assert_nothing_left(&w2);
    }
    // The daemon still serves.
    let out = d2.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: acc/cut:1"), "{out}");
}

/// The changes a `docker diff` test makes, in a container of [`diff_base`]:
/// an add, a new tree, an edit, a delete, a directory replaced (opaque)
/// with new contents, a mode change, a symlink, and a directory touched
/// only by a file made and removed (not a change, as in Docker).
const DIFF_SCRIPT: &str = "echo new > /added \
    && mkdir -p /newdir/sub && echo x > /newdir/sub/f \
    && echo edit >> /etc/passwd \
    && rm /etc/group \
    && rm -rf /srv && mkdir -p /srv/a && echo fresh > /srv/a/fresh \
    && chmod 700 /data \
    && touch /var/made && rm /var/made \
    && ln -s /added /link";

/// What [`DIFF_SCRIPT`] changes, as Docker lists it (sorted by path).
const DIFF_WANT: &[(&str, u8)] = &[
    ("/added", 1),
    ("/data", 0),
    ("/etc", 0),
    ("/etc/group", 2),
    ("/etc/passwd", 0),
    ("/link", 1),
    ("/newdir", 1),
    ("/newdir/sub", 1),
    ("/newdir/sub/f", 1),
    ("/srv", 0),
    ("/srv/a", 0),
    ("/srv/a/fresh", 1),
    ("/srv/a/old", 2),
    ("/srv/b", 2),
];

/// busybox and a second layer for [`DIFF_SCRIPT`] to replace and chmod.
fn diff_base(case: &str) -> commitd_testkit::ImageBuilder {
    commitd_testkit::ImageBuilder::busybox()
        .layer()
        .dir("/srv", 0o755)
        .dir("/srv/a", 0o755)
        .file("/srv/a/old", "old\n")
        .file("/srv/b", "b\n")
        .dir("/data", 0o755)
        .file("/data/keep", "k\n")
        .cmd(&["sleep", "100000"])
        .env(&format!("SURFACE_CASE={case}"))
}

fn sorted_changes(v: &Value) -> Vec<(String, u8)> {
    let mut rows: Vec<(String, u8)> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|c| {
            (
                c["Path"].as_str().unwrap().to_string(),
                c["Kind"].as_u64().unwrap() as u8,
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn docker_diff_lists_what_dockers_engine_lists() {
    use commitd_testkit::{Oracle, RunSpec, shared, shared_dockerd, unique_namespace};
    let ns = unique_namespace("surface-diff");
    let oracle = Oracle::new(shared_dockerd(), shared(), &ns, &diff_base(&ns))
        .unwrap_or_else(|e| panic!("preparing the base in both engines: {e}"));
    let d = commitd_e2e::Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        shared().socket(),
        &ns,
        &[],
    );
    // The diff service's path (other snapshotters): the same answers.
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "[commit]\nfast_path = false\n").unwrap();
    let slow = commitd_e2e::Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        shared().socket(),
        &ns,
        &["--config", conf.path().to_str().unwrap()],
    );

    // Nothing changed yet: `null`, as Docker.
    let name = format!("diff-{ns}");
    let pair = oracle.run(&name, &RunSpec::sleeping()).unwrap();
    let (docker, ours) = oracle.changes(&d.socket, &pair).unwrap();
    assert_eq!((docker.status, docker.text()), (200, "null\n".to_string()));
    assert_eq!((ours.status, ours.text()), (200, "null\n".to_string()));

    pair.sh(DIFF_SCRIPT).unwrap();
    let want: Vec<(String, u8)> = DIFF_WANT.iter().map(|(p, k)| (p.to_string(), *k)).collect();
    let (docker, ours) = oracle.changes(&d.socket, &pair).unwrap();
    assert_eq!(docker.status, 200, "{}", docker.text());
    assert_eq!(sorted_changes(&docker.json()), want, "Docker's own answer");
    assert_eq!(ours.status, 200, "{}", ours.text());
    assert_eq!(sorted_changes(&ours.json()), want, "commitd's");
    let (_, by_service) = oracle.changes(&slow.socket, &pair).unwrap();
    assert_eq!(
        sorted_changes(&by_service.json()),
        want,
        "through the diff service"
    );
    // A directory comes before what it holds.
    let rows = ours.json();
    let pos = |p: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .position(|r| r["Path"] == p)
            .unwrap()
    };
    assert!(pos("/srv") < pos("/srv/a") && pos("/srv/a") < pos("/srv/a/fresh"));

    // The Docker CLI, without a version prefix, reads it.
    let out = d.docker_ok(&["diff", &name]);
    for line in ["A /added", "C /etc/passwd", "D /etc/group", "D /srv/b"] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    let (status, body) = d.curl("GET", &format!("/containers/{name}/changes"), None, &[]);
    assert_eq!(status, 200);
    assert_eq!(sorted_changes(&json(&body)), want);

    // Errors as Docker's.
    let (docker, ours) = oracle
        .both(
            &d.socket,
            "GET",
            "/v1.41/containers/nope-nope/changes",
            None,
        )
        .unwrap();
    assert_eq!((ours.status, ours.json()), (docker.status, docker.json()));
    assert_eq!(ours.status, 404);
    // Nothing is left by either path.
    let w_leases = oracle.ctr().leases().unwrap();
    assert!(w_leases.is_empty(), "{w_leases:?}");
    drop(pair);
    let _ = oracle
        .docker()
        .cli_output(&["rmi", "-f", oracle.docker_base()]);
}

/// Paths of a tar, as `/path` without a trailing slash.
fn tar_paths(tar: &std::path::Path) -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("tar")
        .arg("tf")
        .arg(tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./").trim_end_matches('/')))
        .filter(|p| p != "/")
        .collect()
}

#[test]
fn docker_export_is_the_containers_view_without_pausing_it() {
    let w = World::new("surface-export");
    let d = daemon!(w);
    w.running(
        "ex",
        "echo exported > /greeting && rm /etc/group && mkdir -p /deep/a/b && \
         head -c 3000000 /dev/urandom > /deep/a/b/noise && ln -s /greeting /deep/link",
    );
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("ex.tar");
    d.docker_ok(&["export", "-o", tar.to_str().unwrap(), "ex-name"]);
    let got = tar_paths(&tar);
    // The container's view of its root filesystem (not what is mounted on it).
    let view = w.ctr.exec("ex", &["find", "/", "-xdev"]).unwrap();
    let want: std::collections::BTreeSet<String> = view
        .lines()
        .filter(|p| *p != "/")
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);
    assert!(got.contains("/greeting") && !got.contains("/etc/group"));
    // Contents and links as the container has them.
    let cat = |path: &str| {
        let out = std::process::Command::new("tar")
            .arg("xOf")
            .arg(&tar)
            .arg(path)
            .output()
            .unwrap();
        out.stdout
    };
    assert_eq!(cat("greeting"), b"exported\n");
    let sum = w.ctr.exec("ex", &["sha256sum", "/deep/a/b/noise"]).unwrap();
    let host = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar xOf {} deep/a/b/noise | sha256sum",
            tar.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        sum.split_whitespace().next(),
        String::from_utf8_lossy(&host.stdout)
            .split_whitespace()
            .next()
    );
    let listing = std::process::Command::new("tar")
        .arg("tvf")
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with("deep/link -> /greeting")),
        "{listing}"
    );
    // Not paused, and no mount left anywhere.
    assert_eq!(
        w.ctr.task_status("ex").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("commitd-export"), "{mounts}");
    let daemon_mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).unwrap();
    assert!(!daemon_mounts.contains("commitd-export"));

    // With a version prefix, through curl; errors as Docker's.
    let (status, body) = d.curl("GET", "/v1.41/containers/ex-name/export", None, &[]);
    assert_eq!(status, 200);
    assert!(body.len() > 3_000_000, "{}", body.len());
    let (status, body) = d.curl("GET", "/containers/nope-nope/export", None, &[]);
    assert_eq!(
        (status, body.as_str()),
        (404, "{\"message\":\"No such container: nope-nope\"}")
    );
    w.assert_clean();
}

/// Opens `GET path` on the daemon's socket and reads the answer's first
/// `n` bytes, leaving the rest unread (the stream half-read).
fn open_stream(d: &commitd_e2e::Daemon, path: &str, n: usize) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = vec![0u8; n];
    s.read_exact(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..12]).into_owned();
    assert_eq!(text, "HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    s
}

fn wait_for(w: &World, id: &str, want: commitd_testkit::TaskStatus, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while w.ctr.task_status(id).unwrap() != want {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn docker_export_pauses_only_when_asked_and_always_resumes() {
    use commitd_testkit::TaskStatus;
    use std::io::Read;
    let w = World::new("surface-export-pause");
    let state = tempfile::tempdir().unwrap();
    let cfg = state.path().join("commitd.toml");
    std::fs::write(
        &cfg,
        format!("state_dir = \"{}\"\n", state.path().display()),
    )
    .unwrap();
    let mut d = daemon!(w, ["--config", cfg.to_str().unwrap()]);
    // Far more than the channel and the socket buffers hold.
    w.running(
        "px",
        "head -c 16000000 /dev/urandom > /noise && echo done > /mark",
    );
    let journal = state.path().join("paused").join(&w.ns).join("px");

    // Without asking: running while the stream is half-read.
    let s = open_stream(&d, "/containers/px/export", 65536);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(w.ctr.task_status("px").unwrap(), TaskStatus::Running);
    drop(s);

    // pause=1: paused (and journaled) while the stream is half-read,
    // running again once the whole tar is read.
    let mut s = open_stream(&d, "/v1.41/containers/px/export?pause=1", 65536);
    assert_eq!(w.ctr.task_status("px").unwrap(), TaskStatus::Paused);
    assert!(journal.exists(), "the pause is journaled");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.len() > 16_000_000, "{}", rest.len());
    assert_eq!(
        w.ctr.task_status("px").unwrap(),
        TaskStatus::Running,
        "resumed before the stream's end"
    );
    assert!(!journal.exists(), "the journal forgets a resumed container");

    // A client that hangs up mid-stream leaves it running.
    let s = open_stream(&d, "/containers/px/export?pause=true", 65536);
    assert_eq!(w.ctr.task_status("px").unwrap(), TaskStatus::Paused);
    drop(s);
    wait_for(
        &w,
        "px",
        TaskStatus::Running,
        "not resumed after the hang-up",
    );

    // A daemon that dies mid-export: the next start resumes the container.
    let s = open_stream(&d, "/containers/px/export?pause=1", 65536);
    assert_eq!(w.ctr.task_status("px").unwrap(), TaskStatus::Paused);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let _ = d.terminate();
    drop(s);
    assert_eq!(w.ctr.task_status("px").unwrap(), TaskStatus::Paused);
    assert!(journal.exists());
    let d = daemon!(w, ["--config", cfg.to_str().unwrap()]);
    wait_for(
        &w,
        "px",
        TaskStatus::Running,
        "not resumed by the next start",
    );
    assert!(!journal.exists());
    // Still whole after all this.
    assert_eq!(w.ctr.exec("px", &["cat", "/mark"]).unwrap(), "done\n");
    // A stopped container exports with pause=1 too (nothing to pause).
    w.ctr.create(&w.image, "still", &[]).unwrap();
    let (status, body) = d.curl("GET", "/containers/still/export?pause=1", None, &[]);
    assert_eq!(status, 200, "{body}");
    w.assert_clean();
}

/// `docker image prune` of the images `docker images` lists by ID.
fn image_ids(d: &commitd_e2e::Daemon) -> std::collections::BTreeSet<String> {
    d.docker_ok(&["images", "-q", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn docker_image_prune_removes_only_unused_images() {
    let w = World::new("surface-prune");
    let d = daemon!(w);
    w.running("src", "head -c 1000000 /dev/urandom > /noise");
    let base = image_ids(&d);
    assert_eq!(base.len(), 1);
    // Untagged and unused; untagged and used by a container; tagged and
    // unused; tagged, labelled and unused.
    let loose = d.docker_ok(&["commit", "src-name"]).trim().to_string();
    w.ctr.exec("src", &["sh", "-c", "echo 2 > /two"]).unwrap();
    let used = d.docker_ok(&["commit", "src-name"]).trim().to_string();
    // The store keeps an untagged image as `moby-dangling@<manifest>`.
    let inspect = json(&d.curl("GET", &format!("/images/{used}/json"), None, &[]).1);
    let record = format!(
        "moby-dangling@{}",
        inspect["Descriptor"]["digest"].as_str().unwrap()
    );
    w.ctr.create(&record, "user", &[]).unwrap();
    w.ctr.exec("src", &["sh", "-c", "echo 3 > /three"]).unwrap();
    let tagged = d
        .docker_ok(&["commit", "src-name", "acc/tagged:1"])
        .trim()
        .to_string();
    let labelled = d
        .docker_ok(&["commit", "-c", "LABEL keep=yes", "src-name", "acc/kept:1"])
        .trim()
        .to_string();
    assert_eq!(image_ids(&d).len(), 5);

    // Bad filters, as Docker refuses them.
    let (status, body) = d.curl(
        "POST",
        "/images/prune?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        None,
        &[],
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"invalid filter 'bogus'"}"#)
    );

    // Without -a: the unused dangling image only.
    let (status, body) = d.curl("POST", "/v1.41/images/prune", None, &[]);
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(
        report["ImagesDeleted"],
        serde_json::json!([{ "Deleted": loose }]),
        "{report}"
    );
    assert!(
        report["SpaceReclaimed"].as_u64().unwrap() > 1_000_000,
        "{report}"
    );
    let left = image_ids(&d);
    assert!(!left.contains(&loose) && left.contains(&used), "{left:?}");
    // Again: nothing, as Docker says it.
    let (_, body) = d.curl("POST", "/images/prune", None, &[]);
    assert_eq!(body, r#"{"ImagesDeleted":null,"SpaceReclaimed":0}"#);

    // -a with until: every image here is younger than an hour.
    let out = d.docker_ok(&["image", "prune", "-a", "-f", "--filter", "until=1h"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert_eq!(image_ids(&d).len(), 4);
    // -a without the labelled one; the used images stay.
    let out = d.docker_ok(&["image", "prune", "-a", "-f", "--filter", "label!=keep"]);
    assert!(out.contains("untagged: acc/tagged:1"), "{out}");
    assert!(out.contains(&format!("deleted: {tagged}")), "{out}");
    let left = image_ids(&d);
    let want: std::collections::BTreeSet<String> = base
        .iter()
        .cloned()
        .chain([used.clone(), labelled.clone()])
        .collect();
    assert_eq!(left, want);
    // -a with the label: the labelled one goes too.
    let out = d.docker_ok(&["image", "prune", "-a", "-f", "--filter", "label=keep=yes"]);
    assert!(out.contains("untagged: acc/kept:1"), "{out}");
    let want: std::collections::BTreeSet<String> =
        base.iter().cloned().chain([used.clone()]).collect();
    assert_eq!(image_ids(&d), want);
    // What is used still runs.
    assert_eq!(w.run(&w.image, "echo ok"), "ok\n");
    w.ctr.run(&["containers", "rm", "user"]).unwrap();
    w.assert_clean();
}

#[test]
fn docker_import_of_an_exported_container_runs() {
    let w = World::new("surface-import");
    let d = daemon!(w);
    w.running(
        "ex",
        "echo imported > /greeting && mkdir -p /srv && head -c 500000 /dev/urandom > /srv/noise",
    );
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("ex.tar");
    d.docker_ok(&["export", "-o", tar.to_str().unwrap(), "ex-name"]);
    let images = targets(&w);

    // docker import FILE REPO:TAG with changes and a message.
    let id = d
        .docker_ok(&[
            "import",
            "-c",
            "CMD [\"cat\", \"/greeting\"]",
            "-c",
            "ENV MADE=import PATH=/bin",
            "-m",
            "from an export",
            tar.to_str().unwrap(),
            "acc/imported:1",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let inspect = json(&d.docker_ok(&["image", "inspect", "acc/imported:1"]));
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["cat", "/greeting"])
    );
    assert_eq!(
        inspect[0]["Config"]["Env"],
        serde_json::json!(["MADE=import", "PATH=/bin"])
    );
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let history = json(&d.curl("GET", "/images/acc/imported:1/history", None, &[]).1);
    assert_eq!(history[0]["Comment"], "from an export", "{history}");
    // It runs at once, with the container's files.
    assert_eq!(
        w.run("docker.io/acc/imported:1", "cat /greeting"),
        "imported\n"
    );
    let sum = |s: &str| s.split_whitespace().next().unwrap().to_string();
    assert_eq!(
        sum(&w.run("docker.io/acc/imported:1", "sha256sum /srv/noise")),
        sum(&w.ctr.exec("ex", &["sha256sum", "/srv/noise"]).unwrap())
    );
    assert_nothing_left(&w);

    // gzip, from stdin; untagged through the API: `{"status": ID}`.
    let gz = dir.path().join("ex.tar.gz");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", tar.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let (status, body) = d.curl(
        "POST",
        "/v1.41/images/create?fromSrc=-",
        Some(&format!("@{}", gz.display())),
        &["Content-Type: application/x-tar"],
    );
    assert_eq!(status, 200, "{body}");
    let untagged = json(body.trim())["status"].as_str().unwrap().to_string();
    assert!(untagged.starts_with("sha256:"), "{body}");
    // The same layer: the same image but for the config (no changes, the
    // default message).
    let history = json(
        &d.curl("GET", &format!("/images/{untagged}/history"), None, &[])
            .1,
    );
    assert_eq!(history[0]["Comment"], "Imported from -");
    let out = d.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}",
    ]);
    assert!(
        out.lines().any(|l| l == format!("{untagged} <none>")),
        "{out}"
    );

    // What cannot be imported is refused, and leaves nothing.
    let before = targets(&w);
    let snapshots = w.ctr.snapshots("overlayfs").unwrap().len();
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "not a tarball\n".repeat(100)).unwrap();
    let (ok, _, err) = d.docker(&["import", junk.to_str().unwrap(), "acc/junk:1"]);
    assert!(!ok);
    assert!(err.contains("not a tar archive"), "{err}");
    let cut = dir.path().join("cut.tar");
    let bytes = std::fs::read(&tar).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = d.docker(&["import", cut.to_str().unwrap(), "acc/cut:1"]);
    assert!(!ok, "a truncated tarball");
    assert!(!err.trim().is_empty());
    let (ok, _, err) = d.docker(&["import", "-c", "BOGUS x", tar.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("BOGUS") || err.contains("bogus"), "{err}");
    let (status, body) = d.curl(
        "POST",
        "/images/create?fromImage=busybox&tag=latest",
        None,
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(targets(&w), before);
    assert_eq!(w.ctr.snapshots("overlayfs").unwrap().len(), snapshots);
    assert_nothing_left(&w);
    assert_eq!(images.len() + 2, before.len());
}

/// A Python with docker-py and pytest: `COMMITD_TEST_PYTHON` (set by
/// scripts/test.sh), or the venv scripts/test.sh makes under target/.
fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("COMMITD_TEST_PYTHON") {
        return p.into();
    }
    let py =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    assert!(
        py.exists(),
        "no Python with docker-py: run scripts/test.sh (or set COMMITD_TEST_PYTHON)"
    );
    py
}

#[test]
fn docker_py_drives_the_routes_around_a_commit() {
    let w = World::new("surface-py");
    let d = daemon!(w);
    w.running("pyc", "echo docker-py > /made-by");
    let out = std::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/test_surface.py"))
        .env("COMMITD_SOCKET", &d.socket)
        .env("COMMITD_CONTAINER", "pyc")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docker-py tests failed:\n{text}\ndaemon log:\n{}",
        d.log_text()
    );
    assert!(text.contains("4 passed"), "{text}");
    assert_nothing_left(&w);
}

/// The runtime's mount stubs (runc's empty file for a bind-mounted
/// `/.dockerenv` the image lacks — one of the files Docker's init layer
/// holds) are no change, as the commit leaves them out; what the container
/// writes beside them is. (A bind-mounted file
/// elsewhere is the user's mount point, kept as Docker keeps it:
/// docker_parity's commit_with_host_bind_mount.)
#[test]
fn docker_diff_leaves_out_the_runtimes_mount_stubs_as_the_commit_does() {
    let w = World::new("surface-stubs");
    let d = daemon!(w);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("extra");
    std::fs::write(&host, "from the host\n").unwrap();
    w.ctr
        .run(&[
            "run",
            "-d",
            "--null-io",
            "--snapshotter",
            "overlayfs",
            "--mount",
            &format!(
                "type=bind,src={},dst=/.dockerenv,options=rbind:ro",
                host.display()
            ),
            &w.image,
            "stubbed",
            "sh",
            "-c",
            "sleep 100000",
        ])
        .unwrap();
    let upper = w.ctr.upper_dir("stubbed").unwrap();
    assert!(upper.join(".dockerenv").exists(), "runc made no stub here");
    let (status, body) = d.curl("GET", "/containers/stubbed/changes", None, &[]);
    assert_eq!((status, body.as_str()), (200, "null"));
    w.ctr
        .exec("stubbed", &["sh", "-c", "echo x > /etc/mine"])
        .unwrap();
    let (_, body) = d.curl("GET", "/containers/stubbed/changes", None, &[]);
    assert_eq!(
        sorted_changes(&json(&body)),
        [("/etc".to_string(), 0), ("/etc/mine".to_string(), 1)]
    );
    // The commit agrees: its image has /etc/mine and no /.dockerenv.
    d.docker_ok(&["commit", "stubbed", "acc/stubbed:1"]);
    assert_eq!(
        w.run(
            "docker.io/acc/stubbed:1",
            "cat /etc/mine; test -e /.dockerenv || echo none"
        ),
        "x\nnone\n"
    );
    w.assert_clean();
}

/// What one `docker image prune` printed, in names rather than IDs:
/// `untagged: NAME` as is, `deleted: ID` as the name `ids` gives the image
/// (IDs it does not know are left out when `skip_unknown`: Docker 20.10's
/// graph-driver store also lists each layer it removed as `deleted:` with
/// its chain ID, which containerd's image store — current Docker's and
/// commitd's — does not), and whether any space was reclaimed.
fn pruned_by_name(
    out: &str,
    ids: &std::collections::HashMap<String, String>,
    skip_unknown: bool,
) -> (Vec<String>, bool) {
    let mut rows = Vec::new();
    let mut reclaimed = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("untagged: ") {
            rows.push(format!("untagged {name}"));
        } else if let Some(id) = line.strip_prefix("deleted: ") {
            match ids.get(id) {
                Some(name) => rows.push(format!("deleted {name}")),
                None if skip_unknown => {}
                None => rows.push(format!("deleted unknown {id}")),
            }
        } else if let Some(space) = line.strip_prefix("Total reclaimed space: ") {
            reclaimed = Some(space.trim() != "0B");
        }
    }
    rows.sort();
    let reclaimed = reclaimed.unwrap_or_else(|| panic!("no total in {out}"));
    (rows, reclaimed)
}

/// `docker image prune` side by side with Docker's engine (a private
/// dockerd of this test's own, so no other test's images are pruned): the
/// same image set in both — the base, used by containers; an image a
/// container runs; the dangling image a re-tag leaves; unused tagged ones;
/// labelled ones; older and newer ones — then the same prunes, dangling,
/// by label, `until`, `-a`: the same names untagged, the same images
/// deleted, the same left, space reclaimed alike, the same answer shapes.
#[test]
fn docker_image_prune_removes_what_dockers_engine_removes() {
    use commitd_testkit::{Dockerd, Oracle, RunSpec, shared, unique_namespace};
    use std::collections::HashMap;
    let ns = unique_namespace("surface-prune-oracle");
    let dockerd = Dockerd::start().unwrap_or_else(|e| panic!("starting dockerd: {e}"));
    let oracle = Oracle::new(&dockerd, shared(), &ns, &diff_base(&ns))
        .unwrap_or_else(|e| panic!("preparing the base in both engines: {e}"));
    let d = commitd_e2e::Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        shared().socket(),
        &ns,
        &[],
    );
    let docker_cli = |args: &[&str]| dockerd.cli(args).unwrap();
    // Image IDs by the name this test gives them, per engine.
    let (mut docker_ids, mut our_ids) = (HashMap::new(), HashMap::new());
    let base_id = docker_cli(&["image", "inspect", "-f", "{{.Id}}", oracle.docker_base()]);
    docker_ids.insert(base_id.trim().to_string(), "base".to_string());
    our_ids.insert(base_id.trim().to_string(), "base".to_string());

    let maker = oracle.run("maker", &RunSpec::sleeping()).unwrap();
    let mut n = 0;
    let mut commit = |what: &str, repo: &str, changes: &str| {
        n += 1;
        maker.sh(&format!("echo {n} > /made")).unwrap();
        let mut q = format!("repo=prune/{repo}&tag=1");
        if !changes.is_empty() {
            q.push_str(&format!(
                "&changes={}",
                commitd_testkit::query_escape(changes)
            ));
        }
        let o = oracle.commit(&d.socket, &maker, &q, None).unwrap();
        assert_eq!((o.docker.status, o.commitd.status), (201, 201), "{o:?}");
        let id = |side: &commitd_testkit::Side| side.body["Id"].as_str().unwrap().to_string();
        docker_ids.insert(id(&o.docker), what.to_string());
        our_ids.insert(id(&o.commitd), what.to_string());
    };
    // Older: a tag moved to a newer image (the old one dangles), an unused one.
    commit("retag-old", "retag", "");
    commit("retag-new", "retag", "");
    commit("old", "old", "");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Newer: unused, labelled, and one a container runs.
    commit("unused", "unused", "");
    commit("label-keep", "keep", "LABEL keep=yes");
    commit("label-other", "other", "LABEL keep=no");
    commit("used", "used", "LABEL keep=yes");
    let _user = oracle
        .run_from(
            "user",
            "prune/used:1",
            "docker.io/prune/used:1",
            &RunSpec::sleeping(),
        )
        .unwrap();

    let left = |docker: bool| -> Vec<String> {
        let args = ["images", "--format", "{{.Repository}}:{{.Tag}}"];
        let out = if docker {
            docker_cli(&args)
        } else {
            d.docker_ok(&args)
        };
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let steps: &[(&[&str], &[&str])] = &[
        // Dangling only: the re-tag's old image.
        (&["image", "prune", "-f"], &["deleted retag-old"]),
        // -a by label: the unused labelled image, not the used one.
        (
            &["image", "prune", "-a", "-f", "--filter", "label=keep=yes"],
            &["deleted label-keep", "untagged prune/keep:1"],
        ),
        // -a until: the older unused images (the base is used).
        (
            &[
                "image",
                "prune",
                "-a",
                "-f",
                "--filter",
                &format!("until={until}"),
            ],
            &[
                "deleted old",
                "deleted retag-new",
                "untagged prune/old:1",
                "untagged prune/retag:1",
            ],
        ),
        // Nothing dangling left.
        (&["image", "prune", "-f"], &[]),
        // -a: the rest no container uses.
        (
            &["image", "prune", "-a", "-f"],
            &[
                "deleted label-other",
                "deleted unused",
                "untagged prune/other:1",
                "untagged prune/unused:1",
            ],
        ),
    ];
    for (args, want) in steps {
        let docker_out = docker_cli(args);
        let our_out = d.docker_ok(args);
        let (docker_rows, docker_reclaimed) = pruned_by_name(&docker_out, &docker_ids, true);
        let (our_rows, our_reclaimed) = pruned_by_name(&our_out, &our_ids, false);
        assert_eq!(
            docker_rows, *want,
            "Docker's own answer to {args:?}:\n{docker_out}"
        );
        assert_eq!(our_rows, *want, "commitd's answer to {args:?}:\n{our_out}");
        assert_eq!(
            (our_reclaimed, docker_reclaimed),
            (!want.is_empty(), !want.is_empty()),
            "space reclaimed by {args:?}:\nDocker: {docker_out}\ncommitd: {our_out}"
        );
        assert_eq!(left(true), left(false), "images left after {args:?}");
    }
    let remaining = left(false);
    assert!(
        remaining.contains(&"prune/used:1".to_string()),
        "{remaining:?}"
    );
    assert_eq!(
        remaining.len(),
        2,
        "the base and the used image: {remaining:?}"
    );

    // The API's shapes: nothing to prune — the same answer.
    let (docker, ours) = oracle
        .both(&d.socket, "POST", "/v1.41/images/prune", None)
        .unwrap();
    assert_eq!((ours.status, ours.json()), (docker.status, docker.json()));
    assert_eq!(
        ours.json(),
        serde_json::json!({"ImagesDeleted": null, "SpaceReclaimed": 0})
    );
    // A bad filter: the same status; the wording is current Docker's
    // (moby's api/types/filters invalidFilter), Docker 20.10 is older and
    // capitalized it.
    let (docker, ours) = oracle
        .both(
            &d.socket,
            "POST",
            "/v1.41/images/prune?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
            None,
        )
        .unwrap();
    assert_eq!(
        (docker.status, docker.json()["message"].as_str()),
        (400, Some("Invalid filter 'bogus'"))
    );
    assert_eq!(
        (ours.status, ours.json()["message"].as_str()),
        (400, Some("invalid filter 'bogus'"))
    );
    drop(_user);
    drop(maker);
    let _ = oracle.ctr().remove_all();
}
