//! Docker's container routes, read from containerd's containers and tasks:
//! `GET /containers/json` (`docker ps`) and `GET /containers/{id}/json`
//! (`docker inspect`; docker-py's `containers.get(id)`, which agents call
//! before `container.commit(…)`). [`get_route`] serves the latter for names
//! with slashes (`team/nb-0/app`), as Docker's `{name:.*}` route does.
//!
//! # How containerd's records become Docker's
//! - **State** comes from the task: running, paused (listed as running, as
//!   Docker does), stopped (`exited`, with the task's exit status and time),
//!   no task or a task not started (`created`), unknown (`dead`).
//! - **Name** is nerdctl's `nerdctl/name` label, else Kubernetes'
//!   `namespace/pod/container`, else the ID — the names the commit route
//!   resolves, so whatever `docker ps` shows, `docker commit` accepts.
//! - **Image** is the container's image record (familiar form); **ImageID**
//!   the config digest of the image whose layers the container's snapshot
//!   stands on. When the record now names another image (retagged, e.g. by a
//!   commit to the same name), the summary's `Image` becomes the old image's
//!   ID, as Docker's `refreshImage` does; `Config.Image` keeps the name.
//! - **Config** is the OCI runtime spec read back (process args, env, cwd,
//!   user, terminal, hostname) merged with the image config the way Docker
//!   merges at create (entrypoint, labels, volumes, exposed ports).
//! - **HostConfig** holds what the spec says (namespaces as modes, resource
//!   limits, masked paths, bind mounts); the rest is Docker's zero values.
//!
//! # Limits
//! - No ports, no networks (`NetworkSettings.Networks` is empty): CNI state
//!   is not containerd's. `network`, `publish` and `expose` filters are
//!   validated and then match nothing, as in Docker for such containers.
//! - `size=1` fills `SizeRw`/`SizeRootFs` from the snapshotter's usage
//!   (see `routes::df`).
//! - `StartedAt` is the task process's start time as this host's `/proc`
//!   shows it; a start time before the container's creation (another pid
//!   namespace) is replaced by the creation time.
//! - The `name` filter uses Go's regexp semantics for the usual subset
//!   (literals, `.`, classes, `^`, `$`, `*`, `+`, `?`, `{n,m}`, groups, `|`);
//!   flags (`(?i)`) are not supported and match only exactly. `id` matches
//!   an exact ID or a unique prefix (Docker's `GetByPrefix`).
//! - Which image a container was made from is inferred: a name moved after
//!   the container's creation onto an image with the same layers (an empty
//!   commit, a re-tag) is taken to have left the container's image behind.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use commit_engine::{
    ContainerRecord as Container, Image as ImageEntry, TaskInfo, TaskState, footing,
};
use docker_format::image::{Descriptor, Empty};
use futures::StreamExt;
use oci_spec::runtime::{
    Linux, LinuxNamespaceType as NsKind, LinuxResources, Mount, Process, Spec,
};

use crate::Api;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query, bool_value};
use crate::version::compare;
use crate::views::{self, containers as v};
use docker_format::duration::human_duration;
use docker_format::filters::{FilterError, Filters, NamePattern};
use docker_format::ports::check_port_filter;
use docker_format::reference::{ImageRef, familiar_name};
use docker_format::time::{ZERO_TIME, rfc3339_nano};

/// Docker's container states, in its order (for the filter's error text).
const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// The filters `docker ps` accepts (Docker's `acceptedPsFilterTags`).
const PS_FILTERS: &[&str] = &[
    "ancestor",
    "before",
    "exited",
    "id",
    "isolation",
    "label",
    "name",
    "status",
    "health",
    "since",
    "volume",
    "network",
    "is-task",
    "publish",
    "expose",
];

/// Task lookups in flight at once while listing.
const PARALLEL: usize = 8;

// ---------------------------------------------------------------------------
// State and status text.

/// Docker's state name (`State.StateString()`).
fn state_name(t: &TaskInfo) -> &'static str {
    match t.state {
        Some(TaskState::Running) => "running",
        Some(TaskState::Paused) => "paused",
        Some(TaskState::Stopped) => "exited",
        Some(TaskState::Created) | Some(TaskState::None) | None => "created",
        Some(TaskState::Other) => "dead",
    }
}

fn is_up(t: &TaskInfo) -> bool {
    matches!(t.state, Some(TaskState::Running) | Some(TaskState::Paused))
}

/// When the task started, in unix seconds: the process start time, unless
/// it cannot be right (before the container existed, or in the future),
/// else the container's creation for a task that runs.
fn started_at(t: &TaskInfo, created: i64, now: i64) -> Option<i64> {
    let seen = t.started_at.filter(|&s| s + 1 >= created && s <= now + 1);
    seen.or_else(|| is_up(t).then_some(created))
}

/// Docker's `State.String()`: "Up 5 minutes", "Up 2 seconds (Paused)",
/// "Exited (137) 2 minutes ago", "Created".
fn status_text(t: &TaskInfo, created: i64, now: i64) -> String {
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

/// The summary's `Command`: path, then the arguments, those with a space
/// single-quoted (Docker's `container/view.go`).
fn command_line(args: &[String]) -> String {
    let Some((path, rest)) = args.split_first() else {
        return String::new();
    };
    if rest.is_empty() {
        return path.clone();
    }
    let rest: Vec<String> = rest
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("{path} {}", rest.join(" "))
}

// ---------------------------------------------------------------------------
// The OCI runtime spec, read back.

/// The CRI plugin's annotations on a container's spec.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// nerdctl's label listing a container's networks (a JSON array).
const NERDCTL_NETWORKS: &str = "nerdctl/networks";
/// containerd's restart monitor's policy label.
const RESTART_POLICY: &str = "containerd.io/restart.policy";

fn process(spec: Option<&Spec>) -> Option<&Process> {
    spec.and_then(|s| s.process().as_ref())
}

fn linux(spec: Option<&Spec>) -> Option<&Linux> {
    spec.and_then(|s| s.linux().as_ref())
}

fn resources(spec: Option<&Spec>) -> Option<&LinuxResources> {
    linux(spec).and_then(|l| l.resources().as_ref())
}

fn mounts(spec: Option<&Spec>) -> &[Mount] {
    spec.and_then(|s| s.mounts().as_deref()).unwrap_or_default()
}

fn path_text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A spec's unsigned count as Docker's `int64`.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A string map in a stable order; `None` when empty.
fn sorted(m: Option<&HashMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m?.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    (!m.is_empty()).then_some(m)
}

/// How the spec sets up one kind of namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ns {
    /// Not unshared: the host's.
    Host,
    /// A new one.
    New,
    /// Joined: an existing namespace at this path.
    Joined(String),
    /// No Linux section in the spec: unknown.
    Unknown,
}

