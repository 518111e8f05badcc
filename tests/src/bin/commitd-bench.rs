//! `scripts/bench.sh`: commitd side by side with containerd's diff service
//! and `docker commit`, on the same change sets, in one run.
//!
//! Every peer commits a fresh container of the same base into which the
//! same change set was written, from files generated once with a seeded
//! PRNG (the 10 GiB set excepted: see [`Files::Huge`]). Three ways of
//! writing it, one per row:
//! - from outside (`cp -a` through `/proc/<pid>/root`), then `sync`, and
//!   the page cache left warm for 300 ms: the clean case;
//! - by the container's own process (`busybox cp -a` from a read-only bind
//!   mount of the set, `…-by-container` rows), committed the moment it
//!   exits, unsynced: its pages still dirty, as right after a real job;
//! - on a loop-mounted XFS with reflinks (`…-on-xfs` rows): a second
//!   containerd rooted there, written by the container's own process.
//!
//! Times are medians of the repetitions, measured around one API call
//! (HTTP over the unix socket for commitd and Docker, gRPC for containerd).
//! `BENCH_SETS=name,name` runs only those rows; huge rows run once and
//! leave out the slowest peers, and say so in the report. The row
//! `200m-commit-push` (commit + push to a local registry beside `docker
//! commit` + `docker push`) has a section of its own.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_testkit::grpc::Grpc;
use commitd_testkit::grpc::api::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use commitd_testkit::grpc::api::services::v1::{ApplyRequest, DiffRequest};
use commitd_testkit::{Containerd, Ctr, Dockerd, ImageBuilder, SNAPSHOTTER};

/// `BENCH_NAMESPACE` (default `bench`): runc keeps its containers' state
/// by namespace under one root, so benchmarks run side by side on one
/// machine need namespaces of their own.
static NS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("BENCH_NAMESPACE").unwrap_or_else(|_| "bench".into())
});
const BASE: &str = "docker.io/library/bench-base:latest";
const BIG_BASE: &str = "docker.io/library/bench-bigbase:latest";
const HUGE_BASE: &str = "docker.io/library/bench-1m-base:latest";

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

/// The files of the change sets, each generated once under `root` when a
/// row first needs it (seeded: the same bytes every run).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Files {
    Empty,
    /// 100 files of 4 KiB.
    Small,
    /// One file of 4 KiB.
    One4k,
    /// 2,000 files, 200 MiB, half random, half text.
    Mid,
    /// One 1 GiB file: 512 MiB random, 512 MiB zeros.
    Gig,
    /// 50,000 files of ~1 KiB in 500 directories (a node_modules).
    Many,
    /// 10 GiB in 5,000 files, half random, half text — made by the
    /// container itself (`make.sh` in the set: random files from
    /// `/dev/urandom`, text files as [`Files::Mid`]'s, slices of one seeded
    /// pool), so the set takes 8 MiB on the host instead of 10 GiB of disk
    /// and a minute or two of writing before the row.
    Huge,
}

/// Where a row's change set is written from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writer {
    /// `cp -a` into `/proc/<pid>/root` from outside; `sync` after it if asked.
    Outside { sync: bool },
    /// The container's own `busybox cp -a` from a read-only bind mount, and
    /// the commit the moment it exits.
    Container,
}

/// The base image a row's containers run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Base {
    Busybox,
    /// 100,000 files of 16 bytes.
    Files100k,
    /// 1,000,000 files of 16 bytes in 1,000 directories.
    Files1m,
}

impl Base {
    fn image(self) -> &'static str {
        match self {
            Base::Busybox => BASE,
            Base::Files100k => BIG_BASE,
            Base::Files1m => HUGE_BASE,
        }
    }
}

/// One row of the report.
struct Row {
    name: &'static str,
    files: Files,
    writer: Writer,
    base: Base,
    /// On the loop-mounted XFS containerd.
    xfs: bool,
    /// Repetitions at most (BENCH_REPS lowers it).
    reps: usize,
    /// The peers run; the others are left out for time (said in the report).
    peers: &'static [&'static str],
}

const ALL_PEERS: &[&str] = &[
    "commitd gzip",
    "commitd none",
    "commitd zstd",
    "commitd none, no fsync",
    "commitd diff-service gzip",
    "containerd diff gzip",
    "containerd diff tar",
    "containerd apply gzip",
    "containerd commit path",
    "docker commit",
    "tar | zstd -T0",
];
/// What every row runs: what the targets compare, and commitd without
/// fsync, to set beside `docker commit` (which syncs nothing) like for like.
const CORE_PEERS: &[&str] = &[
    "commitd gzip",
    "commitd none",
    "commitd none, no fsync",
    "containerd diff gzip",
    "containerd apply gzip",
    "docker commit",
];
/// Rows too big for containerd's own path in a 25-minute run (Compare
/// alone ran ~22 s per GiB here, Compare + Apply ~34 s: issue 15).
const HUGE_PEERS: &[&str] = &["commitd gzip", "commitd none", "docker commit"];
/// The 1,000,000-file base: loading it into Docker too would cost as
/// much again as importing it into containerd (minutes).
const ONE_M_PEERS: &[&str] = &[
    "commitd gzip",
    "commitd none",
    "containerd diff gzip",
    "containerd apply gzip",
];
/// No Docker engine on the XFS root.
const XFS_PEERS: &[&str] = &[
    "commitd gzip",
    "commitd none",
    "containerd diff gzip",
    "containerd apply gzip",
];

