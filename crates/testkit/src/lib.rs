//! Test support for commitd: a real containerd (plain or with its CRI plugin), real
//! runc containers, a registry, Docker's engine as an oracle, base images built here.
//! Synchronous, std only (the CRI client runs its calls on a runtime of its own):
//! usable from plain `#[test]`s, async tests, scripts and benchmarks alike.
//!
//! # Pieces
//!
//! - [`Containerd`]: a private containerd in a temporary directory (config, socket,
//!   root, state, log), or an external one. [`shared`] gives one per test process,
//!   started on first use; with `COMMITD_TEST_CONTAINERD=/path/to/socket` it uses that
//!   containerd instead and never stops it.
//! - [`unique_namespace`]: tests share a containerd but each works in its own
//!   containerd namespace, so they run in parallel without seeing each other.
//! - [`ImageBuilder`]: OCI image-layout archives from a description of files, on a
//!   busybox-static base (`/bin/busybox` of the host), gzip layers, imported with
//!   `ctr images import`. [`busybox_image`] imports the default one.
//! - [`Ctr`]: `ctr -a SOCKET -n NAMESPACE` with helpers for containers and tasks
//!   (run, create, exec, pause, resume, kill, delete, run to completion), the overlay
//!   upper directory of a container, and readers of leases, snapshots, content and
//!   images to assert that nothing leaked; [`Ctr::image_manifest`],
//!   [`Ctr::top_layer_entries`] read an image back ([`layer_entries`]: a layer's
//!   entries, to compare two layers field by field).
//! - [`Registry`]: Debian's `docker-registry` on a free loopback port.
//! - [`CriNode`] / [`shared_cri`]: containerd with its CRI plugin (host-network
//!   pods, a local pause image, `discard_unpacked_layers`, the registry as its
//!   mirror) and a CRI client that makes pods and containers as kubelet does
//!   ([`KubePod`], [`KubeContainer`], [`Pod::restart`]). See the `cri` module docs.
//! - [`Dockerd`] / [`shared_dockerd`]: Docker Engine 20.10 (Debian's `docker.io`),
//!   private dirs and socket. [`Oracle`]: one base in both engines from one
//!   docker-archive, the same container and changes on both, the same `/commit`,
//!   [`Outcome::differences`] field by field.
//!
//! ```no_run
//! use commitd_testkit::{busybox_image, shared, unique_namespace};
//!
//! let containerd = shared();
//! let ns = unique_namespace("my-test");
//! let image = busybox_image(containerd, &ns)?;
//! let ctr = containerd.ctr(&ns);
//! ctr.run_detached(&image, "c1", &["sleep", "100000"], &[("nerdctl/name", "c1")])?;
//! assert_eq!(ctr.exec("c1", &["echo", "hi"])?, "hi\n");
//! assert!(std::fs::read_dir(ctr.upper_dir("c1")?)?.next().is_none());
//! ctr.delete_container("c1")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cleaning up, even when the test process dies
//!
//! Rust never drops statics, and a test binary can panic, abort or be killed, so a
//! private containerd is not tied to `Drop` alone. [`Containerd::start`] first starts
//! a *watchdog*: `/bin/sh` running a small script (`src/watchdog.sh`), in its own
//! process group, whose stdin is a pipe. The test process holds the only write end
//! (close-on-exec, so no other child inherits it). When that end closes — on `Drop`,
//! or because the process is gone for whatever reason — the watchdog reads EOF and
//! cleans up: SIGTERM to containerd (pid file checked against its command line),
//! SIGKILL after 10 s; `runc delete --force` of every container whose bundle is in
//! our state directory; SIGKILL to every process whose command line names a path in
//! our directory (the shims, stray `ctr` calls); unmount of everything mounted under
//! the directory; removal of empty per-namespace runc and cgroup directories; removal
//! of the directory. `Drop` just closes the pipe and waits for the watchdog, so every
//! test exercises the same path a crash takes.
//!
//! `PR_SET_PDEATHSIG` is not used: it fires when the *thread* that spawned the child
//! exits, and test harnesses run each test on a thread of its own. It would also kill
//! only containerd, not the shims and containers, which outlive containerd by design.
//!
//! containerd is started in its own process group too, so a Ctrl-C reaches the test
//! only and the watchdog stops containerd properly.
//!
//! The cleanup of the [`shared`] containerd runs after the test process has exited
//! (about half a second here): a script that looks for leftovers right after
//! `cargo test` returns has to allow for that. A [`Containerd`] dropped in a test is
//! cleaned up before `drop` returns.
//!
//! A private containerd's directory (`$TMPDIR/commitd-ctd-*`) holds `config.toml`,
//! `containerd.sock`, `containerd.log`, `containerd.pid`, `debug.sock`, `root/`,
//! `state/` and the watchdog's script.
//!
//! # Limits
//!
//! - Needs root, `containerd`, `ctr` and `runc` on `PATH` (Debian's 1.6 / 1.1 are what
//!   this was written against), `/bin/sh`, and `/bin/busybox` (Debian's
//!   busybox-static) for images. Without them [`shared`] panics with the reason:
//!   tests fail, they never skip.
//! - Everything goes through the `ctr` command line: each helper costs a process or
//!   a few (~10–30 ms each). Tests that measure containerd itself should time their
//!   own gRPC calls.
//! - If SIGKILL reaches the watchdog itself before it is done, what it has not yet
//!   removed stays (all of it under one `commitd-ctd-*` directory of `$TMPDIR`, plus
//!   the containers' runc state under `/run/containerd/runc/NAMESPACE`).
//! - Containers are run by `ctr` with runc's default root `/run/containerd/runc/NS`
//!   and cgroup `/NS/ID`; those are shared with any other containerd on the machine,
//!   which is one more reason to use [`unique_namespace`].
//! - An external containerd (`COMMITD_TEST_CONTAINERD`) is never cleaned by the
//!   testkit: what a test leaves there stays; [`Ctr::remove_all`] helps.
//! - A `ctr` call to a containerd that is down waits 10 s (ctr's dial timeout) before
//!   it fails.
//! - Image layers have whole-second mtimes ([`MTIME`]), like most real layers; so
//!   containerd 1.6's walking differ compares the bytes of lower files whose size and
//!   mtime match. That is the realistic case, not the fast one.
//! - An image's upper directory stays empty for an untouched container only with the
//!   directories the busybox base has; see [`ImageBuilder::busybox`].

