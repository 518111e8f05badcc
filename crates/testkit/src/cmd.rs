//! Running external commands with a time bound and errors that show the command.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bound for quick `ctr` calls; generous, it only stops a hung test.
pub(crate) const QUICK: Duration = Duration::from_secs(120);
/// Bound for calls that move a whole image or run a container to completion.
pub(crate) const SLOW: Duration = Duration::from_secs(900);

/// Runs `cmd` to completion, with stdin closed, and returns its output if it exited 0.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let out = output(cmd, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: show(cmd),
            status: describe(out.status),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 40),
        })
    }
}

/// Runs `cmd` and returns its stdout as text if it exited 0.
pub(crate) fn stdout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = run(cmd, timeout)?;
    String::from_utf8(out.stdout)
        .map_err(|e| Error::Other(format!("`{}` printed non-UTF-8: {e}", show(cmd))))
}

/// Runs `cmd` to completion whatever its exit status; errors only if it cannot be
/// started or runs longer than `timeout` (then it is killed).
pub(crate) fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        command: show(cmd),
        status: format!("could not start: {e}"),
        stderr: String::new(),
    })?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_timeout(&mut child, timeout)
        .map_err(|e| Error::io(format!("waiting for `{}`", show(cmd)), e))?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = err.join().unwrap_or_default();
        return Err(Error::Command {
            command: show(cmd),
            status: format!("timed out after {timeout:?} and was killed"),
            stderr: tail(&String::from_utf8_lossy(&stderr), 40),
        });
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child` at most `timeout`; `None` if it is still running then.
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// `exit code 1`, `killed by signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// The command line, each argument quoted when it needs it.
pub(crate) fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`, trimmed.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[… {skip} lines …]\n"));
    }
    out.push_str(&all[skip..].join("\n"));
    out
}
