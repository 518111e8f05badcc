//! A private image registry: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, storage in a temporary directory.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};

/// How long [`Registry::start`] waits for the registry to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A `docker-registry serve` process of this test process, plain HTTP on
/// `127.0.0.1:PORT`. Stopped on drop (its directory is removed with it when the
/// registry made it).
///
/// Started inside a directory a testkit watchdog cleans ([`Registry::start_in`]),
/// the registry is also stopped when the test process dies: the watchdog kills every
/// process whose command line names a path of that directory.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Set when the registry made its own directory (removed on drop).
    _own: Option<tempfile::TempDir>,
}

impl Registry {
    /// A registry in a fresh temporary directory of its own.
    pub fn start() -> Result<Registry> {
        let own = tempfile::Builder::new()
            .prefix("commitd-registry-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory for the registry", e))?;
        let mut r = Registry::start_in(own.path())?;
        r._own = Some(own);
        Ok(r)
    }

    /// A registry keeping its config (`config.yml`), log (`registry.log`) and storage
    /// (`data/`) in `dir`, which must exist.
    pub fn start_in(dir: &Path) -> Result<Registry> {
        Registry::start_with(dir, None)
    }

    /// [`Registry::start_in`], but every request must log in as `user` with
    /// `password` (HTTP basic auth from an `htpasswd` file made with apache2-utils'
    /// `htpasswd`; distribution accepts it over plain HTTP).
    pub fn start_with_login(dir: &Path, user: &str, password: &str) -> Result<Registry> {
        Registry::start_with(dir, Some((user, password)))
    }

    fn start_with(dir: &Path, login: Option<(&str, &str)>) -> Result<Registry> {
        let auth = match login {
            None => String::new(),
            Some((user, password)) => {
                let out = cmd::stdout(
                    Command::new("htpasswd").args(["-Bbn", user, password]),
                    cmd::SLOW,
                )?;
                let file = dir.join("htpasswd");
                fs::write(&file, out).map_err(|e| Error::path("writing", &file, e))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: commitd-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        let mut last = String::new();
        // A free port is found by binding port 0 and letting it go: another process may
        // take it in between, so a registry that exits at once is started again.
        for _ in 0..3 {
            let port = free_port()?;
            match Registry::spawn(dir, port, &auth) {
                Ok(r) => return Ok(r),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Other(format!(
            "docker-registry did not start: {last}"
        )))
    }

    fn spawn(dir: &Path, port: u16, auth: &str) -> Result<Registry> {
        let config = dir.join("config.yml");
        let text = format!(
            "# Written by commitd-testkit.\nversion: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            data = dir.join("data").display()
        );
        fs::write(&config, text).map_err(|e| Error::path("writing", &config, e))?;
        let log = dir.join("registry.log");
        let log_file = fs::File::create(&log).map_err(|e| Error::path("creating", &log, e))?;
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().map_err(|e| Error::Command {
            command: cmd::show(&command),
            status: format!(
                "could not start: {e} (install Debian's docker-registry: scripts/deps.sh --test)"
            ),
            stderr: String::new(),
        })?;
        let mut r = Registry {
            child,
            port,
            dir: dir.to_path_buf(),
            _own: None,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(Error::Other(format!(
                    "docker-registry on port {port} {}; its log:\n{}",
                    cmd::describe(status),
                    cmd::tail(&fs::read_to_string(&log).unwrap_or_default(), 20)
                )));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(r);
            }
            if started.elapsed() > READY_TIMEOUT {
                r.stop();
                return Err(Error::Other(format!(
                    "docker-registry did not listen on 127.0.0.1:{port} within {READY_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`: the host part of image references in this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (config, log, `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the registry keeps repositories (absent until one is pushed).
    pub fn repositories(&self) -> PathBuf {
        self.dir.join("data/docker/registry/v2/repositories")
    }

    /// Whether the registry holds blob `digest` (`sha256:…`) in any repository.
    pub fn has_blob(&self, digest: &str) -> bool {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return false;
        };
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or_default())
            .join(hex)
            .join("data")
            .is_file()
    }

    /// The last `lines` lines of its log (access log included).
    pub fn log_tail(&self, lines: usize) -> String {
        cmd::tail(
            &fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default(),
            lines,
        )
    }

    /// `skopeo copy` of an OCI image-layout archive (e.g. from
    /// [`ImageBuilder::write_archive`](crate::ImageBuilder::write_archive)) to
    /// `REPO:TAG` of this registry; returns the full reference `127.0.0.1:PORT/REPO:TAG`.
    pub fn push_oci_archive(&self, archive: &Path, repo_tag: &str) -> Result<String> {
        let reference = format!("{}/{repo_tag}", self.host());
        cmd::run(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://{reference}")),
            cmd::SLOW,
        )?;
        Ok(reference)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port on 127.0.0.1 that nobody listened on a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("binding a free port on 127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("reading a bound port", e))
}
