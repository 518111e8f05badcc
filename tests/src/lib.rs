#![allow(clippy::unwrap_used)]
//! Shared set-up of the system tests: a namespace of the shared private
//! containerd with the busybox base image, and an engine on it.

use std::time::Duration;

use commit_engine::{CommitRequest, Committed, Compression, Containerd, Engine, EngineConfig};
use commitd_testkit::{Ctr, SNAPSHOTTER, busybox_image, shared, unique_namespace};
use tokio_util::sync::CancellationToken;

/// One test's world: its own namespace, the base image imported.
pub struct World {
    pub ns: String,
    pub ctr: Ctr,
    pub image: String,
    pub socket: std::path::PathBuf,
}

impl World {
    pub fn new(name: &str) -> World {
        let containerd = shared();
        let ns = unique_namespace(name);
        let image = busybox_image(containerd, &ns)
            .unwrap_or_else(|e| panic!("importing the busybox image: {e}"));
        World {
            ctr: containerd.ctr(&ns),
            ns,
            image,
            socket: containerd.socket().to_path_buf(),
        }
    }

    pub fn engine(&self, fast_path: bool) -> Engine {
        let c = Containerd::lazy(&self.socket, &self.ns).expect("namespace");
        Engine::new(
            c,
            EngineConfig {
                fast_path,
                ..EngineConfig::default()
            },
        )
    }

    /// A running container from the base image, then `setup` run in it.
    pub fn running(&self, id: &str, setup: &str) {
        self.ctr
            .run_detached(
                &self.image,
                id,
                &["sh", "-c", "sleep 100000"],
                &[("nerdctl/name", &format!("{id}-name"))],
            )
            .unwrap_or_else(|e| panic!("starting {id}: {e}"));
        if !setup.is_empty() {
            self.ctr
                .exec(id, &["sh", "-c", setup])
                .unwrap_or_else(|e| panic!("setting up {id}: {e}"));
        }
    }

    /// Runs `script` in a fresh container of `image` and returns its output.
    pub fn run(&self, image: &str, script: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "check-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.ctr
            .run_image(image, &id, &["sh", "-c", script])
            .unwrap_or_else(|e| panic!("running {image}: {e}"))
    }

    /// Nothing a commit makes temporarily is left: no lease, no view, no
    /// `extract-` snapshot.
    pub fn assert_clean(&self) {
        let leases = self.ctr.leases().expect("leases");
        assert!(leases.is_empty(), "leases left: {leases:?}");
        let snaps = self.ctr.snapshots(SNAPSHOTTER).expect("snapshots");
        let temp: Vec<_> = snaps
            .iter()
            .filter(|s| s.key.starts_with("extract-") || s.key.contains("-view-"))
            .collect();
        assert!(temp.is_empty(), "temporary snapshots left: {temp:?}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.ctr.remove_all();
    }
}

/// A commit request with Docker's defaults.
pub fn request(container: &str, name: Option<&str>) -> CommitRequest {
    CommitRequest {
        container: container.into(),
        image_name: name.map(str::to_string),
        author: String::new(),
        comment: String::new(),
        pause: true,
        compression: Some(Compression::Gzip),
        config: None,
    }
}

pub async fn commit(engine: &Engine, req: CommitRequest) -> commit_engine::Result<Committed> {
    tokio::time::timeout(
        Duration::from_secs(120),
        engine.commit(req, &CancellationToken::new()),
    )
    .await
    .expect("commit took over two minutes")
}

/// A listing of a filesystem from inside a container: every path with its
/// type, mode, owner, size, link target and content hash.
pub const LIST_FS: &str = r#"cd / && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run \) -prune -o -print | sort | while read -r p; do
  if [ -L "$p" ]; then echo "$p link $(readlink "$p")";
  elif [ -d "$p" ]; then echo "$p dir $(stat -c '%a %u:%g' "$p")";
  elif [ -f "$p" ]; then echo "$p file $(stat -c '%a %u:%g %s %h' "$p") $(sha256sum "$p" | cut -c1-16)";
  else echo "$p other $(stat -c '%F %a %t:%T' "$p")"; fi; done"#;
