//! Load: 16 clients commit (and remove their previous image) continuously
//! across 4 live containers for a
//! bounded time (`COMMITD_SOAK_SECS`, default 150), on the unix socket.
//! Reported: commits/s, p50/p99 latency, the daemon's RSS over time.
//! Checked: every answer is 201, RSS stays flat (the last third of the run
//! within 8 MiB of the middle third; never above 96 MiB), no container is left
//! paused, and once the images are deleted and containerd collects
//! garbage, the content store and the snapshots are what they were before
//! the run: nothing leaked.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use commitd_e2e::{World, daemon};
use commitd_testkit::{SNAPSHOTTER, TaskStatus};

const CLIENTS: usize = 16;
const CONTAINERS: usize = 4;

/// One request on a fresh connection: (status, body).
fn request(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

#[test]
fn sixteen_clients_commit_for_minutes_and_nothing_leaks() {
    let secs: u64 = std::env::var("COMMITD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let w = World::new("soak");
    // Live containers whose files keep changing under the commits.
    for i in 0..CONTAINERS {
        w.running(&format!("live{i}"), "");
        w.ctr
            .exec(
                &format!("live{i}"),
                &["sh", "-c", "(i=0; while true; do i=$((i+1)); echo $i > /counter; head -c 4096 /dev/urandom > /noise.$((i % 8)); sleep 0.05; done) >/dev/null 2>&1 &"],
            )
            .unwrap();
    }
    // The import's index blob, referenced by nothing, is collected a moment
    // after the import: collected now, so it is not counted as "before".
    w.collect_garbage();
    let content_before: BTreeSet<String> = w.ctr.content().unwrap().into_iter().collect();
    let snapshot_keys = || -> BTreeSet<String> {
        w.ctr
            .snapshots(SNAPSHOTTER)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect()
    };
    let snapshots_before = snapshot_keys();

    let mut d = daemon!(w);
    let socket: PathBuf = d.socket.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (socket, stop) = (socket.clone(), Arc::clone(&stop));
            let (latencies, failures) = (Arc::clone(&latencies), Arc::clone(&failures));
            thread::spawn(move || {
                let mut n = 0u64;
                // Each client removes its previous image once it has the
                // next (as an agent that snapshots, ships and prunes), so
                // the image store stays small and RSS shows leaks, not the
                // store's growth.
                let mut prev: Option<String> = None;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let container = format!("live{}", (c + n as usize) % CONTAINERS);
                    // Mostly tagged commits (a tag that keeps moving), some
                    // untagged, some without pause, some with changes.
                    let path = match n % 4 {
                        0 => format!("/commit?container={container}"),
                        1 => format!("/commit?container={container}&repo=soak/c{c}&pause=0"),
                        2 => format!("/v1.45/commit?container={container}&repo=soak/c{c}&tag=t&changes=ENV+N%3D{n}"),
                        _ => format!("/commit?container={container}&repo=soak/c{c}&comment=n{n}"),
                    };
                    let t = Instant::now();
                    let (code, body) = request(&socket, "POST", &path);
                    let took = t.elapsed();
                    if code == 201 && body.contains("sha256:") {
                        latencies.lock().unwrap().push(took);
                        let id = body.split('"').nth(3).unwrap_or_default().to_string();
                        if let Some(old) = prev.replace(id) {
                            let (code, body) =
                                request(&socket, "DELETE", &format!("/images/{old}?force=1"));
                            if code != 200 {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("DELETE /images/{old}: {code} {body}"));
                            }
                        }
                    } else {
                        failures.lock().unwrap().push(format!("{path}: {code} {body}"));
                    }
                    if n % 10 == 0 {
                        let (code, _) = request(&socket, "GET", "/images/json");
                        if code != 200 {
                            failures.lock().unwrap().push(format!("/images/json: {code}"));
                        }
                    }
                }
            })
        })
        .collect();

    // RSS every 5 s.
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(5));
        rss.push((started.elapsed().as_secs(), d.status_kib("VmRSS")));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\ncontainerd's log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        commitd_testkit::shared().log_tail(60)
    );
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    assert!(lat.len() > CLIENTS, "commits made: {}", lat.len());
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    let samples: Vec<u64> = rss.iter().map(|r| r.1).collect();
    // Steady state: the middle third against the last (the first holds
    // the warm-up: pools, caches, connections).
    let third = samples.len() / 3;
    let middle = mean(&samples[third..2 * third]);
    let late = mean(&samples[2 * third..]);
    let peak = samples.iter().copied().max().unwrap_or(0);
    println!(
        "soak: {} commits in {:.0} s by {CLIENTS} clients on {CONTAINERS} containers: {rate:.1} commits/s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
    println!(
        "soak: RSS MiB over time (s:MiB): {}",
        rss.iter()
            .map(|(t, k)| format!("{t}:{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "soak: RSS mean middle third {:.1} MiB, last third {:.1} MiB, peak {:.1} MiB",
        middle / 1024.0,
        late / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        late - middle < 8.0 * 1024.0,
        "RSS grew from {middle:.0} KiB to {late:.0} KiB in steady state"
    );
    assert!(peak < 96 * 1024, "RSS peaked at {peak} KiB");

    for i in 0..CONTAINERS {
        assert_eq!(
            w.ctr.task_status(&format!("live{i}")).unwrap(),
            TaskStatus::Running
        );
    }
    assert!(d.terminate().success());
    w.assert_clean();

    // Delete every image the run made, collect garbage: what remains is
    // what was there before.
    let made: Vec<String> = w
        .ctr
        .images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| *n != w.image)
        .collect();
    println!("soak: {} image records to delete", made.len());
    for batch in made.chunks(200) {
        let mut args = vec!["images", "rm"];
        args.extend(batch.iter().map(String::as_str));
        w.ctr.run(&args).unwrap();
    }
    w.collect_garbage();
    let content_after: BTreeSet<String> = w.ctr.content().unwrap().into_iter().collect();
    let snapshots_after = snapshot_keys();
    assert_eq!(
        content_after
            .difference(&content_before)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "content leaked"
    );
    assert_eq!(
        snapshots_after
            .difference(&snapshots_before)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "snapshots leaked"
    );
    assert_eq!(
        content_after, content_before,
        "the base image's content is intact"
    );
}