fn namespace(spec: Option<&Spec>, kind: NsKind) -> Ns {
    let Some(linux) = linux(spec) else {
        return Ns::Unknown;
    };
    let Some(list) = linux.namespaces() else {
        return Ns::Host;
    };
    match list.iter().find(|n| n.typ() == kind) {
        None => Ns::Host,
        Some(n) => match n.path() {
            Some(p) if !p.as_os_str().is_empty() => Ns::Joined(path_text(p)),
            _ => Ns::New,
        },
    }
}

/// The CRI sandbox a Kubernetes app container shares namespaces with.
fn cri_sandbox(spec: Option<&Spec>) -> Option<&str> {
    let ann = spec?.annotations().as_ref()?;
    (ann.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("container"))
        .then(|| ann.get(CRI_SANDBOX_ID).map(String::as_str))
        .flatten()
        .filter(|s| !s.is_empty())
}

/// Docker's `NetworkMode`: `host` without a network namespace,
/// `container:<sandbox>` for a Kubernetes app container, nerdctl's first
/// network, else `none` (a fresh namespace with only loopback, as `ctr run`
/// makes) or `default` (a namespace set up by someone else, e.g. CNI).
fn network_mode(spec: Option<&Spec>, labels: &HashMap<String, String>) -> String {
    let ns = namespace(spec, NsKind::Network);
    if ns == Ns::Host {
        return "host".into();
    }
    if ns == Ns::Unknown {
        return String::new();
    }
    if let Some(sandbox) = cri_sandbox(spec) {
        return format!("container:{sandbox}");
    }
    let nerdctl: Option<String> = labels
        .get(NERDCTL_NETWORKS)
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .and_then(|n| n.into_iter().next());
    if let Some(n) = nerdctl {
        return n;
    }
    match ns {
        Ns::Joined(_) => "default".into(),
        _ => "none".into(),
    }
}

/// Docker's modes for the other namespaces (`IpcMode`, `PidMode`, …):
/// `host` when not unshared, `container:<sandbox>` when joined from a
/// Kubernetes sandbox, else the mode Docker shows for a private one.
fn ns_mode(spec: Option<&Spec>, kind: NsKind, private: &str) -> String {
    match namespace(spec, kind) {
        Ns::Host => "host".into(),
        Ns::Joined(_) => cri_sandbox(spec)
            .map(|s| format!("container:{s}"))
            .unwrap_or_else(|| private.into()),
        Ns::New => private.into(),
        Ns::Unknown => String::new(),
    }
}

/// Files Docker manages itself and lists apart from the mounts.
#[derive(Debug, Default, PartialEq, Eq)]
struct MountedFiles {
    resolv_conf: String,
    hostname: String,
    hosts: String,
}

fn options(m: &Mount) -> &[String] {
    m.options().as_deref().unwrap_or_default()
}

/// The spec's bind mounts as Docker's `MountPoint`s, without the files
/// Docker lists on their own (`/etc/resolv.conf`, `/etc/hostname`,
/// `/etc/hosts`) and the pod's `/dev/shm`.
fn mount_points(spec: Option<&Spec>) -> (Vec<v::MountPoint>, MountedFiles) {
    let mut files = MountedFiles::default();
    let mut out = Vec::new();
    for m in mounts(spec) {
        let options = options(m);
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            continue;
        }
        let source = m.source().as_deref().map(path_text).unwrap_or_default();
        let destination = path_text(m.destination());
        match destination.as_str() {
            "/etc/resolv.conf" => files.resolv_conf = source,
            "/etc/hostname" => files.hostname = source,
            "/etc/hosts" => files.hosts = source,
            "/dev/shm" => {}
            _ => {
                let ro = options.iter().any(|o| o == "ro");
                let propagation = options
                    .iter()
                    .find(|o| {
                        matches!(
                            o.as_str(),
                            "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave"
                        )
                    })
                    .cloned()
                    .unwrap_or_else(|| "rprivate".into());
                out.push(v::MountPoint {
                    kind: "bind",
                    source,
                    destination,
                    mode: if ro { "ro" } else { "" },
                    rw: !ro,
                    propagation,
                });
            }
        }
    }
    (out, files)
}

/// `size=64m` of a tmpfs option, in bytes.
fn tmpfs_size(options: &[String]) -> Option<i64> {
    let v = options.iter().find_map(|o| o.strip_prefix("size="))?;
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: i64 = digits.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Docker's `Resources`, from the spec's `linux.resources` (its devices
/// aside).
fn resources_of(spec: Option<&Spec>) -> v::Resources {
    let res = resources(spec);
    let memory = res.and_then(|r| r.memory().as_ref());
    let cpu = res.and_then(|r| r.cpu().as_ref());
    v::Resources {
        cpu_shares: cpu.and_then(|c| c.shares()).map(int).unwrap_or(0),
        memory: memory.and_then(|m| m.limit()).unwrap_or(0),
        blkio_weight: res
            .and_then(|r| r.block_io().as_ref())
            .and_then(|b| b.weight())
            .map(i64::from)
            .unwrap_or(0),
        cpu_period: cpu.and_then(|c| c.period()).map(int).unwrap_or(0),
        cpu_quota: cpu.and_then(|c| c.quota()).unwrap_or(0),
        cpu_realtime_period: cpu.and_then(|c| c.realtime_period()).map(int).unwrap_or(0),
        cpu_realtime_runtime: cpu.and_then(|c| c.realtime_runtime()).unwrap_or(0),
        cpuset_cpus: cpu.and_then(|c| c.cpus().clone()).unwrap_or_default(),
        cpuset_mems: cpu.and_then(|c| c.mems().clone()).unwrap_or_default(),
        memory_reservation: memory.and_then(|m| m.reservation()).unwrap_or(0),
        memory_swap: memory.and_then(|m| m.swap()).unwrap_or(0),
        memory_swappiness: memory
            .and_then(|m| m.swappiness())
            .and_then(|s| i64::try_from(s).ok()),
        oom_kill_disable: memory.and_then(|m| m.disable_oom_killer()),
        pids_limit: res
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .filter(|&l| l > 0),
        ..Default::default()
    }
}

/// Docker's `HostConfig`: from the spec where it says, Docker's zero
/// values where it cannot.
fn host_config(ct: &Container, binds: &[v::MountPoint], version: &str) -> v::HostConfig {
    let spec = ct.spec.as_ref();
    let shm = mounts(spec)
        .iter()
        .find(|m| m.destination().as_os_str() == "/dev/shm" && m.typ().as_deref() == Some("tmpfs"))
        .and_then(|m| tmpfs_size(options(m)))
        .unwrap_or(0);
    let (name, maximum_retry_count) = ct
        .labels
        .get(RESTART_POLICY)
        .map(|p| match p.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse::<i64>().unwrap_or(0)),
            None => (p.clone(), 0),
        })
        .unwrap_or_else(|| ("no".into(), 0));
    let binds: Vec<String> = binds
        .iter()
        .map(|m| {
            if m.rw {
                format!("{}:{}", m.source, m.destination)
            } else {
                format!("{}:{}:ro", m.source, m.destination)
            }
        })
        .collect();
    let process = process(spec);
    let console = process.and_then(|p| p.console_size());
    let linux = linux(spec);
    v::HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: network_mode(spec, &ct.labels),
        restart_policy: v::RestartPolicy {
            name,
            maximum_retry_count,
        },
        console_size: [
            console.map(|c| int(c.height())).unwrap_or(0),
            console.map(|c| int(c.width())).unwrap_or(0),
        ],
        annotations: annotations(spec, version),
        cgroupns_mode: ns_mode(spec, NsKind::Cgroup, "private"),
        ipc_mode: ns_mode(spec, NsKind::Ipc, "private"),
        oom_score_adj: process
            .and_then(|p| p.oom_score_adj())
            .map(i64::from)
            .unwrap_or(0),
        pid_mode: ns_mode(spec, NsKind::Pid, ""),
        readonly_rootfs: spec
            .and_then(|s| s.root().as_ref())
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        uts_mode: ns_mode(spec, NsKind::Uts, ""),
        shm_size: shm,
        sysctls: sorted(linux.and_then(|l| l.sysctl().as_ref())),
        runtime: ct.runtime.clone(),
        resources: resources_of(spec),
        masked_paths: linux.and_then(|l| l.masked_paths().clone()),
        readonly_paths: linux.and_then(|l| l.readonly_paths().clone()),
        ..Default::default()
    }
}

