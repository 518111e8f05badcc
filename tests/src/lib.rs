#![allow(clippy::unwrap_used)]
//! Shared set-up of the system tests: a namespace of the shared private
//! containerd with the busybox base image, and an engine on it.

use std::time::Duration;

pub mod bench_lineage;
pub mod bench_nerdctl;
pub mod bench_push;
pub mod fidelity;

use commit_engine::{CommitRequest, Committed, Compression, Containerd, Engine, EngineConfig};
use commitd_testkit::{Ctr, SNAPSHOTTER, busybox_image, shared, unique_namespace};
use tokio_util::sync::CancellationToken;

/// `POST path` to a Docker-API server on `socket`, read to its end (the
/// benchmarks' calls: no answer within an hour is a failure): its status
/// and body (chunked encoding undone).
pub fn post(socket: &std::path::Path, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = commitd_testkit::http_request_with(
        socket,
        "POST",
        path,
        headers,
        None,
        Duration::from_secs(3600),
    )
    .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (r.status, r.text())
}

/// One test's world: its own namespace, the base image imported.
pub struct World {
    pub ns: String,
    pub ctr: Ctr,
    pub image: String,
    pub socket: std::path::PathBuf,
}

impl World {
    pub fn new(name: &str) -> World {
        World::on(shared(), name)
    }

    /// A world on a containerd of the test's own (one it may kill).
    pub fn on(containerd: &commitd_testkit::Containerd, name: &str) -> World {
        let ns = unique_namespace(name);
        let image = busybox_image(containerd, &ns)
            .unwrap_or_else(|e| panic!("importing the busybox image: {e}"));
        World {
            ctr: containerd.ctr(&ns),
            ns,
            image,
            socket: containerd.socket().to_path_buf(),
        }
    }

    pub fn engine(&self, fast_path: bool) -> Engine {
        let c = Containerd::lazy(&self.socket, &self.ns).expect("namespace");
        Engine::new(
            c,
            EngineConfig {
                fast_path,
                ..EngineConfig::default()
            },
        )
    }

    /// A running container from the base image, then `setup` run in it.
    pub fn running(&self, id: &str, setup: &str) {
        self.ctr
            .run_detached(
                &self.image,
                id,
                &["sh", "-c", "sleep 100000"],
                &[("nerdctl/name", &format!("{id}-name"))],
            )
            .unwrap_or_else(|e| panic!("starting {id}: {e}"));
        if !setup.is_empty() {
            self.ctr
                .exec(id, &["sh", "-c", setup])
                .unwrap_or_else(|e| panic!("setting up {id}: {e}"));
        }
    }

    /// Runs `script` in a fresh container of `image` and returns its output.
    pub fn run(&self, image: &str, script: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "check-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.ctr
            .run_script(image, &id, script)
            .unwrap_or_else(|e| panic!("running {image}: {e}"))
    }

    /// Asks containerd to collect garbage now: deleting a lease with `--sync`
    /// runs the collector and waits for it.
    pub fn collect_garbage(&self) {
        self.ctr.collect_garbage().expect("GC");
    }

