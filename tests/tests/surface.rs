//! The rest of Docker's surface around a commit, driven by the real Docker
//! CLI against the daemon and a real containerd with runc containers:
//! `docker info`, `docker system df`, `docker ps -s`, `docker diff`,
//! `docker export`, `docker load`, `docker import`, `docker image prune`.
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
