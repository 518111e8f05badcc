//! Shared by the fuzz targets: the parent image configs a commit completes
//! its config from (the route's `parent`), and small checks.

#![allow(dead_code)]

use docker_format::image::{Empty, HealthConfig, RunConfig};

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

/// The parents every input is tried against: none (an image without a
/// config) and a busy one with every field the builder reads or merges.
/// Every parent `Env` entry has a `=` (the checks rely on it).
pub fn parents() -> Vec<RunConfig> {
    vec![
        RunConfig::default(),
        RunConfig {
            user: Some("app".into()),
            exposed_ports: Some([("80/tcp".to_string(), Empty {})].into()),
            env: strings(&[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "EMPTY=",
                "EQ=a=b",
                "SP=x y\tz",
            ]),
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["sh"]),
            healthcheck: Some(HealthConfig {
                test: strings(&["CMD", "check"]),
                interval: 5_000_000_000,
                retries: 2,
                ..Default::default()
            }),
            args_escaped: Some(true),
            volumes: Some([("/data".to_string(), Empty {})].into()),
            working_dir: Some("/srv/app".into()),
            on_build: strings(&["RUN true"]),
            labels: Some([("team".to_string(), "infra".to_string())].into()),
            stop_signal: Some("SIGTERM".into()),
            shell: strings(&["/bin/bash", "-c"]),
            extra: Default::default(),
        },
    ]
}

/// A config survives the JSON it is written into an image config as.
pub fn assert_json_round_trip(c: &RunConfig) {
    let json = serde_json::to_vec(c).expect("a RunConfig serializes");
    let back: RunConfig = serde_json::from_slice(&json).expect("its JSON reads back");
    assert_eq!(
        &back,
        c,
        "RunConfig JSON round trip: {}",
        String::from_utf8_lossy(&json)
    );
}

/// `env` key (before the first `=`).
pub fn env_key(e: &str) -> &str {
    e.split('=').next().unwrap_or("")
}
