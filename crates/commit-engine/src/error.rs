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
        code: Code,
        message: String,
    },

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

    /// Data from containerd did not have the expected shape.
    #[error("{0}")]
    Malformed(String),
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
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code behind a containerd error, when there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Containerd { code, .. } => Some(*code),
            Error::Unavailable { .. } => Some(Code::Unavailable),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::ContainerNotFound(_) | Error::ImageNotFound(_))
            || self.code() == Some(Code::NotFound)
    }

    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(Code::AlreadyExists)
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
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
