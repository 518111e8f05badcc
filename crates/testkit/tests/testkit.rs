//! The testkit against real containerd and runc: what every other test relies on.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use commitd_testkit::{
    BUSYBOX_IMAGE, Containerd, Ctr, ImageBuilder, SNAPSHOTTER, TaskStatus, busybox_image, shared,
    unique_namespace,
};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A namespace of the shared containerd with the busybox image imported.
fn busybox_ns(prefix: &str) -> Result<(Ctr, String)> {
    let ns = unique_namespace(prefix);
    let image = busybox_image(shared(), &ns)?;
    Ok((shared().ctr(&ns), image))
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            out.push(
                path.strip_prefix(base)
                    .expect("under base")
                    .display()
                    .to_string(),
            );
            if path.is_dir() && !path.is_symlink() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
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

/// Pids of processes whose command line contains `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("a /proc entry");
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn busybox_image_runs_and_is_listed() -> Result {
    let (ctr, image) = busybox_ns("busybox-runs")?;
    assert_eq!(image, BUSYBOX_IMAGE);
    let out = ctr.run_image(
        &image,
        "once",
        &["sh", "-c", "echo hi; id -u; pwd; cat /etc/hostname"],
    )?;
    assert_eq!(out, "hi\n0\n/\ncommitd-test\n");
    // The handle reads the private containerd's log, to explain failures;
    // the task just run is in it: the shim's "starting signal loop", logged
    // as the task starts, carries its state path (`…/NAMESPACE/once`).
    // containerd's "shim disconnected" (id=once) is logged from a goroutine
    // when the shim's connection closes, maybe after `ctr` has returned.
    assert!(
        ctr.log_tail(1000)
            .contains(&format!("{}/once ", ctr.namespace())),
        "{}",
        ctr.log_tail(20)
    );
    // Cleaned up after itself.
    assert_eq!(ctr.task_status("once")?, TaskStatus::None);
    assert!(ctr.run(&["containers", "ls", "-q"])?.trim().is_empty());

    let images = ctr.images()?;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].name, BUSYBOX_IMAGE);
    // `ctr images import` also stores the archive's index, which nothing
    // references once its lease is gone: collected, but by a garbage
    // collection containerd runs a moment later (seen: 4 blobs, 2 runs
    // in 30). A synchronous one first.
    ctr.collect_garbage()?;
    let content = ctr.content()?;
    assert!(
        content.contains(&images[0].digest),
        "manifest {} not in {content:?}",
        images[0].digest
    );
    assert_eq!(content.len(), 3, "manifest, config, one layer: {content:?}");
    let snapshots = ctr.snapshots(SNAPSHOTTER)?;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(
        (snapshots[0].parent.as_deref(), snapshots[0].kind.as_str()),
        (None, "Committed")
    );
    assert!(ctr.leases()?.is_empty());

    // A failing command reports the command, exit code and stderr.
    let err = ctr
        .run_image(&image, "fails", &["sh", "-c", "echo oops >&2; exit 3"])
        .expect_err("exit 3");
    let msg = err.to_string();
    assert!(
        msg.contains("ctr -a") && msg.contains("exit code 3") && msg.contains("oops"),
        "{msg}"
    );
    assert!(
        ctr.run(&["containers", "ls", "-q"])?.trim().is_empty(),
        "run_image cleans up after a failure"
    );

    // A script's stdout is read from a file: every line, the last one too,
    // and nothing of the bind mount it went through is in the image's view.
    let out = ctr.run_script(
        &image,
        "script",
        "ls /dev/commitd-testkit; for i in 1 2 3; do echo line $i; done\necho last",
    )?;
    assert_eq!(out, "stdout\nline 1\nline 2\nline 3\nlast\n");
    let err = ctr
        .run_script(
            &image,
            "script-fails",
            "echo partial; echo oops >&2; exit 4",
        )
        .expect_err("exit 4");
    let msg = err.to_string();
    assert!(msg.contains("exit code 4") && msg.contains("oops"), "{msg}");
    assert!(
        ctr.run(&["containers", "ls", "-q"])?.trim().is_empty(),
        "run_script cleans up after a failure"
    );
    ctr.remove_all()?;
    Ok(())
}

