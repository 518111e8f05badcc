//! `GET /info` (`docker info`, docker-py's `client.info()`; monitoring
//! agents call it first): Docker's `system.Info`, from containerd's
//! services (containers, tasks, images, version, the snapshotter) and this
//! host (`/proc`, `/etc/os-release`, cgroups).
//!
//! The daemon's own facts are commitd's: `ServerVersion` is commitd's
//! version, `Driver` the snapshotter images are unpacked into (with
//! `driver-type io.containerd.snapshotter.v1`, as Docker's containerd image
//! store says), `DockerRootDir` containerd's root. What commitd does not
//! have (networks, volumes, logging drivers, swarm) is empty, as on a
//! Docker daemon that has none.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use commit_engine::TaskState;
use futures::StreamExt;

use crate::Api;
use crate::error::ApiError;
use crate::extract::ApiVersion;
use crate::version::compare;
use crate::views::{self, info as v};

/// Task lookups in flight at once.
const PARALLEL: usize = 8;

/// `GET /info`.
pub(crate) async fn info(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
) -> Result<Response, ApiError> {
    let engine = api.engine();
    let system = engine.system().await?;
    let containers = engine.containers().list().await?;
    let tasks = &engine.containers();
    let ids: Vec<String> = containers.iter().map(|ct| ct.id.clone()).collect();
    let states: Vec<_> = futures::stream::iter(ids)
        .map(|id| async move { tasks.task(&id).await })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let (mut running, mut paused) = (0, 0);
    for t in states {
        match t?.state {
            Some(TaskState::Running) => running += 1,
            Some(TaskState::Paused) => paused += 1,
            _ => {}
        }
    }
    let images = engine.images().list().await?.len();
    let host = Host::read();
    let before = |v: &str| compare(&version, v).is_lt();
    let c = engine.containerd();
    let insecure = &api.options().insecure_registries;
    let body = v::Info {
        id: daemon_id(
            &host.machine_id,
            &c.socket().display().to_string(),
            c.namespace(),
        ),
        containers: containers.len(),
        containers_running: running,
        containers_paused: paused,
        containers_stopped: containers.len() - running - paused,
        images,
        driver: system.snapshotter.clone(),
        driver_status: vec![[
            "driver-type".to_string(),
            "io.containerd.snapshotter.v1".to_string(),
        ]],
        plugins: v::Plugins {
            volume: Vec::new(),
            network: Vec::new(),
            authorization: None,
            log: Vec::new(),
        },
        memory_limit: host.cgroups.memory,
        swap_limit: host.cgroups.swap,
        cpu_cfs_period: host.cgroups.cfs,
        cpu_cfs_quota: host.cgroups.cfs,
        cpu_shares: host.cgroups.shares,
        cpu_set: host.cgroups.cpuset,
        pids_limit: host.cgroups.pids,
        ipv4_forwarding: host.ip_forward,
        bridge_nf_iptables: before("1.50").then_some(false),
        bridge_nf_ip6tables: before("1.50").then_some(false),
        debug: tracing::enabled!(tracing::Level::DEBUG),
        nfd: count_dir("/proc/self/fd"),
        oom_kill_disable: false,
        n_goroutines: host.threads,
        system_time: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
        logging_driver: String::new(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: host.cgroups.version.to_string(),
        n_events_listener: api.events().listeners(),
        kernel_version: api.info().kernel_version.clone(),
        operating_system: host.os_name,
        os_version: host.os_version,
        os_type: "linux".into(),
        architecture: host.machine,
        index_server_address: "https://index.docker.io/v1/",
        registry_config: registry_config(insecure, before("1.47")),
        ncpu: host.ncpu,
        mem_total: host.mem_total,
        generic_resources: None,
        docker_root_dir: system
            .root
            .as_ref()
            .map(|r| r.display().to_string())
            .unwrap_or_default(),
        http_proxy: mask_credentials(&env_either("HTTP_PROXY", "http_proxy")),
        https_proxy: mask_credentials(&env_either("HTTPS_PROXY", "https_proxy")),
        no_proxy: env_either("NO_PROXY", "no_proxy"),
        name: host.hostname,
        labels: Vec::new(),
        experimental_build: false,
        server_version: api.info().version.clone(),
        runtimes: BTreeMap::from([(
            "io.containerd.runc.v2".to_string(),
            v::Runtime {
                path: "io.containerd.runc.v2".into(),
                status: (!before("1.44")).then(BTreeMap::new),
            },
        )]),
        default_runtime: "io.containerd.runc.v2".into(),
        swarm: v::Swarm::default(),
        // Containers are containerd's: a restart of this daemon leaves them running.
        live_restore_enabled: true,
        isolation: "",
        init_binary: String::new(),
        containerd_commit: commit(&system.containerd_revision, before("1.49")),
        runc_commit: commit("", before("1.49")),
        init_commit: commit("", before("1.49")),
        security_options: Vec::new(),
        containerd: (!before("1.46")).then(|| v::ContainerdInfo {
            address: c.socket().display().to_string(),
            namespaces: v::ContainerdNamespaces {
                containers: c.namespace().to_string(),
                plugins: String::new(),
            },
        }),
        cdi_spec_dirs: Vec::new(),
        warnings: None,
    };
    Ok(views::json(StatusCode::OK, &body))
}

fn commit(id: &str, with_expected: bool) -> v::Commit {
    v::Commit {
        id: id.to_string(),
        expected: with_expected.then(|| id.to_string()),
    }
}

/// Docker's registry configuration: loopback is insecure, Docker Hub is the
/// official index; `insecure-registries` entries are CIDRs or registries.
fn registry_config(insecure: &[String], legacy: bool) -> v::RegistryConfig {
    let mut cidrs = vec!["::1/128".to_string(), "127.0.0.0/8".to_string()];
    let mut index_configs = BTreeMap::from([(
        "docker.io".to_string(),
        v::IndexInfo {
            name: "docker.io".into(),
            mirrors: Vec::new(),
            secure: true,
            official: true,
        },
    )]);
    for entry in insecure {
        if entry.contains('/') && entry.parse::<Cidr>().is_ok() {
            if !cidrs.contains(entry) {
                cidrs.push(entry.clone());
            }
        } else {
            index_configs.insert(
                entry.clone(),
                v::IndexInfo {
                    name: entry.clone(),
                    mirrors: Vec::new(),
                    secure: false,
                    official: false,
                },
            );
        }
    }
    v::RegistryConfig {
        allow_nondistributable_cidrs: legacy.then_some(()),
        allow_nondistributable_hostnames: legacy.then_some(()),
        insecure_registry_cidrs: cidrs,
        index_configs,
        mirrors: Vec::new(),
    }
}

/// An `address/bits` network (only checked for shape).
struct Cidr;

impl std::str::FromStr for Cidr {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, bits) = s.split_once('/').ok_or(())?;
        let _: std::net::IpAddr = addr.parse().map_err(|_| ())?;
        let _: u8 = bits.parse().map_err(|_| ())?;
        Ok(Cidr)
    }
}