    /// Nothing a commit makes temporarily is left: no lease, no view, no
    /// `extract-` snapshot.
    pub fn assert_clean(&self) {
        let leases = self.ctr.leases().expect("leases");
        assert!(leases.is_empty(), "leases left: {leases:?}");
        let snaps = self.ctr.snapshots(SNAPSHOTTER).expect("snapshots");
        let temp: Vec<_> = snaps
            .iter()
            .filter(|s| s.key.starts_with("extract-") || s.key.contains("-view-"))
            .collect();
        assert!(temp.is_empty(), "temporary snapshots left: {temp:?}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.ctr.remove_all();
    }
}

/// A commit request with Docker's defaults.
pub fn request(container: &str, name: Option<&str>) -> CommitRequest {
    CommitRequest {
        container: container.into(),
        image_name: name.map(str::to_string),
        author: String::new(),
        comment: String::new(),
        pause: true,
        compression: Some(Compression::Gzip),
        config: None,
        changes: Default::default(),
        squash: None,
        timestamp: None,
        exclude: Vec::new(),
        incremental: None,
    }
}

pub async fn commit(engine: &Engine, req: CommitRequest) -> commit_engine::Result<Committed> {
    tokio::time::timeout(
        Duration::from_secs(120),
        engine.commit(req, &CancellationToken::new()),
    )
    .await
    .expect("commit took over two minutes")
}

/// A listing of a filesystem from inside a container: every path with its
/// type, mode, owner, size, link target and content hash.
pub const LIST_FS: &str = r#"cd / && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run \) -prune -o -print | sort | while read -r p; do
  if [ -L "$p" ]; then echo "$p link $(readlink "$p")";
  elif [ -d "$p" ]; then echo "$p dir $(stat -c '%a %u:%g' "$p")";
  elif [ -f "$p" ]; then echo "$p file $(stat -c '%a %u:%g %s %h' "$p") $(sha256sum "$p" | cut -c1-16)";
  else echo "$p other $(stat -c '%F %a %t:%T' "$p")"; fi; done"#;

/// The daemon under test, run as its own process on a temporary socket.
/// Stopped with SIGTERM (then SIGKILL) when dropped; its log is printed if
/// the test failed.
pub struct Daemon {
    child: std::process::Child,
    pub socket: std::path::PathBuf,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the daemon binary of this package for `world`:
/// `daemon!(world)` or `daemon!(world, ["--flag", "value"])`.
#[macro_export]
macro_rules! daemon {
    ($world:expr) => {
        $crate::Daemon::start(
            env!("CARGO_BIN_EXE_commitd-under-test"),
            &$world.socket,
            &$world.ns,
            &[],
        )
    };
    ($world:expr, $args:expr) => {
        $crate::Daemon::start(
            env!("CARGO_BIN_EXE_commitd-under-test"),
            &$world.socket,
            &$world.ns,
            &$args,
        )
    };
    ($world:expr, $args:expr, $env:expr) => {
        $crate::Daemon::start_env(
            env!("CARGO_BIN_EXE_commitd-under-test"),
            &$world.socket,
            &$world.ns,
            &$args,
            &$env,
        )
    };
}

impl Daemon {
    pub fn start(bin: &str, containerd: &std::path::Path, ns: &str, args: &[&str]) -> Daemon {
        Daemon::start_env(bin, containerd, ns, args, &[])
    }

    /// [`Daemon::start`] with extra environment (e.g.
    /// [`commit_engine::failpoint::ENV`]).
    pub fn start_env(
        bin: &str,
        containerd: &std::path::Path,
        ns: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("commitd-e2e-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("commitd.sock");
        let log = dir.path().join("commitd.log");
        let child = std::process::Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .arg("--containerd")
            .arg(containerd)
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,commit_engine=debug".into()),
            )
            .env_remove("COMMITD_CONFIG")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let d = Daemon {
            child,
            socket,
            log,
            _dir: dir,
        };
        d.wait_ready();
        d
    }

    /// Until the daemon answers `/_ping`: a connection alone is taken by
    /// the socket's backlog before the daemon serves (and before it has
    /// bound its other listeners, e.g. the metrics port).
    fn wait_ready(&self) {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = [0u8; 12];
                if s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "commitd did not serve {} in 20 s; log:\n{}",
            self.socket.display(),
            self.log_text()
        );
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `docker -H unix://SOCKET args…`: (exit success, stdout, stderr).
    pub fn docker(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self._dir.path().join("docker-config"))
            .output()
            .expect("running the docker CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Daemon::docker`], failing the test unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.docker(args);
        assert!(
            ok,
            "docker {args:?} failed: {err}\n{out}\ndaemon log:\n{}",
            self.log_text()
        );
        out
    }

    /// `curl --unix-socket` a request: (status, body without the newline
    /// Docker's JSON encoder ends bodies with).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String) {
        curl(&self.socket, method, path, body, headers)
    }

    /// A field of the process's `/proc/PID/status`, in KiB (`VmHWM`, `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("waiting for commitd")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- commitd log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// `curl --unix-socket SOCKET` a request: (status, body without the newline
/// Docker's JSON encoder ends bodies with); status 0 when no answer came.
pub fn curl(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--unix-socket",
    ])
    .arg(socket);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    c.arg(format!("http://d{path}"));
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.strip_suffix('\n').unwrap_or(body).to_string(),
    )
}

/// A `kB` field of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), if present.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let field = field.trim_end_matches(':');
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
