//! The commit daemon as a library, so tests start the real server on a
//! temporary socket with their own shutdown (the binary is a thin `main`).

pub mod config;
pub mod server;

use std::future::Future;
use std::time::Duration;

use commit_api::{Api, ServerInfo};
use commit_engine::{Containerd, Engine};
use tracing::{info, warn};

use crate::config::Config;

/// A configured daemon, ready to serve.
pub struct Daemon {
    pub api: Api,
    shutdown_timeout: Duration,
}

impl Daemon {
    pub fn new(cfg: &Config) -> commit_engine::Result<Self> {
        let c = Containerd::lazy(&cfg.containerd, &cfg.namespace)?;
        let engine = Engine::new(c, cfg.engine());
        Ok(Self {
            api: Api::new(engine, ServerInfo::default()),
            shutdown_timeout: cfg.shutdown_timeout(),
        })
    }

    /// Serves until `shutdown`, then drains: open connections finish, and
    /// commits in flight get the shutdown timeout to finish before they are
    /// told to roll back (which resumes their containers).
    pub async fn serve(&self, socket: &server::Socket, shutdown: impl Future<Output = ()>) {
        let app = commit_api::app(&self.api);
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = server::serve(&socket.listener, app, async move {
            shutdown.await;
            let _ = stopped_tx.send(());
        });
        let commits = self.api.commits().clone();
        let api = self.api.clone();
        let timeout = self.shutdown_timeout;
        let drain = async move {
            if stopped_rx.await.is_err() {
                return;
            }
            commits.close();
            if tokio::time::timeout(timeout, commits.wait()).await.is_err() {
                warn!(
                    in_flight = commits.len(),
                    "commits still running at the shutdown timeout; rolling them back"
                );
                api.abort_commits();
                commits.wait().await;
            }
            info!("commits drained");
        };
        // The server returns when its connections are done; commits run on
        // past a client that hung up, so both are awaited.
        tokio::join!(serving, drain);
    }
}
