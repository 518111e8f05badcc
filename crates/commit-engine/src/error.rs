//! The engine's errors: what went wrong, in terms a caller can act on.
//!
//! gRPC statuses from containerd are turned into semantic variants here
//! (not found, conflict, invalid argument, unavailable) instead of being
//! flattened into strings, so the API layer can map each to a status code.

use std::path::PathBuf;

use tonic::Code;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container answers to the given ID, ID prefix or name.
    #[error("no such container: {0}")]
    ContainerNotFound(String),

    /// An ID prefix matches more than one container.
    #[error("multiple containers match the prefix {prefix:?}: {}", matches.join(", "))]
    AmbiguousContainer {
        prefix: String,
        matches: Vec<String>,
    },

    /// No image answers to the given name or ID.
    #[error("no such image: {0}")]
    ImageNotFound(String),

    /// The caller asked for something invalid (bad config, bad option).
    #[error("{0}")]
    InvalidArgument(String),

    /// The request conflicts with the state of containerd's objects.
    #[error("{0}")]
    Conflict(String),

    /// containerd does not answer on its socket.
    #[error("containerd is not reachable at {}: {detail}", socket.display())]
    Unavailable { socket: PathBuf, detail: String },

    /// A containerd call failed for a reason not covered above.
    #[error("containerd {op}: {message}")]
    Containerd {
        op: &'static str,
        kind: Kind,
        message: String,
    },

    /// The caller's `changes` (or config) cannot be applied.
    #[error(transparent)]
    Changes(#[from] docker_format::changes::ChangeError),

    /// The commit was cancelled (daemon shutting down) and rolled back.
    #[error("commit cancelled: {0}")]
    Cancelled(&'static str),

    /// Local I/O failed (reading an overlay upper directory, a temp file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A walk of the container's files (the diff's read of the upper
    /// directory, the capture's copy) failed: it holds something no layer
    /// can carry as it is (`WalkError::Unrepresentable`: a name unpackers
    /// read as a whiteout, a path too long for containerd's applier, …; the
    /// client's, the message names the path), or local I/O failed.
    #[error("{}", walk_message(.0))]
    Walk(#[from] crate::walk::WalkError),

    /// An incremental commit cannot be made (the engine then makes a plain
    /// one: this never leaves it).
    #[error("not an incremental commit: {0}")]
    Incremental(String),

    /// Data from containerd did not have the expected shape.
    #[error("{0}")]
    Malformed(String),

    /// A task of the engine's own (a blocking copy, a compressor, a write
    /// stream's sender) panicked or was dropped: a bug here, not a
    /// containerd failure.
    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },

    /// A failure injected for a test (`failpoints` feature only).
    #[error("failpoint {0} hit")]
    Failpoint(&'static str),

    /// An archive `docker load` cannot load.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),

    /// A commit option the engine cannot take.
    #[error(transparent)]
    Option(#[from] OptionError),

    /// A tarball `docker import` cannot import.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),

    /// A registry could not be set up, reached or persuaded.
    #[error(transparent)]
    Registry(#[from] crate::remote::RegistryError),
}

/// A commit option the engine cannot take (a query value of `POST /commit`,
/// a `[commit]` setting): the caller's, said with what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown compression {0:?}: want gzip, zstd or none")]
    Compression(String),
    #[error("invalid squash {0:?}: want new, all or no")]
    Squash(String),
    #[error("invalid exclude pattern {pattern:?}: {why}")]
    Exclude { pattern: String, why: &'static str },
    #[error("invalid timestamp {0}: want seconds since 1970 up to the year 9999")]
    Timestamp(i64),
}

/// What kind of failure containerd reported: its gRPC status code, in the
/// engine's words (callers never see gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    AlreadyExists,
    /// The object is not in a state that allows the call.
    FailedPrecondition,
    /// The call raced another (a transaction was aborted).
    Aborted,
    /// containerd refused an argument (also: out of range).
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    /// Anything else: containerd failed.
    Internal,
}

impl From<Code> for Kind {
    fn from(code: Code) -> Self {
        match code {
            Code::NotFound => Kind::NotFound,
            Code::AlreadyExists => Kind::AlreadyExists,
            Code::FailedPrecondition => Kind::FailedPrecondition,
            Code::Aborted => Kind::Aborted,
            Code::InvalidArgument | Code::OutOfRange => Kind::InvalidArgument,
            Code::PermissionDenied => Kind::PermissionDenied,
            Code::Unauthenticated => Kind::Unauthenticated,
            Code::Unimplemented => Kind::Unimplemented,
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unavailable
            | Code::Internal
            | Code::DataLoss => Kind::Internal,
        }
    }
}

impl Error {
    /// Turns a gRPC status from containerd into an error, naming the call.
    pub(crate) fn status(op: &'static str, socket: &std::path::Path, s: tonic::Status) -> Self {
        if is_transport_failure(&s) {
            return Error::Unavailable {
                socket: socket.to_path_buf(),
                detail: transport_detail(&s),
            };
        }
        Error::Containerd {
            op,
            kind: s.code().into(),
            message: s.message().to_string(),
        }
    }

    /// Maps a join failure of the task doing `what`.
    pub(crate) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| Error::Task { what, source }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The kind of a containerd failure, when this is one.
    pub(crate) fn kind(&self) -> Option<Kind> {
        match self {
            Error::Containerd { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::ContainerNotFound(_) | Error::ImageNotFound(_))
            || self.kind() == Some(Kind::NotFound)
    }

    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// A walk's failure as the client reads it. A walk's `Unsupported` is the
/// caller's cue to take the diff service instead and never reaches here
/// but from a bug; it reads as I/O.
fn walk_message(e: &crate::walk::WalkError) -> String {
    use crate::walk::WalkError;
    match e {
        WalkError::Unrepresentable { .. } => {
            format!("the container's changes cannot be put in a layer: {e}")
        }
        WalkError::Io { .. } => e.to_string(),
        WalkError::Unsupported(why) => {
            format!(
                "{why}: {}",
                std::io::Error::from(std::io::ErrorKind::Unsupported)
            )
        }
    }
}

/// Whether a status means the connection to containerd failed, rather than
/// containerd answering with an error.
fn is_transport_failure(s: &tonic::Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        // A connection reset or a stream cut mid-call surfaces as Unknown or
        // Cancelled with a transport source.
        Code::Unknown | Code::Cancelled | Code::Internal => {
            let m = s.message();
            std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>())
                || m.contains("transport error")
                || m.contains("connection")
                || m.contains("broken pipe")
                || m.contains("h2 protocol error")
                || m.contains("operation was canceled")
        }
        _ => false,
    }
}

fn transport_detail(s: &tonic::Status) -> String {
    let mut detail = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = e.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::WalkError;

    #[test]
    fn option_errors_say_what_would_do() {
        let text = |e: OptionError| Error::from(e).to_string();
        assert_eq!(
            text("brotli".parse::<crate::Compression>().unwrap_err()),
            "unknown compression \"brotli\": want gzip, zstd or none"
        );
        assert_eq!(
            text("most".parse::<crate::Squash>().unwrap_err()),
            "invalid squash \"most\": want new, all or no"
        );
        assert_eq!(
            text(crate::ExcludePattern::parse("/a/../b").unwrap_err()),
            "invalid exclude pattern \"/a/../b\": \"..\" is not allowed"
        );
        assert_eq!(
            text(crate::ExcludePattern::parse("tmp").unwrap_err()),
            "invalid exclude pattern \"tmp\": it must be an absolute path in the container"
        );
        assert_eq!(
            text(OptionError::Timestamp(-1)),
            "invalid timestamp -1: want seconds since 1970 up to the year 9999"
        );
    }

    #[test]
    fn walk_failures_keep_their_texts_and_kinds() {
        let e = Error::from(WalkError::Unrepresentable {
            path: b"a/.wh.b".to_vec(),
            why: "a whiteout name".into(),
        });
        assert!(
            matches!(e, Error::Walk(WalkError::Unrepresentable { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("the container's changes cannot be put in a layer: "),
            "{e}"
        );
        let e = Error::from(WalkError::io("stat", std::io::Error::other("gone")));
        assert!(matches!(e, Error::Walk(WalkError::Io { .. })), "{e:?}");
        assert_eq!(e.to_string(), "stat: gone");
        let e = Error::from(WalkError::Unsupported("idmapped".into()));
        assert_eq!(e.to_string(), "idmapped: unsupported");
    }
}
