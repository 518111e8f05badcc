//! Pausing a container's task for the moment its layer is captured, and
//! making sure it is resumed: right after the capture, on every error path,
//! and — when containerd is unreachable at that moment — by a background
//! retry that keeps going until containerd answers.

use std::time::Duration;

use containerd_client::services::v1::{GetRequest, PauseTaskRequest, ResumeTaskRequest};
use containerd_client::types::v1::Status;
use tonic::Code;
use tracing::{info, warn};

use crate::client::Containerd;
use crate::error::{Error, Result};

/// What the task was doing when the commit looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// No task: a created or stopped container.
    None,
    Created,
    Running,
    Paused,
    Stopped,
    Other,
}

pub async fn state(c: &Containerd, container: &str) -> Result<TaskState> {
    let req = c.request(GetRequest {
        container_id: container.to_string(),
        exec_id: String::new(),
    });
    match c.tasks().get(req).await {
        Ok(resp) => {
            let status = resp
                .into_inner()
                .process
                .map(|p| p.status)
                .unwrap_or_default();
            Ok(match Status::try_from(status).unwrap_or(Status::Unknown) {
                Status::Running => TaskState::Running,
                Status::Paused | Status::Pausing => TaskState::Paused,
                Status::Created => TaskState::Created,
                Status::Stopped => TaskState::Stopped,
                Status::Unknown => TaskState::Other,
            })
        }
        Err(s) if s.code() == Code::NotFound => Ok(TaskState::None),
        Err(s) => Err(c.err("task get", s)),
    }
}

/// Pauses a running task. `Ok(false)` when the task went away meanwhile
/// (nothing to pause, nothing to resume).
pub async fn pause(c: &Containerd, container: &str) -> Result<bool> {
    let req = c.request(PauseTaskRequest {
        container_id: container.to_string(),
    });
    match c.tasks().pause(req).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(c.err("task pause", s)),
    }
}

pub async fn resume(c: &Containerd, container: &str) -> Result<()> {
    let req = c.request(ResumeTaskRequest {
        container_id: container.to_string(),
    });
    match c.tasks().resume(req).await {
        Ok(_) => Ok(()),
        // Gone, or not paused any more: either way it is not left paused.
        Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
        Err(s) => Err(c.err("task resume", s)),
    }
}

/// Resumes the task, and if that fails, keeps trying in the background until
/// it works or the task is gone. Returns the first error, if any, for the
/// caller to report.
pub async fn resume_or_retry(c: &Containerd, container: &str) -> Option<Error> {
    let err = match resume(c, container).await {
        Ok(()) => return None,
        Err(e) => e,
    };
    warn!(container = %container, cause = %err, "resume failed; retrying in the background");
    let (c, id) = (c.clone(), container.to_string());
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::time::sleep(delay).await;
            match resume(&c, &id).await {
                Ok(()) => {
                    info!(container = %id, "container resumed after containerd came back");
                    return;
                }
                Err(e) => {
                    delay = (delay * 2).min(Duration::from_secs(5));
                    warn!(container = %id, cause = %e, "resume still failing");
                }
            }
        }
    });
    Some(err)
}
