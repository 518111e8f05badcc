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

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
}

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
        // The group first: a bad one must not leave a socket file behind.
        let gid = group
            .filter(|g| !g.is_empty())
            .map(lookup_group)
            .transpose()?;
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
        let owned = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .and_then(|()| std::os::unix::fs::chown(path, None, gid));
        if let Err(e) = owned {
            let _ = std::fs::remove_file(path);
            return Err(e);
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

/// The optional TCP listener and its TLS acceptor.
pub struct Tls {
    pub listener: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (and the TLS listener, if any) until
/// `shutdown` completes, then stops accepting and waits for open
/// connections to finish their requests.
pub async fn serve(
    listener: &UnixListener,
    tls: Option<Tls>,
    limits: ConnLimits,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // The first request's head is guarded by `HeadGuard` (which answers
        // 408); hyper's own timer, a little later, covers kept-alive ones.
        .header_read_timeout(limits.header_timeout + Duration::from_secs(1))
        .max_buf_size(limits.max_header_bytes.max(8192));
    let tcp_accept = async |tls: &Option<Tls>| match tls {
        Some(t) => t
            .listener
            .accept()
            .await
            .map(|(s, peer)| (s, peer, t.acceptor.clone())),
        None => std::future::pending().await,
    };
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
                let stream = HeadGuard::new(stream, limits);
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(cause = %e, "connection ended with an error");
                    }
                });
            }
            accepted = tcp_accept(&tls) => {
                let (stream, peer, acceptor) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(cause = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (http, app, watcher) = (http.clone(), app.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            info!(%peer, cause = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let stream = HeadGuard::new(stream, limits);
                    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
                    if let Err(e) = watcher.watch(conn).await {
                        debug!(cause = %e, "TLS connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    info!("no longer accepting connections");
    graceful.shutdown().await;
}

/// Guards the head of a connection's first request: a client that has not
/// sent its request line and headers within the timeout gets `408`, one
/// whose head outgrows the limit gets `431`, and the connection closes.
/// (hyper would close silently; later requests on a kept-alive connection
/// are bounded by hyper's own header timeout.)
pub struct HeadGuard<S> {
    inner: S,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    max: usize,
    seen: usize,
    /// Progress through the `\r\n\r\n` that ends a head.
    matched: u8,
    done: bool,
}

impl<S> HeadGuard<S> {
    pub fn new(inner: S, limits: ConnLimits) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            max: limits.max_header_bytes,
            seen: 0,
            matched: 0,
            done: false,
        }
    }
}

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 50\r\nconnection: close\r\n\r\n{\"message\":\"request headers not received in time\"}";
const TOO_LARGE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 48\r\nconnection: close\r\n\r\n{\"message\":\"request line and headers too large\"}";

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> HeadGuard<S> {
    /// Answers and ends the connection (best effort: the answer is small).
    fn refuse(
        &mut self,
        cx: &mut std::task::Context<'_>,
        answer: &[u8],
    ) -> std::task::Poll<io::Result<()>> {
        let _ = std::pin::Pin::new(&mut self.inner).poll_write(cx, answer);
        let _ = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.done = true;
        std::task::Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head refused",
        )))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncRead
    for HeadGuard<S>
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let mut too_large = false;
                for &b in &buf.filled()[before..] {
                    this.seen += 1;
                    if this.seen > this.max {
                        too_large = true;
                        break;
                    }
                    let want = [b'\r', b'\n', b'\r', b'\n'][this.matched as usize];
                    this.matched = if b == want {
                        this.matched + 1
                    } else if b == b'\r' {
                        1
                    } else {
                        0
                    };
                    if this.matched == 4 {
                        this.done = true;
                        break;
                    }
                }
                if too_large {
                    return this.refuse(cx, TOO_LARGE_431);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    // Nothing of a head yet (an idle connection) or half a
                    // head: either way the client is too slow.
                    return this.refuse(cx, TIMEOUT_408);
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
