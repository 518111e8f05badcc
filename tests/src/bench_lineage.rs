//! The benchmark's lineage rows (`scripts/bench.sh`, issue 14):
//! - `1g-then-4k-incremental`: a container holding the 1 GiB change set,
//!   committed once, then 4 KiB more written: its second commit with
//!   `incremental=1` (a layer of the 4 KiB, on the first commit's image),
//!   a full commit of the same container at the same moment, and `docker
//!   commit` of a Docker container that went through the same steps.
//! - `squash-new-on-50-commits`: a lineage of 50 commits (each a new
//!   container of the previous image, one small file more), then its next
//!   container committed with `squash=new` (the 50 layers above the base
//!   folded into one) beside a plain commit of it (one layer more).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use commitd_testkit::{Ctr, Dockerd};

use crate::post;

/// The rows, by name (`BENCH_SETS`).
pub const ROWS: [&str; 2] = ["1g-then-4k-incremental", "squash-new-on-50-commits"];

/// What the rows need from the bench.
pub struct LineageBench<'a> {
    /// A commitd with the default configuration (fast path, gzip; its
    /// state directory keeps the incremental records).
    pub commitd: &'a Path,
    pub ctr: &'a Ctr,
    /// The base image, as containerd names it.
    pub base: &'a str,
    /// Docker's engine (needed by the incremental row only).
    pub docker: Option<&'a Dockerd>,
    /// The same base, as Docker names it.
    pub docker_base: &'a str,
    pub reps: usize,
    /// Writes the 1 GiB change set into the root of the process `pid`, and
    /// syncs.
    pub write_big: &'a dyn Fn(u32),
}

/// Commits over the API; answers the wall seconds and the answer's body.
fn timed_commit(socket: &Path, query: &str) -> (f64, String) {
    let t = Instant::now();
    let (code, body) = post(socket, &format!("/commit?{query}"), &[]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 201, "commit {query}: {body}");
    (secs, body)
}

/// 4 KiB of fresh bytes into the root of `pid`, synced.
fn write_4k(pid: u32, n: usize) {
    let mut b = vec![0u8; 4096];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i * 31 + n * 7) as u8;
    }
    std::fs::write(format!("/proc/{pid}/root/four-k-{n}"), &b).unwrap();
    std::process::Command::new("sync").status().unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the rows asked for; answers the report's section (Markdown).
pub fn run(b: &LineageBench<'_>, rows: &[&str]) -> String {
    let mut s = String::new();
    if rows.contains(&ROWS[0]) {
        s.push_str(&incremental(b));
    }
    if rows.contains(&ROWS[1]) {
        s.push_str(&squash_lineage(b));
    }
    s
}

