//! Settings: built-in defaults (the documented `config/commitd.toml`,
//! embedded), then the config file, then environment and flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// The documented default configuration, embedded.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/commitd.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_group: String,
    pub containerd: PathBuf,
    pub namespace: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_timeout_secs: u64,
    pub metrics_address: String,
    pub state_dir: PathBuf,
    /// The API on TCP; absent unless configured, and then TLS-only.
    #[serde(default)]
    pub tcp: Option<TcpConfig>,
    pub limits: LimitsConfig,
    pub registry: RegistryConfig,
    pub commit: CommitConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries `docker push` may reach over plain HTTP (besides loopback).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// A Docker-style `config.json` for the registries base layers are
    /// fetched from (empty: none).
    #[serde(default)]
    pub source_credentials: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_changes: usize,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialLimits {
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_changes: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    pub address: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub tls_ca: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitConfig {
    pub compression: commit_engine::Compression,
    pub gzip_level: u32,
    pub zstd_level: i32,
    pub compression_threads: usize,
    pub fast_path: bool,
    pub sync_layers: bool,
    pub lease_expiry_secs: u64,
    pub config_source: commit_engine::ConfigSource,
    pub squash: commit_engine::Squash,
    pub max_depth: usize,
    pub auto_squash: bool,
    pub exclude: Vec<String>,
    pub incremental: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config file may set any subset of the settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialConfig {
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    containerd: Option<PathBuf>,
    namespace: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    shutdown_timeout_secs: Option<u64>,
    metrics_address: Option<String>,
    state_dir: Option<PathBuf>,
    tcp: Option<TcpConfig>,
    limits: Option<PartialLimits>,
    registry: Option<RegistryConfig>,
    commit: Option<PartialCommit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialCommit {
    compression: Option<commit_engine::Compression>,
    gzip_level: Option<u32>,
    zstd_level: Option<i32>,
    compression_threads: Option<usize>,
    fast_path: Option<bool>,
    sync_layers: Option<bool>,
    lease_expiry_secs: Option<u64>,
    config_source: Option<commit_engine::ConfigSource>,
    squash: Option<commit_engine::Squash>,
    max_depth: Option<usize>,
    auto_squash: Option<bool>,
    exclude: Option<Vec<String>>,
    incremental: Option<bool>,
}

/// commitd: Docker's commit API for containerd containers, on a unix socket.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Config file (TOML); settings it leaves out keep their defaults.
    #[arg(long, env = "COMMITD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Socket to serve the API on.
    #[arg(long, env = "COMMITD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Group owning the socket (mode 0660).
    #[arg(long, env = "COMMITD_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// containerd's socket.
    #[arg(long, env = "COMMITD_CONTAINERD")]
    pub containerd: Option<PathBuf>,
    /// containerd namespace.
    #[arg(long, env = "COMMITD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "COMMITD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check containerd and this host (snapshotters, fast path) and exit:
    /// 0 when containerd answers, 1 when it does not.
    #[arg(long)]
    pub check: bool,
}

impl Config {
    /// The embedded defaults.
    pub fn defaults() -> Self {
        // The embedded file is checked by a unit test; it cannot fail here.
        toml::from_str(DEFAULT_CONFIG)
            .unwrap_or_else(|e| panic!("embedded default config is invalid: {e}"))
    }

    /// Defaults, then the file (if any), then flags and environment.
    pub fn load(cli: &Cli) -> Result<Self, String> {
        let mut cfg = Self::defaults();
        if let Some(path) = &cli.config {
            cfg.merge_file(path)?;
        }
        if let Some(v) = &cli.socket {
            cfg.socket = v.clone();
        }
        if let Some(v) = &cli.socket_group {
            cfg.socket_group = v.clone();
        }
        if let Some(v) = &cli.containerd {
            cfg.containerd = v.clone();
        }
        if let Some(v) = &cli.namespace {
            cfg.namespace = v.clone();
        }
        if let Some(v) = cli.log_format {
            cfg.log_format = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let p: PartialConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        macro_rules! take {
            ($($dst:expr => $src:expr),* $(,)?) => { $( if let Some(v) = $src { $dst = v; } )* };
        }
        take!(
            self.socket => p.socket,
            self.socket_group => p.socket_group,
            self.containerd => p.containerd,
            self.namespace => p.namespace,
            self.log_format => p.log_format,
            self.log_level => p.log_level,
            self.shutdown_timeout_secs => p.shutdown_timeout_secs,
            self.metrics_address => p.metrics_address,
            self.state_dir => p.state_dir,
        );
        if p.tcp.is_some() {
            self.tcp = p.tcp;
        }
        if let Some(r) = p.registry {
            self.registry = r;
        }
        if let Some(l) = p.limits {
            take!(
                self.limits.max_body_bytes => l.max_body_bytes,
                self.limits.max_header_bytes => l.max_header_bytes,
                self.limits.max_changes => l.max_changes,
                self.limits.header_timeout_secs => l.header_timeout_secs,
                self.limits.body_timeout_secs => l.body_timeout_secs,
            );
        }
        if let Some(c) = p.commit {
            take!(
                self.commit.compression => c.compression,
                self.commit.gzip_level => c.gzip_level,
                self.commit.zstd_level => c.zstd_level,
                self.commit.compression_threads => c.compression_threads,
                self.commit.fast_path => c.fast_path,
                self.commit.sync_layers => c.sync_layers,
                self.commit.lease_expiry_secs => c.lease_expiry_secs,
                self.commit.config_source => c.config_source,
                self.commit.squash => c.squash,
                self.commit.max_depth => c.max_depth,
                self.commit.auto_squash => c.auto_squash,
                self.commit.exclude => c.exclude,
                self.commit.incremental => c.incremental,
            );
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.commit.lease_expiry_secs < 3 {
            return Err("commit.lease_expiry_secs must be at least 3".into());
        }
        if !(1..=9).contains(&self.commit.gzip_level) {
            return Err("commit.gzip_level must be 1 to 9".into());
        }
        if !(1..=19).contains(&self.commit.zstd_level) {
            return Err("commit.zstd_level must be 1 to 19".into());
        }
        if self.limits.header_timeout_secs == 0 || self.limits.body_timeout_secs == 0 {
            return Err("limits: timeouts must be at least 1 second".into());
        }
        for p in &self.commit.exclude {
            commit_engine::ExcludePattern::parse(p).map_err(|e| format!("commit.exclude: {e}"))?;
        }
        for r in &self.registry.insecure_registries {
            docker_format::registry::check_insecure_registry(r)
                .map_err(|e| format!("registry.insecure_registries: {e}"))?;
        }
        if let Some(t) = &self.tcp {
            if t.address.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("tcp.address {:?} is not an IP:port", t.address));
            }
        }
        if !self.metrics_address.is_empty()
            && self
                .metrics_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(format!(
                "metrics_address {:?} is not an IP:port",
                self.metrics_address
            ));
        }
        if self.socket.as_os_str().is_empty() || self.containerd.as_os_str().is_empty() {
            return Err("socket and containerd must be set".into());
        }
        Ok(())
    }

    pub fn api_limits(&self) -> commit_api::Limits {
        commit_api::Limits {
            max_body: self.limits.max_body_bytes,
            max_changes: self.limits.max_changes,
            body_timeout: Duration::from_secs(self.limits.body_timeout_secs),
        }
    }

    pub fn conn_limits(&self) -> crate::server::ConnLimits {
        crate::server::ConnLimits {
            header_timeout: Duration::from_secs(self.limits.header_timeout_secs),
            max_header_bytes: self.limits.max_header_bytes,
        }
    }

    /// Where the daemon keeps its state: `state_dir`, or the socket's directory.
    pub fn state_dir(&self) -> PathBuf {
        if !self.state_dir.as_os_str().is_empty() {
            return self.state_dir.clone();
        }
        self.socket
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/run/commitd"))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn engine(&self) -> commit_engine::EngineConfig {
        commit_engine::EngineConfig {
            lease_expiry: Duration::from_secs(self.commit.lease_expiry_secs),
            compression: self.commit.compression,
            gzip_level: self.commit.gzip_level,
            zstd_level: self.commit.zstd_level,
            threads: self.commit.compression_threads,
            fast_path: self.commit.fast_path,
            sync_layers: self.commit.sync_layers,
            config_source: self.commit.config_source,
            squash: self.commit.squash,
            max_depth: self.commit.max_depth,
            auto_squash: self.commit.auto_squash,
            exclude: self.commit.exclude.clone(),
            incremental: self.commit.incremental,
            source_credentials: Some(self.registry.source_credentials.clone())
                .filter(|p| !p.as_os_str().is_empty()),
            journal: commit_engine::PauseJournal::new(Some(self.state_dir())),
            records: commit_engine::Records::new(Some(self.state_dir().join("incremental"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("commitd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        let c = Config::defaults();
        assert_eq!(c.socket, Path::new("/run/commitd/commitd.sock"));
        assert_eq!(c.containerd, Path::new("/run/containerd/containerd.sock"));
        assert_eq!(c.namespace, "default");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.commit.lease_expiry_secs, 3600);
        assert_eq!(c.commit.compression, commit_engine::Compression::Gzip);
        assert_eq!(
            c.api_limits(),
            commit_api::Limits::default(),
            "documented limits are the API's own"
        );
        // The file documents the engine's own defaults.
        let e = commit_engine::EngineConfig::default();
        let f = c.engine();
        assert_eq!(
            c.state_dir(),
            Path::new("/run/commitd"),
            "beside the socket by default"
        );
        assert_eq!(
            (
                f.lease_expiry,
                f.compression,
                f.gzip_level,
                f.zstd_level,
                f.threads,
                f.fast_path,
                f.sync_layers,
                f.config_source,
                f.squash,
                f.max_depth,
                f.auto_squash
            ),
            (
                e.lease_expiry,
                e.compression,
                e.gzip_level,
                e.zstd_level,
                e.threads,
                e.fast_path,
                e.sync_layers,
                e.config_source,
                e.squash,
                e.max_depth,
                e.auto_squash
            )
        );
        assert_eq!(
            c.commit.config_source,
            commit_engine::ConfigSource::Container
        );
    }

    #[test]
    fn the_kubernetes_deployment_commits_from_the_image_config() {
        let yaml = include_str!("../../../deploy/kubernetes/configmap.yaml");
        let body = yaml.split("commitd.toml: |\n").nth(1).unwrap();
        let toml: String = body
            .lines()
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, toml).unwrap();
        let c = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap();
        assert_eq!(c.namespace, "k8s.io");
        assert_eq!(c.commit.config_source, commit_engine::ConfigSource::Image);
        assert_eq!(c.engine().config_source, commit_engine::ConfigSource::Image);
    }

    #[test]
    fn file_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "namespace = \"k8s.io\"\nsocket = \"/tmp/a.sock\"\n[commit]\ncompression = \"none\"\n",
        )
        .unwrap();
        let c = Config::load(&cli(&[
            "--config",
            f.to_str().unwrap(),
            "--socket",
            "/tmp/b.sock",
        ]))
        .unwrap();
        assert_eq!(c.namespace, "k8s.io");
        assert_eq!(c.socket, Path::new("/tmp/b.sock"));
        assert_eq!(c.commit.compression, commit_engine::Compression::None);
        assert_eq!(c.commit.lease_expiry_secs, 3600);
    }

    #[test]
    fn source_credentials_from_the_file() {
        assert_eq!(Config::defaults().engine().source_credentials, None);
        assert!(!Config::defaults().engine().incremental, "incremental: off");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commitd.toml");
        std::fs::write(
            &path,
            "[registry]\nsource_credentials = \"/var/lib/kubelet/config.json\"\n",
        )
        .unwrap();
        let c = Config::load(&cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(
            c.engine().source_credentials.as_deref(),
            Some(Path::new("/var/lib/kubelet/config.json"))
        );
    }

    #[test]
    fn a_bad_exclude_default_stops_the_daemon_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[commit]\nexclude = [\"/tmp/**\", \"root/.cache\"]\n").unwrap();
        let e = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("commit.exclude"), "{e}");
        assert!(e.to_string().contains("root/.cache"), "{e}");
        std::fs::write(&f, "[commit]\nexclude = [\"/tmp/**\"]\n").unwrap();
        let c = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap();
        assert_eq!(c.commit.exclude, ["/tmp/**"]);
    }

    #[test]
    fn insecure_registries_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        assert!(Config::defaults().registry.insecure_registries.is_empty());
        std::fs::write(
            &f,
            "[registry]\ninsecure_registries = [\"reg.lan:5000\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let c = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap();
        assert_eq!(
            c.registry.insecure_registries,
            ["reg.lan:5000", "10.0.0.0/8"]
        );
        std::fs::write(
            &f,
            "[registry]\ninsecure_registries = [\"http://reg.lan\"]\n",
        )
        .unwrap();
        let err = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(err.contains("insecure_registries"), "{err}");
    }

    #[test]
    fn unknown_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "sockett = \"/x\"\n").unwrap();
        let err = Config::load(&cli(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(err.contains("sockett"), "{err}");
    }
}
