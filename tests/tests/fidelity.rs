#![allow(clippy::unwrap_used)]
//! The differential fidelity suite: every byte of a commit, held against
//! containerd's own applier and differ and against the container's view.
//!
//! Real runc containers (privileged: devices, `trusted.*`) make each change
//! from inside, through their overlay mount, with busybox and `fsop`
//! (tests/fsop). Each test commits through the fast path and then checks,
//! with [`commitd_e2e::fidelity::check`]:
//! 1. the committed snapshot is exactly containerd's apply of its layer on
//!    the same parent (raw upper directories, every attribute, link counts
//!    too; and the mounted views);
//! 2. the image is the container's view, but for documented exceptions
//!    (sockets, `trusted.*` xattrs, times an applier bounds);
//! 3. where containerd's diff service commits something else, the fast path
//!    is the one that is right, and the difference is named.
//!
//! Cases are batched: all hand-written cases share one lower stage and one
//! change stage (one container each), under `/c/<case>/`.

use commit_engine::{Error, WalkError};
use commitd_e2e::fidelity::{
    Blindspot, Exception, Generator, Lab, Script, Stages, check, run_stages, sample_acl,
    sample_capability, show,
};

/// One hand-written case: what the lower image holds, what the container
/// changes, and what the checks must name.
struct Case {
    name: &'static str,
    lower: fn(&mut Script, &str),
    change: fn(&mut Script, &str),
    /// Blind spots of containerd's differ this case must show.
    blindspots: &'static [Blindspot],
    /// Exceptions this case must show.
    exceptions: &'static [Exception],
}

fn p(root: &str, rel: impl AsRef<[u8]>) -> Vec<u8> {
    [root.as_bytes(), b"/", rel.as_ref()].concat()
}

fn none(_: &mut Script, _: &str) {}