fn env_either(upper: &str, lower: &str) -> String {
    std::env::var(upper)
        .or_else(|_| std::env::var(lower))
        .unwrap_or_default()
}

/// Docker's `MaskCredentials`: the password of a proxy URL as `xxxxx`.
fn mask_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:xxxxx@{host}")
}

/// A stable ID for this daemon: a UUID derived from the machine, the
/// containerd socket and the namespace it serves (Docker keeps a random
/// one in its root; commitd keeps no state of its own for it).
fn daemon_id(machine_id: &str, socket: &str, namespace: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{machine_id}\0{socket}\0{namespace}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    // RFC 4122: version 4 layout, variant 1.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex_string(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// What this host says about itself.
struct Host {
    hostname: String,
    machine_id: String,
    os_name: String,
    os_version: String,
    machine: String,
    ncpu: usize,
    mem_total: i64,
    ip_forward: bool,
    threads: usize,
    cgroups: Cgroups,
}

#[derive(Default)]
struct Cgroups {
    version: &'static str,
    memory: bool,
    swap: bool,
    cfs: bool,
    shares: bool,
    cpuset: bool,
    pids: bool,
}

impl Cgroups {
    fn read() -> Self {
        let root = std::path::Path::new("/sys/fs/cgroup");
        if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            return Cgroups {
                version: "2",
                memory: has("memory"),
                swap: has("memory") && root.join("memory.swap.max").exists()
                    || std::fs::read_dir(root).is_ok_and(|d| {
                        d.flatten()
                            .any(|e| e.path().join("memory.swap.max").exists())
                    }),
                cfs: has("cpu"),
                shares: has("cpu"),
                cpuset: has("cpuset"),
                pids: has("pids"),
            };
        }
        let dir = |c: &str| root.join(c);
        Cgroups {
            version: "1",
            memory: dir("memory").join("memory.limit_in_bytes").exists(),
            swap: dir("memory").join("memory.memsw.limit_in_bytes").exists(),
            cfs: dir("cpu").join("cpu.cfs_period_us").exists(),
            shares: dir("cpu").join("cpu.shares").exists(),
            cpuset: dir("cpuset").join("cpuset.cpus").exists(),
            pids: dir("pids").is_dir(),
        }
    }
}

