//! Containers, tasks and store readers through the `ctr` command line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};

/// The snapshotter every helper here uses.
pub const SNAPSHOTTER: &str = "overlayfs";

/// `ctr -a SOCKET -n NAMESPACE`: one containerd namespace of one containerd.
///
/// Cheap to clone. Every call runs `ctr` once or a few times and fails with the
/// command, its exit status and its stderr.
#[derive(Clone, Debug)]
pub struct Ctr {
    address: PathBuf,
    namespace: String,
    /// containerd's log, when the handle came from a private containerd.
    log: Option<PathBuf>,
}

/// State of a container's task, as `ctr tasks ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// The container has no task.
    None,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Being frozen.
    Pausing,
    /// Frozen.
    Paused,
    /// Exited, not deleted.
    Stopped,
    /// Anything else `ctr` printed.
    Unknown(String),
}

/// One snapshot, as `ctr snapshots ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Snapshot {
    /// Its key (for committed snapshots of images, the chain ID).
    pub key: String,
    /// The key of its parent; `None` for a bottom layer.
    pub parent: Option<String>,
    /// `Active`, `Committed` or `View`.
    pub kind: String,
}

/// One image record, as `ctr images ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Image {
    /// Its name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The digest of its target (manifest or index).
    pub digest: String,
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskStatus::Unknown(s) => f.write_str(s),
            other => write!(f, "{other:?}"),
        }
    }
}

impl Ctr {
    /// A handle on `namespace` of the containerd listening on `address`.
    pub fn new(address: impl Into<PathBuf>, namespace: &str) -> Ctr {
        Ctr {
            address: address.into(),
            namespace: namespace.to_owned(),
            log: None,
        }
    }

    /// The same handle, whose [`log_tail`](Self::log_tail) reads `log`.
    pub(crate) fn with_log(mut self, log: Option<&Path>) -> Ctr {
        self.log = log.map(Path::to_owned);
        self
    }

