//! The commitd binary: configuration, logging, signals, the socket.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use commitd::config::{Cli, Config, LogFormat};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
    let daemon = commitd::Daemon::new(&cfg).context("configuring the daemon")?;
    let socket = commitd::server::Socket::bind(&cfg.socket, Some(&cfg.socket_group))
        .with_context(|| format!("binding {}", cfg.socket.display()))?;
    info!(socket = %cfg.socket.display(), containerd = %cfg.containerd.display(), namespace = %cfg.namespace, "serving");
    match daemon.api.engine().containerd().server_version().await {
        Ok(v) => info!(version = %v, "containerd answers"),
        Err(e) => {
            warn!(cause = %e, "containerd does not answer yet; commits fail with 503 until it does")
        }
    }
    notify_ready();
    daemon.serve(&socket, shutdown_signal()).await;
    drop(socket);
    info!("stopped");
    Ok(())
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