impl Host {
    fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let os_release = read("/etc/os-release");
        let field = |k: &str| {
            os_release
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let meminfo = read("/proc/meminfo");
        let mem_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0);
        let status = read("/proc/self/status");
        let status_field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Host {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            machine_id: read("/etc/machine-id").trim().to_string(),
            os_name: match field("PRETTY_NAME") {
                n if n.is_empty() => "Linux".into(),
                n => n,
            },
            os_version: field("VERSION_ID"),
            machine: uname_machine(),
            ncpu: cpus_allowed(&status_field("Cpus_allowed_list")),
            mem_total,
            ip_forward: read("/proc/sys/net/ipv4/ip_forward").trim() == "1",
            threads: status_field("Threads").parse().unwrap_or(0),
            cgroups: Cgroups::read(),
        }
    }
}

/// The CPUs this process may run on (Go's `runtime.NumCPU`), from a list
/// like `0-3,6`.
fn cpus_allowed(list: &str) -> usize {
    let n: usize = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(r.trim().parse::<usize>().is_ok()),
        })
        .sum();
    if n == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        n
    }
}

/// `uname -m`, as Docker reports `Architecture`.
fn uname_machine() -> String {
    match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpus_allowed("0-3"), 4);
        assert_eq!(cpus_allowed("0-3,6,8-9"), 7);
        assert_eq!(cpus_allowed("1"), 1);
    }

    #[test]
    fn proxy_passwords_are_masked() {
        assert_eq!(
            mask_credentials("http://user:secret@proxy:3128"),
            "http://user:xxxxx@proxy:3128"
        );
        assert_eq!(mask_credentials("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(mask_credentials(""), "");
    }

    #[test]
    fn daemon_ids_are_stable_uuids() {
        let a = daemon_id("m", "/run/containerd.sock", "default");
        assert_eq!(a, daemon_id("m", "/run/containerd.sock", "default"));
        assert_ne!(a, daemon_id("m", "/run/containerd.sock", "k8s.io"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn insecure_registries_are_cidrs_or_indexes() {
        let c = registry_config(&["10.0.0.0/8".into(), "reg.local:5000".into()], false);
        assert!(
            c.insecure_registry_cidrs
                .contains(&"10.0.0.0/8".to_string())
        );
        assert!(!c.index_configs["reg.local:5000"].secure);
        assert!(c.index_configs["docker.io"].official);
    }
}
