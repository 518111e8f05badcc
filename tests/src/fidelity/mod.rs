//! The differential fidelity harness: real containers make changes from
//! inside, then the fast path's snapshot and layer are held against
//! containerd's own applier, the container's view and containerd's own
//! differ, attribute by attribute.
//!
//! For one container the [`Lab`] gathers, as [`Tree`]s:
//! - **container**: the container's view (`/proc/PID/root`, without the
//!   runtime's `/proc`, `/sys`, `/dev`, `/run`);
//! - **fast**: the committed image's snapshot, raw (its upper directory)
//!   and mounted (merged with its parents);
//! - **applied**: the same image exported and imported into another
//!   namespace: containerd's unpacker applies our layer (diff service
//!   Apply) on the same parent — what another node pulls;
//! - **service**: the same container committed through containerd's diff
//!   service (`EngineConfig::fast_path = false`), mounted;
//! - **parent**: the parent image, mounted.
//!
//! and [`check`] holds them to the invariants (see its docs).

pub mod ops;
pub mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use commit_engine::{Committed, Engine, Resolved};
use commitd_testkit::grpc::Grpc;
use commitd_testkit::{Ctr, ImageBuilder, SNAPSHOTTER, unique_namespace};
use docker_format::reference::ImageRef;

pub use ops::{Generator, Script, sample_acl, sample_capability};
pub use tree::{Compare, Difference, Kind, Node, Tree, WalkOpts, diff, show};

use crate::{World, commit, request};

