//! `scripts/bench.sh`: commitd side by side with containerd's diff service
//! and `docker commit`, on the same change sets, in one run.
//!
//! Every peer commits a fresh container of the same base into which the
//! same change set was written (through `/proc/<pid>/root`, from files
//! generated once with a seeded PRNG); the page cache is flushed (`sync`)
//! and left warm before each timed commit, the same way for every peer.
//! Times are medians of the repetitions, measured around one API call
//! (HTTP over the unix socket for commitd and Docker, gRPC for containerd).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_testkit::grpc::Grpc;
use commitd_testkit::grpc::api::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use commitd_testkit::grpc::api::services::v1::{ApplyRequest, DiffRequest};
use commitd_testkit::{Containerd, Ctr, Dockerd, ImageBuilder, SNAPSHOTTER};

const NS: &str = "bench";
const BASE: &str = "docker.io/library/bench-base:latest";
const BIG_BASE: &str = "docker.io/library/bench-bigbase:latest";

/// A deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The change sets, generated once under `root/<name>`.
fn generate(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut sets = Vec::new();
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    sets.push(("empty", empty));

    let small = root.join("100x4k");
    std::fs::create_dir_all(small.join("small")).unwrap();
    for i in 0..100 {
        let mut b = vec![0u8; 4096];
        rng.fill(&mut b);
        std::fs::write(small.join(format!("small/f{i:03}")), b).unwrap();
    }
    sets.push(("100x4k", small.clone()));

    let mid = root.join("200m");
    std::fs::create_dir_all(mid.join("data")).unwrap();
    let words: Vec<String> = (0..4096)
        .map(|i| format!("w{}x{}", i, rng.next() % 977))
        .collect();
    let per = (200 << 20) / 2000;
    for i in 0..1000 {
        let mut b = vec![0u8; per];
        rng.fill(&mut b);
        std::fs::write(mid.join(format!("data/r{i:04}")), b).unwrap();
        let mut t = String::with_capacity(per + 16);
        while t.len() < per {
            t.push_str(&words[(rng.next() % words.len() as u64) as usize]);
            t.push(if rng.next() % 11 == 0 { '\n' } else { ' ' });
        }
        t.truncate(per);
        std::fs::write(mid.join(format!("data/t{i:04}")), t).unwrap();
    }
    sets.push(("200m", mid));

    let gig = root.join("1g");
    std::fs::create_dir_all(&gig).unwrap();
    let mut f = std::fs::File::create(gig.join("big")).unwrap();
    let mut b = vec![0u8; 1 << 20];
    for _ in 0..512 {
        rng.fill(&mut b);
        f.write_all(&b).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..512 {
        f.write_all(&zeros).unwrap();
    }
    sets.push(("1g", gig));

    sets.push(("100x4k-on-100k-base", small));

    // A node_modules or a Python env: 50,000 files of ~1 KiB in 500
    // directories; committed after `sync`, and right after being written
    // with the container's writes still dirty in the page cache.
    let many = root.join("50k");
    for d in 0..500 {
        let dir = many.join(format!("node_modules/p{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            let mut b = vec![0u8; 512 + (rng.next() % 1024) as usize];
            rng.fill(&mut b);
            std::fs::write(dir.join(format!("f{i:03}.js")), b).unwrap();
        }
    }
    sets.push(("50k-in-500-dirs", many.clone()));
    sets.push(("50k-in-500-dirs-unsynced", many));
    sets
}

/// Copies a change set into a running container's root filesystem, then
/// flushes the page cache unless `set` is an `-unsynced` set (committed
/// with its data still dirty, as right after the container wrote it).
fn write_changes(pid: u32, name: &str, set: &Path) {
    let root = format!("/proc/{pid}/root/");
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", set.display()))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "copying {} into {root}", set.display());
    if !name.ends_with("-unsynced") {
        Command::new("sync").status().unwrap();
    }
}

/// A minimal HTTP/1.1 request over a unix socket: (status, body).
fn http(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Decodes a chunked body if it is one (Docker answers chunked).
fn body_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body.trim())
        .or_else(|_| {
            let joined: String = body
                .lines()
                .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()))
                .collect();
            serde_json::from_str(&joined)
        })
        .unwrap_or(serde_json::Value::Null)
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, containerd: &Path, dir: &Path, name: &str, config: &str) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(bin)
            .args(["--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .arg("--containerd")
            .arg(containerd)
            .args(["--namespace", NS])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "commitd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket }
    }

    fn status(&self, field: &str) -> u64 {
        commitd_e2e::proc_status_kib(self.child.id(), field).unwrap_or(0)
    }

    fn paused_sum(&self) -> f64 {
        let (_, m) = http(&self.socket, "GET", "/metrics");
        m.lines()
            .find(|l| l.starts_with("commitd_paused_seconds_sum"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker …` against the private engine; the bench stops on a failure.
fn dcli(docker: &Dockerd, args: &[&str]) -> String {
    docker
        .cli(args)
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// One peer's result on one change set.
#[derive(Default, Clone)]
struct Cell {
    secs: f64,
    layer_bytes: u64,
    paused: f64,
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let out_dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "bench".into()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let work = tempfile::Builder::new()
        .prefix("commitd-bench-")
        .tempdir()
        .unwrap();
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let commitd = exe_dir.join("commitd-under-test");
    assert!(
        commitd.exists(),
        "{} is missing: build the commitd-e2e binaries (release)",
        commitd.display()
    );

    eprintln!("bench: generating change sets…");
    let sets = generate(&work.path().join("sets"));
    eprintln!(
        "bench: starting containerd, importing the bases (the 100,000-file base takes a while)…"
    );
    let ctrd = Containerd::start().unwrap();
    let ctr = ctrd.ctr(NS);
    ImageBuilder::busybox().import(&ctrd, NS, BASE).unwrap();
    ImageBuilder::busybox()
        .layer()
        .small_files("/base", 100_000, 16)
        .import(&ctrd, NS, BIG_BASE)
        .unwrap();

    let fast = Daemon::start(
        &commitd,
        ctrd.socket(),
        work.path(),
        "fast",
        "[commit]\nfast_path = true\n",
    );
    let slow = Daemon::start(
        &commitd,
        ctrd.socket(),
        work.path(),
        "service",
        "[commit]\nfast_path = false\n",
    );
    // Docker's durability (no fsync of layer data), for the like-for-like comparison.
    let nosync = Daemon::start(
        &commitd,
        ctrd.socket(),
        work.path(),
        "nosync",
        "[commit]\nsync_layers = false\n",
    );
    eprintln!("bench: starting Docker's engine…");
    let docker = Dockerd::start().unwrap_or_else(|e| {
        panic!("starting Docker's engine (Debian's docker.io, scripts/deps.sh --bench): {e}")
    });
    // The same bases, through commitd's docker save and Docker's load.
    for base in [BASE, BIG_BASE] {
        let tar = work.path().join("base.tar");
        let st = Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&fast.socket)
            .arg(format!(
                "http://d/images/{}/get",
                base.trim_start_matches("docker.io/library/")
            ))
            .arg("-o")
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success());
        dcli(&docker, &["load", "-i", tar.to_str().unwrap()]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let grpc = Grpc::lazy(ctrd.socket(), NS);

    let peers = [
        "commitd gzip",
        "commitd none",
        "commitd zstd",
        "commitd none, no fsync",
        "commitd diff-service gzip",
        "containerd diff gzip",
        "containerd diff tar",
        "containerd apply gzip",
        "docker commit",
        "tar | zstd -T0",
    ];
    let mut table: BTreeMap<(usize, &str), Cell> = BTreeMap::new();
    let mut n = 0usize;
    let mut peak_rss_kib = 0u64;
    for (si, (set, files)) in sets.iter().enumerate() {
        let base = if set.ends_with("base") {
            BIG_BASE
        } else {
            BASE
        };
        let docker_base = base.trim_start_matches("docker.io/library/");
        let reps = if *set == "1g" { reps.min(3) } else { reps };
        eprintln!("bench: {set} ({reps} repetitions)…");
        let mut samples: HashMap<&str, (Vec<f64>, u64, Vec<f64>)> = HashMap::new();
        if *set == "1g" {
            // VmHWM from here on is the 1 GiB commits' peak.
            std::fs::write(format!("/proc/{}/clear_refs", fast.child.id()), "5").unwrap();
        }
        for _ in 0..reps {
            // commitd, over its API.
            for (peer, daemon, comp) in [
                ("commitd gzip", &fast, "gzip"),
                ("commitd none", &fast, "none"),
                ("commitd zstd", &fast, "zstd"),
                ("commitd none, no fsync", &nosync, "none"),
                ("commitd diff-service gzip", &slow, "gzip"),
            ] {
                n += 1;
                let id = format!("c{n}");
                ctr.run_detached(base, &id, &["sleep", "100000"], &[])
                    .unwrap();
                write_changes(ctr.task_pid(&id).unwrap().unwrap(), set, files);
                std::thread::sleep(Duration::from_millis(300));
                let paused_before = daemon.paused_sum();
                let t = Instant::now();
                let (code, body) = http(
                    &daemon.socket,
                    "POST",
                    &format!("/commit?container={id}&repo=out&tag={id}&compression={comp}"),
                );
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(code, 201, "{peer}: {body}");
                let paused = daemon.paused_sum() - paused_before;
                let (_, img) = http(&daemon.socket, "GET", &format!("/images/out:{id}/json"));
                let layer = layer_size(&ctr, &body_json(&img));
                let e = samples.entry(peer).or_default();
                e.0.push(secs);
                e.1 = layer;
                e.2.push(paused);
                cleanup_ctr(&ctr, &id, Some(&format!("docker.io/library/out:{id}")));
            }
            // containerd's diff service itself, over gRPC.
            n += 1;
            let id = format!("c{n}");
            ctr.run_detached(base, &id, &["sleep", "100000"], &[])
                .unwrap();
            write_changes(ctr.task_pid(&id).unwrap().unwrap(), set, files);
            std::thread::sleep(Duration::from_millis(300));
            let (gz, gz_size, tar, tar_size, apply) = rt.block_on(containerd_peer(&grpc, &id));
            for (peer, secs, size) in [
                ("containerd diff gzip", gz, gz_size),
                ("containerd diff tar", tar, tar_size),
                ("containerd apply gzip", apply, 0),
            ] {
                let e = samples.entry(peer).or_default();
                e.0.push(secs);
                e.1 = size;
            }
            // tar | zstd -T0 over the same upper directory (a floor for zstd).
            let upper = ctr.upper_dir(&id).unwrap();
            let t = Instant::now();
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "tar -C {} -cf - . | zstd -3 -T0 -q > /dev/null",
                    upper.display()
                ))
                .status()
                .unwrap();
            assert!(st.success());
            samples
                .entry("tar | zstd -T0")
                .or_default()
                .0
                .push(t.elapsed().as_secs_f64());
            cleanup_ctr(&ctr, &id, None);
            let _ = ctr.run(&["leases", "ls"]);

            // docker commit, over Docker's API.
            n += 1;
            let name = format!("d{n}");
            dcli(
                &docker,
                &[
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--name",
                    &name,
                    docker_base,
                    "sleep",
                    "100000",
                ],
            );
            let pid: u32 = dcli(&docker, &["inspect", "-f", "{{.State.Pid}}", &name])
                .trim()
                .parse()
                .unwrap();
            write_changes(pid, set, files);
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            let (code, body) = http(
                docker.socket(),
                "POST",
                &format!("/v1.41/commit?container={name}&repo=out&tag={name}"),
            );
            let secs = t.elapsed().as_secs_f64();
            assert!(code == 201, "docker commit: {code} {body}");
            let sizes: Vec<u64> = dcli(
                &docker,
                &[
                    "image",
                    "inspect",
                    "-f",
                    "{{.Size}}",
                    docker_base,
                    &format!("out:{name}"),
                ],
            )
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
            let e = samples.entry("docker commit").or_default();
            e.0.push(secs);
            e.1 = sizes
                .get(1)
                .copied()
                .unwrap_or(0)
                .saturating_sub(sizes.first().copied().unwrap_or(0));
            dcli(&docker, &["rm", "-f", &name]);
            dcli(&docker, &["rmi", &format!("out:{name}")]);
        }
        if *set == "1g" {
            peak_rss_kib = fast.status("VmHWM:");
        }
        for (peer, (mut secs, size, mut paused)) in samples {
            table.insert(
                (si, peer),
                Cell {
                    secs: median(&mut secs),
                    layer_bytes: size,
                    paused: if paused.is_empty() {
                        0.0
                    } else {
                        median(&mut paused)
                    },
                },
            );
        }
    }
    drop(docker);
    drop(fast);
    drop(slow);
    drop(nosync);

    let report = render(
        &sets.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        &peers,
        &table,
        peak_rss_kib,
        reps,
    );
    println!("{report}");
    std::fs::write(out_dir.join("results.md"), &report).unwrap();
    std::fs::write(
        out_dir.join("results.svg"),
        svg(
            &sets.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            &peers,
            &table,
        ),
    )
    .unwrap();
    eprintln!(
        "bench: wrote {}/results.md and results.svg",
        out_dir.display()
    );
}

/// The size of an image's last layer, from its manifest in the content store.
fn layer_size(ctr: &Ctr, inspect: &serde_json::Value) -> u64 {
    let Some(digest) = inspect["Descriptor"]["digest"].as_str() else {
        return 0;
    };
    let Ok(m) = ctr.run(&["content", "get", digest]) else {
        return 0;
    };
    let m: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    // An empty commit adds no layer: report 0, not the base's.
    let history_len = inspect["RootFS"]["Layers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    if layers.len() < 2 && history_len < 2 {
        return 0;
    }
    layers.last().and_then(|l| l["size"].as_u64()).unwrap_or(0)
}

fn cleanup_ctr(ctr: &Ctr, id: &str, image: Option<&str>) {
    let _ = ctr.delete_container(id);
    if let Some(img) = image {
        let _ = ctr.run(&["images", "rm", img]);
    }
}

/// containerd's own diff (gzip, then plain tar) and apply, timed around the gRPC calls.
async fn containerd_peer(c: &Grpc, id: &str) -> (f64, u64, f64, u64, f64) {
    use commitd_testkit::grpc::api::services::v1::{CreateRequest, DeleteRequest};
    // Everything under a lease, as a real client would (else the collector
    // may take the diff before it is applied).
    let lease = format!("bench-{id}");
    c.leases()
        .create(c.request(CreateRequest {
            id: lease.clone(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap();
    let info = c
        .snapshots()
        .stat(c.request(
            commitd_testkit::grpc::api::services::v1::snapshots::StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let upper = c
        .snapshots()
        .mounts(c.request(
            commitd_testkit::grpc::api::services::v1::snapshots::MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let view = format!("{id}-bench-view");
    let lower = c
        .snapshots()
        .view(c.leased(
            ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: view.clone(),
                parent: info.parent.clone(),
                labels: HashMap::new(),
            },
            &lease,
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let diff = |media: &str| {
        c.leased(
            DiffRequest {
                left: lower.clone(),
                right: upper.clone(),
                media_type: media.into(),
                r#ref: format!("bench-{id}-{media}"),
                labels: HashMap::new(),
                source_date_epoch: None,
            },
            &lease,
        )
    };
    let t = Instant::now();
    let gz = c
        .diff()
        .diff(diff("application/vnd.oci.image.layer.v1.tar+gzip"))
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    let gz_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tar = c
        .diff()
        .diff(diff("application/vnd.oci.image.layer.v1.tar"))
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    let tar_secs = t.elapsed().as_secs_f64();
    let key = format!("{id}-bench-apply");
    let mounts = c
        .snapshots()
        .prepare(c.leased(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: info.parent.clone(),
                labels: HashMap::new(),
            },
            &lease,
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let t = Instant::now();
    c.diff()
        .apply(c.leased(
            ApplyRequest {
                diff: Some(gz.clone()),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
            &lease,
        ))
        .await
        .unwrap();
    let apply_secs = t.elapsed().as_secs_f64();
    for k in [key, view] {
        let _ = c
            .snapshots()
            .remove(c.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: k,
            }))
            .await;
    }
    for d in [&gz, &tar] {
        let _ = c
            .content()
            .delete(c.request(
                commitd_testkit::grpc::api::services::v1::DeleteContentRequest {
                    digest: d.digest.clone(),
                },
            ))
            .await;
    }
    let _ = c
        .leases()
        .delete(c.request(DeleteRequest {
            id: lease,
            sync: false,
        }))
        .await;
    (
        gz_secs,
        u64::try_from(gz.size).unwrap_or(0),
        tar_secs,
        u64::try_from(tar.size).unwrap_or(0),
        apply_secs,
    )
}

fn mib(b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    }
}

fn render(
    sets: &[&str],
    peers: &[&str],
    t: &BTreeMap<(usize, &str), Cell>,
    peak_kib: u64,
    reps: usize,
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    s.push_str(&format!(
        "# commitd benchmark\n\nMedian wall seconds of one commit ({reps} runs, 3 for 1 GiB), {cores} cores, same change sets for every peer.\n\n"
    ));
    s.push_str("| change set |");
    for p in peers {
        // A `|` in a peer's name would split its column.
        s.push_str(&format!(" {} |", p.replace('|', "\\|")));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(peers.len()));
    s.push('\n');
    for (i, set) in sets.iter().enumerate() {
        s.push_str(&format!("| {set} |"));
        for p in peers {
            match t.get(&(i, *p)) {
                Some(c) => s.push_str(&format!(" {:.3} |", c.secs)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push_str("\nLayer sizes and commitd's paused time (median):\n\n| change set | commitd gzip | commitd zstd | commitd none | containerd gzip | docker (stored uncompressed) | paused (commitd gzip) |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (i, set) in sets.iter().enumerate() {
        let g = |p: &str| t.get(&(i, p)).cloned().unwrap_or_default();
        s.push_str(&format!(
            "| {set} | {} | {} | {} | {} | {} | {:.3} s |\n",
            mib(g("commitd gzip").layer_bytes),
            mib(g("commitd zstd").layer_bytes),
            mib(g("commitd none").layer_bytes),
            mib(g("containerd diff gzip").layer_bytes),
            mib(g("docker commit").layer_bytes),
            g("commitd gzip").paused
        ));
    }
    let get = |set: &str, p: &str| {
        sets.iter()
            .position(|s| *s == set)
            .and_then(|i| t.get(&(i, p)))
            .map(|c| c.secs)
            .unwrap_or(f64::NAN)
    };
    s.push_str("\nRatios (peer ÷ commitd, higher is better for commitd) and targets:\n\n");
    let mut check = |name: &str, ok: bool, detail: String| {
        s.push_str(&format!(
            "- {} {name}: {detail}\n",
            if ok { "PASS" } else { "FAIL" }
        ));
    };
    let r = get("200m", "containerd diff gzip") / get("200m", "commitd gzip");
    check(
        "200 MiB set ≥ 4× faster than containerd's diff service (gzip)",
        r >= 4.0,
        format!("{r:.1}×"),
    );
    for set in ["200m", "1g"] {
        // Docker syncs no layer data: compare at the same durability, and
        // show the fsynced default beside it.
        let r = get(set, "docker commit") / get(set, "commitd none, no fsync");
        let durable = get(set, "docker commit") / get(set, "commitd none");
        check(
            &format!("{set}: compression=none no slower than docker commit (both without fsync)"),
            r >= 1.0,
            format!("{r:.2}× (with commitd's default fsync of the layer: {durable:.2}×)"),
        );
    }
    let r = get("empty", "commitd gzip") / get("empty", "docker commit");
    check(
        "empty commit ≤ half of Docker's",
        r <= 0.5,
        format!(
            "{:.3} s vs {:.3} s ({r:.2})",
            get("empty", "commitd gzip"),
            get("empty", "docker commit")
        ),
    );
    let r = get("100x4k-on-100k-base", "commitd gzip") / get("100x4k", "commitd gzip");
    check(
        "100 × 4 KiB on the 100,000-file base within 2× of the tiny base",
        r <= 2.0,
        format!("{r:.2}×"),
    );
    let r = get("200m", "commitd zstd") / get("200m", "tar | zstd -T0");
    check(
        "zstd commit of 200 MiB within 2× of tar | zstd -T0",
        r <= 2.0,
        format!("{r:.2}×"),
    );
    let mib_peak = peak_kib as f64 / 1024.0;
    check(
        "peak RSS under 64 MiB during the 1 GiB commits",
        mib_peak < 64.0,
        format!("{mib_peak:.1} MiB"),
    );
    s
}

/// A grouped bar chart (log scale) of the medians.
fn svg(sets: &[&str], peers: &[&str], t: &BTreeMap<(usize, &str), Cell>) -> String {
    let shown: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| !p.starts_with("tar |"))
        .collect();
    let colors = [
        "#1b7837", "#5aae61", "#a6dba0", "#762a83", "#c2a5cf", "#e7d4e8", "#9970ab", "#2166ac",
        "#999999",
    ];
    let (w, h, left, top, bottom) = (980.0, 420.0, 60.0, 30.0, 90.0);
    let group = (w - left - 20.0) / sets.len() as f64;
    let bar = group * 0.8 / shown.len() as f64;
    let (lo, hi) = (0.001f64.log10(), 100f64.log10());
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v.max(0.001).log10() - lo) / (hi - lo));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    s.push_str(&format!("<text x=\"{left}\" y=\"18\" font-size=\"13\">Median seconds per commit (log scale; lower is better)</text>\n"));
    for tick in [0.001, 0.01, 0.1, 1.0, 10.0, 100.0] {
        let ty = y(tick);
        s.push_str(&format!("<line x1=\"{left}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick}</text>\n", w - 20.0, left - 4.0, ty + 4.0));
    }
    for (i, set) in sets.iter().enumerate() {
        let gx = left + group * i as f64 + group * 0.1;
        for (j, p) in shown.iter().enumerate() {
            if let Some(c) = t.get(&(i, *p)) {
                let x = gx + bar * j as f64;
                let yy = y(c.secs);
                s.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{p}: {:.3} s</title></rect>\n",
                    bar * 0.9,
                    (h - bottom) - yy,
                    colors[j % colors.len()],
                    c.secs
                ));
            }
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{set}</text>\n",
            gx + group * 0.4,
            h - bottom + 16.0
        ));
    }
    for (j, p) in shown.iter().enumerate() {
        let lx = left + (j % 4) as f64 * 220.0;
        let ly = h - 45.0 + (j / 4) as f64 * 16.0;
        s.push_str(&format!("<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\">{p}</text>\n", ly - 9.0, colors[j % colors.len()], lx + 14.0, ly));
    }
    s.push_str("</svg>\n");
    s
}
