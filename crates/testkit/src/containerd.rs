//! A private containerd per test process, and the watchdog that cleans up after it.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::ctr::Ctr;
use crate::error::{Error, Result};

/// How long [`Containerd::start`] waits for containerd to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stop waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variable naming the socket of a containerd that [`shared`] uses instead of
/// starting one.
pub const CONTAINERD_ENV: &str = "COMMITD_TEST_CONTAINERD";

const WATCHDOG: &str = include_str!("watchdog.sh");

/// Plugins that only slow the start, write outside our directory, or fail here.
/// (`io.containerd.runtime.v1.linux` stays: the tasks service of 1.6 does not start
/// without a v1 runtime.)
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
];

/// A containerd to test against: a private one this process started (stopped and
/// removed on drop), or an external one named by [`CONTAINERD_ENV`] (never touched).
#[derive(Debug)]
pub struct Containerd {
    socket: PathBuf,
    root: PathBuf,
    private: Option<Private>,
}

#[derive(Debug)]
struct Private {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pid_file: PathBuf,
    process: Option<Child>,
    watchdog: Child,
    /// The only writer of the watchdog's stdin: closing it (drop, or the process
    /// exiting) makes the watchdog clean up.
    lifeline: Option<OwnedFd>,
}

/// The containerd shared by every test of this process, started on first use and
/// cleaned up by its watchdog when the process exits (statics are never dropped).
///
/// If [`CONTAINERD_ENV`] is set, that containerd is used instead and never stopped.
///
/// # Panics
/// If containerd cannot be started or reached, with the reason: tests fail, never skip.
pub fn shared() -> &'static Containerd {
    static SHARED: OnceLock<Containerd> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var_os(CONTAINERD_ENV) {
        Some(socket) => Containerd::connect(socket).unwrap_or_else(|e| {
            panic!(
                "commitd-testkit: {CONTAINERD_ENV} is set, but that containerd cannot be used: {e}"
            )
        }),
        None => Containerd::start()
            .unwrap_or_else(|e| panic!("commitd-testkit: cannot start a private containerd: {e}")),
    })
}

impl Containerd {
    /// Starts a private containerd in a fresh temporary directory and waits until it
    /// answers. Its configuration keeps the overlayfs and native snapshotters, the
    /// walking differ, the runc v2 runtime and the GC scheduler; CRI and the other
    /// plugins that are useless here are off.
    pub fn start() -> Result<Containerd> {
        Containerd::start_in(&std::env::temp_dir())
    }

    /// [`start`](Self::start), its directory (root, state, socket) made in `parent`
    /// instead of `$TMPDIR`: on a filesystem of the caller's choosing.
    pub fn start_in(parent: &Path) -> Result<Containerd> {
        Containerd::start_with_in(parent, |_| Ok(Extra::default()))
    }

    /// [`start`](Self::start), with `prepare` run in the new directory (after the
    /// watchdog is up, before the config is written): what it starts there is cleaned
    /// up with the directory, and what it returns goes into the config.
    pub(crate) fn start_with(prepare: impl FnOnce(&Path) -> Result<Extra>) -> Result<Containerd> {
        Containerd::start_with_in(&std::env::temp_dir(), prepare)
    }