/// The `fsop` helper (`tests/fsop/fsop.rs`), built once per source text as
/// a static binary: it runs in a busybox image.
pub fn fsop() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        const SRC: &str = include_str!("../../fsop/fsop.rs");
        let tag = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SRC.as_bytes()))[..16];
        let dir = std::env::temp_dir().join(format!("commitd-fsop-{tag}"));
        let bin = dir.join("fsop");
        if bin.is_file() {
            return bin;
        }
        std::fs::create_dir_all(&dir).expect("fsop build directory");
        let src = dir.join("fsop.rs");
        std::fs::write(&src, SRC).expect("fsop source");
        let tmp = dir.join(format!("fsop.{}", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let out = std::process::Command::new(&rustc)
            .args(["--edition", "2024", "-C", "target-feature=+crt-static"])
            .args(["-C", "opt-level=1", "-C", "strip=symbols", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("running {rustc} to build fsop: {e}"));
        assert!(
            out.status.success(),
            "building fsop failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &bin).expect("installing fsop");
        bin
    })
}

/// A mounted view of a snapshot (unmounted when dropped).
struct Mounted {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// A world for fidelity runs: a namespace with a base image that has
/// `fsop` and the stage scripts, engines for both capture paths, and a
/// second namespace into which images are imported (containerd's applier).
pub struct Lab {
    pub w: World,
    pub fast: Engine,
    pub service: Engine,
    /// The base image: busybox, `/bin/fsop`, `/fidelity/*.sh`.
    pub image: String,
    other: Ctr,
    n: AtomicU32,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.other.remove_all();
        // Collect what the imports unpacked now (a deleted lease with
        // --sync runs the collector), not when the process ends.
        let _ = self.other.collect_garbage();
    }
}

impl Lab {
    /// A lab whose base image holds `scripts` as `/fidelity/NAME.sh`.
    pub fn new(name: &str, scripts: &[(&str, &Script)]) -> Lab {
        let w = World::new(name);
        // /bin declared again: a layer without its parent's entry is
        // applied with the parent's time bumped to the moment of the apply.
        let mut b = ImageBuilder::busybox()
            .layer()
            .dir("/bin", 0o755)
            .host_file("/bin/fsop", fsop(), 0o755);
        for (n, s) in scripts {
            b = b.file_with_mode(&format!("/fidelity/{n}.sh"), s.text(), 0o644);
        }
        let image = format!(
            "docker.io/library/fidelity-base-{}:1",
            unique_namespace("b")
        );
        b.import(commitd_testkit::shared(), &w.ns, &image)
            .unwrap_or_else(|e| panic!("importing the fidelity base image: {e}"));
        let other = commitd_testkit::shared().ctr(&unique_namespace(&format!("{name}-applied")));
        Lab {
            fast: w.engine(true),
            service: w.engine(false),
            w,
            image,
            other,
            n: AtomicU32::new(0),
        }
    }

    fn next(&self) -> u32 {
        self.n.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a privileged container of `image` (devices, `trusted.*`)
    /// that sleeps.
    pub fn start(&self, image: &str, id: &str) {
        let out = self
            .w
            .ctr
            .command()
            .args([
                "run",
                "-d",
                "--null-io",
                "--privileged",
                "--snapshotter",
                SNAPSHOTTER,
            ])
            .args([image, id, "sleep", "1000000"])
            .output()
            .expect("ctr run");
        assert!(
            out.status.success(),
            "starting {id}: {}\ncontainerd's log ends:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.w.ctr.log_tail(40)
        );
    }

    /// Runs `/fidelity/NAME.sh` in container `id` (`sh -e`).
    pub fn script(&self, id: &str, name: &str) {
        self.sh(id, &format!("sh -e /fidelity/{name}.sh"));
    }

    /// Runs a shell command in container `id`.
    pub fn sh(&self, id: &str, cmd: &str) -> String {
        self.w
            .ctr
            .exec(id, &["sh", "-c", cmd])
            .unwrap_or_else(|e| panic!("in {id}: {cmd}: {e}"))
    }

    /// The container's view of its root filesystem.
    pub fn container_view(&self, id: &str) -> Tree {
        let pid = self
            .w
            .ctr
            .task_pid(id)
            .expect("tasks")
            .expect("a running task");
        Tree::walk(
            Path::new(&format!("/proc/{pid}/root")),
            WalkOpts {
                raw: false,
                skip_mounts: true,
            },
        )
    }

    /// Commits `id` as `name` through the fast path or the diff service.
    pub async fn commit(
        &self,
        id: &str,
        fast: bool,
        name: &str,
    ) -> commit_engine::Result<Committed> {
        let engine = if fast { &self.fast } else { &self.service };
        commit(engine, request(id, Some(name))).await
    }

    /// An image as the engine reads it (manifest and config), by name.
    pub async fn resolved(&self, image: &str) -> std::sync::Arc<Resolved> {
        self.fast
            .images()
            .find(&ImageRef::Name {
                name: image.into(),
                or_id_prefix: None,
            })
            .await
            .unwrap_or_else(|e| panic!("image {image}: {e}"))
            .resolved
    }

    /// The chain ID (snapshot name) of an image.
    pub async fn chain(&self, image: &str) -> String {
        self.resolved(image).await.chain_id().expect("a layer")
    }

    /// The raw upper directory and the mounted view of a committed
    /// snapshot, in namespace `ns`. The view is a root for containerd's
    /// collector while it exists.
    async fn snapshot_trees(&self, ns: &str, chain: &str) -> (Tree, Tree) {
        use commitd_testkit::grpc::api::services::v1::snapshots::{
            RemoveSnapshotRequest, ViewSnapshotRequest,
        };
        let c = Grpc::lazy(&self.w.socket, ns);
        let key = format!("fidelity-view-{}", self.next());
        let mounts = c
            .snapshots()
            .view(c.request(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: chain.into(),
                labels: [("containerd.io/gc.root".to_string(), "fidelity".to_string())].into(),
            }))
            .await
            .unwrap_or_else(|e| panic!("view of {chain}: {e}"))
            .into_inner()
            .mounts;
        let result = tokio::task::spawn_blocking(move || {
            let [m] = &mounts[..] else {
                panic!("{} mounts", mounts.len());
            };
            let raw_opts = WalkOpts {
                raw: true,
                skip_mounts: false,
            };
            let view_opts = WalkOpts {
                raw: false,
                skip_mounts: true,
            };
            if m.r#type == "bind" {
                let src = Path::new(&m.source);
                return (Tree::walk(src, raw_opts), Tree::walk(src, view_opts));
            }
            let lower = m
                .options
                .iter()
                .find_map(|o| o.strip_prefix("lowerdir="))
                .unwrap_or_else(|| panic!("no lowerdir in {:?}", m.options));
            let top = lower.split(':').next().expect("a lower");
            let raw = Tree::walk(Path::new(top), raw_opts);
            let mut mounted = Mounted {
                dir: tempfile::tempdir().expect("mount point"),
                mounted: false,
            };
            let data = std::ffi::CString::new(m.options.join(",")).expect("options");
            rustix::mount::mount(
                "overlay",
                mounted.dir.path(),
                "overlay",
                rustix::mount::MountFlags::RDONLY,
                Some(data.as_c_str()),
            )
            .unwrap_or_else(|e| panic!("mounting {:?}: {e}", m.options));
            mounted.mounted = true;
            let view = Tree::walk(mounted.dir.path(), view_opts);
            (raw, view)
        })
        .await;
        let _ = c
            .snapshots()
            .remove(c.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key,
            }))
            .await;
        result.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The committed image's own snapshot: raw and mounted.
    pub async fn image_trees(&self, image: &str) -> (Tree, Tree) {
        let chain = self.chain(image).await;
        self.snapshot_trees(&self.w.ns, &chain).await
    }

    /// The image as another node gets it: exported, imported into another
    /// namespace (containerd's unpacker applies every layer), raw and
    /// mounted.
    pub async fn applied_elsewhere(&self, image: &str) -> (Tree, Tree) {
        let chain = self.chain(image).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = dir.path().join("image.tar");
        self.w
            .ctr
            .run(&["images", "export", archive.to_str().expect("utf-8"), image])
            .expect("export");
        self.other
            .import_archive(&archive)
            .expect("import elsewhere");
        self.snapshot_trees(self.other.namespace(), &chain).await
    }
}