/// The spec's annotations, from API 1.46 on (`HostConfig.Annotations`).
fn annotations(spec: Option<&Spec>, version: &str) -> Option<BTreeMap<String, String>> {
    if older_than_1_46(version) {
        return None;
    }
    sorted(spec.and_then(|s| s.annotations().as_ref()))
}

/// Docker's `Config.User`: empty for root, else `uid:gid` (or `uid`).
fn user(process: Option<&Process>) -> String {
    let (uid, gid) = process
        .map(|p| (p.user().uid(), p.user().gid()))
        .unwrap_or((0, 0));
    match (uid, gid) {
        (0, 0) => String::new(),
        (u, 0) => u.to_string(),
        (u, g) => format!("{u}:{g}"),
    }
}

/// Splits the process's args into Docker's `Entrypoint` and `Cmd`: the
/// image's entrypoint when the args start with it, else everything is the
/// command (`None`: `null`).
fn entrypoint_and_cmd(
    args: &[String],
    image_entrypoint: Option<&[String]>,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let list = |a: &[String]| (!a.is_empty()).then(|| a.to_vec());
    match image_entrypoint {
        Some(ep) if !ep.is_empty() && args.starts_with(ep) => {
            (Some(ep.to_vec()), list(&args[ep.len()..]))
        }
        _ => (None, list(args)),
    }
}

// ---------------------------------------------------------------------------
// Images.

/// The namespace's images, indexed the ways a container finds its own.
struct Images {
    entries: Vec<ImageEntry>,
    /// Record name → (image, when the record last changed, unix seconds).
    by_name: HashMap<String, (usize, i64)>,
    /// Chain ID → the images with these layers, oldest first.
    by_chain: HashMap<String, Vec<usize>>,
}

impl Images {
    async fn load(api: &Api) -> Result<Self, ApiError> {
        let entries = api.engine().images().list().await?;
        Ok(Self::new(entries))
    }

    fn new(entries: Vec<ImageEntry>) -> Self {
        let mut by_name = HashMap::new();
        let mut by_chain: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for r in &e.records {
                let updated = r.updated_at.unwrap_or(0);
                by_name.insert(r.name.clone(), (i, updated));
            }
            if let Some(chain) = e.resolved.chain_id() {
                by_chain.entry(chain).or_default().push(i);
            }
        }
        Self {
            entries,
            by_name,
            by_chain,
        }
    }

    /// The image a container was made from, given its snapshot's parent
    /// (the chain ID of the image's layers): the image its record names if
    /// that has the same layers and has not been renamed since the
    /// container was made; else an image with the parent's layers (the one
    /// a moved name left behind); else none.
    fn of(&self, ct: &Container, parent: Option<&str>) -> ImageOf {
        let named = self.by_name.get(&ct.image).copied();
        let created = ct.created.map(|(s, _)| s).unwrap_or(0);
        let same_layers = |i: usize, p: &str| {
            self.entries[i]
                .resolved
                .chain_id()
                .is_some_and(|chain| footing(p, &chain).is_some())
        };
        let with_layers = |p: &str, not: Option<usize>| {
            self.by_chain
                .iter()
                .filter(|(chain, _)| footing(p, chain).is_some())
                .flat_map(|(_, images)| images.iter().copied())
                .find(|&i| Some(i) != not)
        };
        let (index, moved) = match (named, parent) {
            (Some((i, _)), None) => (Some(i), false),
            (Some((i, updated)), Some(p)) if same_layers(i, p) => {
                // Renamed after the container was made: another image with
                // these layers is the one it was made from, if there is one.
                match with_layers(p, Some(i)).filter(|_| updated > created) {
                    Some(other) => (Some(other), true),
                    None => (Some(i), false),
                }
            }
            (named, Some(p)) => match with_layers(p, None) {
                Some(i) => (Some(i), true),
                None => (None, named.is_some()),
            },
            (None, None) => (None, false),
        };
        let id = index
            .map(|i| self.entries[i].id.clone())
            .unwrap_or_default();
        // Docker shows the ID when the name no longer leads to the image.
        let image = if ct.image.is_empty() || (moved && !id.is_empty()) {
            id.clone()
        } else {
            familiar_name(&ct.image).to_string()
        };
        ImageOf { index, id, image }
    }

    fn entry(&self, of: &ImageOf) -> Option<&ImageEntry> {
        of.index.map(|i| &self.entries[i])
    }

    /// The image IDs `ancestor=` values name. Docker's lookup, whose
    /// failures (unknown, ambiguous) Docker logs and skips: they name
    /// nothing.
    fn ancestors(&self, values: &[String]) -> HashSet<String> {
        values
            .iter()
            .filter_map(|v| ImageRef::parse(v).ok())
            .filter_map(|r| ImageEntry::find_in(&self.entries, &r).ok())
            .map(|e| e.id.clone())
            .collect()
    }
}

/// What a container's image turned out to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ImageOf {
    index: Option<usize>,
    /// `sha256:…` of the config, or empty when the image is gone.
    id: String,
    /// The summary's `Image`: the record's familiar name, or the ID.
    image: String,
}

// ---------------------------------------------------------------------------
// One container, as both routes see it.

struct Seen {
    ct: Container,
    task: TaskInfo,
    name: String,
    image: ImageOf,
    /// Container labels over the image's (Docker merges them at create).
    labels: BTreeMap<String, String>,
    mounts: Vec<v::MountPoint>,
    files: MountedFiles,
}