const CASES: &[Case] = &[
    Case {
        // Names are bytes: two names that differ only in a non-UTF-8 byte
        // stay two files; deleting a non-UTF-8 lower name stays deleted.
        name: "names",
        lower: |s, r| {
            s.put(p(r, b"a\xff"), b"lower").put(p(r, "keep"), b"k");
            s.mkdir(p(r, b"dir\xfe"), 0o755)
                .put(p(r, b"dir\xfe/in"), b"in");
        },
        change: |s, r| {
            s.put(p(r, b"bad\xffname"), b"1")
                .put(p(r, b"x\xff"), b"ff")
                .put(p(r, b"x\xfe"), b"fe");
            s.rm(p(r, b"a\xff")).put(p(r, b"dir\xfe/new"), b"new");
            s.setx(p(r, b"bad\xffname"), b"user.bad\xffname", b"v");
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        name: "odd_names",
        lower: none,
        change: |s, r| {
            for n in [
                &b"new\nline"[..],
                b"quote\"s",
                b"it's",
                b"sp ace",
                b"back\\slash",
                b"-dash",
                b"caf\xc3\xa9",
                b"=eq",
                b"tab\tx",
                b"..dots",
                b"a:b",
                b"star*",
            ] {
                s.put(p(r, n), n);
            }
            s.mkdir(p(r, b"dir\nwith newline"), 0o755)
                .put(p(r, b"dir\nwith newline/f"), b"f");
            s.symlink(b"../target with\nnewline \xff", p(r, "odd-target"));
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        // A 255-byte name, a path over 255 bytes, one of ~3,800 bytes, a
        // long symlink target, a hard link to the long path.
        name: "long_names",
        lower: none,
        change: |s, r| {
            s.put(p(r, "n".repeat(255)), b"max name");
            let mid = ["m".repeat(200), "m".repeat(200), "m".repeat(200)].join("/");
            s.mkdirs(p(r, &mid)).put(p(r, format!("{mid}/f")), b"mid");
            let long = vec!["l".repeat(250); 15].join("/");
            s.mkdirs(p(r, &long))
                .put(p(r, format!("{long}/f")), b"long");
            s.link(p(r, format!("{long}/f")), p(r, "link-to-long"));
            s.symlink("t".repeat(1000), p(r, "long-target"));
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        name: "deep",
        lower: none,
        change: |s, r| {
            s.deep(p(r, ""), 500, b"d");
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        // Without `userxattr`, `user.overlay.opaque` is the user's: the
        // lower files stay visible.
        name: "user_overlay_opaque",
        lower: |s, r| {
            s.mkdir(p(r, "keep"), 0o755)
                .put(p(r, "keep/a"), b"a")
                .put(p(r, "keep/b"), b"b");
        },
        change: |s, r| {
            s.setx(p(r, "keep"), "user.overlay.opaque", "y");
            s.mkdir(p(r, "new"), 0o755)
                .setx(p(r, "new"), "user.overlay.opaque", "y");
            s.put(p(r, "new/child"), b"c");
        },
        blindspots: &[Blindspot::ChangeMissed, Blindspot::XattrsDropped],
        exceptions: &[],
    },
    Case {
        // Hard links of every type, new and to copied-up lower files.
        name: "hardlinks",
        lower: |s, r| {
            s.put(p(r, "lowerfile"), b"lower").mkdir(p(r, "sub"), 0o755);
        },
        change: |s, r| {
            s.put(p(r, "f1"), b"f")
                .link(p(r, "f1"), p(r, "f1b"))
                .link(p(r, "f1"), p(r, "sub/f1c"));
            s.mkfifo(p(r, "p1"), 0o640).link(p(r, "p1"), p(r, "p1b"));
            s.mknod(p(r, "dev"), 'c', 1, 3, 0o666)
                .link(p(r, "dev"), p(r, "devb"));
            s.mknod(p(r, "blk"), 'b', 7, 0, 0o660)
                .link(p(r, "blk"), p(r, "blkb"));
            s.symlink("target", p(r, "s1"))
                .link(p(r, "s1"), p(r, "s1b"));
            s.link(p(r, "lowerfile"), p(r, "newlink"))
                .link(p(r, "lowerfile"), p(r, "sub/deeplink"));
            s.put(p(r, "capped"), b"c").setx(
                p(r, "capped"),
                "security.capability",
                sample_capability(),
            );
            s.link(p(r, "capped"), p(r, "capped2"));
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        // Nanoseconds, before the epoch, 2242–2262 (PAX only), past 2262
        // (the applier's epoch); mtime-only changes.
        name: "times",
        lower: |s, r| {
            s.put(p(r, "whole"), b"w")
                .utime(p(r, "whole"), 1_650_000_000, 0);
            s.mkdir(p(r, "dir"), 0o755).put(p(r, "dir/in"), b"i");
            s.utime(p(r, "dir"), 1_650_000_000, 0);
        },
        change: |s, r| {
            s.put(p(r, "ns"), b"1")
                .utime(p(r, "ns"), 1_700_000_000, 123_456_789);
            s.put(p(r, "neg"), b"2").utime(p(r, "neg"), -86_400, 0);
            s.put(p(r, "neg-ns"), b"3")
                .utime(p(r, "neg-ns"), -2, 500_000_000);
            s.put(p(r, "future"), b"4")
                .utime(p(r, "future"), 8_800_000_000, 5);
            s.put(p(r, "beyond"), b"5")
                .utime(p(r, "beyond"), 32_503_680_000, 0);
            s.symlink("x", p(r, "link-ns"))
                .utime(p(r, "link-ns"), 1_600_000_000, 999_999_999);
            // Touches containerd's differ does not see.
            s.utime(p(r, "dir"), 1_660_000_000, 0);
            s.utime(p(r, "whole"), 1_650_000_000, 500_000_000);
        },
        blindspots: &[Blindspot::WholeSeconds, Blindspot::ChangeMissed],
        exceptions: &[Exception::TimeBounded],
    },
    Case {
        name: "xattrs",
        lower: |s, r| {
            s.put(p(r, "f"), b"f")
                .setx(p(r, "f"), "user.a", "1")
                .setx(p(r, "f"), "user.b", "2");
            s.put(p(r, "capfile"), b"c")
                .put(p(r, "aclfile"), b"a")
                .mkdir(p(r, "acldir"), 0o755);
            s.put(p(r, "x2"), b"x");
        },
        change: |s, r| {
            s.put(p(r, "new"), b"n")
                .setx(p(r, "new"), "user.bin", b"\0\x01\xff");
            s.setx(p(r, "new"), "user.empty", b"")
                .setx(p(r, "new"), "user.big", vec![b'v'; 4000]);
            s.mkdir(p(r, "newdir"), 0o755)
                .setx(p(r, "newdir"), "user.d", "dir");
            s.setx(p(r, "capfile"), "security.capability", sample_capability());
            s.put(p(r, "newcap"), b"n").setx(
                p(r, "newcap"),
                "security.capability",
                sample_capability(),
            );
            s.setx(p(r, "aclfile"), "system.posix_acl_access", sample_acl());
            s.setx(p(r, "acldir"), "system.posix_acl_default", sample_acl());
            s.rmx(p(r, "f"), "user.a");
            s.setx(p(r, "x2"), "user.c", "3");
            s.put(p(r, "trusted"), b"t")
                .setx(p(r, "trusted"), "trusted.mine", "t");
        },
        blindspots: &[Blindspot::XattrsDropped, Blindspot::ChangeMissed],
        exceptions: &[Exception::HostXattr],
    },
    Case {
        // Whiteouts and opaque directories, nested and recreated.
        name: "whiteouts",
        lower: |s, r| {
            s.mkdirs(p(r, "a/b/c"))
                .put(p(r, "a/b/c/f1"), b"1")
                .put(p(r, "a/b/c/f2"), b"2");
            s.put(p(r, "a/b/g"), b"g").put(p(r, "a/h"), b"h");
            s.mkdirs(p(r, "x/y"))
                .put(p(r, "x/y/z"), b"z")
                .put(p(r, "top1"), b"t");
            s.mkdirs(p(r, "gone/deep")).put(p(r, "gone/deep/f"), b"f");
        },
        change: |s, r| {
            s.rm(p(r, "a/h"))
                .rmrf(p(r, "a/b"))
                .mkdirs(p(r, "a/b/c"))
                .put(p(r, "a/b/c/new"), b"n");
            s.rmrf(p(r, "x"))
                .mkdir(p(r, "x"), 0o755)
                .mkdir(p(r, "x/y"), 0o755)
                .put(p(r, "x/y/w"), b"w");
            s.rmrf(p(r, "gone"))
                .rm(p(r, "top1"))
                .put(p(r, "top1"), b"new");
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        name: "renames",
        lower: |s, r| {
            s.put(p(r, "r1"), b"one")
                .mkdirs(p(r, "rd/sub"))
                .put(p(r, "rd/sub/f"), b"deep");
            s.put(p(r, "r2"), b"two");
        },
        change: |s, r| {
            s.rename(p(r, "r1"), p(r, "r1moved"));
            s.sh(&format!("mv {r}/rd {r}/rdmoved"));
            s.mkdir(p(r, "nd"), 0o755).rename(p(r, "r2"), p(r, "nd/r2"));
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        name: "type_swaps",
        lower: |s, r| {
            s.put(p(r, "f2d"), b"f")
                .mkdir(p(r, "d2f"), 0o755)
                .put(p(r, "d2f/in"), b"i");
            s.put(p(r, "f2l"), b"f")
                .symlink("x", p(r, "l2d"))
                .mkdir(p(r, "d2l"), 0o755);
            s.mkfifo(p(r, "p2f"), 0o644);
        },
        change: |s, r| {
            s.rm(p(r, "f2d"))
                .mkdir(p(r, "f2d"), 0o755)
                .put(p(r, "f2d/in"), b"in");
            s.rmrf(p(r, "d2f")).put(p(r, "d2f"), b"now a file");
            s.rm(p(r, "f2l")).symlink("t", p(r, "f2l"));
            s.rm(p(r, "l2d")).mkdir(p(r, "l2d"), 0o700);
            s.rmrf(p(r, "d2l")).symlink("t", p(r, "d2l"));
            s.rm(p(r, "p2f")).put(p(r, "p2f"), b"file");
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        // Copy-ups that change only metadata.
        name: "metadata_copy_ups",
        lower: |s, r| {
            s.put(p(r, "m1"), b"1")
                .put(p(r, "m2"), b"2")
                .put(p(r, "m3"), b"3");
            s.mkdir(p(r, "md"), 0o755).put(p(r, "md/in"), b"i");
        },
        change: |s, r| {
            s.chmod(p(r, "m1"), 0o600).chown(p(r, "m2"), 1000, 1000);
            s.utime(p(r, "m3"), 1_650_000_100, 0);
            s.chmod(p(r, "md"), 0o700).chown(p(r, "md"), 5, 5);
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        name: "devices",
        lower: none,
        change: |s, r| {
            s.mknod(p(r, "null"), 'c', 1, 3, 0o666)
                .mknod(p(r, "loop0"), 'b', 7, 0, 0o660);
            s.mknod(p(r, "bigminor"), 'c', 4, 300, 0o620)
                .mkfifo(p(r, "fifo"), 0o600);
            s.socket(p(r, "sock"))
                .mkdir(p(r, "sockdir"), 0o755)
                .socket(p(r, "sockdir/s"));
        },
        blindspots: &[],
        exceptions: &[Exception::Socket],
    },
    Case {
        // Mode 000, set-id and sticky bits, large ids.
        name: "modes",
        lower: |s, r| {
            s.put(p(r, "lowersuid"), b"s")
                .chmod(p(r, "lowersuid"), 0o4755);
        },
        change: |s, r| {
            s.put(p(r, "m000"), b"0").chmod(p(r, "m000"), 0o000);
            s.mkdir(p(r, "d000"), 0o755)
                .put(p(r, "d000/in"), b"i")
                .chmod(p(r, "d000"), 0o000);
            for (n, m) in [("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6755)] {
                s.put(p(r, n), n).chmod(p(r, n), m);
            }
            s.mkdir(p(r, "sticky"), 0o1777)
                .mkdir(p(r, "sgiddir"), 0o2775);
            s.put(p(r, "bigids"), b"b")
                .chown(p(r, "bigids"), 4_000_000_000, 3_000_000);
            s.chown(p(r, "lowersuid"), 1, 1);
        },
        blindspots: &[],
        exceptions: &[],
    },
    Case {
        // A rewrite of the same size that restores the time: containerd's
        // differ compares size and time (bytes only for whole seconds).
        name: "blind_rewrite",
        lower: |s, r| {
            s.write(p(r, "same"), 100, 1)
                .utime(p(r, "same"), 1_700_000_000, 123_456_789);
        },
        change: |s, r| {
            s.write(p(r, "same"), 100, 2)
                .utime(p(r, "same"), 1_700_000_000, 123_456_789);
        },
        blindspots: &[Blindspot::ChangeMissed],
        exceptions: &[],
    },
];

/// Every hand-written case in one lower and one change container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_cases() {
    let (mut lower, mut change) = (Script::default(), Script::default());
    for c in CASES {
        let root = format!("/c/{}", c.name);
        lower.mkdirs(root.as_bytes());
        (c.lower)(&mut lower, &root);
        (c.change)(&mut change, &root);
    }
    let lab = Lab::new("fidelity-cases", &[("lower", &lower), ("change", &change)]);
    let started = std::time::Instant::now();
    let (parent, stages) = run_stages(&lab, "lower", "change", true).await;
    let parent_report = check(&parent);
    parent_report.assert_ok();
    let report = check(&stages);
    println!(
        "hand-written cases: {} cases in {:.1?}\nparent: {}\nchange: {}",
        CASES.len(),
        started.elapsed(),
        parent_report.summary(),
        report.summary()
    );
    report.assert_ok();
    for c in CASES {
        let prefix = format!("c/{}/", c.name);
        for spot in c.blindspots {
            assert!(
                !report.blindspots_under(*spot, prefix.as_bytes()).is_empty(),
                "case {}: containerd's differ was expected to show \"{spot}\" (README says it does); \
                 it did not — update the README if containerd changed",
                c.name
            );
        }
        for e in c.exceptions {
            assert!(
                report.exceptions_under(*e, prefix.as_bytes()) > 0,
                "case {}: expected the exception {e:?}",
                c.name
            );
        }
        let entries = stages
            .container
            .under(format!("c/{}", c.name).as_bytes())
            .count();
        assert!(entries > 1, "case {} has entries ({entries})", c.name);
    }
    case_specifics(&lab, &stages).await;
}

/// What the generic checks cannot see by themselves.
async fn case_specifics(lab: &Lab, s: &Stages) {
    // user.overlay.opaque stays the user's xattr: no trusted marker.
    let keep = &s.fast_raw.nodes[&b"c/user_overlay_opaque/keep"[..]];
    assert!(
        keep.xattrs.contains_key(&b"user.overlay.opaque"[..]),
        "{keep:?}"
    );
    assert!(
        !keep.xattrs.contains_key(&b"trusted.overlay.opaque"[..]),
        "{keep:?}"
    );
    assert!(
        s.fast
            .nodes
            .contains_key(&b"c/user_overlay_opaque/keep/a"[..])
    );
    // A recreated directory is opaque in the snapshot.
    let b = &s.fast_raw.nodes[&b"c/whiteouts/a/b"[..]];
    assert_eq!(
        b.xattrs
            .get(&b"trusted.overlay.opaque"[..])
            .map(Vec::as_slice),
        Some(&b"y"[..])
    );
    // Hard links of every type are links in the snapshot.
    for (a, b) in [
        ("f1", "f1b"),
        ("p1", "p1b"),
        ("dev", "devb"),
        ("blk", "blkb"),
        ("s1", "s1b"),
        ("capped", "capped2"),
    ] {
        let (x, y) = (
            &s.fast_raw.nodes[format!("c/hardlinks/{a}").as_bytes()],
            &s.fast_raw.nodes[format!("c/hardlinks/{b}").as_bytes()],
        );
        assert!(
            !x.group.is_empty() && x.group == y.group,
            "{a} and {b} are one inode"
        );
    }
    let capped = &s.applied_raw.nodes[&b"c/hardlinks/capped2"[..]];
    assert!(
        capped.xattrs.contains_key(&b"security.capability"[..]),
        "capability kept on a linked file"
    );
    // The layer records the true times, even those the snapshot bounds.
    let layer_times = layer_mtimes(lab, "docker.io/library/fidelity-fast:0").await;
    assert_eq!(
        layer_times.get(&b"c/times/neg"[..]).map(String::as_str),
        Some("-86400")
    );
    assert_eq!(
        layer_times.get(&b"c/times/neg-ns"[..]).map(String::as_str),
        Some("-1.5")
    );
    // ext4 keeps times up to 2446: what the container has is recorded.
    let beyond = s.container.nodes[&b"c/times/beyond"[..]].mtime;
    assert!(beyond.0 > 9_223_372_036, "{beyond:?}");
    assert_eq!(
        layer_times.get(&b"c/times/beyond"[..]),
        Some(&beyond.0.to_string())
    );
    assert_eq!(s.fast.nodes[&b"c/times/beyond"[..]].mtime, (0, 0));
    assert_eq!(
        layer_times.get(&b"c/times/ns"[..]).map(String::as_str),
        Some("1700000000.123456789")
    );
    assert_eq!(
        s.fast.nodes[&b"c/times/neg"[..]].mtime,
        (0, 0),
        "the applier's epoch"
    );
    assert_eq!(
        s.fast.nodes[&b"c/times/future"[..]].mtime,
        (8_800_000_000, 5)
    );
}

/// The PAX `mtime` records of an image's last layer, by path.
async fn layer_mtimes(lab: &Lab, image: &str) -> std::collections::HashMap<Vec<u8>, String> {
    use std::io::Read;
    let resolved = lab.resolved(image).await;
    let layer = resolved.manifest.layers.last().unwrap();
    let blob = lab.fast.blobs().read(&layer.digest).await.unwrap();
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    commitd_e2e::fidelity::layer_entries(&tar)
        .into_iter()
        .filter_map(|e| {
            let t = e.pax.get(&b"mtime"[..])?;
            Some((e.path, String::from_utf8_lossy(t).into_owned()))
        })
        .collect()
}

/// Random trees and random changes to them, the invariants checked.
/// `COMMITD_FIDELITY_SEED` repeats a run; `COMMITD_FIDELITY_TREES` sets how
/// many trees (default 64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_trees() {
    let seed: u64 = std::env::var("COMMITD_FIDELITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let trees: u64 = std::env::var("COMMITD_FIDELITY_TREES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    println!("generated trees: COMMITD_FIDELITY_SEED={seed} COMMITD_FIDELITY_TREES={trees}");
    let (mut lower, mut change) = (Script::default(), Script::default());
    for i in 0..trees {
        let mut g = Generator::new(seed.wrapping_add(i), format!("/g/{i}").as_bytes());
        lower.extend(&g.lower());
        change.extend(&g.change());
    }
    let lab = Lab::new(
        "fidelity-generated",
        &[("lower", &lower), ("change", &change)],
    );
    let started = std::time::Instant::now();
    let (parent, stages) = run_stages(&lab, "lower", "change", true).await;
    let (pr, r) = (check(&parent), check(&stages));
    println!(
        "{trees} generated trees (seed {seed}) in {:.1?}\nparent: {}\nchange: {}",
        started.elapsed(),
        pr.summary(),
        r.summary()
    );
    for (what, report) in [("lower stage", &pr), ("change stage", &r)] {
        assert!(
            report.violations.is_empty(),
            "{what} of seed {seed} ({trees} trees; rerun with COMMITD_FIDELITY_SEED={seed}): {} violations:\n{}",
            report.violations.len(),
            report.violations.join("\n")
        );
    }
    assert!(
        stages.container.nodes.len() > trees as usize * 5,
        "the trees have entries"
    );
}

/// 50,000 small files in one directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_small_files() {
    let mut change = Script::default();
    change.mkdirs(b"/many").many(b"/many", 50_000, 100);
    let lab = Lab::new(
        "fidelity-many",
        &[("lower", &Script::default()), ("change", &change)],
    );
    let started = std::time::Instant::now();
    let (_, stages) = run_stages(&lab, "lower", "change", true).await;
    let r = check(&stages);
    println!("50,000 files in {:.1?}: {}", started.elapsed(), r.summary());
    r.assert_ok();
    assert_eq!(stages.fast.under(b"many").count(), 50_001);
}

/// A sparse file over 8 GiB (the ustar size field ends at 8 GiB − 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_file_over_8_gib() {
    let mut change = Script::default();
    let size = (8u64 << 30) + 4096;
    change
        .put(b"/big", b"head")
        .truncate(b"/big", size)
        .append(b"/big", b"tail");
    let lab = Lab::new(
        "fidelity-sparse",
        &[("lower", &Script::default()), ("change", &change)],
    );
    let started = std::time::Instant::now();
    // containerd's differ would write 8 GiB of zeros twice more: the fast
    // path against containerd's applier and the container is the point.
    let (_, stages) = run_stages(&lab, "lower", "change", false).await;
    let r = check(&stages);
    println!(
        "sparse 8 GiB file in {:.1?}: {}",
        started.elapsed(),
        r.summary()
    );
    r.assert_ok();
    let big = &stages.fast_raw.nodes[&b"big"[..]];
    assert_eq!(big.size, size + 4);
    assert!(
        big.blocks < 1024,
        "the snapshot keeps the holes ({} blocks)",
        big.blocks
    );
    let applied = &stages.applied_raw.nodes[&b"big"[..]];
    assert_eq!(
        applied.content, big.content,
        "containerd writes the zeros: same bytes"
    );
    lab.w.collect_garbage();
}

/// What no layer can carry is refused with a 4xx naming the path, before
/// anything is paused, and leaves nothing behind; the longest path
/// containerd's applier takes here is committed and applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_what_no_layer_can_carry() {
    let lab = Lab::new("fidelity-refusals", &[]);
    lab.start(&lab.image, "r");
    // containerd opens <root>/…/snapshots/<id>/fs/<path> whole.
    let snapshots = commitd_testkit::shared()
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    // 4095 bytes (a path without its NUL), less the snapshot directory
    // with its ID counted at its widest, 20 digits (README).
    let room = 4095 - (snapshots.as_os_str().len() + "/".len() + 20 + "/fs/".len());
    let edge = |len: usize| -> Vec<u8> {
        // "edge/" + 200-byte components + a last one of the right length.
        let mut path = b"edge".to_vec();
        while len - path.len() > 201 + 1 {
            path.extend_from_slice(b"/");
            path.extend(std::iter::repeat_n(b'e', 200));
        }
        path.push(b'/');
        let last = len - path.len();
        path.extend(std::iter::repeat_n(b'z', last));
        path
    };
    let bad: Vec<(&str, Script, Vec<u8>)> = vec![
        (
            "a user file named .wh.x",
            script(|s| {
                s.mkdirs(b"/d").put(b"/d/.wh.x", b"x");
            }),
            b"d/.wh.x".to_vec(),
        ),
        (
            "an opaque marker's name",
            script(|s| {
                s.mkdirs(b"/d").put(b"/d/.wh..wh..opq", b"");
            }),
            b"d/.wh..wh..opq".to_vec(),
        ),
        (
            "a directory .wh.sub",
            script(|s| {
                s.mkdirs(b"/d/.wh.sub").put(b"/d/.wh.sub/f", b"");
            }),
            b"d/.wh.sub".to_vec(),
        ),
        (
            "a file named .wh.",
            script(|s| {
                s.mkdirs(b"/d").put(b"/d/.wh.", b"");
            }),
            b"d/.wh.".to_vec(),
        ),
        (
            "an xattr name with =",
            script(|s| {
                s.mkdirs(b"/d")
                    .put(b"/d/f", b"")
                    .setx(b"/d/f", b"user.a=b", b"1");
            }),
            b"d/f".to_vec(),
        ),
        (
            "a path longer than containerd's applier takes",
            script(|s| {
                let path = edge(room + 1);
                let (dir, _) = path.rsplit_once_bytes();
                s.mkdirs([b"/", dir].concat())
                    .put([b"/", path.as_slice()].concat(), b"");
            }),
            edge(room + 1)[..60].to_vec(),
        ),
    ];
    for (i, (what, setup, path)) in bad.iter().enumerate() {
        lab.sh("r", &format!("rm -rf /d /edge\n{}", setup.text()));
        let images_before = lab.w.ctr.images().unwrap();
        let err = lab
            .commit("r", true, &format!("docker.io/library/refused:{i}"))
            .await
            .expect_err(what);
        let Error::Walk(WalkError::Unrepresentable { .. }) = &err else {
            panic!("{what}: want Unrepresentable, got {err:?}");
        };
        let msg = err.to_string();
        let shown = show(path);
        assert!(msg.contains(&shown), "{what}: {msg} names {shown}");
        assert_eq!(
            lab.w.ctr.task_status("r").unwrap(),
            commitd_testkit::TaskStatus::Running,
            "{what}"
        );
        assert_eq!(
            lab.w.ctr.images().unwrap(),
            images_before,
            "{what}: no image"
        );
        lab.w.assert_clean();
    }

    // containerd's own differ takes a user's .wh.x for a whiteout: the
    // image it makes silently lacks the file (a blind spot the diff
    // service fallback inherits).
    lab.sh("r", "rm -rf /d /edge; mkdir /d; echo x > /d/.wh.x");
    assert!(lab.container_view("r").nodes.contains_key(&b"d/.wh.x"[..]));
    lab.commit("r", false, "docker.io/library/service-wh:1")
        .await
        .expect("the diff service commits it");
    let (_, view) = lab.image_trees("docker.io/library/service-wh:1").await;
    assert!(view.nodes.contains_key(&b"d"[..]));
    assert!(
        !view.nodes.contains_key(&b"d/.wh.x"[..]),
        "containerd dropped the user's .wh.x"
    );

    // The longest path allowed: committed, and containerd applies it.
    lab.sh("r", "rm -rf /d");
    let path = edge(room);
    let (dir, _) = path.rsplit_once_bytes();
    let s = script(|s| {
        s.mkdirs([b"/", dir].concat())
            .put([b"/", path.as_slice()].concat(), b"edge");
    });
    lab.sh("r", &s.text());
    let container = lab.container_view("r");
    lab.commit("r", true, "docker.io/library/edge:1")
        .await
        .expect("the longest path commits");
    let (fast_raw, fast) = lab.image_trees("docker.io/library/edge:1").await;
    let (applied_raw, applied) = lab.applied_elsewhere("docker.io/library/edge:1").await;
    let stages = Stages {
        parent: Default::default(),
        container,
        fast_raw,
        fast,
        applied_raw,
        applied,
        service: None,
    };
    let r = check(&stages);
    r.assert_ok();
    assert!(
        stages.applied.nodes.contains_key(&path),
        "containerd applied the {room}-byte path"
    );
    lab.w.assert_clean();
}

/// Through the daemon: the refusal is a 400 naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_400_naming_the_path() {
    let lab = Lab::new("fidelity-api", &[]);
    lab.start(&lab.image, "api");
    lab.sh("api", "mkdir -p /srv && echo x > /srv/.wh.cache");
    let d = commitd_e2e::daemon!(lab.w);
    let (status, body) = d.curl(
        "POST",
        "/v1.41/commit?container=api&repo=refused&tag=1",
        None,
        &[],
    );
    assert_eq!(status, 400, "{body}");
    let msg: serde_json::Value = serde_json::from_str(&body).unwrap();
    let msg = msg["message"].as_str().unwrap();
    assert!(msg.contains("/srv/.wh.cache"), "{msg}");
    assert!(msg.contains("whiteout"), "{msg}");
    assert_eq!(
        lab.w.ctr.task_status("api").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
    lab.w.assert_clean();
}

/// A container that keeps writing while it is committed: the layer is one
/// moment. A writer rewrites 64 files with an increasing counter, in
/// order, forever; a frozen copy sees them all at one round, or the first
/// ones one round ahead (and at most the one being written empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_during_the_commit_is_one_frozen_moment() {
    let lab = Lab::new("fidelity-writer", &[]);
    lab.start(&lab.image, "wr");
    lab.sh(
        "wr",
        &format!(
            "mkdir /w && (fsop loop {} 64 > /dev/null 2>&1 &) && sleep 0.5 && test -s /w/63",
            hex(b"/w")
        ),
    );
    for round in 0..3 {
        let image = format!("docker.io/library/frozen:{round}");
        lab.commit("wr", true, &image)
            .await
            .expect("commit while writing");
        let (fast_raw, fast_view) = lab.image_trees(&image).await;
        let (applied_raw, applied) = lab.applied_elsewhere(&image).await;
        let r = check(&Stages {
            parent: Default::default(),
            // The moment itself is checked below.
            container: fast_view.clone(),
            fast_raw,
            fast: fast_view.clone(),
            applied_raw,
            applied,
            service: None,
        });
        r.assert_ok();
        let values: Vec<Option<u64>> = (0..64)
            .map(|i| {
                let f = &stages_fast_node(&fast_view, i);
                String::from_utf8_lossy(f).trim().parse().ok()
            })
            .collect();
        assert!(frozen(&values), "round {round}: not one moment: {values:?}");
    }
}

/// A file written through a shared writable mapping while the container
/// is committed: a write to a page already dirty moves no ctime, so the
/// copy made while the container ran cannot be trusted for it. The writer
/// puts a counter into `/m/map` through the mapping (one 8-byte store),
/// then into `/m/marker` with one write(2) of a fixed width, round after
/// round; the layer holds
/// one moment of both (`map` = `marker`, or one round ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_through_a_shared_mapping_during_the_commit_is_one_moment() {
    mapped_writer("mmaploop").await;
}

/// As above, but the writer maps `/m/map` afresh each round and closes it
/// between rounds: the running copy mostly finds the file dirty and open
/// nowhere, so not written back, and a later round's write through its
/// new mapping must still move the ctime the paused walk compares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_through_a_new_mapping_each_round_during_the_commit_is_one_moment() {
    mapped_writer("mmapreopen").await;
}

async fn mapped_writer(op: &str) {
    let lab = Lab::new(&format!("fidelity-{op}"), &[]);
    lab.start(&lab.image, "mm");
    lab.sh(
        "mm",
        &format!(
            "mkdir /a /m && fsop many {} 2000 64 && (fsop {op} {} > /dev/null 2>&1 &) && sleep 0.5 && test -s /m/marker",
            hex(b"/a"),
            hex(b"/m")
        ),
    );
    for round in 0..3 {
        let image = format!("docker.io/library/mapped:{round}");
        lab.commit("mm", true, &image)
            .await
            .expect("commit while writing through a mapping");
        let (_, view) = lab.image_trees(&image).await;
        let data = |name: &str| view.nodes[format!("m/{name}").as_bytes()].data.clone();
        let map = data("map")
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        let marker: Option<u64> = String::from_utf8_lossy(&data("marker")).trim().parse().ok();
        let (Some(map), Some(marker)) = (map, marker) else {
            panic!("round {round}: counters expected: {map:?} {marker:?}");
        };
        assert!(
            map == marker || map == marker + 1,
            "round {round}: not one moment: map {map}, marker {marker}"
        );
    }
}

fn stages_fast_node(view: &commitd_e2e::fidelity::Tree, i: usize) -> Vec<u8> {
    view.nodes[format!("w/{i}").as_bytes()].data.clone()
}

/// Whether counters written in index order, round after round, were read at
/// one instant.
fn frozen(v: &[Option<u64>]) -> bool {
    let known: Vec<u64> = v.iter().flatten().copied().collect();
    let (Some(&hi), Some(&lo)) = (known.iter().max(), known.iter().min()) else {
        return false;
    };
    if v.iter().filter(|x| x.is_none()).count() > 1 || hi > lo + 1 {
        return false;
    }
    // hi… then lo…, with one gap at most where the step is.
    let step = v.iter().position(|x| *x != Some(hi)).unwrap_or(v.len());
    v[step..]
        .iter()
        .enumerate()
        .all(|(i, x)| *x == Some(lo) || (i == 0 && x.is_none()))
}

fn script(f: impl FnOnce(&mut Script)) -> Script {
    let mut s = Script::default();
    f(&mut s);
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

trait RsplitOnce {
    fn rsplit_once_bytes(&self) -> (&[u8], &[u8]);
}
impl RsplitOnce for Vec<u8> {
    fn rsplit_once_bytes(&self) -> (&[u8], &[u8]) {
        let i = self.iter().rposition(|&b| b == b'/').unwrap();
        (&self[..i], &self[i + 1..])
    }
}