#[test]
fn container_exec_pause_resume_kill_delete() -> Result {
    let (ctr, image) = busybox_ns("lifecycle")?;
    ctr.run_detached(
        &image,
        "c1",
        &["sh", "-c", "sleep 100000"],
        &[("nerdctl/name", "web"), ("a", "b=c")],
    )?;
    assert_eq!(ctr.task_status("c1")?, TaskStatus::Running);
    let pid = ctr.task_pid("c1")?.expect("a running task has a pid");
    assert!(alive(pid));
    let labels = &ctr.container_info("c1")?["Labels"];
    assert_eq!(
        (labels["nerdctl/name"].as_str(), labels["a"].as_str()),
        (Some("web"), Some("b=c"))
    );

    assert_eq!(ctr.exec("c1", &["echo", "hi"])?, "hi\n");
    let err = ctr
        .exec("c1", &["sh", "-c", "echo bad >&2; exit 7"])
        .expect_err("exit 7");
    assert!(
        err.to_string().contains("exit code 7") && err.stderr().contains("bad"),
        "{err}"
    );

    ctr.pause("c1")?;
    assert_eq!(ctr.task_status("c1")?, TaskStatus::Paused);
    let freezer = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert!(alive(pid), "{freezer}");
    ctr.resume("c1")?;
    assert_eq!(ctr.task_status("c1")?, TaskStatus::Running);
    assert_eq!(ctr.exec("c1", &["cat", "/etc/hostname"])?, "commitd-test\n");

    ctr.pause("c1")?;
    ctr.kill_task("c1")?;
    assert_eq!(ctr.task_status("c1")?, TaskStatus::Stopped);
    eventually(
        "the container's process exits",
        Duration::from_secs(5),
        || !alive(pid),
    );

    ctr.delete_container("c1")?;
    assert_eq!(ctr.task_status("c1")?, TaskStatus::None);
    ctr.delete_container("c1")?; // gone already: fine
    assert!(
        ctr.snapshots(SNAPSHOTTER)?
            .iter()
            .all(|s| s.kind == "Committed"),
        "the active snapshot went with it"
    );

    // A running container is deleted in one call too.
    ctr.run_detached(&image, "c2", &["sleep", "100000"], &[])?;
    ctr.delete_container("c2")?;
    assert_eq!(ctr.task_status("c2")?, TaskStatus::None);
    assert!(ctr.run(&["containers", "ls", "-q"])?.trim().is_empty());
    ctr.remove_all()?;
    Ok(())
}

#[test]
fn untouched_container_has_an_empty_upper_dir() -> Result {
    let (ctr, image) = busybox_ns("upper-empty")?;
    ctr.run_detached(&image, "idle", &["sh", "-c", "sleep 100000"], &[])?;
    // Let the shell start and exec the sleep.
    ctr.exec("idle", &["true"])?;
    let upper = ctr.upper_dir("idle")?;
    assert!(
        upper.starts_with(shared().root()),
        "{} outside containerd's root",
        upper.display()
    );
    assert_eq!(
        tree(&upper),
        Vec::<String>::new(),
        "upper dir {} of an untouched container",
        upper.display()
    );

    ctr.exec(
        "idle",
        &[
            "sh",
            "-c",
            "echo x > /tmp/new; mkdir -p /root/d; rm /etc/hosts",
        ],
    )?;
    assert_eq!(
        tree(&upper),
        ["etc", "etc/hosts", "root", "root/d", "tmp", "tmp/new"]
    );
    assert_eq!(fs::read_to_string(upper.join("tmp/new"))?, "x\n");
    ctr.remove_all()?;
    Ok(())
}