impl Seen {
    fn new(ct: Container, task: TaskInfo, image: ImageOf, images: &Images) -> Self {
        let mut labels: BTreeMap<String, String> = images
            .entry(&image)
            .and_then(|e| e.config().config.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        labels.extend(ct.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (mounts, files) = mount_points(ct.spec.as_ref());
        Self {
            name: ct.name.clone(),
            task,
            image,
            labels,
            mounts,
            files,
            ct,
        }
    }

    fn spec(&self) -> Option<&Spec> {
        self.ct.spec.as_ref()
    }

    fn args(&self) -> &[String] {
        process(self.spec())
            .and_then(|p| p.args().as_deref())
            .unwrap_or_default()
    }

    fn created(&self) -> i64 {
        self.ct.created.map(|(s, _)| s).unwrap_or(0)
    }

    fn state(&self) -> &'static str {
        state_name(&self.task)
    }

    /// The image's manifest, as Docker's `ImageManifestDescriptor`.
    fn manifest_descriptor(&self, images: &Images) -> Option<Descriptor> {
        let e = images.entry(&self.image)?;
        let mut d = e.resolved.manifest_descriptor.clone();
        if d.platform.is_none() {
            let cfg = e.config();
            d.platform = Some(docker_format::image::Platform {
                architecture: cfg.architecture.clone(),
                os: cfg.os.clone(),
                os_version: None,
                variant: cfg.variant.clone(),
            });
        }
        Some(d)
    }
}

async fn see(api: &Api, ct: Container, images: &Images) -> Result<Seen, ApiError> {
    let containers = api.engine().containers();
    let (task, parent) = tokio::join!(containers.task(&ct.id), containers.snapshot_parent(&ct));
    let image = images.of(&ct, parent.as_deref());
    Ok(Seen::new(ct, task?, image, images))
}

/// `ImageManifestDescriptor`, from API 1.48 on.
fn manifest_for(s: &Seen, images: &Images, version: &str) -> Option<Descriptor> {
    if compare(version, "1.48").is_lt() {
        return None;
    }
    s.manifest_descriptor(images)
}

fn older_than_1_46(v: &str) -> bool {
    compare(v, "1.46").is_lt()
}

// ---------------------------------------------------------------------------
// `GET /containers/json`.

/// What `docker ps` asked for, validated as Docker validates it.
#[derive(Debug)]
struct Selection {
    all: bool,
    limit: Option<usize>,
    filters: Filters,
    exited: Vec<i64>,
    is_task: Option<bool>,
    names: Vec<NamePattern>,
}

impl Selection {
    fn parse(q: &Query) -> Result<Self, ApiError> {
        let filters = Filters::parse(q.get("filters"), PS_FILTERS)?;
        let mut all = bool_value(q.get("all"));
        let limit = match q.get("limit") {
            "" => None,
            l => match l.parse::<i64>() {
                Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Ok(_) => None,
                Err(_) => {
                    return Err(ApiError::InvalidRequest(format!(
                        "strconv.Atoi: parsing {l:?}: invalid syntax"
                    )));
                }
            },
        };
        let mut exited = Vec::new();
        for v in filters.get("exited") {
            let code = v.parse::<i64>().map_err(|_| FilterError::ValueBecause {
                name: "exited".into(),
                value: v.clone(),
                reason: format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
            })?;
            exited.push(code);
        }
        for s in filters.get("status") {
            if !STATES.contains(&s.as_str()) {
                return Err(FilterError::ValueBecause {
                    name: "status".into(),
                    value: s.clone(),
                    reason: format!(
                        "invalid value for state ({s}): must be one of {}",
                        STATES.join(", ")
                    ),
                }
                .into());
            }
            all = true;
        }
        for h in filters.get("health") {
            if !["none", "starting", "healthy", "unhealthy"].contains(&h.as_str()) {
                return Err(FilterError::ValueBecause {
                    name: "health".into(),
                    value: h.clone(),
                    reason: format!(
                        "invalid value for health ({h}): must be one of none, starting, healthy, unhealthy"
                    ),
                }
                .into());
            }
        }
        let is_task = match filters.get("is-task") {
            [] => None,
            values => {
                let t = values.iter().any(|v| v == "1" || v == "true");
                let f = values.iter().any(|v| v == "0" || v == "false");
                if t == f {
                    return Err(FilterError::Value {
                        name: "is-task".into(),
                        value: format!("[{}]", values.join(" ")),
                    }
                    .into());
                }
                Some(t)
            }
        };
        for key in ["publish", "expose"] {
            for v in filters.get(key) {
                check_port_filter(key, v)?;
            }
        }
        let names = filters
            .get("name")
            .iter()
            .map(|p| NamePattern::new(p))
            .collect();
        Ok(Self {
            all,
            limit,
            filters,
            exited,
            is_task,
            names,
        })
    }

    /// Filters that need only the record: `id` and `name`. `ids` is every
    /// container's ID (an `id` value matches an exact ID, else a unique
    /// prefix, as Docker's `GetByPrefix`).
    fn keeps_record(&self, ct: &Container, ids: &[&str]) -> bool {
        let id = self.filters.get("id");
        let id_ok = id.is_empty()
            || id
                .iter()
                .any(|p| unique_prefix(ids, p) == Some(ct.id.as_str()));
        let name = &ct.name;
        let name_ok = self.names.is_empty() || self.names.iter().any(|p| p.matches(name));
        id_ok && name_ok
    }

    /// The remaining filters, and `all`.
    fn keeps(&self, s: &Seen, ancestors: Option<&HashSet<String>>) -> bool {
        let state = s.state();
        if !self.all && self.limit.is_none() && !matches!(state, "running" | "paused") {
            return false;
        }
        if !self.filters.labels_match("label", &s.labels) {
            return false;
        }
        if self.is_task == Some(true) {
            return false;
        }
        // Docker: only containers that ran and stopped have an exit code.
        let exited_with = |code: &i64| state == "exited" && i64::from(s.task.exit_status) == *code;
        if !self.exited.is_empty() && !self.exited.iter().any(exited_with) {
            return false;
        }
        let status = self.filters.get("status");
        if !status.is_empty() && !status.iter().any(|v| v == state) {
            return false;
        }
        // No container here has a health check: its health is "none".
        let health = self.filters.get("health");
        if !health.is_empty() && !health.iter().any(|h| h == "none") {
            return false;
        }
        let volumes = self.filters.get("volume");
        if !volumes.is_empty()
            && !s.mounts.iter().any(|m| {
                volumes
                    .iter()
                    .any(|v| m.destination == *v || m.source == *v)
            })
        {
            return false;
        }
        if ancestors.is_some_and(|ids| !ids.contains(&s.image.id)) {
            return false;
        }
        // Neither networks nor ports are known here.
        ["network", "publish", "expose"]
            .iter()
            .all(|k| self.filters.get(k).is_empty())
    }
}

/// The one ID equal to `p`, else the one starting with it.
fn unique_prefix<'a>(ids: &[&'a str], p: &str) -> Option<&'a str> {
    if p.is_empty() {
        return None;
    }
    if let Some(exact) = ids.iter().find(|id| **id == p) {
        return Some(exact);
    }
    let mut hits = ids.iter().filter(|id| id.starts_with(p));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// The position of the container `before=`/`since=` names: an exact ID or
