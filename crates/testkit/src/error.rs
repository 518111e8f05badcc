//! One error type for everything the testkit does.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, with enough context to debug a failing test from its output alone.
///
/// `Debug` prints the same text as `Display`, so a test returning `Result` shows a
/// readable message.
#[derive(thiserror::Error)]
pub enum Error {
    /// An external command (`ctr`, `containerd`, `runc`, …) failed or timed out.
    #[error("`{command}` failed: {status}{}", stderr_suffix(.stderr))]
    Command {
        /// The command line, quoted like a shell would show it.
        command: String,
        /// `exit code N`, `killed by signal N`, `timed out after …`, or why it could not start.
        status: String,
        /// Its standard error, trimmed (the last lines when long).
        stderr: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        #[source]
        source: io::Error,
    },
    /// Anything else: an unexpected output, a bad argument, containerd not answering.
    #[error("{0}")]
    Other(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn path(what: &str, path: &Path, source: io::Error) -> Self {
        Error::io(format!("{what} {}", path.display()), source)
    }

    /// The standard error of a failed command, or `""`.
    pub fn stderr(&self) -> &str {
        match self {
            Error::Command { stderr, .. } => stderr,
            _ => "",
        }
    }
}