/// Commit + push of the 200 MiB set to a local registry, beside `docker
/// commit` + `docker push` (its own section: tests/src/bench_push.rs).
const PUSH_ROW: &str = "200m-commit-push";
/// The lineage rows (issue 14: incremental and squash=new; their own
/// section: tests/src/bench_lineage.rs).
const LINEAGE_ROWS: [&str; 2] = commitd_e2e::bench_lineage::ROWS;

fn rows() -> Vec<Row> {
    use {Base::*, Files::*, Writer::*};
    let synced = Outside { sync: true };
    let row = |name, files, writer, base, reps, peers| Row {
        name,
        files,
        writer,
        base,
        xfs: false,
        reps,
        peers,
    };
    vec![
        // Commits of a few milliseconds: one slow sample in three moved the
        // median by half (empty, gzip: 0.012 s against 0.008 for none).
        row("empty", Empty, synced, Busybox, 7, ALL_PEERS),
        row("100x4k", Small, synced, Busybox, 7, ALL_PEERS),
        row("200m", Mid, synced, Busybox, 3, ALL_PEERS),
        row("200m-by-container", Mid, Container, Busybox, 3, CORE_PEERS),
        row("1g", Gig, synced, Busybox, 2, ALL_PEERS),
        row("1g-by-container", Gig, Container, Busybox, 1, CORE_PEERS),
        row(
            "100x4k-on-100k-base",
            Small,
            synced,
            Files100k,
            3,
            ALL_PEERS,
        ),
        row("4k-on-1m-base", One4k, synced, Files1m, 1, ONE_M_PEERS),
        row("50k-in-500-dirs", Many, synced, Busybox, 3, CORE_PEERS),
        row(
            "50k-in-500-dirs-by-container",
            Many,
            Container,
            Busybox,
            2,
            CORE_PEERS,
        ),
        row(
            "10g-5000-files-by-container",
            Huge,
            Container,
            Busybox,
            1,
            HUGE_PEERS,
        ),
        Row {
            xfs: true,
            ..row("200m-on-xfs", Mid, Container, Busybox, 2, XFS_PEERS)
        },
        Row {
            xfs: true,
            ..row("1g-on-xfs", Gig, Container, Busybox, 1, XFS_PEERS)
        },
    ]
}

/// The directory of `files` under `root`, generated if it is not there.
fn generate(root: &Path, files: Files) -> PathBuf {
    let dir = root.join(format!("{files:?}").to_lowercase());
    if dir.exists() {
        return dir;
    }
    let t = Instant::now();
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(0x5eed_c0ff_ee00_0001 ^ files as u64);
    // Text-like bytes (gzip takes them to about a third), sliced from one
    // pool: cheap to make in any amount.
    let text = |rng: &mut Rng, len: usize| {
        let words: Vec<String> = (0..4096)
            .map(|i| format!("w{}x{}", i, rng.next() % 977))
            .collect();
        let mut t = String::with_capacity(len + 16);
        while t.len() < len {
            t.push_str(&words[(rng.next() % words.len() as u64) as usize]);
            t.push(if rng.next() % 11 == 0 { '\n' } else { ' ' });
        }
        t.truncate(len);
        t.into_bytes()
    };
    match files {
        Files::Empty => {}
        Files::Small | Files::One4k => {
            std::fs::create_dir_all(dir.join("small")).unwrap();
            let n = if files == Files::Small { 100 } else { 1 };
            for i in 0..n {
                let mut b = vec![0u8; 4096];
                rng.fill(&mut b);
                std::fs::write(dir.join(format!("small/f{i:03}")), b).unwrap();
            }
        }
        Files::Huge => {
            let (count, per) = (5000, (10usize << 30) / 5000);
            // The pool twice: a slice from any place in the first copy is
            // what wrapping around the pool gives (as Mid's text files).
            let pool = text(&mut rng, 4 << 20);
            std::fs::write(dir.join("text"), [&pool[..], &pool[..]].concat()).unwrap();
            let mut sh = String::from("set -e\nbusybox mkdir -p /data\n");
            for i in 0..count / 2 {
                let at = rng.next() % pool.len() as u64;
                sh.push_str(&format!(
                    "busybox head -c {per} /dev/urandom > /data/r{i:04}\n\
                     busybox tail -c +{} /src/text | busybox head -c {per} > /data/t{i:04}\n",
                    at + 1
                ));
            }
            std::fs::write(dir.join("make.sh"), sh).unwrap();
        }
        Files::Mid => {
            let (count, per) = (2000, (200 << 20) / 2000);
            std::fs::create_dir_all(dir.join("data")).unwrap();
            let pool = text(&mut rng, 4 << 20);
            let mut b = vec![0u8; per];
            for i in 0..count / 2 {
                rng.fill(&mut b);
                std::fs::write(dir.join(format!("data/r{i:04}")), &b).unwrap();
                // Text from a random place in the pool, wrapping around.
                let mut at = (rng.next() % pool.len() as u64) as usize;
                let mut f = std::fs::File::create(dir.join(format!("data/t{i:04}"))).unwrap();
                let mut left = per;
                while left > 0 {
                    let n = left.min(pool.len() - at);
                    f.write_all(&pool[at..at + n]).unwrap();
                    left -= n;
                    at = 0;
                }
            }
        }
        Files::Gig => {
            let mut f = std::fs::File::create(dir.join("big")).unwrap();
            let mut b = vec![0u8; 1 << 20];
            for _ in 0..512 {
                rng.fill(&mut b);
                f.write_all(&b).unwrap();
            }
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..512 {
                f.write_all(&zeros).unwrap();
            }
        }
        Files::Many => {
            for d in 0..500 {
                let sub = dir.join(format!("node_modules/p{d:03}"));
                std::fs::create_dir_all(&sub).unwrap();
                for i in 0..100 {
                    let mut b = vec![0u8; 512 + (rng.next() % 1024) as usize];
                    rng.fill(&mut b);
                    std::fs::write(sub.join(format!("f{i:03}.js")), b).unwrap();
                }
            }
        }
    }
    eprintln!(
        "bench: generated {files:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    dir
}

/// Writes a change set into a running container from outside, through
/// `/proc/<pid>/root`, then flushes the page cache if asked.
fn write_from_outside(pid: u32, set: &Path, sync: bool) {
    let root = format!("/proc/{pid}/root/");
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", set.display()))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "copying {} into {root}", set.display());
    if sync {
        Command::new("sync").status().unwrap();
    }
}

/// Where a `Writer::Container` row's set is mounted in the container.
const SRC: &str = "/src";
/// The container's own process copying its set in.
const CP_IN: &[&str] = &["/bin/busybox", "cp", "-a", "/src/.", "/"];
/// The container's own process making the 10 GiB set ([`Files::Huge`]).
const MAKE_IN: &[&str] = &["/bin/busybox", "sh", "/src/make.sh"];

/// What a `Writer::Container` row's container runs to write its set.
fn write_in(files: Files) -> &'static [&'static str] {
    if files == Files::Huge { MAKE_IN } else { CP_IN }
}

