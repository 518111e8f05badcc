//! `GET /containers/json` (`ContainerSummary`) and `GET /containers/{id}/json`
//! (`ContainerInspectResponse`), field for field as Docker's `api/types`
//! name them. What Docker fills and containerd cannot say is Go's zero value:
//! `""`, `0`, `false`, or `null` ([`Null`]); fields that only some API
//! versions have are `Option`s left out when `None`.

use std::collections::BTreeMap;

use docker_format::image::{Descriptor, Empty, HealthConfig};
use serde::Serialize;

/// A field Docker sends as `null` here: a slice, map or pointer it leaves
/// nil for a container that did not set it, which no containerd record
/// can set.
pub(crate) type Null = ();

/// Docker's `container.Summary` (`docker ps`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// API 1.48 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_manifest_descriptor: Option<Descriptor>,
    pub command: String,
    pub created: i64,
    /// Always empty: ports are CNI's, not containerd's.
    pub ports: [Empty; 0],
    /// `size=1`, when not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub state: &'static str,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworkSettings,
    pub mounts: Vec<MountPoint>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SummaryHostConfig {
    pub network_mode: String,
    /// API 1.46 on, when the spec has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SummaryNetworkSettings {
    /// Always empty: networks are CNI's.
    pub networks: Empty,
}

/// Docker's `container.MountPoint` (bind mounts only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MountPoint {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub source: String,
    pub destination: String,
    pub mode: &'static str,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
}

/// Docker's `container.InspectResponse` (`docker inspect`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerState,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: &'static str,
    pub name: String,
    pub restart_count: i64,
    pub driver: String,
    pub platform: String,
    pub mount_label: String,
    pub process_label: String,
    pub app_armor_profile: String,
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Null,
    pub host_config: HostConfig,
    pub graph_driver: GraphDriver,
    /// `size=1`: present even when zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<i64>,
    pub mounts: Vec<MountPoint>,
    pub config: Config,
    pub network_settings: NetworkSettings,
    /// API 1.48 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_manifest_descriptor: Option<Descriptor>,
}

/// Docker's `container.State` (no `Health`: nothing here has a check).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerState {
    pub status: &'static str,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: u32,
    pub exit_code: u32,
    pub error: &'static str,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GraphDriver {
    pub name: String,
    pub data: Null,
}

/// Docker's `container.HostConfig`, `Resources` embedded.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HostConfig {
    /// `null` when there are none.
    pub binds: Option<Vec<String>>,
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: &'static str,
    pub log_config: LogConfig,
    pub network_mode: String,
    pub port_bindings: Empty,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub volume_driver: &'static str,
    pub volumes_from: Null,
    /// Height, width.
    pub console_size: [i64; 2],
    /// API 1.46 on, when the spec has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    pub cap_add: Null,
    pub cap_drop: Null,
    pub cgroupns_mode: String,
    pub dns: Null,
    pub dns_options: Null,
    pub dns_search: Null,
    pub extra_hosts: Null,
    pub group_add: Null,
    pub ipc_mode: String,
    pub cgroup: &'static str,
    pub links: Null,
    pub oom_score_adj: i64,
    pub pid_mode: String,
    pub privileged: bool,
    pub publish_all_ports: bool,
    pub readonly_rootfs: bool,
    pub security_opt: Null,
    #[serde(rename = "UTSMode")]
    pub uts_mode: String,
    pub userns_mode: &'static str,
    pub shm_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<BTreeMap<String, String>>,
    pub runtime: String,
    pub isolation: &'static str,
    #[serde(flatten)]
    pub resources: Resources,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub config: Null,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// Docker's `container.Resources`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Resources {
    pub cpu_shares: i64,
    pub memory: i64,
    pub nano_cpus: i64,
    pub cgroup_parent: &'static str,
    pub blkio_weight: i64,
    pub blkio_weight_device: Null,
    pub blkio_device_read_bps: Null,
    pub blkio_device_write_bps: Null,
    #[serde(rename = "BlkioDeviceReadIOps")]
    pub blkio_device_read_iops: Null,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    pub blkio_device_write_iops: Null,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_realtime_period: i64,
    pub cpu_realtime_runtime: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub devices: Null,
    pub device_cgroup_rules: Null,
    pub device_requests: Null,
    pub memory_reservation: i64,
    pub memory_swap: i64,
    pub memory_swappiness: Option<i64>,
    #[serde(rename = "OomKillDisable")]
    pub oom_kill_disable: Option<bool>,
    pub pids_limit: Option<i64>,
    pub ulimits: Null,
    pub cpu_count: i64,
    pub cpu_percent: i64,
    #[serde(rename = "IOMaximumIOps")]
    pub io_maximum_iops: i64,
    #[serde(rename = "IOMaximumBandwidth")]
    pub io_maximum_bandwidth: i64,
}

/// Docker's `container.Config`, as inspect shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Config {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    pub image: String,
    pub volumes: Option<BTreeMap<String, Empty>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    /// `Some(None)` is `null`; API 1.52 on leaves a `null` out (`None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Option<Vec<String>>>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// Docker's `container.NetworkSettings`: before API 1.52 with the
/// deprecated fields of the default network ([`LegacyNetwork`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkSettings {
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub sandbox_key: String,
    pub ports: Empty,
    /// Always empty: networks are CNI's.
    pub networks: Empty,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<LegacyNetwork>,
}

/// The fields API 1.52 dropped from `NetworkSettings`, all zero here.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LegacyNetwork {
    pub bridge: &'static str,
    pub hairpin_mode: bool,
    #[serde(rename = "LinkLocalIPv6Address")]
    pub link_local_ipv6_address: &'static str,
    #[serde(rename = "LinkLocalIPv6PrefixLen")]
    pub link_local_ipv6_prefix_len: i64,
    #[serde(rename = "SecondaryIPAddresses")]
    pub secondary_ip_addresses: Null,
    #[serde(rename = "SecondaryIPv6Addresses")]
    pub secondary_ipv6_addresses: Null,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: &'static str,
    pub gateway: &'static str,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: &'static str,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: i64,
    #[serde(rename = "IPAddress")]
    pub ip_address: &'static str,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: i64,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: &'static str,
    pub mac_address: &'static str,
}
