//! A container's state as Docker names and tells it: `State.StateString()`
//! and `State.String()` ("Up 5 minutes", "Exited (137) 2 minutes ago"),
//! from containerd's task.

use commit_engine::{TaskInfo, TaskState};
use docker_format::duration::human_duration;

/// Docker's state name (`State.StateString()`).
pub(super) fn state_name(t: &TaskInfo) -> &'static str {
    match t.state {
        Some(TaskState::Running) => "running",
        Some(TaskState::Paused) => "paused",
        Some(TaskState::Stopped) => "exited",
        Some(TaskState::Created) | Some(TaskState::None) | None => "created",
        Some(TaskState::Other) => "dead",
    }
}

pub(super) fn is_up(t: &TaskInfo) -> bool {
    matches!(t.state, Some(TaskState::Running) | Some(TaskState::Paused))
}

/// When the task started, in unix seconds: the process start time, unless
/// it cannot be right (before the container existed, or in the future),
/// else the container's creation for a task that runs.
pub(super) fn started_at(t: &TaskInfo, created: i64, now: i64) -> Option<i64> {
    let seen = t.started_at.filter(|&s| s + 1 >= created && s <= now + 1);
    seen.or_else(|| is_up(t).then_some(created))
}

/// Docker's `State.String()`: "Up 5 minutes", "Up 2 seconds (Paused)",
/// "Exited (137) 2 minutes ago", "Created".
pub(super) fn status_text(t: &TaskInfo, created: i64, now: i64) -> String {
    match t.state {
        Some(TaskState::Running) | Some(TaskState::Paused) => {
            let up = human_duration(now - started_at(t, created, now).unwrap_or(created));
            if t.state == Some(TaskState::Paused) {
                format!("Up {up} (Paused)")
            } else {
                format!("Up {up}")
            }
        }
        Some(TaskState::Other) => "Dead".into(),
        // Docker: started but no finish time reads as "".
        Some(TaskState::Stopped) => match t.exited_at {
            Some((at, _)) => format!(
                "Exited ({}) {} ago",
                t.exit_status,
                human_duration(now - at)
            ),
            None => String::new(),
        },
        Some(TaskState::Created) | Some(TaskState::None) | None => "Created".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::task;
    use super::*;

    #[test]
    fn status_texts_read_like_dockers() {
        let running = TaskInfo {
            started_at: Some(1000),
            ..task(TaskState::Running)
        };
        assert_eq!(status_text(&running, 900, 1300), "Up 5 minutes");
        let paused = TaskInfo {
            started_at: Some(1000),
            ..task(TaskState::Paused)
        };
        assert_eq!(status_text(&paused, 900, 1002), "Up 2 seconds (Paused)");
        let exited = TaskInfo {
            exit_status: 137,
            exited_at: Some((1000, 0)),
            ..task(TaskState::Stopped)
        };
        assert_eq!(status_text(&exited, 0, 1120), "Exited (137) 2 minutes ago");
        assert_eq!(status_text(&task(TaskState::Stopped), 0, 5), "");
        assert_eq!(status_text(&task(TaskState::None), 0, 5), "Created");
        assert_eq!(status_text(&task(TaskState::Created), 0, 5), "Created");
        assert_eq!(status_text(&task(TaskState::Other), 0, 5), "Dead");
        // A start time from another pid namespace (before the container
        // existed) is not believed: the creation time stands in.
        let misread = TaskInfo {
            started_at: Some(10),
            ..task(TaskState::Running)
        };
        assert_eq!(status_text(&misread, 1000, 1060), "Up About a minute");
        assert_eq!(started_at(&task(TaskState::Stopped), 1000, 1060), None);
    }

    #[test]
    fn states_are_dockers() {
        assert_eq!(state_name(&task(TaskState::Running)), "running");
        assert_eq!(state_name(&task(TaskState::Paused)), "paused");
        assert_eq!(state_name(&task(TaskState::Stopped)), "exited");
        assert_eq!(state_name(&task(TaskState::None)), "created");
        assert_eq!(state_name(&task(TaskState::Created)), "created");
        assert_eq!(state_name(&task(TaskState::Other)), "dead");
    }
}
