//! The socket and the HTTP server loop.
//!
//! The loop is hyper's own (not `axum::serve`) so connection limits can be
//! set: a timeout for reading request headers (slow clients) and a bound on
//! the header buffer. Shutdown stops accepting, lets open connections finish
//! their request, and returns.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// A bound unix socket, removed again when dropped (if it is still ours).
pub struct Socket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl Socket {
    /// Binds `path` with mode 0660 (and `group`, when given). A socket file
    /// left by a dead daemon is replaced; one that answers is not.
    pub fn bind(path: &Path, group: Option<&str>) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is served by another process", path.display()),
                    ));
                }
                let meta = std::fs::symlink_metadata(path)?;
                if !meta.file_type().is_socket() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                warn!(socket = %path.display(), "replacing stale socket");
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        if let Some(group) = group.filter(|g| !g.is_empty()) {
            let gid = lookup_group(group)?;
            std::os::unix::fs::chown(path, None, Some(gid))?;
        }
        let inode = std::fs::metadata(path)?.ino();
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Another daemon may have replaced the file meanwhile; leave theirs.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A group name or numeric ID.
fn lookup_group(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such group: {group}"),
        )),
        Err(e) => Err(io::Error::other(format!("looking up group {group}: {e}"))),
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits for open connections to finish their requests.
pub async fn serve(listener: &UnixListener, app: Router, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(cause = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(cause = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    info!("no longer accepting connections");
    graceful.shutdown().await;
}
