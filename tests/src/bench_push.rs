//! The benchmark's commit + push row (`scripts/bench.sh`): the 200 MiB
//! change set committed and pushed to a local registry (Debian's
//! `docker-registry` on loopback), by commitd as one request
//! (`POST /commit?…&push=1`), by commitd as commit then push, and by Docker
//! (`docker commit` then `docker push`, over its API). Each repetition
//! starts a fresh registry, so every peer uploads the base as well.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_testkit::{Ctr, Dockerd};

use crate::post;

/// `X-Registry-Auth` of no credentials.
const ANONYMOUS: &[(&str, &str)] = &[("X-Registry-Auth", "e30=")];

/// What the row needs from the bench.
pub struct PushBench<'a> {
    /// A commitd of the row's own, default configuration (fast path, gzip).
    pub commitd: &'a Path,
    /// Its peak resident memory so far (VmHWM, KiB).
    pub peak_rss_kib: &'a dyn Fn() -> u64,
    pub ctr: &'a Ctr,
    /// The base image, as containerd names it.
    pub base: &'a str,
    pub docker: &'a Dockerd,
    /// The same base, as Docker names it.
    pub docker_base: &'a str,
    pub reps: usize,
    /// Writes the change set into the root of the process `pid` (and
    /// syncs, as every row does).
    pub write_changes: &'a dyn Fn(u32),
}

/// The peers, in the report's order.
pub const PEERS: [&str; 3] = [
    "commitd commit + push (push=1)",
    "commitd commit, then push",
    "docker commit + docker push",
];

/// A private registry on a loopback port, gone when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The push stream ended with a pushed digest, not an error.
fn assert_pushed(peer: &str, code: u16, body: &str) {
    assert_eq!(code, 200, "{peer}: {body}");
    assert!(
        !body.contains("\"error\"") && body.contains("\"Digest\""),
        "{peer}: {body}"
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the row; answers the report's section (Markdown).
pub fn run(b: &PushBench<'_>) -> String {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
    for rep in 0..b.reps {
        let reg = Registry::start();
        let host = format!("127.0.0.1:{}", reg.port);
        for (i, peer) in PEERS.iter().enumerate().take(2) {
            let id = format!("push-{rep}-{i}");
            b.ctr
                .run_detached(b.base, &id, &["sleep", "100000"], &[])
                .unwrap();
            (b.write_changes)(b.ctr.task_pid(&id).unwrap().unwrap());
            std::thread::sleep(Duration::from_millis(300));
            let repo = format!("{host}/bench/c{i}");
            let commit = format!("/commit?container={id}&repo={repo}&tag={rep}");
            let t = Instant::now();
            if i == 0 {
                let (code, body) = post(b.commitd, &format!("{commit}&push=1"), ANONYMOUS);
                assert_pushed(peer, code, &body);
            } else {
                let (code, body) = post(b.commitd, &commit, ANONYMOUS);
                assert_eq!(code, 201, "{peer}: {body}");
                let (code, body) = post(
                    b.commitd,
                    &format!("/images/{repo}/push?tag={rep}"),
                    ANONYMOUS,
                );
                assert_pushed(peer, code, &body);
            }
            times[i].push(t.elapsed().as_secs_f64());
            let _ = b.ctr.delete_container(&id);
            let _ = b.ctr.run(&["images", "rm", &format!("{repo}:{rep}")]);
        }
        // Docker: commit, then push, over its API.
        let name = format!("push-{rep}-d");
        b.docker
            .cli(&[
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &name,
                b.docker_base,
                "sleep",
                "100000",
            ])
            .unwrap();
        let pid: u32 = b
            .docker
            .cli(&["inspect", "-f", "{{.State.Pid}}", &name])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (b.write_changes)(pid);
        std::thread::sleep(Duration::from_millis(300));
        let repo = format!("{host}/bench/docker");
        let t = Instant::now();
        let (code, body) = post(
            b.docker.socket(),
            &format!("/v1.41/commit?container={name}&repo={repo}&tag={rep}"),
            ANONYMOUS,
        );
        assert_eq!(code, 201, "docker commit: {body}");
        let (code, body) = post(
            b.docker.socket(),
            &format!("/v1.41/images/{repo}/push?tag={rep}"),
            ANONYMOUS,
        );
        assert_pushed(PEERS[2], code, &body);
        times[2].push(t.elapsed().as_secs_f64());
        let _ = b.docker.cli(&["rm", "-f", &name]);
        let _ = b.docker.cli(&["rmi", &format!("{repo}:{rep}")]);
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let mut s = format!(
        "\n## Commit + push (200 MiB set, local registry)\n\nMedian wall seconds from the request to the pushed digest ({} runs; a fresh `docker-registry` on loopback per run, so the base is uploaded too).\n\n| peer | seconds | docker ÷ peer |\n|---|---:|---:|\n",
        b.reps
    );
    for (p, m) in PEERS.iter().zip(&med) {
        s.push_str(&format!("| {p} | {m:.3} | {:.2}× |\n", med[2] / m));
    }
    let ratio = med[2] / med[0];
    s.push_str(&format!(
        "\nTarget: commit + push at least 3× faster than Docker's: {ratio:.2}× — {}.\n",
        if ratio >= 3.0 { "met" } else { "NOT met" }
    ));
    let peak = (b.peak_rss_kib)() as f64 / 1024.0;
    s.push_str(&format!(
        "\nPeak RSS of the commitd that ran this row (VmHWM after start-up): {peak:.1} MiB — {} 64 MiB.\n",
        if peak < 64.0 { "under" } else { "OVER" }
    ));
    s
}
