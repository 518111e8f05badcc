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

impl TaskState {
    /// containerd's process status, in the engine's words.
    fn of(status: i32) -> Self {
        match Status::try_from(status).unwrap_or(Status::Unknown) {
            Status::Running => TaskState::Running,
            Status::Paused | Status::Pausing => TaskState::Paused,
            Status::Created => TaskState::Created,
            Status::Stopped => TaskState::Stopped,
            Status::Unknown => TaskState::Other,
        }
    }
}

pub(crate) async fn state(c: &Containerd, container: &str) -> Result<TaskState> {
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
            Ok(TaskState::of(status))
        }
        Err(s) if s.code() == Code::NotFound => Ok(TaskState::None),
        Err(s) => Err(c.err("task get", s)),
    }
}

/// Pauses a running task. `Ok(false)` when the task went away meanwhile
/// (nothing to pause, nothing to resume).
///
/// runc gives up freezing a cgroup whose tasks do not all stop in time
/// ("unable to freeze": a task in uninterruptible sleep under heavy I/O
/// holds the freeze up) and thaws it again; a moment later it usually
/// freezes, so that failure is tried again a few times before the commit
/// fails with it (seen under the soak's sixteen clients on a loaded node).
pub(crate) async fn pause(c: &Containerd, container: &str) -> Result<bool> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let req = c.request(PauseTaskRequest {
            container_id: container.to_string(),
        });
        match c.tasks().pause(req).await {
            Ok(_) => return Ok(true),
            Err(s) if s.code() == Code::NotFound => return Ok(false),
            Err(s) if attempt < FREEZE_ATTEMPTS && s.message().contains("unable to freeze") => {
                warn!(container, attempt, cause = %s.message(), "the container did not freeze; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(s) => return Err(c.err("task pause", s)),
        }
    }
}

/// How often a pause that runc could not complete is tried.
const FREEZE_ATTEMPTS: u32 = 4;