    /// The last `lines` lines of containerd's log, to explain a failure
    /// (empty when the handle knows no log: an external containerd).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map(|log| crate::containerd::log_tail(log, lines))
            .unwrap_or_default()
    }

    /// The containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// `ctr -a SOCKET -n NAMESPACE`, to add arguments to for anything not covered here.
    pub fn command(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.address)
            .arg("-n")
            .arg(&self.namespace);
        c
    }

    /// Runs `ctr … ARGS` and returns its stdout; fails on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        cmd::stdout(self.command().args(args), cmd::QUICK)
    }

    /// Runs containerd's garbage collector now and waits for it: a lease
    /// created and deleted with `--sync`. A collection that removes big
    /// snapshots (an 8 GiB sparse file, 50,000 files) can take minutes on
    /// a loaded machine, so it gets the long timeout.
    pub fn collect_garbage(&self) -> Result<()> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lease = format!(
            "commitd-testkit-gc-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.run(&["leases", "create", "--id", &lease])?;
        cmd::stdout(
            self.command().args(["leases", "delete", "--sync", &lease]),
            cmd::SLOW,
        )
        .map(drop)
    }

    /// `ctr images import` of an OCI or Docker archive, unpacked into overlayfs.
    /// Returns the names of the images it created.
    pub fn import_archive(&self, archive: &Path) -> Result<Vec<String>> {
        let mut c = self.command();
        c.args(["images", "import", "--snapshotter", SNAPSHOTTER])
            .arg(archive);
        let out = cmd::stdout(&mut c, cmd::SLOW)?;
        // "unpacking NAME (sha256:…)...done"
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("unpacking "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Starts a container running `args` (e.g. `["sh", "-c", "sleep 100000"]`) from
    /// `image` in the background (`ctr run -d --null-io`): a running runc task on an
    /// overlayfs snapshot whose key is `id`.
    pub fn run_detached(
        &self,
        image: &str,
        id: &str,
        args: &[&str],
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let mut c = self.command();
        c.args(["run", "-d", "--null-io", "--snapshotter", SNAPSHOTTER]);
        add_labels(&mut c, labels);
        c.args([image, id]).args(args);
        cmd::run(&mut c, cmd::QUICK).map(drop)
    }

    /// Creates a container record with its snapshot, and no task.
    pub fn create(&self, image: &str, id: &str, labels: &[(&str, &str)]) -> Result<()> {
        let mut c = self.command();
        c.args(["containers", "create", "--snapshotter", SNAPSHOTTER]);
        add_labels(&mut c, labels);
        c.args([image, id]);
        cmd::run(&mut c, cmd::QUICK).map(drop)
    }

    /// Runs `args` inside the running container `id` and returns its stdout; fails if
    /// it exits non-zero (the error carries its stderr).
    ///
    /// The command's stdout does not go through `ctr`: it runs as
    /// `sh -c 'exec "$@" >/dev/.EXEC-ID.stdout' sh ARGS…`, and the file is read
    /// from the host through `/proc/<task pid>/root` once the exec has returned,
    /// then removed. stdout through the shim's and `ctr`'s FIFOs now and then
    /// lost an exec's last line (seen in lineage's `Lab::sh`; the shim's copy
    /// into the FIFOs is not tied to the exit `ctr` waits for, as with the
    /// short-lived containers [`run_script`](Self::run_script) works around); a
    /// file the command itself wrote and closed before it exited cannot lose it.
    /// `exec "$@"` keeps ARGS an argv (no shell quoting) and runs it as the
    /// process `ctr tasks exec ARGS…` ran, with the same exit status. stderr
    /// still goes through `ctr`. (CRI containers are exec'd through
    /// [`CriNode::exec`](crate::CriNode::exec), CRI's `ExecSync`, not this.)
    ///
    /// The file lives on the container's `/dev`, a tmpfs of its own (runc
    /// mounts one for every container `ctr run` makes, `--privileged` and
    /// `--read-only` ones included): it is in neither the image nor the
    /// snapshot's upper directory, so it changes nothing a commit sees, and a
    /// read-only root does not stop it. This needs `sh` in the image (every
    /// test image is busybox-based); the output must fit the `/dev` tmpfs
    /// (64 MiB); and for as long as the command runs, a listing of `/dev`
    /// made by the command itself shows its own `.testkit-exec-….stdout`.
    pub fn exec(&self, id: &str, args: &[&str]) -> Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if args.is_empty() {
            return Err(Error::Other(format!("exec in {id}: no command")));
        }
        let exec_id = format!(
            "testkit-exec-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let pid = self
            .task_pid(id)?
            .ok_or_else(|| Error::Other(format!("exec in {id}: the container has no task")))?;
        let name = format!(".{exec_id}.stdout");
        let script = format!("exec \"$@\" >/dev/{name}");
        let mut c = self.command();
        c.args(["tasks", "exec", "--exec-id", &exec_id, id])
            .args(["sh", "-c", &script, "sh"])
            .args(args);
        let ran = cmd::run(&mut c, cmd::SLOW);
        let path = PathBuf::from(format!("/proc/{pid}/root/dev/{name}"));
        let read = ran.and_then(|_| {
            let bytes = std::fs::read(&path).map_err(|e| Error::path("reading", &path, e))?;
            String::from_utf8(bytes).map_err(|e| {
                Error::Other(format!("exec in {id} of {args:?} printed non-UTF-8: {e}"))
            })
        });
        let removed = match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::path("removing", &path, e))
            }
            _ => Ok(()),
        };
        let out = read?;
        removed?;
        Ok(out)
    }

    /// Freezes the task of `id`.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.run(&["tasks", "pause", id]).map(drop)
    }

    /// Thaws the task of `id`.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.run(&["tasks", "resume", id]).map(drop)
    }

    /// The state of `id`'s task; [`TaskStatus::None`] if it has none (or no such container).
    pub fn task_status(&self, id: &str) -> Result<TaskStatus> {
        Ok(match self.task_row(id)? {
            None => TaskStatus::None,
            Some((_, status)) => match status.as_str() {
                "CREATED" => TaskStatus::Created,
                "RUNNING" => TaskStatus::Running,
                "PAUSING" => TaskStatus::Pausing,
                "PAUSED" => TaskStatus::Paused,
                "STOPPED" => TaskStatus::Stopped,
                _ => TaskStatus::Unknown(status),
            },
        })
    }

    /// The host pid of `id`'s task (its init process), if it has a task.
    pub fn task_pid(&self, id: &str) -> Result<Option<u32>> {
        Ok(self.task_row(id)?.map(|(pid, _)| pid))
    }

    /// `ctr tasks ls`: TASK  PID  STATUS.
    fn task_row(&self, id: &str) -> Result<Option<(u32, String)>> {
        let out = self.run(&["tasks", "ls"])?;
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let [task, pid, status] = cols[..] {
                if task != id {
                    continue;
                }
                let pid = pid
                    .parse()
                    .map_err(|e| Error::Other(format!("`ctr tasks ls` pid {pid:?}: {e}")))?;
                return Ok(Some((pid, status.to_owned())));
            }
        }
        Ok(None)
    }

    /// SIGKILLs `id`'s task and waits (at most 20 s) until it has stopped. Works on a
    /// paused task too (runc thaws it to let the signal through).
    pub fn kill_task(&self, id: &str) -> Result<()> {
        self.run(&["tasks", "kill", "-s", "SIGKILL", id])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.task_status(id)?;
            if matches!(status, TaskStatus::Stopped | TaskStatus::None) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "task {id} is still {status} 20 s after SIGKILL"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes `id`'s task (killing it if needed) and then the container with its
    /// snapshot. A container that does not exist is not an error.
    pub fn delete_container(&self, id: &str) -> Result<()> {
        match self.task_status(id)? {
            TaskStatus::None => {}
            TaskStatus::Stopped => self.run(&["tasks", "delete", id]).map(drop)?,
            _ => {
                self.kill_task(id)?;
                self.run(&["tasks", "delete", id]).map(drop)?;
            }
        }
        match self.run(&["containers", "delete", id]) {
            Err(e) if e.stderr().contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Runs a fresh container from `image` to completion and returns its stdout; fails
    /// if it exits non-zero. The container and its snapshot are removed either way.
    /// With `args`, they run as `sh -c 'exec "$@" >FILE' sh ARGS…` so that stdout is
    /// read from a file, as [`Ctr::run_script`]'s is (the image needs `sh`); with none,
    /// the image's own command runs and its stdout comes through `ctr`'s FIFOs, which
    /// can lose a short-lived container's last writes.
    pub fn run_image(&self, image: &str, id: &str, args: &[&str]) -> Result<String> {
        if !args.is_empty() {
            let mut argv = vec!["sh", "-c", "exec \"$@\" >/dev/commitd-testkit/stdout", "sh"];
            argv.extend_from_slice(args);
            return self.run_to_file(image, id, &argv);
        }
        let mut c = self.command();
        c.args(["run", "--rm", "--snapshotter", SNAPSHOTTER, image, id]);
        let out = cmd::stdout(&mut c, cmd::SLOW);
        // `--rm` cleans up after a normal exit; make sure of it after a failure too.
        let cleanup = self.delete_container(id);
        let out = out?;
        cleanup?;
        Ok(out)
    }

    /// Runs `sh -c SCRIPT` in a fresh container of `image` and returns what the
    /// script wrote to stdout; fails if it exits non-zero. The script's stdout is
    /// a file on a host directory bind-mounted under the container's `/dev` (a
    /// tmpfs of its own, outside the image), read after the container is gone:
    /// stdout through the shim and `ctr`'s FIFOs can lose a short-lived
    /// container's last writes (the shim waits at most 2 s for its copy before it
    /// closes them), a file cannot. stderr still goes through `ctr`.
    pub fn run_script(&self, image: &str, id: &str, script: &str) -> Result<String> {
        let wrapped = format!("{{\n{script}\n}} >/dev/commitd-testkit/stdout");
        self.run_to_file(image, id, &["sh", "-c", &wrapped])
    }

    /// Runs `argv` in a fresh container of `image` with a host directory
    /// bind-mounted at `/dev/commitd-testkit`, and returns what it left in
    /// `stdout` there once the container is gone.
    fn run_to_file(&self, image: &str, id: &str, argv: &[&str]) -> Result<String> {
        let dir = tempfile::Builder::new()
            .prefix("commitd-testkit-out-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let mount = format!(
            "type=bind,src={},dst=/dev/commitd-testkit,options=rbind:rw",
            dir.path().display()
        );
        let mut c = self.command();
        c.args([
            "run",
            "--rm",
            "--snapshotter",
            SNAPSHOTTER,
            "--mount",
            &mount,
        ])
        .args([image, id])
        .args(argv);
        let ran = cmd::run(&mut c, cmd::SLOW);
        let cleanup = self.delete_container(id);
        ran?;
        cleanup?;
        let path = dir.path().join("stdout");
        std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    /// `ctr containers info`, parsed.
    pub fn container_info(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.run(&["containers", "info", id])?;
        serde_json::from_str(&out)
            .map_err(|e| Error::Other(format!("`ctr containers info {id}`: {e}:\n{out}")))
    }

    /// The overlay upper directory of container `id`'s snapshot: where its changes are.
    pub fn upper_dir(&self, id: &str) -> Result<PathBuf> {
        let info = self.container_info(id)?;
        let field = |name: &str| {
            info.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (key, snapshotter) = (field("SnapshotKey"), field("Snapshotter"));
        if snapshotter != SNAPSHOTTER {
            return Err(Error::Other(format!(
                "container {id} uses snapshotter {snapshotter:?}, not {SNAPSHOTTER}"
            )));
        }
        let mounts = self.run(&[
            "snapshots",
            "--snapshotter",
            SNAPSHOTTER,
            "mounts",
            "/",
            &key,
        ])?;
        // mount -t overlay overlay -o index=off,workdir=…,upperdir=…,lowerdir=… /
        mounts
            .split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|opt| opt.strip_prefix("upperdir="))
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::Other(format!(
                    "snapshot {key} of {id} has no upper directory: {mounts}"
                ))
            })
    }

    /// IDs of the leases in the namespace.
    pub fn leases(&self) -> Result<Vec<String>> {
        Ok(words(&self.run(&["leases", "ls", "-q"])?))
    }

    /// The snapshots of `snapshotter` in the namespace.
    pub fn snapshots(&self, snapshotter: &str) -> Result<Vec<Snapshot>> {
        let out = self.run(&["snapshots", "--snapshotter", snapshotter, "ls"])?;
        // KEY  PARENT  KIND; a blank PARENT for bottom layers.
        let mut all = Vec::new();
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (key, parent, kind) = match cols[..] {
                [key, parent, kind] => (key, Some(parent), kind),
                [key, kind] => (key, None, kind),
                [] => continue,
                _ => {
                    return Err(Error::Other(format!(
                        "unexpected `ctr snapshots ls` line: {line:?}"
                    )));
                }
            };
            all.push(Snapshot {
                key: key.into(),
                parent: parent.map(Into::into),
                kind: kind.into(),
            });
        }
        all.sort();
        Ok(all)
    }

    /// Digests of the blobs in the content store, as far as this namespace sees them.
    pub fn content(&self) -> Result<Vec<String>> {
        Ok(words(&self.run(&["content", "ls", "-q"])?))
    }

    /// The image records of the namespace.
    pub fn images(&self) -> Result<Vec<Image>> {
        let out = self.run(&["images", "ls"])?;
        // REF  TYPE  DIGEST  SIZE  PLATFORMS  LABELS
        let mut all: Vec<Image> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some(Image {
                    name: (*cols.first()?).into(),
                    digest: (*cols.get(2)?).into(),
                })
            })
            .collect();
        all.sort();
        Ok(all)
    }

    /// The bytes of blob `digest` of the content store (`ctr content get`).
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        Ok(cmd::run(self.command().args(["content", "get", digest]), cmd::SLOW)?.stdout)
    }

    /// The manifest of image `name` for this host's platform (an index is followed to
    /// its first manifest for linux/this architecture).
    pub fn image_manifest(&self, name: &str) -> Result<serde_json::Value> {
        let target = self
            .images()?
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::Other(format!("no image {name} in {}", self.namespace)))?;
        let mut doc = self.json_blob(&target.digest)?;
        if let Some(manifests) = doc.get("manifests").and_then(|m| m.as_array()) {
            let arch = crate::image::platform().1;
            let digest = manifests
                .iter()
                .find(|m| m["platform"]["architecture"] == arch)
                .or_else(|| manifests.first())
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| Error::Other(format!("index of {name} lists no manifest")))?
                .to_owned();
            doc = self.json_blob(&digest)?;
        }
        Ok(doc)
    }

    /// The config of image `name` (the manifest's config blob, parsed).
    pub fn image_config(&self, name: &str) -> Result<serde_json::Value> {
        let manifest = self.image_manifest(name)?;
        let digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| Error::Other(format!("manifest of {name} has no config")))?;
        self.json_blob(digest)
    }

    /// The entries of the top layer of image `name` (see
    /// [`layer_entries`](crate::layer_entries)); the blob must be in the content store.
    pub fn top_layer_entries(&self, name: &str) -> Result<Vec<crate::LayerEntry>> {
        let manifest = self.image_manifest(name)?;
        let digest = manifest["layers"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l["digest"].as_str())
            .ok_or_else(|| Error::Other(format!("image {name} has no layer")))?;
        crate::layer_entries(&self.blob(digest)?)
    }

    fn json_blob(&self, digest: &str) -> Result<serde_json::Value> {
        let bytes = self.blob(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("blob {digest} is not JSON: {e}")))
    }

    /// Best-effort teardown of everything in the namespace: tasks, containers, images,
    /// leases, then the namespace itself (which fails while the GC has not yet removed
    /// the content and snapshots; that is ignored). Returns the first error met.
    pub fn remove_all(&self) -> Result<()> {
        let mut first = None;
        let mut keep = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for id in words(&self.run(&["containers", "ls", "-q"]).unwrap_or_default()) {
            keep(self.delete_container(&id));
        }
        for image in self.images().unwrap_or_default() {
            keep(self.run(&["images", "delete", &image.name]).map(drop));
        }
        for lease in self.leases().unwrap_or_default() {
            keep(self.run(&["leases", "delete", &lease]).map(drop));
        }
        let _ = cmd::run(
            Command::new("ctr").arg("-a").arg(&self.address).args([
                "namespaces",
                "remove",
                &self.namespace,
            ]),
            cmd::QUICK,
        );
        first.map_or(Ok(()), Err)
    }
}

fn add_labels(c: &mut Command, labels: &[(&str, &str)]) {
    for (k, v) in labels {
        c.arg("--label").arg(format!("{k}={v}"));
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}
