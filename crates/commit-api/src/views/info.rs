//! `GET /info` (`docker info`): Docker's `system.Info`.

use std::collections::BTreeMap;

use serde::Serialize;

/// Docker's `system.Info`, field for field in Docker's order. Fields an
/// API version does not have are `None` and left out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    pub images: usize,
    pub driver: String,
    pub driver_status: Vec<[String; 2]>,
    pub plugins: Plugins,
    pub memory_limit: bool,
    pub swap_limit: bool,
    pub cpu_cfs_period: bool,
    pub cpu_cfs_quota: bool,
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    pub pids_limit: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    /// Before API 1.50 only (always false there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge_nf_iptables: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge_nf_ip6tables: Option<bool>,
    pub debug: bool,
    #[serde(rename = "NFd")]
    pub nfd: usize,
    pub oom_kill_disable: bool,
    pub n_goroutines: usize,
    pub system_time: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cgroup_version: String,
    pub n_events_listener: usize,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    pub index_server_address: &'static str,
    pub registry_config: RegistryConfig,
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    pub mem_total: i64,
    pub generic_resources: Option<Vec<()>>,
    pub docker_root_dir: String,
    #[serde(rename = "HttpProxy")]
    pub http_proxy: String,
    #[serde(rename = "HttpsProxy")]
    pub https_proxy: String,
    pub no_proxy: String,
    pub name: String,
    pub labels: Vec<String>,
    pub experimental_build: bool,
    pub server_version: String,
    pub runtimes: BTreeMap<String, Runtime>,
    pub default_runtime: String,
    pub swarm: Swarm,
    pub live_restore_enabled: bool,
    pub isolation: &'static str,
    pub init_binary: String,
    pub containerd_commit: Commit,
    pub runc_commit: Commit,
    pub init_commit: Commit,
    pub security_options: Vec<String>,
    /// From API 1.46 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdInfo>,
    #[serde(rename = "CDISpecDirs")]
    pub cdi_spec_dirs: Vec<String>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Plugins {
    pub volume: Vec<String>,
    pub network: Vec<String>,
    pub authorization: Option<Vec<String>>,
    pub log: Vec<String>,
}

/// Docker's `registry.ServiceConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegistryConfig {
    /// Before API 1.47 only (`null` there).
    #[serde(
        rename = "AllowNondistributableArtifactsCIDRs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_nondistributable_cidrs: Option<()>,
    #[serde(
        rename = "AllowNondistributableArtifactsHostnames",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_nondistributable_hostnames: Option<()>,
    #[serde(rename = "InsecureRegistryCIDRs")]
    pub insecure_registry_cidrs: Vec<String>,
    pub index_configs: BTreeMap<String, IndexInfo>,
    pub mirrors: Vec<String>,
}

/// Docker's `registry.IndexInfo`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IndexInfo {
    pub name: String,
    pub mirrors: Vec<String>,
    pub secure: bool,
    pub official: bool,
}

/// Docker's `system.RuntimeWithStatus`.
#[derive(Debug, Serialize)]
pub(crate) struct Runtime {
    pub path: String,
    /// From API 1.44 on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, String>>,
}

/// Docker's `swarm.Info` of a node outside any swarm.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Swarm {
    #[serde(rename = "NodeID")]
    pub node_id: &'static str,
    pub node_addr: &'static str,
    pub local_node_state: &'static str,
    pub control_available: bool,
    pub error: &'static str,
    pub remote_managers: Option<Vec<()>>,
}

impl Default for Swarm {
    fn default() -> Self {
        Self {
            node_id: "",
            node_addr: "",
            local_node_state: "inactive",
            control_available: false,
            error: "",
            remote_managers: None,
        }
    }
}

/// Docker's `system.Commit`; `Expected` before API 1.49 only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Commit {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

/// Docker's `system.ContainerdInfo`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerdInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub namespaces: ContainerdNamespaces,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerdNamespaces {
    pub containers: String,
    pub plugins: String,
}
