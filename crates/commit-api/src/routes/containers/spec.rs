//! The OCI runtime spec read back as Docker shows a container: namespaces
//! as modes, bind mounts as `MountPoint`s, the files Docker lists apart.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::{
    Linux, LinuxNamespaceType as NsKind, LinuxResources, Mount, Process, Spec,
};

use commit_engine::ContainerRecord as Container;

use crate::views::containers as v;

pub(super) fn process(spec: Option<&Spec>) -> Option<&Process> {
    spec.and_then(|s| s.process().as_ref())
}

pub(super) fn linux(spec: Option<&Spec>) -> Option<&Linux> {
    spec.and_then(|s| s.linux().as_ref())
}

pub(super) fn resources(spec: Option<&Spec>) -> Option<&LinuxResources> {
    linux(spec).and_then(|l| l.resources().as_ref())
}

pub(super) fn mounts(spec: Option<&Spec>) -> &[Mount] {
    spec.and_then(|s| s.mounts().as_deref()).unwrap_or_default()
}

pub(super) fn path_text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A spec's unsigned count as Docker's `int64`.
pub(super) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A string map in a stable order; `None` when empty.
pub(super) fn sorted(m: Option<&HashMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m?.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    (!m.is_empty()).then_some(m)
}

/// How the spec sets up one kind of namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ns {
    /// Not unshared: the host's.
    Host,
    /// A new one.
    New,
    /// Joined: an existing namespace at this path.
    Joined(String),
    /// No Linux section in the spec: unknown.
    Unknown,
}

pub(super) fn namespace(spec: Option<&Spec>, kind: NsKind) -> Ns {
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

/// Docker's `NetworkMode`: `host` without a network namespace,
/// `container:<sandbox>` for a Kubernetes app container (the engine reads
/// its pod's sandbox), the first network nerdctl attached, else `none` (a
/// fresh namespace with only loopback, as `ctr run` makes) or `default` (a
/// namespace set up by someone else, e.g. CNI).
pub(super) fn network_mode(ct: &Container) -> String {
    let spec = ct.spec.as_ref();
    let ns = namespace(spec, NsKind::Network);
    if ns == Ns::Host {
        return "host".into();
    }
    if ns == Ns::Unknown {
        return String::new();
    }
    if let Some(sandbox) = &ct.sandbox {
        return format!("container:{sandbox}");
    }
    if let Some(n) = ct.networks.first() {
        return n.clone();
    }
    match ns {
        Ns::Joined(_) => "default".into(),
        _ => "none".into(),
    }
}

/// Docker's modes for the other namespaces (`IpcMode`, `PidMode`, …):
/// `host` when not unshared, `container:<sandbox>` when joined from a
/// Kubernetes sandbox, else the mode Docker shows for a private one.
pub(super) fn ns_mode(ct: &Container, kind: NsKind, private: &str) -> String {
    match namespace(ct.spec.as_ref(), kind) {
        Ns::Host => "host".into(),
        Ns::Joined(_) => ct
            .sandbox
            .as_ref()
            .map(|s| format!("container:{s}"))
            .unwrap_or_else(|| private.into()),
        Ns::New => private.into(),
        Ns::Unknown => String::new(),
    }
}

/// Files Docker manages itself and lists apart from the mounts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MountedFiles {
    pub(super) resolv_conf: String,
    pub(super) hostname: String,
    pub(super) hosts: String,
}

pub(super) fn options(m: &Mount) -> &[String] {
    m.options().as_deref().unwrap_or_default()
}

/// The spec's bind mounts as Docker's `MountPoint`s, without the files
/// Docker lists on their own (`/etc/resolv.conf`, `/etc/hostname`,
/// `/etc/hosts`) and the pod's `/dev/shm`.
pub(super) fn mount_points(spec: Option<&Spec>) -> (Vec<v::MountPoint>, MountedFiles) {
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

/// The network namespace a container joined (Docker's `SandboxKey`).
pub(super) fn sandbox_key(spec: Option<&Spec>) -> String {
    match namespace(spec, NsKind::Network) {
        Ns::Joined(p) => p,
        _ => String::new(),
    }
}
