//! A private containerd must not outlive its test process, however that process ends.
//!
//! This binary (`harness = false`) runs itself as a child with
//! `COMMITD_TESTKIT_CHILD=MODE`. The child starts the [`shared`] containerd (a static,
//! never dropped), runs one container and pauses another, prints what it started as
//! one JSON line, waits for the parent to look, and then ends:
//!
//! - `exit`: `std::process::exit(0)`, as a test binary does when its tests are done;
//! - `sigkill`: the parent SIGKILLs it, as a timeout or an impatient user would.
//!
//! The parent then checks that within 30 s containerd, the watchdog, the shims and
//! the containers' processes are gone, nothing is mounted under the directory, the
//! directory is removed, and so are the per-namespace runc and cgroup directories.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use commitd_testkit::{CONTAINERD_ENV, busybox_image, shared, unique_namespace};
use serde_json::{Value, json};

const CHILD_ENV: &str = "COMMITD_TESTKIT_CHILD";

fn main() -> ExitCode {
    match std::env::var(CHILD_ENV) {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

fn child(mode: &str) -> ! {
    let ctd = shared();
    let ns = unique_namespace("process-exit");
    let image = busybox_image(ctd, &ns).unwrap_or_else(|e| panic!("{e}"));
    let ctr = ctd.ctr(&ns);
    let start = |id: &str| {
        ctr.run_detached(&image, id, &["sleep", "100000"], &[])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    start("running");
    start("paused");
    ctr.pause("paused").unwrap_or_else(|e| panic!("{e}"));
    let tasks: Vec<u32> = ["running", "paused"]
        .iter()
        .map(|id| ctr.task_pid(id).ok().flatten().expect("a task pid"))
        .collect();
    let report = json!({
        "dir": ctd.dir().expect("a private containerd"),
        "socket": ctd.socket(),
        "namespace": ns,
        "containerd": ctd.pid(),
        "watchdog": ctd.watchdog_pid(),
        "tasks": tasks,
    });
    println!("{report}");
    // Wait for the parent to have looked at what runs.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    match mode {
        "exit" => std::process::exit(0),
        "sigkill" => loop {
            thread::sleep(Duration::from_secs(1));
        },
        other => panic!("unknown {CHILD_ENV} mode {other:?}"),
    }
}

fn parent() -> ExitCode {
    let modes = ["exit", "sigkill"];
    let mut failed = 0;
    for mode in modes {
        match scenario(mode) {
            Ok(took) => println!(
                "process_exit: {mode}: everything gone {took:?} after the test process ended"
            ),
            Err(e) => {
                println!("process_exit: {mode}: FAILED: {e}");
                failed += 1;
            }
        }
    }
    println!(
        "process_exit: {} passed, {failed} failed",
        modes.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn scenario(mode: &str) -> Result<Duration, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, mode)
        .env_remove(CONTAINERD_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("running myself: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let report: Value =
        serde_json::from_str(&line).map_err(|e| format!("child printed {line:?}: {e}"))?;

    let pid = |v: &Value| {
        v.as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(format!("bad pid in {report}"))
    };
    let dir = report["dir"].as_str().ok_or("no dir")?.to_owned();
    let socket = report["socket"].as_str().ok_or("no socket")?.to_owned();
    let ns = report["namespace"]
        .as_str()
        .ok_or("no namespace")?
        .to_owned();
    let containerd = pid(&report["containerd"])?;
    let watchdog = pid(&report["watchdog"])?;
    let mut watched: Vec<(String, u32)> = vec![
        ("containerd".into(), containerd),
        ("watchdog".into(), watchdog),
    ];
    for t in report["tasks"].as_array().ok_or("no tasks")? {
        watched.push(("container process".into(), pid(t)?));
    }
    let shims = pids_mentioning(&socket);
    if shims.len() != 2 {
        return Err(format!("expected 2 shims for {socket}, found {shims:?}"));
    }
    watched.extend(shims.into_iter().map(|p| ("shim".to_owned(), p)));
    for (what, p) in &watched {
        if !alive(*p) {
            return Err(format!(
                "{what} {p} is not running before the test process ends"
            ));
        }
    }
    if parent_of(containerd) != Some(child.id()) {
        return Err(format!(
            "containerd {containerd} is not a child of the test process {}",
            child.id()
        ));
    }

    if mode == "sigkill" {
        child.kill().map_err(|e| e.to_string())?;
    } else {
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let ended = Instant::now();
    println!("process_exit: {mode}: the test process ended ({status}); waiting for the cleanup");

    let dir = Path::new(&dir);
    let leftovers = || {
        let mut left: Vec<String> = watched
            .iter()
            .filter(|(_, p)| alive(*p))
            .map(|(what, p)| format!("{what} {p}"))
            .collect();
        left.extend(
            pids_mentioning(&dir.display().to_string())
                .iter()
                .map(|p| format!("process {p} naming the dir")),
        );
        left.extend(mounts_under(dir).into_iter().map(|m| format!("mount {m}")));
        for d in [
            dir.to_path_buf(),
            format!("/run/containerd/runc/{ns}").into(),
            format!("/sys/fs/cgroup/memory/{ns}").into(),
        ] {
            if d.exists() {
                left.push(d.display().to_string());
            }
        }
        left
    };
    loop {
        let left = leftovers();
        if left.is_empty() {
            return Ok(ended.elapsed());
        }
        if ended.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "30 s after the test process ended, still there: {left:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(") ").next().and_then(|s| s.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()
}

/// Live processes other than this one whose command line contains `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id()
            && String::from_utf8_lossy(&cmdline).contains(needle)
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}
