//! Docker's engine as a test oracle: Debian's `docker.io` (Docker Engine 20.10)
//! started privately, as the benchmark and the differential tests use it.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::containerd::{log_tail, spawn_watchdog_script, terminate};
use crate::error::{Error, Result};
use crate::http::{self, Response};

/// Debian's dockerd.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// How long [`Dockerd::start`] waits for `/_ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const WATCHDOG: &str = include_str!("watchdog-dockerd.sh");

/// The dockerd shared by every test of this process, started on first use and
/// stopped by its watchdog when the process exits.
///
/// # Panics
/// If dockerd cannot be started, with the reason: tests fail, never skip.
pub fn shared_dockerd() -> &'static Dockerd {
    static SHARED: OnceLock<Dockerd> = OnceLock::new();
    SHARED.get_or_init(|| {
        Dockerd::start().unwrap_or_else(|e| panic!("commitd-testkit: cannot start dockerd: {e}"))
    })
}

/// A private Docker Engine in a temporary directory `commitd-dockerd-*`: data root
/// `data/`, exec root `exec/`, API socket `docker.sock`, log `dockerd.log`. No
/// networking of its own (`--bridge=none`, no iptables): containers need
/// `--network none`. Storage driver overlay2 (native diff).
///
/// dockerd 20.10 starts a containerd of its own (state and socket under the exec
/// root) unless `/run/containerd/containerd.sock` answers: then it uses that one
/// (namespace `moby`). Nothing on these machines runs a system containerd; if one
/// does, this engine's containers live there. dockerd also makes the empty
/// `/run/docker/plugins` (a fixed path).
///
/// Dropping it stops dockerd (which stops its containers and its own containerd),
/// kills what is left, unmounts and removes the directory; a watchdog does the same
/// if the test process dies (see the crate docs).
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    watchdog: Child,
    lifeline: Option<OwnedFd>,
}

impl Dockerd {
    /// Starts dockerd and waits until `/_ping` answers.
    pub fn start() -> Result<Dockerd> {
        Dockerd::start_in(&std::env::temp_dir())
    }

    /// [`start`](Self::start), its directory (data root, socket) made in `parent`
    /// instead of `$TMPDIR`: on a filesystem of the caller's choosing.
    pub fn start_in(parent: &Path) -> Result<Dockerd> {
        if !Path::new(DOCKERD).is_file() {
            return Err(Error::Other(format!(
                "{DOCKERD} is missing: install Debian's docker.io (scripts/deps.sh --test)"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("commitd-dockerd-")
            .tempdir_in(parent)
            .map_err(|e| Error::io("creating a temporary directory for dockerd", e))?
            .keep();
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::path("resolving", &dir, e))?;
        let (watchdog, lifeline) = spawn_watchdog_script(&dir, "watchdog-dockerd.sh", WATCHDOG)
            .inspect_err(|_| {
                let _ = fs::remove_dir_all(&dir);
            })?;
        let mut me = Dockerd {
            socket: dir.join("docker.sock"),
            dir,
            child: None,
            watchdog,
            lifeline: Some(lifeline),
        };
        me.launch()?;
        Ok(me)
    }

    fn launch(&mut self) -> Result<()> {
        let dir = &self.dir;
        // An empty daemon.json of our own: the host's /etc/docker/daemon.json, if any,
        // is not read.
        let config = dir.join("daemon.json");
        fs::write(&config, "{}\n").map_err(|e| Error::path("writing", &config, e))?;
        let log = dir.join("dockerd.log");
        let out = fs::File::create(&log).map_err(|e| Error::path("creating", &log, e))?;
        let mut command = Command::new(DOCKERD);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--storage-driver",
                "overlay2",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .process_group(0);
        let child = command.spawn().map_err(|e| Error::Command {
            command: cmd::show(&command),
            status: format!("could not start: {e}"),
            stderr: String::new(),
        })?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(Error::Other(format!(
                    "dockerd {}; the end of its log:\n{}",
                    cmd::describe(status),
                    log_tail(&log, 30)
                )));
            }
            if self
                .get("/_ping")
                .is_ok_and(|r| r.status == 200 && r.body == b"OK")
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Other(format!(
                    "dockerd did not answer /_ping within {READY_TIMEOUT:?}; the end of its log:\n{}",
                    log_tail(&log, 30)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://SOCKET`, for `docker -H` and `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The private directory (data root, exec root, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join("dockerd.log"), lines)
    }

    /// The pid of dockerd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An API request (paths as Docker's API has them, e.g. `/v1.41/images/json`).
    pub fn api(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        http::request(&self.socket, method, path, body, cmd::SLOW)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response> {
        http::request(&self.socket, "GET", path, None, Duration::from_secs(10))
    }

    /// A command of the Docker CLI on `PATH` (the client the tests use against
    /// commitd too) against this engine, whatever its exit status. Its own
    /// `DOCKER_CONFIG` keeps the user's out.
    pub fn cli_output(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(self.host())
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("cli-config"));
        cmd::output(&mut c, cmd::SLOW)
    }

    /// Like [`cli_output`](Self::cli_output), failing unless it exits 0; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(self.host())
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("cli-config"));
        cmd::stdout(&mut c, cmd::SLOW)
    }

    /// `docker load -i ARCHIVE` (a docker-archive); returns the names it loaded.
    pub fn load(&self, archive: &Path) -> Result<Vec<String>> {
        let path = archive.to_string_lossy();
        let out = self.cli(&["load", "-i", &path])?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .map(|l| l.trim().to_owned())
            .collect())
    }
}

impl Drop for Dockerd {
    /// Closes the watchdog's pipe and waits (at most two minutes) for it to stop
    /// dockerd and remove the directory.
    fn drop(&mut self) {
        drop(self.lifeline.take());
        match cmd::wait_timeout(&mut self.watchdog, Duration::from_secs(120)) {
            Ok(Some(_)) => {}
            _ => eprintln!(
                "commitd-testkit: the dockerd watchdog of {} is still cleaning up",
                self.dir.display()
            ),
        }
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child);
        }
    }
}