/// The trees of one committed container (see the module docs).
pub struct Stages {
    pub parent: Tree,
    pub container: Tree,
    pub fast_raw: Tree,
    pub fast: Tree,
    pub applied_raw: Tree,
    pub applied: Tree,
    /// `None` where the diff service is not asked (see the test).
    pub service: Option<Tree>,
}

/// A way containerd's own differ is wrong, as seen in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Blindspot {
    /// Its tar records whole seconds (`hdr.ModTime.Truncate(time.Second)`).
    WholeSeconds,
    /// Its tar carries no xattr but `security.capability`.
    XattrsDropped,
    /// It did not see the change at all: the entry is the parent's (xattr-
    /// only changes, mtime-only directory changes, same-size same-mtime
    /// rewrites, sub-second touches of a whole-second file).
    ChangeMissed,
    /// Anything else (printed in full).
    Other,
}

impl fmt::Display for Blindspot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blindspot::WholeSeconds => "containerd's tar truncates times to whole seconds",
            Blindspot::XattrsDropped => {
                "containerd's tar drops xattrs other than security.capability"
            }
            Blindspot::ChangeMissed => "containerd's differ did not see the change",
            Blindspot::Other => "containerd's layer differs otherwise",
        })
    }
}

/// What the container has that no layer carries: documented exceptions of
/// "the image is the container's view".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exception {
    /// Sockets are not carried (Docker and containerd skip them too).
    Socket,
    /// `trusted.*` and `security.selinux` xattrs are not carried.
    HostXattr,
    /// A time before 1970 or after 2262-04-11 is the epoch once applied.
    TimeBounded,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Broken invariants (the test fails on any).
    pub violations: Vec<String>,
    pub exceptions: BTreeMap<Exception, Vec<Vec<u8>>>,
    pub blindspots: BTreeMap<Blindspot, Vec<(Vec<u8>, String)>>,
    /// Entries compared in the container's view.
    pub entries: usize,
}