pub(crate) async fn resume(c: &Containerd, container: &str) -> Result<()> {
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

/// Remembers, on disk, the containers a commit has paused, so a daemon
/// that died mid-pause resumes them when it starts again. Without a
/// directory it remembers nothing.
#[derive(Debug, Clone, Default)]
pub struct PauseJournal {
    dir: Option<std::path::PathBuf>,
}

impl PauseJournal {
    pub fn new(dir: Option<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.map(|d| d.join("paused")),
        }
    }

    fn path(&self, namespace: &str, container: &str) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join(namespace).join(container))
    }

    /// Notes that `container` is about to be paused by a commit.
    pub fn record(&self, namespace: &str, container: &str) -> std::io::Result<()> {
        let Some(p) = self.path(namespace, container) else {
            return Ok(());
        };
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, std::process::id().to_string())
    }

    /// Forgets it (resumed, or gone).
    pub fn clear(&self, namespace: &str, container: &str) {
        if let Some(p) = self.path(namespace, container) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Containers of `namespace` a previous run paused and may not have resumed.
    pub fn pending(&self, namespace: &str) -> Vec<String> {
        let Some(dir) = self.dir.as_ref().map(|d| d.join(namespace)) else {
            return Vec::new();
        };
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Resumes what a previous run left paused (see [`PauseJournal`]); retries
/// in the background while containerd does not answer.
pub(crate) async fn recover(c: &Containerd, journal: &PauseJournal) {
    for id in journal.pending(c.namespace()) {
        match state(c, &id).await {
            Ok(TaskState::Paused) => {
                info!(container = %id, "resuming a container a previous run left paused");
                if let Some(e) = resume_or_retry(c, &id, journal).await {
                    warn!(container = %id, cause = %e, "resume failed; retrying in the background");
                }
            }
            Ok(_) => journal.clear(c.namespace(), &id),
            Err(e) => {
                warn!(container = %id, cause = %e, "cannot look at a container a previous run paused; retrying");
                if let Some(e) = resume_or_retry(c, &id, journal).await {
                    warn!(container = %id, cause = %e, "resume failed; retrying in the background");
                }
            }
        }
    }
}

/// Resumes the task, and if that fails, keeps trying in the background until
/// it works or the task is gone. Returns the first error, if any, for the
/// caller to report. The journal forgets the container once it runs.
pub(crate) async fn resume_or_retry(
    c: &Containerd,
    container: &str,
    journal: &PauseJournal,
) -> Option<Error> {
    let err = match resume(c, container).await {
        Ok(()) => {
            journal.clear(c.namespace(), container);
            return None;
        }
        Err(e) => e,
    };
    warn!(container = %container, cause = %err, "resume failed; retrying in the background");
    let (c, id, journal) = (c.clone(), container.to_string(), journal.clone());
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::time::sleep(delay).await;
            match resume(&c, &id).await {
                Ok(()) => {
                    info!(container = %id, "container resumed after containerd came back");
                    journal.clear(c.namespace(), &id);
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

/// A pause held for as long as this value lives (`docker export` with
/// `pause=1`): the journal records the container before it is paused, so a
/// daemon that dies meanwhile resumes it when it starts again;
/// [`PauseHold::release`] resumes it, and so does dropping the hold (in the
/// background) on any other path — a client that hangs up mid-stream. The
/// container's capture turn is held too, so no commit pauses and resumes it
/// underneath.
pub(crate) struct PauseHold {
    c: Containerd,
    id: String,
    journal: PauseJournal,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PauseHold {
    /// Pauses the task if it runs (`None` when it does not: nothing to
    /// resume).
    pub(crate) async fn pause(
        c: &Containerd,
        journal: &PauseJournal,
        id: &str,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<Option<Self>> {
        if state(c, id).await? != TaskState::Running {
            return Ok(None);
        }
        journal
            .record(c.namespace(), id)
            .map_err(|e| Error::io("recording the pause in the journal", e))?;
        match pause(c, id).await {
            Ok(true) => Ok(Some(Self {
                c: c.clone(),
                id: id.to_string(),
                journal: journal.clone(),
                turn: Some(turn),
            })),
            Ok(false) => {
                journal.clear(c.namespace(), id);
                Ok(None)
            }
            Err(e) => {
                journal.clear(c.namespace(), id);
                Err(e)
            }
        }
    }

    /// Resumes the container now (retrying in the background if
    /// containerd does not answer).
    pub(crate) async fn release(mut self) {
        let turn = self.turn.take();
        if let Some(e) = resume_or_retry(&self.c, &self.id, &self.journal).await {
            warn!(container = %self.id, cause = %e, "container not resumed yet; retrying in the background");
        }
        drop(turn);
    }
}

impl Drop for PauseHold {
    fn drop(&mut self) {
        // Released already: nothing left to do.
        let Some(turn) = self.turn.take() else {
            return;
        };
        let (c, id, journal) = (self.c.clone(), self.id.clone(), self.journal.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Some(e) = resume_or_retry(&c, &id, &journal).await {
                        warn!(container = %id, cause = %e, "container not resumed yet; retrying in the background");
                    }
                    drop(turn);
                });
            }
            // No runtime left (the daemon is going down): the journal
            // resumes it when the daemon starts again.
            Err(_) => warn!(container = %id, "paused container left to the journal"),
        }
    }
}

/// A pod snapshot's one pause. Each container's commit, where it would
/// pause its own container, [`arrive`](PodTurn::arrive)s here instead; once
/// every commit of the pod has arrived (or failed), [`PodPause::run`] pauses
/// every running container of the pod together and lets the captures run;
/// once every capture is done (or failed), it resumes them all — before any
/// layer or image is written.
#[derive(Clone)]
pub(crate) struct PodPause(std::sync::Arc<PodState>);

struct PodState {
    counts: std::sync::Mutex<PodCounts>,
    /// Wakes [`PodPause::run`] when a count falls.
    changed: tokio::sync::Notify,
    /// Set once: `Ok` when all are paused, `Err` when the captures must not run.
    go: tokio::sync::watch::Sender<Option<std::result::Result<(), &'static str>>>,
}

#[derive(Default)]
struct PodCounts {
    /// Commits that have not arrived yet.
    to_arrive: usize,
    /// Commits whose capture is not done yet.
    capturing: usize,
    /// A commit ended before it arrived (it failed).
    failed_early: bool,
}

impl PodPause {
    /// A pause for `n` commits.
    pub(crate) fn new(n: usize) -> Self {
        Self(std::sync::Arc::new(PodState {
            counts: std::sync::Mutex::new(PodCounts {
                to_arrive: n,
                capturing: n,
                failed_early: false,
            }),
            changed: tokio::sync::Notify::new(),
            go: tokio::sync::watch::channel(None).0,
        }))
    }

    /// One commit's part in the pause.
    pub(crate) fn turn(&self) -> PodTurn {
        PodTurn {
            pod: self.clone(),
            arrived: std::sync::atomic::AtomicBool::new(false),
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, PodCounts> {
        self.0
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn until(&self, done: impl Fn(&PodCounts) -> bool) {
        loop {
            if done(&self.counts()) {
                return;
            }
            // One waiter: a notification sent meanwhile is kept as a permit.
            self.0.changed.notified().await;
        }
    }

    /// Pauses the running ones of `containers` (recorded in the journal) when
    /// every commit has arrived, lets the captures run, and resumes them when
    /// every capture is done; on any failure before, nothing stays paused and
    /// the captures are told not to run. Runs beside the commits; fails
    /// when a container could not be paused.
    pub(crate) async fn run(
        &self,
        c: &Containerd,
        journal: &PauseJournal,
        containers: &[String],
    ) -> Result<()> {
        self.until(|n| n.to_arrive == 0).await;
        if self.counts().failed_early {
            self.0
                .go
                .send_replace(Some(Err("another container's commit of the pod failed")));
            return Ok(());
        }
        let mut paused: Vec<String> = Vec::new();
        let mut failed = None;
        for id in containers {
            let r = async {
                if state(c, id).await? != TaskState::Running {
                    return Ok(false);
                }
                journal
                    .record(c.namespace(), id)
                    .map_err(|e| Error::io("recording the pause in the journal", e))?;
                match pause(c, id).await {
                    Ok(true) => Ok(true),
                    Ok(false) => {
                        journal.clear(c.namespace(), id);
                        Ok(false)
                    }
                    Err(e) => {
                        journal.clear(c.namespace(), id);
                        Err(e)
                    }
                }
            }
            .await;
            match r {
                Ok(true) => paused.push(id.clone()),
                Ok(false) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.0.go.send_replace(Some(match failed {
            Some(_) => Err("another container of the pod could not be paused"),
            None => Ok(()),
        }));
        if failed.is_none() {
            self.until(|n| n.capturing == 0).await;
        }
        for id in &paused {
            if let Some(e) = resume_or_retry(c, id, journal).await {
                warn!(container = %id, cause = %e, "container not resumed yet; retrying in the background");
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// One commit's part in a [`PodPause`]; dropping it (the commit ended)
/// counts it as arrived and captured.
pub(crate) struct PodTurn {
    pod: PodPause,
    arrived: std::sync::atomic::AtomicBool,
    done: std::sync::atomic::AtomicBool,
}

impl PodTurn {
    /// Waits until the pod is paused: `Ok(true)`. `Ok(false)`: this commit's
    /// capture already had its turn (a second capture after a fallback), the
    /// caller pauses its own container.
    pub(crate) async fn arrive(&self) -> Result<bool> {
        use std::sync::atomic::Ordering;
        if self.arrived.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        self.pod.counts().to_arrive -= 1;
        self.pod.0.changed.notify_one();
        let mut go = self.pod.0.go.subscribe();
        let verdict = go
            .wait_for(Option::is_some)
            .await
            .map(|v| *v)
            .map_err(|_| Error::Cancelled("waiting for the pod's pause"))?;
        match verdict {
            Some(Ok(())) => Ok(true),
            Some(Err(why)) => Err(Error::Cancelled(why)),
            None => Err(Error::Cancelled("waiting for the pod's pause")),
        }
    }

    /// The commit ended (`ok`: it succeeded, maybe without a capture to
    /// pause for); a failure before its capture tells the others not to run.
    pub(crate) fn leave(&self, ok: bool) {
        use std::sync::atomic::Ordering;
        if !self.arrived.swap(true, Ordering::SeqCst) {
            let mut n = self.pod.counts();
            n.to_arrive -= 1;
            n.failed_early |= !ok;
        }
        self.captured();
        self.pod.0.changed.notify_one();
    }

    /// This commit's capture is done: the pod may be resumed once all are.
    pub(crate) fn captured(&self) {
        use std::sync::atomic::Ordering;
        if !self.done.swap(true, Ordering::SeqCst) {
            self.pod.counts().capturing -= 1;
            self.pod.0.changed.notify_one();
        }
    }
}

impl Drop for PodTurn {
    fn drop(&mut self) {
        // Not left yet: the commit was dropped midway.
        self.leave(false);
    }
}

/// What `docker ps` and `docker inspect` show of a task.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    pub state: Option<TaskState>,
    pub pid: u32,
    pub exit_status: u32,
    /// Unix seconds (and nanos) the task exited, if it did.
    pub exited_at: Option<(i64, i32)>,
    /// Unix seconds the task's process started, when this host can see it.
    pub started_at: Option<i64>,
}

/// The task of `container` (no task: `state` is [`TaskState::None`]).
pub(crate) async fn info(c: &Containerd, container: &str) -> Result<TaskInfo> {
    let req = c.request(GetRequest {
        container_id: container.to_string(),
        exec_id: String::new(),
    });
    let p = match c.tasks().get(req).await {
        Ok(resp) => resp.into_inner().process.unwrap_or_default(),
        Err(s) if s.code() == Code::NotFound => {
            return Ok(TaskInfo {
                state: Some(TaskState::None),
                ..Default::default()
            });
        }
        Err(s) => return Err(c.err("task get", s)),
    };
    let state = TaskState::of(p.status);
    let exited_at = p
        .exited_at
        .filter(|t| t.seconds > 0)
        .map(|t| (t.seconds, t.nanos));
    Ok(TaskInfo {
        state: Some(state),
        pid: p.pid,
        exit_status: p.exit_status,
        exited_at,
        started_at: process_start(p.pid),
    })
}

/// The CRI plugin's namespace.
pub(crate) const CRI_NAMESPACE: &str = "k8s.io";

/// A Kubernetes container's state as the CRI plugin keeps it, for a
/// container with no task: the plugin deletes an exited container's task
/// and keeps its exit in its own metadata. `None` when the plugin does not
/// know the container (not a CRI container, no CRI plugin) or it has not
/// exited.
pub(crate) async fn cri_exit(c: &Containerd, container: &str) -> Option<TaskInfo> {
    if c.namespace() != CRI_NAMESPACE {
        return None;
    }
    let req = k8s_cri::v1::ContainerStatusRequest {
        container_id: container.to_string(),
        verbose: false,
    };
    let status = c
        .cri()
        .container_status(req)
        .await
        .ok()?
        .into_inner()
        .status?;
    if status.state() != k8s_cri::v1::ContainerState::ContainerExited {
        return None;
    }
    let at = |ns: i64| {
        (ns > 0).then(|| {
            (
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as i32,
            )
        })
    };
    Some(TaskInfo {
        state: Some(TaskState::Stopped),
        pid: 0,
        exit_status: u32::try_from(status.exit_code).unwrap_or(u32::MAX),
        exited_at: at(status.finished_at),
        started_at: at(status.started_at).map(|(s, _)| s),
    })
}

/// A process's start time from /proc (boot time + start ticks).
fn process_start(pid: u32) -> Option<i64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(") ")?.1;
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz)
}
