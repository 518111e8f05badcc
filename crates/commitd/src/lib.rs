//! The commit daemon as a library, so tests start the real server on a
//! temporary socket with their own shutdown, and the binary is one line
//! (`commitd::main`): test packages can build the very same program.

pub mod config;
pub mod server;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use commit_api::{Api, ServerInfo};
use commit_engine::{Containerd, Engine};
use std::process::ExitCode;

use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Config, LogFormat};

/// A configured daemon, ready to serve.
pub struct Daemon {
    pub api: Api,
    shutdown_timeout: Duration,
    conn_limits: server::ConnLimits,
}

impl Daemon {
    pub fn new(cfg: &Config) -> commit_engine::Result<Self> {
        let c = Containerd::lazy(&cfg.containerd, &cfg.namespace)?;
        let engine = Engine::new(c, cfg.engine());
        Ok(Self {
            api: Api::with_options(
                engine,
                ServerInfo::default(),
                commit_api::Options {
                    limits: cfg.api_limits(),
                    insecure_registries: cfg.registry.insecure_registries.clone(),
                },
            ),
            shutdown_timeout: cfg.shutdown_timeout(),
            conn_limits: cfg.conn_limits(),
        })
    }

    /// Serves until `shutdown`, then drains: open connections finish, and
    /// commits in flight get the shutdown timeout to finish before they are
    /// told to roll back (which resumes their containers).
    pub async fn serve(
        &self,
        socket: &server::Socket,
        tls: Option<server::Tls>,
        shutdown: impl Future<Output = ()>,
    ) {
        let app = commit_api::app(&self.api);
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = server::serve(&socket.listener, tls, self.conn_limits, app, async move {
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

/// glibc gives each thread that allocates under contention an arena of its
/// own (up to 8 per core), and each keeps what it freed: a daemon serving
/// bursts of concurrent commits ratchets up its RSS that way (seen in the
/// soak test: 105 MiB instead of 56). Two arenas keep it flat; the
/// allocation rate here is far too low for the contention to matter.
/// `MALLOC_ARENA_MAX` in the environment still decides when set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called before any
        // thread is started.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// The whole program: parse flags, load config, log, serve until a signal.
pub fn main() -> ExitCode {
    limit_malloc_arenas();
    // One TLS implementation for the whole process (the TCP listener and
    // registry pushes): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let cfg = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("commitd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    if cli.check {
        return check(&cfg);
    }
    init_tracing(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(cause = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cfg: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let daemon = Daemon::new(&cfg).context("configuring the daemon")?;
    let socket = server::Socket::bind(&cfg.socket, Some(&cfg.socket_group))
        .with_context(|| format!("binding {}", cfg.socket.display()))?;
    info!(socket = %cfg.socket.display(), containerd = %cfg.containerd.display(), namespace = %cfg.namespace, "serving");
    match daemon.api.engine().containerd().server_version().await {
        Ok(v) => info!(version = %v, "containerd answers"),
        Err(e) => {
            warn!(cause = %e, "containerd does not answer yet; commits fail with 503 until it does")
        }
    }
    // Containers a previous run paused and did not resume (it died
    // mid-commit) are resumed as soon as containerd answers.
    let engine = daemon.api.engine().clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        while engine.containerd().server_version().await.is_err() {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        engine.recover().await;
        // Records of containers removed while the daemon runs, hourly.
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = engine.forget_removed_containers().await {
                warn!(cause = %e, "incremental records of removed containers not swept");
            }
        }
    });
    if !cfg.metrics_address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.metrics_address)
            .await
            .with_context(|| format!("binding the metrics address {}", cfg.metrics_address))?;
        info!(address = %cfg.metrics_address, "serving metrics");
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(commit_api::metrics))
            .with_state(daemon.api.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!(cause = %e, "metrics listener failed");
            }
        });
    }
    let tls = match &cfg.tcp {
        Some(t) => {
            let acceptor = tls::acceptor(&t.tls_cert, &t.tls_key, &t.tls_ca)?;
            let listener = tokio::net::TcpListener::bind(&t.address)
                .await
                .with_context(|| format!("binding {}", t.address))?;
            info!(address = %t.address, "serving the API on TCP (TLS, client certificates required)");
            Some(server::Tls { listener, acceptor })
        }
        None => None,
    };
    notify_ready();
    daemon.serve(&socket, tls, shutdown_signal()).await;
    drop(socket);
    info!("stopped");
    Ok(())
}

/// `--check`: prints what containerd and this host offer.
fn check(cfg: &Config) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let c = match Containerd::lazy(&cfg.containerd, &cfg.namespace) {
            Ok(c) => c,
            Err(e) => {
                println!("config: {e}");
                return ExitCode::from(2);
            }
        };
        let report = match commit_engine::check::run(&c).await {
            Ok(r) => r,
            Err(e) => {
                println!(
                    "containerd: not answering at {}: {e}",
                    cfg.containerd.display()
                );
                return ExitCode::FAILURE;
            }
        };
        println!(
            "containerd: {} answers (version {}), namespace {}",
            cfg.containerd.display(),
            report.containerd_version,
            cfg.namespace
        );
        for s in &report.snapshotters {
            let state = match (&s.error, s.visible) {
                (Some(e), _) => format!("not loaded: {e}"),
                (None, true) => format!(
                    "files visible at {}",
                    s.root
                        .as_ref()
                        .map(|r| r.display().to_string())
                        .unwrap_or_default()
                ),
                (None, false) => "files not visible from here".into(),
            };
            println!("snapshotter {}: {state}", s.name);
        }
        match &report.content_root {
            Some(r) => println!(
                "content store: {} visible: layers are written into it directly",
                r.display()
            ),
            None => println!(
                "content store: not visible from here: layers go through the content service"
            ),
        }
        let snapshots = report
            .snapshotters
            .iter()
            .find(|s| s.name == "overlayfs")
            .and_then(|s| s.root.as_ref())
            .map(|r| r.join("snapshots").display().to_string())
            .unwrap_or_default();
        match &report.reflink {
            Some(Ok(r)) if r.shared => println!(
                "reflinks: yes: copies in {snapshots} ({}) share extents, so the fast path's copy of a file costs no data",
                r.filesystem
            ),
            Some(Ok(r)) => println!(
                "reflinks: no: copies in {snapshots} ({}) write their data",
                r.filesystem
            ),
            Some(Err(e)) => println!("reflinks: unknown: the probe in {snapshots} failed: {e}"),
            None => println!("reflinks: unknown: the overlayfs snapshotter's files are not visible from here"),
        }
        match report.fast_path() {
            Ok(()) if cfg.commit.fast_path => {
                println!("fast path: usable for overlayfs containers")
            }
            Ok(()) => println!("fast path: usable, but turned off (commit.fast_path = false)"),
            Err(why) => {
                println!("fast path: not usable: {why}; commits use containerd's diff service")
            }
        }
        ExitCode::SUCCESS
    })
}

/// Tells systemd (Type=notify) the socket is ready; a no-op elsewhere.
fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!(cause = %e, "could not notify systemd");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "shutting down");
}