/// a name.
fn position(sorted: &[Container], value: &str) -> Result<usize, ApiError> {
    let wanted = value.trim_start_matches('/');
    sorted
        .iter()
        .position(|ct| ct.id == value)
        .or_else(|| sorted.iter().position(|ct| ct.name == wanted))
        .ok_or_else(|| ApiError::NoSuchContainer(value.to_string()))
}

/// `GET /containers/json` (`docker ps`; `size=1`: `docker ps -s`).
pub(crate) async fn list(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    q: Query,
) -> Result<Response, ApiError> {
    let sel = Selection::parse(&q)?;
    let out = summaries(&api, &version, &sel, bool_value(q.get("size"))).await?;
    Ok(views::json(StatusCode::OK, &out))
}

/// Every container's summary with its sizes, as `docker ps -a -s` lists
/// them (`docker system df`).
pub(crate) async fn all_with_sizes(
    api: &Api,
    version: &str,
) -> Result<Vec<v::ContainerSummary>, ApiError> {
    let sel = Selection::parse(&Query::parse(Some("all=1")))?;
    summaries(api, version, &sel, true).await
}

async fn summaries(
    api: &Api,
    version: &str,
    sel: &Selection,
    size: bool,
) -> Result<Vec<v::ContainerSummary>, ApiError> {
    let mut containers = api.engine().containers().list().await?;
    // Newest first, as Docker lists.
    containers.sort_by(|a, b| {
        let at = |ct: &Container| ct.created;
        at(b).cmp(&at(a)).then_with(|| a.id.cmp(&b.id))
    });
    // `before`: only older ones; `since`: only newer ones.
    let mut range = 0..containers.len();
    for v in sel.filters.get("before") {
        range.start = range.start.max(position(&containers, v)? + 1);
    }
    for v in sel.filters.get("since") {
        range.end = range.end.min(position(&containers, v)?);
    }
    let ids: Vec<String> = containers.iter().map(|ct| ct.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let candidates: Vec<Container> = containers
        .into_iter()
        .enumerate()
        .filter(|(i, ct)| range.contains(i) && sel.keeps_record(ct, &id_refs))
        .map(|(_, ct)| ct)
        .collect();
    let images = Images::load(api).await?;
    let ancestors = (!sel.filters.get("ancestor").is_empty())
        .then(|| images.ancestors(sel.filters.get("ancestor")));
    let seen: Vec<Result<Seen, ApiError>> = futures::stream::iter(candidates)
        .map(|ct| see(api, ct, &images))
        .buffered(PARALLEL)
        .collect()
        .await;
    let now = Utc::now().timestamp();
    let mut out = Vec::new();
    for s in seen {
        let s = s?;
        if !sel.keeps(&s, ancestors.as_ref()) {
            continue;
        }
        let mut sum = summary(&s, &images, version, now);
        if size && let Some(size) = super::df::sizes(api, &s.ct).await {
            // `omitempty` integers.
            sum.size_rw = (size.rw != 0).then_some(size.rw);
            sum.size_root_fs = (size.root_fs != 0).then_some(size.root_fs);
        }
        out.push(sum);
        if sel.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

/// Docker's `ContainerSummary`.
fn summary(s: &Seen, images: &Images, version: &str, now: i64) -> v::ContainerSummary {
    let created = s.created();
    v::ContainerSummary {
        id: s.ct.id.clone(),
        names: vec![format!("/{}", s.name)],
        image: s.image.image.clone(),
        image_id: s.image.id.clone(),
        image_manifest_descriptor: manifest_for(s, images, version),
        command: command_line(s.args()),
        created,
        ports: [],
        size_rw: None,
        size_root_fs: None,
        labels: s.labels.clone(),
        state: s.state(),
        status: status_text(&s.task, created, now),
        host_config: v::SummaryHostConfig {
            network_mode: network_mode(s.spec(), &s.ct.labels),
            annotations: annotations(s.spec(), version),
        },
        network_settings: v::SummaryNetworkSettings { networks: Empty {} },
        mounts: s.mounts.clone(),
    }
}

// ---------------------------------------------------------------------------
// `GET /containers/{id}/json`.

/// `GET /containers/{*rest}`: `{name}/json` where the name may hold
/// slashes — Kubernetes' `namespace/pod/container`, which the Docker CLI
/// puts in the path unescaped — as Docker's `/containers/{name:.*}/json`
/// route allows. (`/containers/json` stays its own route.)
pub(crate) async fn get_route(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    Path(rest): Path<String>,
    q: Query,
) -> Result<Response, ApiError> {
    if let Some(name) = inspect_target(&rest) {
        return inspect_one(&api, &version, name, bool_value(q.get("size"))).await;
    }
    Err(ApiError::PageNotFound)
}

/// The container name of a `{name}/json` path tail.
fn inspect_target(rest: &str) -> Option<&str> {
    rest.strip_suffix("/json").filter(|n| !n.is_empty())
}

async fn inspect_one(api: &Api, version: &str, id: &str, size: bool) -> Result<Response, ApiError> {
    let ct = api.engine().containers().resolve(id).await?;
    let images = Images::load(api).await?;
    let s = see(api, ct, &images).await?;
    let mut body = inspect_body(&s, &images, version, Utc::now().timestamp());
    if size && let Some(size) = super::df::sizes(api, &s.ct).await {
        // Pointers: present even when zero.
        body.size_rw = Some(size.rw);
        body.size_root_fs = Some(size.root_fs);
    }
    Ok(views::json(StatusCode::OK, &body))
}

/// Docker's `ContainerInspectResponse`.
fn inspect_body(s: &Seen, images: &Images, version: &str, now: i64) -> v::ContainerInspect {
    let spec = s.spec();
    let process = process(spec);
    let args = s.args();
    let entry = images.entry(&s.image);
    let run = entry.and_then(|e| e.config().config.as_ref());
    let state = s.state();
    let up = is_up(&s.task);
    let created =
        s.ct.created
            .map(|(secs, nanos)| rfc3339_nano(secs, nanos))
            .unwrap_or_else(|| ZERO_TIME.into());
    let started = started_at(&s.task, s.created(), now)
        .map(|t| rfc3339_nano(t, 0))
        .unwrap_or_else(|| ZERO_TIME.into());
    let finished = s
        .task
        .exited_at
        .filter(|_| !up)
        .map(|(t, n)| rfc3339_nano(t, n))
        .unwrap_or_else(|| ZERO_TIME.into());
    let (entrypoint, cmd) = entrypoint_and_cmd(args, run.and_then(|r| r.entrypoint.as_deref()));
    // Docker shows the image's working dir, empty when it sets none; the
    // runtime's default "/" is not one.
    let cwd = process.map(|p| path_text(p.cwd())).unwrap_or_default();
    let working_dir = match (cwd.as_str(), run.and_then(|r| r.working_dir.as_deref())) {
        ("/", None | Some("")) => String::new(),
        _ => cwd,
    };
    let new_api = !compare(version, "1.52").is_lt();
    let on_build = run.and_then(|r| r.on_build.clone());
    let config = v::Config {
        hostname: spec.and_then(|s| s.hostname().clone()).unwrap_or_default(),
        domainname: spec
            .and_then(|s| s.domainname().clone())
            .unwrap_or_default(),
        user: user(process),
        attach_stdin: false,
        attach_stdout: false,
        attach_stderr: false,
        exposed_ports: run
            .and_then(|r| r.exposed_ports.clone())
            .filter(|p| !p.is_empty()),
        tty: process.and_then(|p| p.terminal()).unwrap_or(false),
        open_stdin: false,
        stdin_once: false,
        env: process.and_then(|p| p.env().clone()),
        cmd,
        healthcheck: run.and_then(|r| r.healthcheck.clone()),
        // As the operator named it: not refreshed when the name moves.
        image: if s.ct.image.is_empty() {
            s.image.id.clone()
        } else {
            familiar_name(&s.ct.image).to_string()
        },
        volumes: run.and_then(|r| r.volumes.clone()),
        working_dir,
        entrypoint,
        // API 1.52 leaves a null `OnBuild` out.
        on_build: (on_build.is_some() || !new_api).then_some(on_build),
        labels: s.labels.clone(),
        stop_signal: run
            .and_then(|r| r.stop_signal.clone())
            .filter(|s| !s.is_empty()),
        shell: run.and_then(|r| r.shell.clone()).filter(|s| !s.is_empty()),
    };
    let network = v::NetworkSettings {
        sandbox_id: cri_sandbox(spec).unwrap_or("").to_string(),
        sandbox_key: sandbox_key(spec),
        ports: Empty {},
        networks: Empty {},
        legacy: (!new_api).then(v::LegacyNetwork::default),
    };
    v::ContainerInspect {
        id: s.ct.id.clone(),
        created,
        path: args.first().cloned().unwrap_or_default(),
        args: args.get(1..).unwrap_or_default().to_vec(),
        state: v::ContainerState {
            status: state,
            running: up,
            paused: state == "paused",
            restarting: false,
            oom_killed: false,
            dead: state == "dead",
            pid: if up { s.task.pid } else { 0 },
            exit_code: if up { 0 } else { s.task.exit_status },
            error: "",
            started_at: started,
            finished_at: finished,
        },
        image: s.image.id.clone(),
        resolv_conf_path: s.files.resolv_conf.clone(),
        hostname_path: s.files.hostname.clone(),
        hosts_path: s.files.hosts.clone(),
        log_path: "",
        name: format!("/{}", s.name),
        restart_count: 0,
        driver: s.ct.snapshotter.clone(),
        platform: entry
            .map(|e| e.config().os.as_str())
            .filter(|o| !o.is_empty())
            .unwrap_or("linux")
            .to_string(),
        mount_label: linux(spec)
            .and_then(|l| l.mount_label().clone())
            .unwrap_or_default(),
        process_label: process
            .and_then(|p| p.selinux_label().clone())
            .unwrap_or_default(),
        app_armor_profile: process
            .and_then(|p| p.apparmor_profile().clone())
            .unwrap_or_default(),
        exec_ids: (),
        host_config: host_config(&s.ct, &s.mounts, version),
        graph_driver: v::GraphDriver {
            name: s.ct.snapshotter.clone(),
            data: (),
        },
        size_rw: None,
        size_root_fs: None,
        mounts: s.mounts.clone(),
        config,
        network_settings: network,
        image_manifest_descriptor: manifest_for(s, images, version),
    }
}

/// The network namespace a container joined (Docker's `SandboxKey`).
fn sandbox_key(spec: Option<&Spec>) -> String {
    match namespace(spec, NsKind::Network) {
        Ns::Joined(p) => p,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A spec from its JSON (`null`: none).
    fn spec(v: Value) -> Option<Spec> {
        (!v.is_null()).then(|| serde_json::from_value(v).unwrap())
    }

    fn to_json(v: impl serde::Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn task(state: TaskState) -> TaskInfo {
        TaskInfo {
            state: Some(state),
            ..Default::default()
        }
    }

    /// A container named by nerdctl's label, if it has one (the engine
    /// names containers; its own tests hold how).
    fn container(id: &str, labels: &[(&str, &str)], json_spec: Value) -> Container {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Container {
            id: id.into(),
            name: labels
                .get("nerdctl/name")
                .cloned()
                .unwrap_or_else(|| id.into()),
            labels,
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            spec: spec(json_spec),
            ..Default::default()
        }
    }

    fn seen(ct: Container, t: TaskInfo) -> Seen {
        let images = Images::new(Vec::new());
        Seen::new(ct, t, ImageOf::default(), &images)
    }

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

    #[test]
    fn commands_quote_arguments_with_spaces() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&args(&["sh", "-c", "sleep 100000"])),
            "sh -c 'sleep 100000'"
        );
        assert_eq!(command_line(&args(&["nginx"])), "nginx");
        assert_eq!(command_line(&[]), "");
    }

    fn selection(query: &str) -> Result<Selection, ApiError> {
        Selection::parse(&Query::parse(Some(query)))
    }

    fn filters(json: &str) -> String {
        format!(
            "filters={}",
            form_urlencoded::byte_serialize(json.as_bytes()).collect::<String>()
        )
    }

    #[test]
    fn filters_are_validated_as_docker_does() {
        assert_eq!(
            selection(&filters(r#"{"status":["bogus"]}"#))
                .unwrap_err()
                .to_string(),
            "invalid filter 'status=bogus': invalid value for state (bogus): must be one of created, running, paused, restarting, removing, exited, dead"
        );
        assert_eq!(
            selection(&filters(r#"{"nope":["x"]}"#))
                .unwrap_err()
                .to_string(),
            "invalid filter 'nope'"
        );
        assert!(selection(&filters(r#"{"exited":["x"]}"#)).is_err());
        assert!(selection(&filters(r#"{"health":["sick"]}"#)).is_err());
        assert!(selection(&filters(r#"{"is-task":["maybe"]}"#)).is_err());
        assert!(selection(&filters(r#"{"publish":["80:80"]}"#)).is_err());
        assert!(selection(&filters(r#"{"expose":["8000-8080/udp"]}"#)).is_ok());
        assert_eq!(
            selection("limit=x").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        // A status filter lists stopped containers too.
        assert!(selection(&filters(r#"{"status":["exited"]}"#)).unwrap().all);
        assert!(!selection("all=0").unwrap().all);
        assert_eq!(selection("limit=3").unwrap().limit, Some(3));
        assert_eq!(selection("limit=-1").unwrap().limit, None);
    }

    #[test]
    fn filters_select_as_docker_does() {
        let running = seen(
            container(
                "run1",
                &[("nerdctl/name", "web-1"), ("team", "infra")],
                Value::Null,
            ),
            task(TaskState::Running),
        );
        let exited = seen(
            container("stop1", &[("nerdctl/name", "job")], Value::Null),
            TaskInfo {
                exit_status: 137,
                ..task(TaskState::Stopped)
            },
        );
        let keeps = |q: &str, s: &Seen| selection(q).unwrap().keeps(s, None);
        assert!(keeps("", &running));
        assert!(!keeps("", &exited));
        assert!(keeps("all=1", &exited));
        // A limit lists every state, as `docker ps -n`.
        assert!(keeps("limit=1", &exited));
        assert!(keeps(&filters(r#"{"status":["exited"]}"#), &exited));
        assert!(!keeps(&filters(r#"{"status":["exited"]}"#), &running));
        assert!(keeps(&filters(r#"{"label":["team=infra"]}"#), &running));
        assert!(!keeps(&filters(r#"{"label":["team"]}"#), &exited));
        // `exited` does not imply `all` (Docker's docs pair it with `-a`).
        let exited_137 = filters(r#"{"exited":["137"]}"#);
        assert!(!keeps(&exited_137, &exited));
        assert!(keeps(&format!("all=1&{exited_137}"), &exited));
        assert!(!keeps(&format!("all=1&{exited_137}"), &running));
        assert!(!keeps(
            &format!("all=1&{}", filters(r#"{"exited":["0"]}"#)),
            &exited
        ));
        assert!(keeps(&filters(r#"{"health":["none"]}"#), &running));
        assert!(!keeps(&filters(r#"{"health":["healthy"]}"#), &running));
        assert!(keeps(&filters(r#"{"is-task":["false"]}"#), &running));
        assert!(!keeps(&filters(r#"{"is-task":["true"]}"#), &running));
        assert!(!keeps(&filters(r#"{"network":["bridge"]}"#), &running));

        let ids = ["run1", "run10", "abc"];
        let record = |q: &str, ct: &Container| selection(q).unwrap().keeps_record(ct, &ids);
        let ct = container("run1", &[("nerdctl/name", "web-1")], Value::Null);
        assert!(record(&filters(r#"{"name":["web"]}"#), &ct));
        assert!(record(&filters(r#"{"name":["^/web-\\d$"]}"#), &ct));
        assert!(record(&filters(r#"{"name":["^web-1$"]}"#), &ct));
        assert!(!record(&filters(r#"{"name":["^web$"]}"#), &ct));
        // An exact ID wins over a longer one it is a prefix of; an
        // ambiguous prefix matches nothing.
        assert!(record(&filters(r#"{"id":["run1"]}"#), &ct));
        assert!(!record(&filters(r#"{"id":["run"]}"#), &ct));
        let abc = container("abc", &[], Value::Null);
        assert!(record(&filters(r#"{"id":["ab"]}"#), &abc));
    }

    #[test]
    fn specs_read_back_as_host_config() {
        let spec_json = json!({
            "hostname": "box",
            "root": { "path": "rootfs", "readonly": true },
            "process": {
                "args": ["sh", "-c", "sleep 1"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "user": { "uid": 1000, "gid": 0 },
                "terminal": false,
                "oomScoreAdj": 500,
            },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "size=65536k"] },
                { "destination": "/etc/resolv.conf", "type": "bind",
                  "source": "/var/lib/x/resolv.conf", "options": ["rbind", "ro"] },
                { "destination": "/data", "type": "bind", "source": "/srv/data",
                  "options": ["rbind", "rw"] },
                { "destination": "/cfg", "type": "none", "source": "/etc/cfg",
                  "options": ["bind", "ro", "rslave"] },
            ],
            "linux": {
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                    { "type": "mount" }, { "type": "network" },
                ],
                "resources": {
                    "memory": { "limit": 536870912 },
                    "cpu": { "shares": 512, "quota": 50000, "period": 100000 },
                    "pids": { "limit": 100 },
                },
                "maskedPaths": ["/proc/kcore"],
            },
        });
        let ct = container("x", &[], spec_json);
        let (mounts, files) = mount_points(ct.spec.as_ref());
        assert_eq!(files.resolv_conf, "/var/lib/x/resolv.conf");
        assert_eq!(
            to_json(&mounts),
            json!([
                json!({"Type": "bind", "Source": "/srv/data", "Destination": "/data",
                       "Mode": "", "RW": true, "Propagation": "rprivate"}),
                json!({"Type": "bind", "Source": "/etc/cfg", "Destination": "/cfg",
                       "Mode": "ro", "RW": false, "Propagation": "rslave"}),
            ])
        );
        let hc = to_json(host_config(&ct, &mounts, "1.51"));
        assert_eq!(hc["NetworkMode"], "none");
        assert_eq!(hc["Binds"], json!(["/srv/data:/data", "/etc/cfg:/cfg:ro"]));
        assert_eq!(hc["ShmSize"], 64 << 20);
        assert_eq!(hc["Memory"], 536870912);
        assert_eq!(hc["CpuShares"], 512);
        assert_eq!(hc["CpuQuota"], 50000);
        assert_eq!(hc["PidsLimit"], 100);
        assert_eq!(hc["ReadonlyRootfs"], true);
        assert_eq!(hc["OomScoreAdj"], 500);
        assert_eq!(hc["IpcMode"], "private");
        assert_eq!(hc["PidMode"], "");
        assert_eq!(hc["CgroupnsMode"], "host");
        assert_eq!(hc["Runtime"], "io.containerd.runc.v2");
        assert_eq!(
            hc["RestartPolicy"],
            json!({"Name": "no", "MaximumRetryCount": 0})
        );
        assert_eq!(hc["MaskedPaths"], json!(["/proc/kcore"]));
        assert_eq!(hc["ReadonlyPaths"], Value::Null);
        assert_eq!(user(process(ct.spec.as_ref())), "1000");

        let host = spec(json!({ "linux": { "namespaces": [{ "type": "pid" }] } }));
        assert_eq!(network_mode(host.as_ref(), &HashMap::new()), "host");
        let nerdctl = HashMap::from([(NERDCTL_NETWORKS.to_string(), r#"["bridge"]"#.to_string())]);
        let fresh = spec(json!({ "linux": { "namespaces": [{ "type": "network" }] } }));
        assert_eq!(network_mode(fresh.as_ref(), &nerdctl), "bridge");
        let cri = spec(json!({
            "annotations": { CRI_CONTAINER_TYPE: "container", CRI_SANDBOX_ID: "5a00" },
            "linux": { "namespaces": [
                { "type": "network", "path": "/var/run/netns/cni-1" },
                { "type": "ipc", "path": "/proc/9/ns/ipc" },
            ] },
        }));
        let cri = cri.as_ref();
        assert_eq!(network_mode(cri, &HashMap::new()), "container:5a00");
        assert_eq!(ns_mode(cri, NsKind::Ipc, "private"), "container:5a00");
        assert_eq!(sandbox_key(cri), "/var/run/netns/cni-1");
        assert_eq!(network_mode(None, &HashMap::new()), "");
    }

    fn entry(id: &str, diff_id: &str, records: &[(&str, i64)]) -> ImageEntry {
        let manifest: docker_format::image::Manifest = serde_json::from_value(json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": id, "size": 2 },
            "layers": [],
        }))
        .unwrap();
        let config: docker_format::image::ImageConfig = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Labels": { "from": "image", "team": "image" } },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))
        .unwrap();
        let records = records
            .iter()
            .map(|(name, updated)| commit_engine::ImageRecord {
                name: name.to_string(),
                updated_at: Some(*updated),
                dangling: false,
            })
            .collect();
        ImageEntry {
            id: id.into(),
            records,
            resolved: std::sync::Arc::new(commit_engine::Resolved {
                target: manifest.config.clone(),
                manifest_descriptor: manifest.config.clone(),
                manifest,
                config,
            }),
        }
    }

    fn made_at(mut ct: Container, image: &str, created: i64) -> Container {
        ct.image = image.into();
        ct.created = Some((created, 0));
        ct
    }

    #[test]
    fn containers_keep_the_image_they_were_made_from() {
        // `app:1` was moved at 200 from A to B, an empty commit of A (same
        // layers); C has other layers.
        let images = Images::new(vec![
            entry("sha256:a", "sha256:l1", &[("moby-dangling@sha256:m", 200)]),
            entry("sha256:b", "sha256:l1", &[("docker.io/library/app:1", 200)]),
            entry(
                "sha256:c",
                "sha256:l2",
                &[("docker.io/library/other:1", 50)],
            ),
        ]);
        let of = |image: &str, created: i64, parent: Option<&str>| {
            let o = images.of(
                &made_at(container("x", &[], Value::Null), image, created),
                parent,
            );
            (o.id, o.image)
        };
        let app = "docker.io/library/app:1";
        // Made before the move: A, shown by ID as Docker does.
        assert_eq!(
            of(app, 150, Some("sha256:l1")),
            ("sha256:a".into(), "sha256:a".into())
        );
        // Made after it: B, by name.
        assert_eq!(
            of(app, 250, Some("sha256:l1")),
            ("sha256:b".into(), "app:1".into())
        );
        // A user-namespace remapped snapshot stands on the same layers.
        assert_eq!(of(app, 250, Some("sha256:l1-1000-1000")).0, "sha256:b");
        // No snapshot to look at: the record.
        assert_eq!(of(app, 150, None).0, "sha256:b");
        // The name now has other layers: the image with the container's.
        assert_eq!(
            of("docker.io/library/other:1", 100, Some("sha256:l1")),
            ("sha256:a".into(), "sha256:a".into())
        );
        // Layers nobody has: no ID rather than a wrong one.
        assert_eq!(
            of("docker.io/library/other:1", 100, Some("sha256:l9")),
            (String::new(), "other:1".into())
        );
        assert_eq!(
            of("docker.io/library/gone:1", 100, None),
            (String::new(), "gone:1".into())
        );
        // Image labels under the container's, as Docker merges them.
        let ct = made_at(container("x", &[("team", "infra")], Value::Null), app, 250);
        let image = images.of(&ct, Some("sha256:l1"));
        let s = Seen::new(ct, task(TaskState::Running), image, &images);
        assert_eq!(s.labels["team"], "infra");
        assert_eq!(s.labels["from"], "image");
        // Ancestors by name, ID and short ID; unknown ones name nothing.
        let ids = |v: &[&str]| {
            let mut ids: Vec<String> = images
                .ancestors(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .into_iter()
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&["app:1"]), ["sha256:b"]);
        assert_eq!(ids(&["other:1", "nope"]), ["sha256:c"]);
        assert!(ids(&["nope:2"]).is_empty());
    }

    #[test]
    fn inspect_paths_may_hold_slashes() {
        assert_eq!(inspect_target("team/nb-0/app/json"), Some("team/nb-0/app"));
        assert_eq!(inspect_target("abc/json"), Some("abc"));
        assert_eq!(inspect_target("/json"), None);
        assert_eq!(inspect_target("abc/top"), None);
    }

    #[test]
    fn entrypoints_split_from_the_image() {
        let args: Vec<String> = ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ep = vec!["/docker-entrypoint.sh".to_string()];
        assert_eq!(
            to_json(entrypoint_and_cmd(&args, Some(&ep))),
            json!([["/docker-entrypoint.sh"], ["nginx", "-g", "daemon off;"]])
        );
        assert_eq!(
            to_json(entrypoint_and_cmd(&args, None)),
            json!([null, args])
        );
        assert_eq!(to_json(entrypoint_and_cmd(&[], None)), json!([null, null]));
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let ct = container(
            "c1",
            &[("nerdctl/name", "web")],
            json!({"process": {"args": ["sh", "-c", "sleep 1"], "cwd": "/", "env": ["A=1"],
                               "user": {"uid": 0, "gid": 0}},
                   "linux": {"namespaces": [{"type": "network"}]}}),
        );
        let running = TaskInfo {
            pid: 42,
            started_at: Some(0),
            ..task(TaskState::Paused)
        };
        let s = seen(ct, running);
        let images = Images::new(Vec::new());
        let v = to_json(inspect_body(&s, &images, "1.51", 100));
        assert_eq!(v["Id"], "c1");
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["Path"], "sh");
        assert_eq!(v["Args"], json!(["-c", "sleep 1"]));
        assert_eq!(v["State"]["Status"], "paused");
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["State"]["Paused"], true);
        assert_eq!(v["State"]["Pid"], 42);
        assert_eq!(v["State"]["StartedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(v["State"]["FinishedAt"], ZERO_TIME);
        assert_eq!(v["Config"]["Cmd"], json!(["sh", "-c", "sleep 1"]));
        assert_eq!(v["Config"]["Entrypoint"], Value::Null);
        assert_eq!(v["Config"]["WorkingDir"], "");
        assert_eq!(v["Config"]["OnBuild"], Value::Null);
        assert_eq!(v["NetworkSettings"]["IPAddress"], "");
        assert_eq!(v["GraphDriver"], json!({"Name": "overlayfs", "Data": null}));
        assert_eq!(v["Image"], "");
        // 1.52 drops the deprecated network fields and an empty OnBuild.
        let v = to_json(inspect_body(&s, &images, "1.52", 100));
        assert!(v["NetworkSettings"].get("IPAddress").is_none());
        assert!(v["Config"].get("OnBuild").is_none());

        let sum = to_json(summary(&s, &images, "1.51", 100));
        assert_eq!(sum["Names"], json!(["/web"]));
        assert_eq!(sum["Command"], "sh -c 'sleep 1'");
        assert_eq!(sum["State"], "paused");
        assert_eq!(sum["Status"], "Up About a minute (Paused)");
        assert_eq!(sum["HostConfig"], json!({"NetworkMode": "none"}));
        assert_eq!(sum["Ports"], json!([]));
    }
}