fn incremental(b: &LineageBench<'_>) -> String {
    let docker = b.docker.expect("Docker's engine for the incremental row");
    const PEERS: [&str; 3] = [
        "commitd incremental=1",
        "commitd full commit",
        "docker commit",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
    for rep in 0..b.reps {
        let id = format!("lineage-inc-{rep}");
        b.ctr
            .run_detached(b.base, &id, &["sleep", "100000"], &[])
            .unwrap();
        let pid = b.ctr.task_pid(&id).unwrap().unwrap();
        (b.write_big)(pid);
        std::thread::sleep(Duration::from_millis(300));
        let first = format!("container={id}&repo=bench/inc&tag={rep}a&incremental=1");
        timed_commit(b.commitd, &first);
        write_4k(pid, rep);
        // Older than the clock tick a commit looks within.
        std::thread::sleep(Duration::from_millis(300));
        let (secs, body) = timed_commit(
            b.commitd,
            &format!("container={id}&repo=bench/inc&tag={rep}b&incremental=1"),
        );
        assert!(
            body.contains("\"Parent\""),
            "the second commit is incremental: {body}"
        );
        times[0].push(secs);
        let (secs, _) = timed_commit(
            b.commitd,
            &format!("container={id}&repo=bench/inc&tag={rep}full"),
        );
        times[1].push(secs);
        let _ = b.ctr.delete_container(&id);
        for tag in ["a", "b", "full"] {
            let _ = b
                .ctr
                .run(&["images", "rm", &format!("docker.io/bench/inc:{rep}{tag}")]);
        }

        // Docker: the same steps.
        let name = format!("lineage-inc-{rep}-d");
        docker
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
        let pid: u32 = docker
            .cli(&["inspect", "-f", "{{.State.Pid}}", &name])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (b.write_big)(pid);
        std::thread::sleep(Duration::from_millis(300));
        timed_commit(
            docker.socket(),
            &format!("container={name}&repo=bench/dinc&tag={rep}a"),
        );
        write_4k(pid, rep);
        std::thread::sleep(Duration::from_millis(300));
        let (secs, _) = timed_commit(
            docker.socket(),
            &format!("container={name}&repo=bench/dinc&tag={rep}b"),
        );
        times[2].push(secs);
        let _ = docker.cli(&["rm", "-f", &name]);
        for tag in ["a", "b"] {
            let _ = docker.cli(&["rmi", &format!("bench/dinc:{rep}{tag}")]);
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let mut s = format!(
        "\n## Second commit: 1 GiB held, 4 KiB more (`{}`)\n\nMedian wall seconds of the second commit of a container that wrote the 1 GiB set and was committed once, then wrote 4 KiB more ({} runs).\n\n| peer | seconds | docker ÷ peer |\n|---|---:|---:|\n",
        ROWS[0], b.reps
    );
    for (p, m) in PEERS.iter().zip(&med) {
        s.push_str(&format!("| {p} | {m:.3} | {:.2}× |\n", med[2] / m));
    }
    s
}

fn squash_lineage(b: &LineageBench<'_>) -> String {
    const COMMITS: usize = 50;
    const PEERS: [&str; 2] = ["commitd squash=new", "commitd plain commit"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
    let mut depth_note = String::new();
    for rep in 0..b.reps {
        // The lineage: each commit a new container of the previous image.
        let mut parent = b.base.to_string();
        let mut names = Vec::new();
        for i in 0..COMMITS {
            let id = format!("lineage-sq-{rep}-{i}");
            b.ctr
                .run_detached(&parent, &id, &["sleep", "100000"], &[])
                .unwrap();
            let pid = b.ctr.task_pid(&id).unwrap().unwrap();
            write_4k(pid, i);
            let (code, body) = post(
                b.commitd,
                &format!("/commit?container={id}&repo=bench/lineage{rep}&tag={i}"),
                &[],
            );
            let _ = b.ctr.delete_container(&id);
            if code == 400 && body.contains("max depth exceeded") {
                depth_note = format!(
                    " The lineage stopped at {i} commits: this node's overlay mounts no deeper ({body})."
                );
                break;
            }
            assert_eq!(code, 201, "lineage commit {i}: {body}");
            parent = format!("docker.io/bench/lineage{rep}:{i}");
            names.push(parent.clone());
        }
        let id = format!("lineage-sq-{rep}-top");
        b.ctr
            .run_detached(&parent, &id, &["sleep", "100000"], &[])
            .unwrap();
        let pid = b.ctr.task_pid(&id).unwrap().unwrap();
        write_4k(pid, COMMITS);
        std::thread::sleep(Duration::from_millis(300));
        let (secs, _) = timed_commit(
            b.commitd,
            &format!("container={id}&repo=bench/lineage{rep}&tag=squashed&squash=new"),
        );
        times[0].push(secs);
        let t = Instant::now();
        let (code, body) = post(
            b.commitd,
            &format!("/commit?container={id}&repo=bench/lineage{rep}&tag=plain"),
            &[],
        );
        // One layer more may pass the depth limit: then only the squash.
        if code == 201 {
            times[1].push(t.elapsed().as_secs_f64());
        } else {
            depth_note.push_str(&format!(" A plain commit on top was refused: {body}."));
        }
        let _ = b.ctr.delete_container(&id);
        for n in names.iter().chain(
            ["squashed", "plain"]
                .iter()
                .map(|t| format!("docker.io/bench/lineage{rep}:{t}"))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            let _ = b.ctr.run(&["images", "rm", n]);
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let mut s = format!(
        "\n## `squash=new` on a {COMMITS}-commit lineage (`{}`)\n\nMedian wall seconds of committing the next container of a lineage of {COMMITS} commits (one 4 KiB file each) with `squash=new` (the layers above the base folded into one: depth base + 1) and plainly (one layer more) ({} runs).{depth_note}\n\n| peer | seconds |\n|---|---:|\n",
        ROWS[1], b.reps
    );
    for (p, m) in PEERS.iter().zip(&med) {
        s.push_str(&format!("| {p} | {m:.3} |\n"));
    }
    s
}