/// `Ctr::exec`'s stdout is whole every time (it goes through a file on the
/// container's `/dev`, not the FIFOs), argv stays argv, a failure still
/// carries its stderr, and the file is gone afterwards and never in the
/// snapshot: in a plain, a `--privileged` and a `--read-only` container.
#[test]
fn exec_output_is_whole_and_leaves_nothing() -> Result {
    let (ctr, image) = busybox_ns("exec-whole")?;
    ctr.run_detached(&image, "plain", &["sh", "-c", "sleep 100000"], &[])?;
    for (id, flag) in [("priv", "--privileged"), ("ro", "--read-only")] {
        let mut c = ctr.command();
        c.args(["run", "-d", "--null-io", "--snapshotter", SNAPSHOTTER, flag])
            .args([image.as_str(), id, "sh", "-c", "sleep 100000"]);
        let out = c.output()?;
        assert!(
            out.status.success(),
            "ctr run {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // 2,000 numbered lines, then a last one without a newline.
    let script = "seq 1 2000; printf 'the end'";
    let mut want: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    want.push_str("the end");
    for id in ["plain", "priv", "ro"] {
        for round in 0..50 {
            let got = ctr.exec(id, &["sh", "-c", script])?;
            assert!(
                got == want,
                "{id}, round {round}: {} bytes, ends {:?}",
                got.len(),
                &got[got.len().saturating_sub(40)..]
            );
        }
        // Arguments reach the command as they are: no shell splitting or globbing.
        assert_eq!(
            ctr.exec(id, &["printf", "%s|", "a b", "*", "$HOME", "'\"", ""])?,
            "a b|*|$HOME|'\"||"
        );
        let err = ctr
            .exec(id, &["sh", "-c", "echo partial; echo bad >&2; exit 7"])
            .expect_err("exit 7");
        assert!(
            err.to_string().contains("exit code 7") && err.stderr().contains("bad"),
            "{err}"
        );
        let err = ctr.exec(id, &["no-such-command"]).expect_err("not found");
        assert!(err.stderr().contains("no-such-command"), "{err}");
        let pid = ctr.task_pid(id)?.expect("running");
        let dev: Vec<String> = fs::read_dir(format!("/proc/{pid}/root/dev"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        assert!(
            dev.iter().all(|n| !n.contains("testkit-exec")),
            "{id}: left in /dev: {dev:?}"
        );
        if id != "ro" {
            let upper = ctr.upper_dir(id)?;
            assert_eq!(tree(&upper), Vec::<String>::new(), "{id}: upper dir");
        }
    }
    ctr.remove_all()?;
    Ok(())
}

/// Documents why the busybox base has the directories it has: an image without them
/// gets them created by runc in the container's upper directory.
#[test]
fn runc_creates_missing_mount_points_in_the_upper_dir() -> Result {
    let ns = unique_namespace("runc-creates");
    let bare = ImageBuilder::scratch()
        .host_file("/bin/busybox", "/bin/busybox", 0o755)
        .symlink("/bin/sh", "busybox")
        .symlink("/bin/sleep", "busybox")
        .import(shared(), &ns, "docker.io/library/bare:latest")?;
    let ctr = shared().ctr(&ns);
    ctr.run_detached(&bare, "bare", &["sleep", "100000"], &[])?;
    let upper = ctr.upper_dir("bare")?;
    let created = tree(&upper);
    println!("runc created in the upper dir of a bare image: {created:?}");
    assert_eq!(created, ["dev", "proc", "run", "sys"]);
    for d in &created {
        let meta = fs::metadata(upper.join(d))?;
        assert!(meta.is_dir() && meta.uid() == 0 && meta.gid() == 0, "{d}");
        assert_eq!(meta.mode() & 0o7777, 0o755, "{d}");
    }
    ctr.remove_all()?;
    Ok(())
}

#[test]
fn created_container_has_a_snapshot_and_no_task() -> Result {
    let (ctr, image) = busybox_ns("created")?;
    ctr.create(&image, "rec", &[("k", "v")])?;
    assert_eq!(ctr.task_status("rec")?, TaskStatus::None);
    assert_eq!(ctr.container_info("rec")?["Labels"]["k"], "v");
    let snapshots = ctr.snapshots(SNAPSHOTTER)?;
    let active: Vec<_> = snapshots.iter().filter(|s| s.kind == "Active").collect();
    assert_eq!(active.len(), 1, "{snapshots:?}");
    assert_eq!(active[0].key, "rec");
    assert!(tree(&ctr.upper_dir("rec")?).is_empty());
    ctr.delete_container("rec")?;
    assert!(
        ctr.snapshots(SNAPSHOTTER)?
            .iter()
            .all(|s| s.kind != "Active")
    );
    ctr.remove_all()?;
    Ok(())
}

#[test]
fn two_layer_image_with_extra_files_and_a_whiteout() -> Result {
    let ns = unique_namespace("two-layers");
    let builder = ImageBuilder::busybox()
        .file("/base.txt", "from layer 1\n")
        .layer()
        .file("/data/top.txt", "from layer 2\n")
        .file_with_mode(
            "/usr/local/bin/hello",
            "#!/bin/sh\necho hello \"$@\"\n",
            0o755,
        )
        .small_files("/many/files", 1000, 100)
        .whiteout("/etc/hostname")
        .cmd(&["hello", "world"]);
    assert_eq!(builder.layer_count(), 2);
    let dir = tempfile::tempdir()?;
    let built = builder.write_archive(&dir.path().join("i.tar"), "docker.io/library/two:latest")?;
    assert_eq!(built.layers.len(), 2);
    // Reproducible, byte for byte.
    let again = builder.write_archive(&dir.path().join("j.tar"), "docker.io/library/two:latest")?;
    assert_eq!(built.manifest_digest, again.manifest_digest);

    let image = builder.import(shared(), &ns, "docker.io/library/two:latest")?;
    let ctr = shared().ctr(&ns);
    let out = ctr.run_image(
        &image,
        "check",
        &["sh", "-c", "cat /base.txt /data/top.txt; ls /many/files | wc -l; cat /many/files/000999 | head -c 7; \
           test -e /etc/hostname && echo hostname-still-there; hello there"],
    )?;
    assert_eq!(
        out,
        "from layer 1\nfrom layer 2\n1000\n000999\nhello there\n"
    );
    // The config's Cmd is used when no args are given.
    assert_eq!(ctr.run_image(&image, "default-cmd", &[])?, "hello world\n");

    let snapshots = ctr.snapshots(SNAPSHOTTER)?;
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let bottom = snapshots
        .iter()
        .find(|s| s.parent.is_none())
        .expect("a bottom layer");
    let top = snapshots
        .iter()
        .find(|s| s.parent.is_some())
        .expect("a top layer");
    assert_eq!(top.parent.as_deref(), Some(bottom.key.as_str()));
    // `ctr images import` also stores the archive's index, unreferenced once the
    // import's lease is gone: collect it first, or the count depends on when the
    // collector last ran.
    ctr.run(&["leases", "create", "--id", "gc-now"])?;
    ctr.run(&["leases", "delete", "--sync", "gc-now"])?;
    assert_eq!(ctr.content()?.len(), 4, "manifest, config, two layers");
    ctr.remove_all()?;
    Ok(())
}

#[test]
fn mkimage_writes_an_importable_archive() -> Result {
    let mkimage = env!("CARGO_BIN_EXE_commitd-mkimage");
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("demo.tar");
    let name = "docker.io/library/demo:1";
    let status = Command::new(mkimage)
        .arg(&out)
        .args(["--name", name])
        .status()?;
    assert!(status.success(), "{status}");
    let ctr = shared().ctr(&unique_namespace("mkimage"));
    assert_eq!(ctr.import_archive(&out)?, [name]);
    assert_eq!(ctr.run_image(name, "demo", &["echo", "ok"])?, "ok\n");
    ctr.remove_all()?;

    let usage = Command::new(mkimage).output()?;
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: commitd-mkimage OUT.tar"));
    Ok(())
}

#[test]
fn connecting_to_no_containerd_says_why() {
    let t = Instant::now();
    let err =
        Containerd::connect("/nonexistent/containerd.sock").expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/containerd.sock") && msg.contains("no containerd socket"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn leases_are_listed() -> Result {
    let ctr = shared().ctr(&unique_namespace("leases"));
    assert!(ctr.leases()?.is_empty());
    ctr.run(&["leases", "create", "--id", "held-by-test"])?;
    assert_eq!(ctr.leases()?, ["held-by-test"]);
    ctr.run(&["leases", "delete", "held-by-test"])?;
    assert!(ctr.leases()?.is_empty());
    Ok(())
}

#[test]
fn namespaces_are_isolated() -> Result {
    let (a, image) = busybox_ns("iso-a")?;
    let b = shared().ctr(&unique_namespace("iso-b"));
    a.create(&image, "same-id", &[])?;
    assert!(b.images()?.is_empty());
    assert!(b.snapshots(SNAPSHOTTER)?.is_empty());
    assert_eq!(b.task_status("same-id")?, TaskStatus::None);
    a.remove_all()?;
    Ok(())
}

#[test]
fn private_containerd_survives_kill_and_restart_and_drop_cleans_up() -> Result {
    let started = Instant::now();
    let mut ctd = Containerd::start()?;
    println!("containerd answered after {:?}", started.elapsed());
    let dir = ctd.dir().expect("private").to_path_buf();
    let socket = ctd.socket().display().to_string();
    assert!(ctd.log_path().is_some_and(Path::exists));

    let ns = unique_namespace("restart");
    let t = Instant::now();
    let image = busybox_image(&ctd, &ns)?;
    println!("busybox image imported in {:?}", t.elapsed());
    let ctr = ctd.ctr(&ns);
    ctr.run_detached(&image, "survivor", &["sleep", "100000"], &[])?;
    ctr.run_detached(&image, "frozen", &["sleep", "100000"], &[])?;
    ctr.pause("frozen")?;
    let task = ctr.task_pid("survivor")?.expect("running");
    let frozen = ctr.task_pid("frozen")?.expect("paused");
    let shims = pids_mentioning(&socket);
    assert_eq!(shims.len(), 2, "one shim per container: {shims:?}");

    // An external handle on it sees the same root; it cannot be killed through that.
    let mut external = Containerd::connect(ctd.socket())?;
    assert_eq!(external.root(), ctd.root());
    assert!(external.kill().is_err() && external.log_path().is_none());
    drop(external);
    assert!(
        ctd.pid().is_some_and(alive),
        "dropping an external handle stops nothing"
    );

    // A crash: containerd is gone, the containers are not.
    let old = ctd.pid().expect("running");
    ctd.kill()?;
    assert!(!alive(old) && ctd.pid().is_none());
    assert!(
        Command::new("ctr")
            .args(["--connect-timeout", "1s", "-a", &socket, "version"])
            .output()?
            .status
            .code()
            != Some(0)
    );
    assert!(alive(task) && shims.iter().all(|&p| alive(p)));

    let t = Instant::now();
    ctd.restart()?;
    println!("containerd restarted in {:?}", t.elapsed());
    assert_eq!(ctr.task_status("survivor")?, TaskStatus::Running);
    assert_eq!(ctr.task_status("frozen")?, TaskStatus::Paused);
    assert_eq!(
        ctr.exec("survivor", &["echo", "still here"])?,
        "still here\n"
    );
    // Restarting a running one stops it first.
    let before = ctd.pid();
    ctd.restart()?;
    assert_ne!(ctd.pid(), before);
    assert_eq!(ctr.task_status("survivor")?, TaskStatus::Running);

    let containerd = ctd.pid().expect("running");
    let watchdog = ctd.watchdog_pid().expect("private");
    let t = Instant::now();
    drop(ctd);
    println!(
        "dropped (everything stopped and removed) in {:?}",
        t.elapsed()
    );
    for (what, pid) in [
        ("containerd", containerd),
        ("watchdog", watchdog),
        ("container", task),
        ("paused container", frozen),
    ]
    .into_iter()
    .chain(shims.iter().map(|&p| ("shim", p)))
    {
        assert!(!alive(pid), "{what} {pid} outlived the drop");
    }
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!PathBuf::from(format!("/run/containerd/runc/{ns}")).exists());
    assert!(!PathBuf::from(format!("/sys/fs/cgroup/memory/{ns}")).exists());
    Ok(())
}

/// A base with many small files and a layer on top: what the commit benchmarks build
/// (with 100,000 files; importing those takes containerd ~20 s here, so 20,000).
#[test]
fn many_small_files_base_with_a_layer_on_top() -> Result {
    const N: usize = 20_000;
    let ns = unique_namespace("many-files");
    let t = Instant::now();
    let image = ImageBuilder::busybox()
        .small_files("/data", N, 64)
        .layer()
        .file("/data/top", "top\n")
        .import(shared(), &ns, "docker.io/library/many:latest")?;
    println!("{N} files built and imported in {:?}", t.elapsed());
    let ctr = shared().ctr(&ns);
    let out = ctr.run_image(
        &image,
        "count",
        &["sh", "-c", "ls /data | wc -l; cat /data/top"],
    )?;
    assert_eq!(out, format!("{}\ntop\n", N + 1));
    ctr.remove_all()?;
    Ok(())
}