/// Starts a container of `base` (with the set mounted read-only at
/// [`SRC`] if given), for commitd or containerd.
fn start_ctr(ctr: &Ctr, base: &str, id: &str, mount: Option<&Path>) {
    let mut c = ctr.command();
    c.args(["run", "-d", "--null-io", "--snapshotter", SNAPSHOTTER]);
    if let Some(m) = mount {
        c.arg("--mount").arg(format!(
            "type=bind,src={},dst={SRC},options=rbind:ro",
            m.display()
        ));
    }
    c.args([base, id, "sleep", "100000"]);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "ctr run {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a row's change set into a container started by [`start_ctr`].
fn write_ctr(ctr: &Ctr, id: &str, row: &Row, set: &Path) {
    match row.writer {
        Writer::Outside { sync } => {
            write_from_outside(ctr.task_pid(id).unwrap().unwrap(), set, sync);
            std::thread::sleep(Duration::from_millis(300));
        }
        Writer::Container => {
            ctr.exec(id, write_in(row.files)).unwrap();
        }
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
        // BENCH_LOG=FILTER: the daemons log at that level into
        // /tmp/commitd-bench-logs, kept after the run.
        let log = std::env::var("BENCH_LOG").ok();
        let log_dir = match log {
            Some(_) => PathBuf::from("/tmp/commitd-bench-logs"),
            None => dir.to_path_buf(),
        };
        std::fs::create_dir_all(&log_dir).unwrap();
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(bin)
            .args(["--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .arg("--containerd")
            .arg(containerd)
            .args(["--namespace", NS.as_str()])
            .env("RUST_LOG", log.as_deref().unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap())
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

    /// Starts its peak resident memory (VmHWM) over from what it holds now.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
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

/// A filesystem made for the run on a sparse file, on a loop device doing
/// direct I/O and mounted with `discard` (what is deleted in it is given
/// back to the host); unmounted, detached and removed when dropped.
///
/// Direct I/O makes the loop device behave as a disk: without it the
/// backing file's pages are a second page cache, and a flush of the loop
/// device (what any `fsync` in the filesystem ends with) is an `fsync` of
/// the whole backing file — the `fdatasync` of one layer blob wrote back
/// every file the container had just written too (1g-by-container,
/// compression=none: 5.2 s against 2.9 s with gzip).
struct LoopFs {
    mnt: PathBuf,
    img: PathBuf,
    dev: String,
}

impl LoopFs {
    /// `mkfs` (program and options) on a sparse `size`-byte file in `work`,
    /// mounted at `/tmp/cb<name>-<pid>` (short: sockets live below it).
    fn mount(work: &Path, name: &str, size: u64, mkfs: &[&str]) -> LoopFs {
        let img = work.join(format!("{name}.img"));
        let mnt = PathBuf::from(format!("/tmp/cb{name}-{}", std::process::id()));
        std::fs::create_dir_all(&mnt).unwrap();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        // Runs a command that must succeed; its stdout.
        let run = |c: &mut Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&img));
        let dev = run(Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&img));
        let dev = String::from_utf8(dev).unwrap().trim().to_string();
        let me = LoopFs { mnt, img, dev };
        let dio = format!("/sys/block/{}/loop/dio", me.dev.trim_start_matches("/dev/"));
        assert_eq!(
            std::fs::read_to_string(&dio).unwrap_or_default().trim(),
            "1",
            "{dio}: the loop device does direct I/O"
        );
        run(Command::new("mount")
            .args(["-o", "discard", &me.dev])
            .arg(&me.mnt));
        me
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.mnt).status();
        if !st.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_file(&self.img);
    }
}

/// `BENCH_FS=tmpdir` runs the ext4 rows' containerd and Docker's engine
/// where `$TMPDIR` is, as before; by default they run on an ext4 made for
/// the run with `mkfs.ext4`'s defaults. This machine's root is an ext4
/// without a journal, where allocating an inode scans past every inode
/// freed in the last minutes (`recently_deleted`, checked only without a
/// journal): after the churn of earlier rows, `cp -a` of the 50,000-file
/// set took 18–21 s there against 2.4–3.0 s on a fresh journaled ext4, for
/// every peer and by how much depended on what was deleted just before.
fn own_ext4() -> bool {
    std::env::var("BENCH_FS").map_or(true, |v| v != "tmpdir")
}

/// A containerd with commitd daemons in front of it.
struct Node {
    ctrd: Containerd,
    ctr: Ctr,
    grpc: Grpc,
    fast: Daemon,
    slow: Daemon,
    nosync: Daemon,
}

impl Node {
    fn start(commitd: &Path, ctrd: Containerd, dir: &Path, tag: &str) -> Node {
        let ctr = ctrd.ctr(&NS);
        let grpc = Grpc::lazy(ctrd.socket(), &NS);
        let fast = Daemon::start(
            commitd,
            ctrd.socket(),
            dir,
            &format!("fast{tag}"),
            "[commit]\nfast_path = true\n",
        );
        let slow = Daemon::start(
            commitd,
            ctrd.socket(),
            dir,
            &format!("service{tag}"),
            "[commit]\nfast_path = false\n",
        );
        // Docker's durability (no fsync of layer data), for the like-for-like comparison.
        let nosync = Daemon::start(
            commitd,
            ctrd.socket(),
            dir,
            &format!("nosync{tag}"),
            "[commit]\nsync_layers = false\n",
        );
        Node {
            ctrd,
            ctr,
            grpc,
            fast,
            slow,
            nosync,
        }
    }

    fn daemons(&self) -> [&Daemon; 3] {
        [&self.fast, &self.slow, &self.nosync]
    }
}

fn main() {
    let started = Instant::now();
    let reps_cap: Option<usize> = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let only: Option<Vec<String>> = std::env::var("BENCH_SETS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let all = rows();
    if let Some(only) = &only {
        for name in only {
            assert!(
                all.iter().any(|r| r.name == name)
                    || name == PUSH_ROW
                    || LINEAGE_ROWS.contains(&name.as_str()),
                "BENCH_SETS: no row {name:?}; rows: {}",
                all.iter().map(|r| r.name).collect::<Vec<_>>().join(",")
            );
        }
    }
    let rows: Vec<Row> = all
        .into_iter()
        .filter(|r| only.as_ref().is_none_or(|o| o.iter().any(|n| n == r.name)))
        .collect();
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
    let sets_dir = work.path().join("sets");
    let want_push = only
        .as_ref()
        .is_none_or(|o| o.iter().any(|n| n == PUSH_ROW));
    // The lineage rows (issue 14): their own section, tests/src/bench_lineage.rs.
    let want_lineage: Vec<&str> = LINEAGE_ROWS
        .into_iter()
        .filter(|r| only.as_ref().is_none_or(|o| o.iter().any(|n| n == r)))
        .collect();
    let want_docker = want_push
        || want_lineage.contains(&LINEAGE_ROWS[0])
        || rows
            .iter()
            .any(|r| !r.xfs && r.peers.contains(&"docker commit"));

    let ext4_fs = own_ext4().then(|| {
        eprintln!("bench: making an ext4 (mkfs.ext4's defaults: with a journal) on a loop device…");
        LoopFs::mount(
            work.path(),
            "ext4",
            64 << 30,
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
            ],
        )
    });
    let ext4_dir = ext4_fs
        .as_ref()
        .map_or_else(std::env::temp_dir, |f| f.mnt.clone());
    eprintln!("bench: starting containerd in {}…", ext4_dir.display());
    let ext4_ctrd = Containerd::start_in(&ext4_dir).unwrap();
    let xfs = rows.iter().any(|r| r.xfs).then(|| {
        eprintln!("bench: mounting a loop XFS (reflink=1) and starting a containerd on it…");
        let xfs = LoopFs::mount(
            work.path(),
            "xfs",
            16 << 30,
            &["mkfs.xfs", "-q", "-m", "reflink=1"],
        );
        let ctrd = Containerd::start_in(&xfs.mnt).unwrap();
        assert!(
            ctrd.root().starts_with(&xfs.mnt),
            "containerd's root on the XFS"
        );
        (ctrd, xfs)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let ext4 = Node::start(&commitd, ext4_ctrd, work.path(), "");
    let xfs = xfs.map(|(ctrd, xfs)| {
        ImageBuilder::busybox().import(&ctrd, &NS, BASE).unwrap();
        (Node::start(&commitd, ctrd, work.path(), "-xfs"), xfs)
    });
    eprintln!("bench: importing the bases…");
    let mut bases: Vec<Base> = Vec::new();
    for r in rows.iter().filter(|r| !r.xfs) {
        if !bases.contains(&r.base) {
            bases.push(r.base);
        }
    }
    if (want_push || !want_lineage.is_empty()) && !bases.contains(&Base::Busybox) {
        bases.push(Base::Busybox);
    }
    for base in &bases {
        let t = Instant::now();
        let b = ImageBuilder::busybox();
        match base {
            Base::Busybox => b.import(&ext4.ctrd, &NS, BASE).unwrap(),
            Base::Files100k => b
                .layer()
                .small_files("/base", 100_000, 16)
                .import(&ext4.ctrd, &NS, BIG_BASE)
                .unwrap(),
            Base::Files1m => {
                let mut b = b.layer();
                for d in 0..1000 {
                    b = b.small_files(&format!("/base/d{d:03}"), 1000, 16);
                }
                b.import(&ext4.ctrd, &NS, HUGE_BASE).unwrap()
            }
        };
        eprintln!(
            "bench: base {base:?} imported in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let docker = want_docker.then(|| {
        eprintln!("bench: starting Docker's engine…");
        let docker = Dockerd::start_in(&ext4_dir).unwrap_or_else(|e| {
            panic!("starting Docker's engine (Debian's docker.io, scripts/deps.sh --bench): {e}")
        });
        // The same bases, through commitd's docker save and Docker's load
        // (those of the rows Docker runs in).
        let docker_runs_on = |b: Base| {
            ((want_push || !want_lineage.is_empty()) && b == Base::Busybox)
                || rows
                    .iter()
                    .any(|r| !r.xfs && r.base == b && r.peers.contains(&"docker commit"))
        };
        for base in bases.iter().filter(|b| docker_runs_on(**b)) {
            let t = Instant::now();
            let tar = work.path().join("base.tar");
            let st = Command::new("curl")
                .args(["-sf", "--unix-socket"])
                .arg(&ext4.fast.socket)
                .arg(format!(
                    "http://d/images/{}/get",
                    base.image().trim_start_matches("docker.io/library/")
                ))
                .arg("-o")
                .arg(&tar)
                .status()
                .unwrap();
            assert!(st.success());
            dcli(&docker, &["load", "-i", tar.to_str().unwrap()]);
            let _ = std::fs::remove_file(&tar);
            eprintln!(
                "bench: base {base:?} loaded into Docker in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        docker
    });
    // Each row's peak memory (VmHWM of its node's daemons, started over
    // at the row's start: the commits' peak, not start-up's).
    let mut peaks: Vec<[u64; 3]> = vec![[0; 3]; rows.len()];
    let mut table: BTreeMap<(usize, &str), Cell> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut n = 0usize;
    for (si, row) in rows.iter().enumerate() {
        let row_started = Instant::now();
        let files = generate(&sets_dir, row.files);
        let node = match row.xfs {
            false => &ext4,
            true => &xfs.as_ref().unwrap().0,
        };
        for d in node.daemons() {
            d.reset_peak();
        }
        let ctr = &node.ctr;
        let base = row.base.image();
        let docker_base = base.trim_start_matches("docker.io/library/");
        let reps = reps_cap.map_or(row.reps, |c| c.min(row.reps)).max(1);
        let mount = (row.writer == Writer::Container).then_some(files.as_path());
        let skipped: Vec<&str> = ALL_PEERS
            .iter()
            .copied()
            .filter(|p| !row.peers.contains(p))
            .collect();
        if !skipped.is_empty() {
            let why = if row.xfs {
                "no Docker engine on the XFS root; the rest for time"
            } else {
                "for time"
            };
            let note = format!("{}: left out ({why}): {}", row.name, skipped.join(", "));
            eprintln!("bench: {note}");
            notes.push(note);
        }
        eprintln!("bench: {} ({reps} repetitions)…", row.name);
        let mut samples: HashMap<&str, (Vec<f64>, u64, Vec<f64>)> = HashMap::new();
        for _ in 0..reps {
            // commitd, over its API.
            for (peer, daemon, comp) in [
                ("commitd gzip", &node.fast, "gzip"),
                ("commitd none", &node.fast, "none"),
                ("commitd zstd", &node.fast, "zstd"),
                ("commitd none, no fsync", &node.nosync, "none"),
                ("commitd diff-service gzip", &node.slow, "gzip"),
            ] {
                if !row.peers.contains(&peer) {
                    continue;
                }
                n += 1;
                let id = format!("c{n}");
                start_ctr(ctr, base, &id, mount);
                write_ctr(ctr, &id, row, &files);
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
                let layer = layer_size(ctr, &body_json(&img));
                let e = samples.entry(peer).or_default();
                e.0.push(secs);
                e.1 = layer;
                e.2.push(paused);
                cleanup_ctr(ctr, &id, Some(&format!("docker.io/library/out:{id}")));
                if row.files == Files::Huge {
                    // Its ~25 GiB freed before the next peer makes as much.
                    let _ = ctr.collect_garbage();
                }
            }
            // containerd's diff service itself, over gRPC.
            let (want_gz, want_tar, want_apply) = (
                row.peers.contains(&"containerd diff gzip"),
                row.peers.contains(&"containerd diff tar"),
                row.peers.contains(&"containerd apply gzip"),
            );
            let want_path = row.peers.contains(&"containerd commit path");
            if want_gz || want_tar || want_apply || want_path {
                n += 1;
                let id = format!("c{n}");
                start_ctr(ctr, base, &id, mount);
                write_ctr(ctr, &id, row, &files);
                if want_path {
                    // The whole commit through containerd's services, first:
                    // the container as the other peers find it.
                    let secs = rt.block_on(commitd_e2e::bench_nerdctl::commit(
                        &node.grpc,
                        &id,
                        base,
                        &format!("docker.io/library/path:{id}"),
                    ));
                    samples
                        .entry("containerd commit path")
                        .or_default()
                        .0
                        .push(secs);
                }
                let got = rt.block_on(containerd_peer(&node.grpc, &id, want_tar));
                for (peer, secs, size) in [
                    ("containerd diff gzip", Some(got.0), got.1),
                    ("containerd diff tar", got.2, got.3),
                    ("containerd apply gzip", Some(got.4), 0),
                ] {
                    if let (true, Some(secs)) = (row.peers.contains(&peer), secs) {
                        let e = samples.entry(peer).or_default();
                        e.0.push(secs);
                        e.1 = size;
                    }
                }
                if row.peers.contains(&"tar | zstd -T0") {
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
                }
                cleanup_ctr(ctr, &id, None);
                if row.files == Files::Huge {
                    let _ = ctr.collect_garbage();
                }
                let _ = ctr.run(&["leases", "ls"]);
            }

            // docker commit, over Docker's API.
            if let (true, Some(docker)) = (row.peers.contains(&"docker commit"), &docker) {
                n += 1;
                let name = format!("d{n}");
                let volume = mount.map(|m| format!("{}:{SRC}:ro", m.display()));
                let mut args = vec!["run", "-d", "--network", "none", "--name", &name];
                if let Some(v) = &volume {
                    args.extend(["-v", v.as_str()]);
                }
                args.extend([docker_base, "sleep", "100000"]);
                dcli(docker, &args);
                match row.writer {
                    Writer::Outside { sync } => {
                        let pid: u32 = dcli(docker, &["inspect", "-f", "{{.State.Pid}}", &name])
                            .trim()
                            .parse()
                            .unwrap();
                        write_from_outside(pid, &files, sync);
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    Writer::Container => {
                        let mut exec = vec!["exec", name.as_str()];
                        exec.extend(write_in(row.files));
                        dcli(docker, &exec);
                    }
                }
                let t = Instant::now();
                let (code, body) = http(
                    docker.socket(),
                    "POST",
                    &format!("/v1.41/commit?container={name}&repo=out&tag={name}"),
                );
                let secs = t.elapsed().as_secs_f64();
                assert!(code == 201, "docker commit: {code} {body}");
                let sizes: Vec<u64> = dcli(
                    docker,
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
                dcli(docker, &["rm", "-f", &name]);
                dcli(docker, &["rmi", &format!("out:{name}")]);
            }
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
        peaks[si] = node.daemons().map(|d| d.status("VmHWM:"));
        let took = row_started.elapsed().as_secs_f64();
        eprintln!("bench: {} done in {took:.0} s", row.name);
        notes.push(format!("{}: {reps} repetition(s), {took:.0} s", row.name));
    }
    let mut other_peaks: Vec<(String, u64)> = Vec::new();
    let push_report = match (&docker, want_push) {
        (Some(docker), true) => {
            let files = generate(&sets_dir, Files::Mid);
            let reps = reps_cap.map_or(3, |c| c.min(3)).max(1);
            eprintln!("bench: {PUSH_ROW} ({reps} repetitions)…");
            let t = Instant::now();
            // A daemon of its own: its peak memory is reported in the
            // section, the commit rows' peak stays theirs.
            let pusher = Daemon::start(
                &commitd,
                ext4.ctrd.socket(),
                work.path(),
                "push",
                "[commit]\nfast_path = true\n",
            );
            pusher.reset_peak();
            let section = commitd_e2e::bench_push::run(&commitd_e2e::bench_push::PushBench {
                commitd: &pusher.socket,
                peak_rss_kib: &|| pusher.status("VmHWM:"),
                ctr: &ext4.ctr,
                base: BASE,
                docker,
                docker_base: BASE.trim_start_matches("docker.io/library/"),
                reps,
                write_changes: &|pid| write_from_outside(pid, &files, true),
            });
            let took = t.elapsed().as_secs_f64();
            notes.push(format!("{PUSH_ROW}: {reps} repetition(s), {took:.0} s"));
            other_peaks.push((
                format!("{PUSH_ROW} (its own daemon)"),
                pusher.status("VmHWM:"),
            ));
            section
        }
        _ => String::new(),
    };
    let lineage_report = match docker.as_ref() {
        docker if !want_lineage.is_empty() => {
            // The 1 GiB set only for the incremental row.
            let files = want_lineage
                .contains(&LINEAGE_ROWS[0])
                .then(|| generate(&sets_dir, Files::Gig));
            let reps = reps_cap.map_or(2, |c| c.min(2)).max(1);
            eprintln!("bench: {} ({reps} repetitions)…", want_lineage.join(", "));
            let t = Instant::now();
            ext4.fast.reset_peak();
            let section = commitd_e2e::bench_lineage::run(
                &commitd_e2e::bench_lineage::LineageBench {
                    commitd: &ext4.fast.socket,
                    ctr: &ext4.ctr,
                    base: BASE,
                    docker,
                    docker_base: BASE.trim_start_matches("docker.io/library/"),
                    reps,
                    write_big: &|pid| write_from_outside(pid, files.as_ref().unwrap(), true),
                },
                &want_lineage,
            );
            let took = t.elapsed().as_secs_f64();
            notes.push(format!(
                "{}: {reps} repetition(s), {took:.0} s",
                want_lineage.join(", ")
            ));
            let peak = ext4.fast.status("VmHWM:");
            other_peaks.push((want_lineage.join(", "), peak));
            section
                + &format!(
                    "\nPeak RSS of the commitd that ran these rows (VmHWM after start-up): {:.1} MiB.\n",
                    peak as f64 / 1024.0
                )
        }
        _ => String::new(),
    };
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    let mut report = render(&names, ALL_PEERS, &table, &peaks, &other_peaks);
    report.push_str(&push_report);
    report.push_str(&lineage_report);
    report.push_str(&format!(
        "\nRun: {:.1} min in all. Per row:\n\n",
        started.elapsed().as_secs_f64() / 60.0
    ));
    for note in &notes {
        report.push_str(&format!("- {note}\n"));
    }
    println!("{report}");
    std::fs::write(out_dir.join("results.md"), &report).unwrap();
    std::fs::write(out_dir.join("results.svg"), svg(&names, ALL_PEERS, &table)).unwrap();
    eprintln!(
        "bench: wrote {}/results.md and results.svg; stopping the daemons (a 1,000,000-file base takes a while to remove)…",
        out_dir.display()
    );
    drop(docker);
    drop(xfs);
    drop(ext4);
    drop(ext4_fs);
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
async fn containerd_peer(c: &Grpc, id: &str, want_tar: bool) -> (f64, u64, Option<f64>, u64, f64) {
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
    let view = format!("{id}-bench-view");
    let commitd_e2e::bench_nerdctl::Sides {
        parent,
        upper,
        lower,
    } = commitd_e2e::bench_nerdctl::diff_sides(c, id, &view, &lease).await;
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
    let mut tar = None;
    let mut tar_secs = None;
    if want_tar {
        let t = Instant::now();
        tar = c
            .diff()
            .diff(diff("application/vnd.oci.image.layer.v1.tar"))
            .await
            .unwrap()
            .into_inner()
            .diff;
        tar_secs = Some(t.elapsed().as_secs_f64());
    }
    let key = format!("{id}-bench-apply");
    let mounts = c
        .snapshots()
        .prepare(c.leased(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: parent.clone(),
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
    for d in std::iter::once(&gz).chain(tar.as_ref()) {
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
        tar.map_or(0, |t| u64::try_from(t.size).unwrap_or(0)),
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
    peaks: &[[u64; 3]],
    other_peaks: &[(String, u64)],
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    s.push_str(&format!(
        "# commitd benchmark\n\nMedian wall seconds of one commit ({cores} cores, same change sets for every peer; repetitions per row at the end). \
         Rows: `…-by-container` = written by the container's own process and committed the moment it exits, unsynced; the others written from outside and synced; \
         `…-on-xfs` = containerd's root on a loop-mounted XFS with reflinks; {fs}. – = not run (see the end).\n\n",
        fs = if own_ext4() {
            "the other rows' containerd and Docker's engine on a loop-mounted ext4 made for the run (`mkfs.ext4`'s defaults, with a journal; the loop devices do direct I/O; `BENCH_FS=tmpdir` for `$TMPDIR`'s)"
        } else {
            "the other rows' containerd and Docker's engine in `$TMPDIR` (`BENCH_FS=tmpdir`)"
        }
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
    let commitd: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| p.starts_with("commitd"))
        .collect();
    s.push_str("\ncommitd's paused time (median seconds the container was paused, from `/metrics`):\n\n| change set |");
    for p in &commitd {
        s.push_str(&format!(" {p} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(commitd.len()));
    s.push('\n');
    for (i, set) in sets.iter().enumerate() {
        s.push_str(&format!("| {set} |"));
        for p in &commitd {
            match t.get(&(i, *p)) {
                Some(c) => s.push_str(&format!(" {:.3} |", c.paused)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push_str("\nLayer sizes (median):\n\n| change set | commitd gzip | commitd zstd | commitd none | containerd gzip | docker (stored uncompressed) |\n|---|---:|---:|---:|---:|---:|\n");
    for (i, set) in sets.iter().enumerate() {
        let g = |p: &str| t.get(&(i, p)).cloned().unwrap_or_default();
        s.push_str(&format!(
            "| {set} | {} | {} | {} | {} | {} |\n",
            mib(g("commitd gzip").layer_bytes),
            mib(g("commitd zstd").layer_bytes),
            mib(g("commitd none").layer_bytes),
            mib(g("containerd diff gzip").layer_bytes),
            mib(g("docker commit").layer_bytes),
        ));
    }
    s.push_str(
        "\nPeak RSS of each commitd daemon during the row (VmHWM in MiB, started over at the row's start; \
         the fast-path daemon runs commitd gzip/none/zstd, the others the peers so named — an idle one shows what it holds):\n\n\
         | change set | fast path | diff service | no fsync |\n|---|---:|---:|---:|\n",
    );
    for (i, set) in sets.iter().enumerate() {
        let [fast, slow, nosync] = peaks[i].map(|k| k as f64 / 1024.0);
        s.push_str(&format!(
            "| {set} | {fast:.1} | {slow:.1} | {nosync:.1} |\n"
        ));
    }
    let get = |i: usize, p: &str| t.get(&(i, p)).map(|c| c.secs);
    s.push_str("\nTargets (issue 15), each row where its peers ran; ratios are peer ÷ commitd, higher is better for commitd:\n\n");
    let mut check = |name: String, ok: bool, detail: String| {
        s.push_str(&format!(
            "- {} {name}: {detail}\n",
            if ok { "PASS" } else { "FAIL" }
        ));
    };
    for (i, set) in sets.iter().enumerate() {
        let Some(gz) = get(i, "commitd gzip") else {
            continue;
        };
        if let (Some(diff), Some(apply)) = (
            get(i, "containerd diff gzip"),
            get(i, "containerd apply gzip"),
        ) {
            let r = (diff + apply) / gz;
            check(
                format!("{set}: ≥ 4× faster than containerd's Compare + Apply (gzip)"),
                r >= 4.0,
                format!("{r:.1}× ({gz:.3} s vs {diff:.3} + {apply:.3} s)"),
            );
        }
        if let Some(path) = get(i, "containerd commit path") {
            let r = path / gz;
            check(
                format!(
                    "{set}: ≥ 4× faster than containerd's whole commit path (nerdctl's steps, gzip)"
                ),
                r >= 4.0,
                format!("{r:.1}× ({gz:.3} s vs {path:.3} s)"),
            );
        }
        if let Some(diff) = get(i, "containerd diff gzip") {
            let r = diff / gz;
            check(
                format!("{set}: no slower than containerd's Compare alone (gzip)"),
                r >= 1.0,
                format!("{r:.2}×"),
            );
        }
        if let (Some(none), Some(docker)) = (get(i, "commitd none"), get(i, "docker commit")) {
            let r = docker / none;
            let nosync = get(i, "commitd none, no fsync")
                .map(|ns| format!(" (both without fsync: {:.2}×)", docker / ns))
                .unwrap_or_default();
            check(
                format!("{set}: compression=none ≥ 2× faster than docker commit"),
                r >= 2.0,
                format!("{r:.2}×{nosync}"),
            );
        }
        let paused = t
            .iter()
            .filter(|((si, p), _)| {
                *si == i && p.starts_with("commitd") && *p != "commitd diff-service gzip"
            })
            .map(|(_, c)| c.paused)
            .fold(0.0f64, f64::max);
        let (limit, fs) = if set.ends_with("-on-xfs") {
            (if set.starts_with("1g") { 0.05 } else { 0.5 }, "XFS")
        } else {
            (0.5, "ext4")
        };
        check(
            format!("{set}: paused ≤ {limit} s on {fs} (longest median of the fast-path rows)"),
            paused <= limit,
            format!("{paused:.3} s"),
        );
        if set.starts_with("10g") {
            check(
                format!("{set}: under 60 s with gzip"),
                gz < 60.0,
                format!("{gz:.1} s"),
            );
        }
    }
    let idx = |name: &str| sets.iter().position(|s| *s == name);
    if let (Some(big), Some(small)) = (idx("100x4k-on-100k-base"), idx("100x4k")) {
        if let (Some(a), Some(b)) = (get(big, "commitd gzip"), get(small, "commitd gzip")) {
            let r = a / b;
            check(
                "100 × 4 KiB on the 100,000-file base within 2× of the tiny base".into(),
                r <= 2.0,
                format!("{r:.2}×"),
            );
        }
    }
    if let Some(i) = idx("200m") {
        if let (Some(z), Some(floor)) = (get(i, "commitd zstd"), get(i, "tar | zstd -T0")) {
            let r = z / floor;
            check(
                "zstd commit of 200 MiB within 2× of tar | zstd -T0".into(),
                r <= 2.0,
                format!("{r:.2}×"),
            );
        }
    }
    // The highest of every daemon, and where it was.
    let daemons = ["fast path", "diff service", "no fsync"];
    let (peak_kib, at) = sets
        .iter()
        .zip(peaks)
        .flat_map(|(set, p)| {
            p.iter()
                .zip(daemons)
                .map(move |(k, d)| (*k, format!("{set}, {d} daemon")))
        })
        .chain(other_peaks.iter().map(|(row, k)| (*k, row.clone())))
        .max_by_key(|(k, _)| *k)
        .unwrap_or((0, "no row".into()));
    let mib_peak = peak_kib as f64 / 1024.0;
    check(
        "peak RSS under 64 MiB throughout (every commitd daemon, VmHWM after start-up)".into(),
        mib_peak < 64.0,
        format!("{mib_peak:.1} MiB (highest: {at})"),
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