mod cmd;
mod containerd;
mod cri;
mod ctr;
mod dockerd;
mod error;
pub mod grpc;
mod http;
mod image;
mod layer;
mod oracle;
mod registry;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use containerd::{CONTAINERD_ENV, Containerd, shared};
pub use cri::{
    CRI_BASE_REPO, CRI_NAMESPACE, CriNode, ExecOutput, KubeContainer, KubePod, Pod, SANDBOX_IMAGE,
    SERVICE_LINKS, shared_cri,
};
pub use ctr::{Ctr, Image, SNAPSHOTTER, Snapshot, TaskStatus};
pub use dockerd::{DOCKERD, Dockerd, shared_dockerd};
pub use error::{Error, Result};
pub use http::{
    Response, query_escape, request as http_request, request_with as http_request_with,
};
pub use image::{
    APPLETS, BUSYBOX_IMAGE, BuiltImage, BuiltLayer, HOST_BUSYBOX, ImageBuilder, MTIME,
    busybox_image,
};
/// The CRI v1 API (`k8s-cri`), for calls the helpers do not cover.
pub use k8s_cri::v1 as cri_api;
pub use layer::{EntryKind, LayerEntry, layer_entries};
pub use oracle::{ORACLE_API, Oracle, Outcome, Pair, RunSpec, Side};
pub use registry::Registry;

/// A containerd namespace name no other test, process or run uses:
/// `PREFIX-PID-N-XXXX` (`prefix` cut to containerd's rules: letters and digits,
/// runs of anything else become one `-`; at most 40 characters).
pub fn unique_namespace(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut clean = String::new();
    for c in prefix.chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c.to_ascii_lowercase());
        } else if !clean.is_empty() && !clean.ends_with('-') {
            clean.push('-');
        }
    }
    clean.truncate(40);
    let clean = clean.trim_end_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{clean}-{}-{}-{:04x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_unique_and_valid() {
        let a = unique_namespace("engine::commit_keeps_labels");
        let b = unique_namespace("engine::commit_keeps_labels");
        assert_ne!(a, b);
        assert!(a.starts_with("engine-commit-keeps-labels-"), "{a}");
        for ns in [
            a,
            b,
            unique_namespace(""),
            unique_namespace("--"),
            unique_namespace(&"x".repeat(200)),
        ] {
            assert!(ns.len() <= 76, "{ns}");
            assert!(ns.split(['-']).all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric())), "{ns}");
        }
    }
}