    fn start_with_in(
        parent: &Path,
        prepare: impl FnOnce(&Path) -> Result<Extra>,
    ) -> Result<Containerd> {
        preflight()?;
        let dir = tempfile::Builder::new()
            .prefix("commitd-ctd-")
            .tempdir_in(parent)
            .map_err(|e| Error::io("creating a temporary directory for containerd", e))?
            .keep();
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::path("resolving", &dir, e))?;
        // The watchdog first, so that it cleans up even if the rest fails: from here on,
        // dropping `me` stops whatever was started and removes the directory.
        let (watchdog, lifeline) = spawn_watchdog(&dir).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        let socket = dir.join("containerd.sock");
        let root = dir.join("root");
        let config = dir.join("config.toml");
        let state = dir.join("state");
        let debug = dir.join("debug.sock");
        let mut me = Containerd {
            socket,
            root,
            private: Some(Private {
                log: dir.join("containerd.log"),
                pid_file: dir.join("containerd.pid"),
                config: config.clone(),
                dir,
                process: None,
                watchdog,
                lifeline: Some(lifeline),
            }),
        };
        if me.socket.as_os_str().len() > 100 {
            return Err(Error::Other(format!(
                "socket path {} is too long for a unix socket; set TMPDIR to a shorter directory",
                me.socket.display()
            )));
        }
        let dir = me.dir().map(Path::to_path_buf).unwrap_or_default();
        let extra = prepare(&dir)?;
        let text = config_toml(&me.root, &state, &me.socket, &debug, &extra);
        fs::write(&config, text).map_err(|e| Error::path("writing", &config, e))?;
        me.launch()?;
        Ok(me)
    }

    /// Uses a containerd that is already running (it is never stopped by us). Its root
    /// directory is read from the overlayfs snapshotter's exports.
    pub fn connect(socket: impl Into<PathBuf>) -> Result<Containerd> {
        let socket = socket.into();
        if !socket.exists() {
            return Err(Error::Other(format!(
                "no containerd socket at {}",
                socket.display()
            )));
        }
        let probe = cmd::run(
            Command::new("ctr")
                .args(["--connect-timeout", "5s", "-a"])
                .arg(&socket)
                .arg("version"),
            Duration::from_secs(10),
        );
        probe.map_err(|e| {
            Error::Other(format!(
                "containerd at {} does not answer: {e}",
                socket.display()
            ))
        })?;
        let plugins = cmd::stdout(
            Command::new("ctr").arg("-a").arg(&socket).args([
                "plugins",
                "ls",
                "-d",
                "id==overlayfs",
            ]),
            cmd::QUICK,
        )?;
        let root = plugins
            .lines()
            .filter_map(|l| l.trim().strip_prefix("root"))
            .map(|r| PathBuf::from(r.trim()))
            .find_map(|r| r.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                Error::Other(format!(
                    "containerd at {} has no overlayfs snapshotter:\n{plugins}",
                    socket.display()
                ))
            })?;
        Ok(Containerd {
            socket,
            root,
            private: None,
        })
    }

    /// The gRPC socket (also what `ctr -a` takes).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's root directory (content store, snapshots, metadata).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's log file; `None` for an external containerd.
    pub fn log_path(&self) -> Option<&Path> {
        self.private.as_ref().map(|p| p.log.as_path())
    }

    /// The temporary directory holding config, socket, root, state and log; `None` for
    /// an external containerd.
    pub fn dir(&self) -> Option<&Path> {
        self.private.as_ref().map(|p| p.dir.as_path())
    }

    /// The pid of the containerd process, while this process runs one.
    pub fn pid(&self) -> Option<u32> {
        self.private.as_ref()?.process.as_ref().map(Child::id)
    }

    /// The pid of the watchdog process; `None` for an external containerd.
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.private.as_ref().map(|p| p.watchdog.id())
    }

    /// A `ctr` handle on `namespace` of this containerd.
    pub fn ctr(&self, namespace: &str) -> Ctr {
        Ctr::new(&self.socket, namespace).with_log(self.log_path())
    }

    /// The last `lines` lines of the log (empty for an external containerd).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log_path()
            .map(|log| log_tail(log, lines))
            .unwrap_or_default()
    }

    /// SIGKILLs containerd, as a crash would: shims and containers keep running, the
    /// socket file stays. [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) -> Result<()> {
        let p = self.private_mut("kill")?;
        if let Some(mut child) = p.process.take() {
            child
                .kill()
                .map_err(|e| Error::io("killing containerd", e))?;
            child
                .wait()
                .map_err(|e| Error::io("reaping containerd", e))?;
        }
        Ok(())
    }

    /// Starts containerd again on the same root, state and socket, and waits until it
    /// answers. A running one is stopped first (SIGTERM, SIGKILL after 10 s).
    pub fn restart(&mut self) -> Result<()> {
        let p = self.private_mut("restart")?;
        if let Some(mut child) = p.process.take() {
            terminate(&mut child)?;
        }
        self.launch()
    }

    fn private_mut(&mut self, what: &str) -> Result<&mut Private> {
        let socket = self.socket.display().to_string();
        self.private.as_mut().ok_or_else(|| {
            Error::Other(format!("cannot {what} the external containerd at {socket}"))
        })
    }

    /// Spawns containerd from the config and waits until `ctr version` answers.
    fn launch(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let p = self.private_mut("start")?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(|e| Error::path("opening", &p.log, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("duplicating the log file", e))?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&p.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Its own process group: a Ctrl-C on the test goes to the test only, and the
        // watchdog stops containerd properly.
        command.process_group(0);
        let child = command.spawn().map_err(|e| Error::Command {
            command: cmd::show(&command),
            status: format!("could not start: {e}"),
            stderr: String::new(),
        })?;
        fs::write(&p.pid_file, child.id().to_string())
            .map_err(|e| Error::path("writing", &p.pid_file, e))?;
        p.process = Some(child);

        let started = Instant::now();
        loop {
            let exited = match p.process.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(format!("exited ({})", cmd::describe(status))),
                _ => None,
            };
            // Probe only once the socket is there: `ctr` would wait for it.
            if exited.is_none() && socket.exists() {
                let probe = cmd::output(
                    Command::new("ctr")
                        .args(["--connect-timeout", "1s", "-a"])
                        .arg(&socket)
                        .arg("version"),
                    Duration::from_secs(5),
                );
                if probe.is_ok_and(|o| o.status.success()) {
                    return Ok(());
                }
            }
            let why = exited.or_else(|| {
                (started.elapsed() > READY_TIMEOUT).then(|| {
                    format!(
                        "did not answer on {} within {READY_TIMEOUT:?}",
                        socket.display()
                    )
                })
            });
            if let Some(why) = why {
                if let Some(mut child) = p.process.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // The log goes with the directory: quote it.
                return Err(Error::Other(format!(
                    "containerd {why}; the end of its log:\n{}",
                    log_tail(&p.log, 30)
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Containerd {
    /// Stops containerd, its shims and containers, unmounts and removes the directory:
    /// closes the watchdog's pipe and waits (at most a minute) for it to finish.
    fn drop(&mut self) {
        let Some(p) = self.private.as_mut() else {
            return;
        };
        drop(p.lifeline.take());
        match cmd::wait_timeout(&mut p.watchdog, Duration::from_secs(60)) {
            Ok(Some(_)) => {}
            Ok(None) => eprintln!(
                "commitd-testkit: the watchdog of {} is still cleaning up after 60 s",
                p.dir.display()
            ),
            Err(e) => eprintln!(
                "commitd-testkit: waiting for the watchdog of {}: {e}",
                p.dir.display()
            ),
        }
        if let Some(mut child) = p.process.take() {
            // The watchdog stopped it; reap the zombie.
            let _ = child.wait();
        }
    }
}

pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    cmd::tail(
        &String::from_utf8_lossy(&fs::read(log).unwrap_or_default()),
        lines,
    )
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; reaps the child.
pub(crate) fn terminate(child: &mut Child) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|e| Error::Other(format!("pid out of range: {e}")))?;
    // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if cmd::wait_timeout(child, STOP_TIMEOUT)
        .map_err(|e| Error::io("waiting for containerd", e))?
        .is_none()
    {
        let _ = child.kill();
    }
    child
        .wait()
        .map_err(|e| Error::io("reaping containerd", e))?;
    Ok(())
}

/// Starts the watchdog (see `watchdog.sh`) with its stdin on a pipe whose writer we keep.
fn spawn_watchdog(dir: &Path) -> Result<(Child, OwnedFd)> {
    spawn_watchdog_script(dir, "watchdog.sh", WATCHDOG)
}

/// Starts `script` (written to `dir/name`) as a watchdog of `dir`: `/bin/sh DIR/NAME
/// DIR` in its own process group, stdin on a pipe whose only writer is returned.
pub(crate) fn spawn_watchdog_script(
    dir: &Path,
    name: &str,
    script: &str,
) -> Result<(Child, OwnedFd)> {
    // Both ends are close-on-exec: no other child inherits the writer, so the
    // watchdog sees EOF exactly when this process lets go of it.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io(
            "creating the watchdog's pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // From a file in the directory, so that `ps` shows `/bin/sh DIR/watchdog.sh DIR`.
    // sh keeps it open: removing the directory at the end does not disturb it.
    let path = dir.join(name);
    fs::write(&path, script).map_err(|e| Error::path("writing", &path, e))?;
    let script = path;
    let mut command = Command::new("/bin/sh");
    command
        .arg(&script)
        .arg(dir)
        .stdin(Stdio::from(reader))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| Error::io("starting the watchdog (/bin/sh)", e))?;
    Ok((child, writer))
}

/// Fails early, with a useful message, when this machine cannot run the tests.
fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Other(
            "containerd, runc and overlay mounts need root; run the tests as root".into(),
        ));
    }
    for tool in ["containerd", "ctr", "runc"] {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(Error::Other(format!(
                "`{tool}` is not on PATH; install Debian's containerd and runc (scripts/deps.sh)"
            )));
        }
    }
    Ok(())
}

/// What a caller of [`Containerd::start_with`] adds to the config.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Keep the CRI plugin (off by default: it slows the start and writes to the host).
    pub cri: bool,
    /// TOML appended to the config (plugin sections).
    pub toml: String,
}

fn config_toml(root: &Path, state: &Path, socket: &Path, debug: &Path, extra: &Extra) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let disabled: Vec<String> = DISABLED_PLUGINS
        .iter()
        .filter(|p| !(extra.cri && **p == "io.containerd.grpc.v1.cri"))
        .map(|p| format!("  \"{p}\","))
        .collect();
    format!(
        "# Written by commitd-testkit.\n\
         version = 2\n\
         root = {root}\n\
         state = {state}\n\
         disabled_plugins = [\n{disabled}\n]\n\
         \n\
         [grpc]\n  address = {socket}\n\
         \n\
         [ttrpc]\n  address = \"\"\n\
         \n\
         [debug]\n  address = {debug}\n  level = \"info\"\n\
         \n\
         [metrics]\n  address = \"\"\n\
         {extra}",
        root = q(root),
        state = q(state),
        socket = q(socket),
        debug = q(debug),
        disabled = disabled.join("\n"),
        extra = extra.toml,
    )
}