impl Report {
    /// Paths below `prefix` where a blind spot was seen.
    pub fn blindspots_under(&self, spot: Blindspot, prefix: &[u8]) -> Vec<&[u8]> {
        self.blindspots
            .get(&spot)
            .into_iter()
            .flatten()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(p, _)| p.as_slice())
            .collect()
    }

    pub fn exceptions_under(&self, e: Exception, prefix: &[u8]) -> usize {
        self.exceptions
            .get(&e)
            .into_iter()
            .flatten()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    /// A summary for the test's output.
    pub fn summary(&self) -> String {
        let mut s = format!("{} entries compared", self.entries);
        for (e, paths) in &self.exceptions {
            s += &format!("; {e:?}: {}", paths.len());
        }
        for (b, paths) in &self.blindspots {
            s += &format!("\n  {b}: {} entries", paths.len());
            for (p, d) in paths.iter().take(6) {
                s += &format!("\n    {} {d}", show(p));
            }
        }
        s
    }

    /// Fails the test with every violation.
    pub fn assert_ok(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations:\n{}",
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

/// Holds the stages to the invariants:
/// 1. the committed snapshot *is* containerd's apply of its layer on the
///    same parent: raw upper directories equal in every attribute (link
///    counts too; a whiteout's times excepted: the applier does not set
///    them), and so the mounted views;
/// 2. the committed image is the container's view, but for the documented
///    [`Exception`]s;
/// 3. where containerd's differ gives something else, the fast path is the
///    one that equals the container, and the difference is named
///    ([`Blindspot`]).
pub fn check(s: &Stages) -> Report {
    let mut r = Report {
        entries: s.container.nodes.len(),
        ..Report::default()
    };
    for d in diff(
        &s.fast_raw,
        &s.applied_raw,
        Compare {
            nlink: true,
            whiteout_times: false,
        },
    ) {
        r.violations.push(format!(
            "snapshot vs containerd's apply of its layer (raw): {d}"
        ));
    }
    let views = Compare {
        nlink: false,
        whiteout_times: false,
    };
    for d in diff(&s.fast, &s.applied, views) {
        r.violations.push(format!(
            "snapshot vs containerd's apply of its layer (mounted): {d}"
        ));
    }
    for d in diff(&s.container, &s.fast, views) {
        let c = s.container.nodes.get(&d.path);
        let exception = match d.field.as_str() {
            "missing" if c.is_some_and(|n| n.kind == Kind::Socket) => Some(Exception::Socket),
            f if (f.starts_with("xattr trusted.") || f == "xattr security.selinux")
                && d.right == "-" =>
            {
                Some(Exception::HostXattr)
            }
            "mtime" => c
                .filter(|n| {
                    let (sec, ns) = n.mtime;
                    (sec < 0 || (sec, ns) > (9_223_372_036, 854_775_807))
                        && s.fast.nodes.get(&d.path).is_some_and(|f| f.mtime == (0, 0))
                })
                .map(|_| Exception::TimeBounded),
            _ => None,
        };
        match exception {
            Some(e) => r.exceptions.entry(e).or_default().push(d.path.clone()),
            None => r.violations.push(format!("container vs snapshot: {d}")),
        }
    }
    if let Some(service) = &s.service {
        let diffs = diff(&s.fast, service, views);
        let mut by_path: BTreeMap<&[u8], Vec<&Difference>> = BTreeMap::new();
        for d in &diffs {
            by_path.entry(&d.path).or_default().push(d);
        }
        for (path, ds) in by_path {
            let truncated = ds
                .iter()
                .all(|d| d.field == "mtime" && same_second_truncated(&d.left, &d.right));
            let missed = match (s.parent.nodes.get(path), service.nodes.get(path)) {
                (Some(p), Some(b)) => {
                    let one = |n: &Node| Tree {
                        nodes: BTreeMap::from([(path.to_vec(), n.clone())]),
                    };
                    diff(&one(p), &one(b), views)
                        .iter()
                        .all(|d| d.field == "links")
                }
                _ => false,
            };
            for d in ds {
                let spot = if truncated {
                    Blindspot::WholeSeconds
                } else if missed {
                    Blindspot::ChangeMissed
                } else if d.field == "mtime" && same_second_truncated(&d.left, &d.right) {
                    Blindspot::WholeSeconds
                } else if d.field.starts_with("xattr ")
                    && d.field != "xattr security.capability"
                    && d.right == "-"
                {
                    Blindspot::XattrsDropped
                } else {
                    Blindspot::Other
                };
                // That the fast path is the one that is right is the
                // container-vs-snapshot check above.
                r.blindspots.entry(spot).or_default().push((
                    path.to_vec(),
                    format!("{} {} ≠ {}", d.field, d.left, d.right),
                ));
            }
        }
    }
    r
}

/// Whether `right` is `left` cut to whole seconds (`S.NNNNNNNNN`).
fn same_second_truncated(left: &str, right: &str) -> bool {
    match (left.split_once('.'), right.split_once('.')) {
        (Some((ls, _)), Some((rs, rn))) => ls == rs && rn.bytes().all(|b| b == b'0'),
        _ => false,
    }
}

/// Runs a lower script and a change script and gathers every tree: the
/// lower stage in a container of the lab's base image, committed through
/// the fast path (the parent, itself checked against containerd's apply),
/// then the change stage in a container of that parent, committed both
/// ways. Returns the parent's and the change's stages.
pub async fn run_stages(
    lab: &Lab,
    lower: &str,
    change: &str,
    with_service: bool,
) -> (Stages, Stages) {
    let tag = lab.next();
    let parent_image = format!("docker.io/library/fidelity-parent:{tag}");
    let p0 = format!("lower-{tag}");
    lab.start(&lab.image, &p0);
    lab.script(&p0, lower);
    let base_view = {
        let chain = lab.chain(&lab.image).await;
        lab.snapshot_trees(&lab.w.ns, &chain).await.1
    };
    let container0 = lab.container_view(&p0);
    lab.commit(&p0, true, &parent_image)
        .await
        .expect("commit of the lower stage");
    let (fast_raw, fast) = lab.image_trees(&parent_image).await;
    let (applied_raw, applied) = lab.applied_elsewhere(&parent_image).await;
    let parent_stages = Stages {
        parent: base_view,
        container: container0,
        fast_raw,
        fast,
        applied_raw,
        applied,
        service: None,
    };
    lab.w
        .ctr
        .delete_container(&p0)
        .expect("removing the lower container");

    let c1 = format!("change-{tag}");
    lab.start(&parent_image, &c1);
    lab.script(&c1, change);
    let container = lab.container_view(&c1);
    let fast_image = format!("docker.io/library/fidelity-fast:{tag}");
    lab.commit(&c1, true, &fast_image)
        .await
        .expect("fast path commit");
    let service = if with_service {
        let service_image = format!("docker.io/library/fidelity-service:{tag}");
        lab.commit(&c1, false, &service_image)
            .await
            .expect("diff service commit");
        Some(lab.image_trees(&service_image).await.1)
    } else {
        None
    };
    let (fast_raw, fast) = lab.image_trees(&fast_image).await;
    let (applied_raw, applied) = lab.applied_elsewhere(&fast_image).await;
    let parent = parent_stages.fast.clone();
    lab.w
        .ctr
        .delete_container(&c1)
        .expect("removing the change container");
    (
        parent_stages,
        Stages {
            parent,
            container,
            fast_raw,
            fast,
            applied_raw,
            applied,
            service,
        },
    )
}

/// One entry of a layer tar as a PAX-aware reader sees it.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub path: Vec<u8>,
    /// The ustar type flag (`0`, `1`, `2`, `5`, …).
    pub kind: u8,
    pub size: u64,
    /// PAX records in force for the entry, raw.
    pub pax: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Reads an uncompressed tar the way Go's `archive/tar` does: PAX records
/// by their length (the `tar` crate splits them at newlines, which a
/// value may hold: composefs/tar-rs#452).
pub fn layer_entries(tar: &[u8]) -> Vec<LayerEntry> {
    let mut out = Vec::new();
    let mut pending = BTreeMap::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec()
        };
        let octal = |r: std::ops::Range<usize>| -> u64 {
            let s = String::from_utf8_lossy(&field(r)).trim().to_string();
            u64::from_str_radix(if s.is_empty() { "0" } else { &s }, 8).expect("octal field")
        };
        let kind = h[156];
        let mut size = octal(124..136);
        let data_at = off + 512;
        if kind == b'x' {
            let mut rec = &tar[data_at..data_at + size as usize];
            while !rec.is_empty() {
                let sp = rec.iter().position(|&b| b == b' ').expect("record length");
                let len: usize = std::str::from_utf8(&rec[..sp])
                    .expect("ascii")
                    .parse()
                    .expect("length");
                let body = &rec[sp + 1..len - 1];
                assert_eq!(rec[len - 1], b'\n', "a record ends with a newline");
                let eq = body.iter().position(|&b| b == b'=').expect("key=value");
                pending.insert(body[..eq].to_vec(), body[eq + 1..].to_vec());
                rec = &rec[len..];
            }
        } else {
            let pax = std::mem::take(&mut pending);
            let mut path = field(0..100);
            let prefix = field(345..500);
            if !prefix.is_empty() && &h[257..262] == b"ustar" {
                path = [prefix.as_slice(), b"/", &path].concat();
            }
            if let Some(p) = pax.get(&b"path"[..]) {
                path = p.clone();
            }
            if let Some(s) = pax.get(&b"size"[..]) {
                size = String::from_utf8_lossy(s).parse().expect("size");
            }
            out.push(LayerEntry {
                path,
                kind,
                size,
                pax,
            });
        }
        off = data_at + (size as usize).div_ceil(512) * 512;
    }
    out
}
