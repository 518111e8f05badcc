//! `GET /containers/{id}/json` (`docker inspect`; docker-py's
//! `containers.get(id)`, which agents call before `container.commit(…)`).
//! [`get_route`] serves names with slashes (`team/nb-0/app`), as Docker's
//! `{name:.*}` route does.
//!
//! **Config** is the OCI runtime spec read back (process args, env, cwd,
//! user, terminal, hostname) merged with the image config the way Docker
//! merges at create (entrypoint, labels, volumes, exposed ports);
//! **HostConfig** holds what the spec says (namespaces as modes, resource
//! limits, masked paths, bind mounts), Docker's zero values for the rest.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use commit_engine::{ContainerRecord as Container, ImageIndex};
use docker_format::image::Empty;
use docker_format::reference::familiar_name;
use docker_format::time::{ZERO_TIME, rfc3339_nano};
use oci_spec::runtime::{LinuxNamespaceType as NsKind, Process, Spec};

use super::spec::{
    int, linux, mounts, network_mode, ns_mode, options, path_text, process, resources, sandbox_key,
    sorted,
};
use super::state::{is_up, started_at};
use super::{Seen, annotations, manifest_for, see};
use crate::Api;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query, bool_value};
use crate::version::compare;
use crate::views::{self, containers as v};

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
        .restart
        .as_ref()
        .map(|p| (p.name.clone(), p.maximum_retry_count))
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
        network_mode: network_mode(ct),
        restart_policy: v::RestartPolicy {
            name,
            maximum_retry_count,
        },
        console_size: [
            console.map(|c| int(c.height())).unwrap_or(0),
            console.map(|c| int(c.width())).unwrap_or(0),
        ],
        annotations: annotations(spec, version),
        cgroupns_mode: ns_mode(ct, NsKind::Cgroup, "private"),
        ipc_mode: ns_mode(ct, NsKind::Ipc, "private"),
        oom_score_adj: process
            .and_then(|p| p.oom_score_adj())
            .map(i64::from)
            .unwrap_or(0),
        pid_mode: ns_mode(ct, NsKind::Pid, ""),
        readonly_rootfs: spec
            .and_then(|s| s.root().as_ref())
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        uts_mode: ns_mode(ct, NsKind::Uts, ""),
        shm_size: shm,
        sysctls: sorted(linux.and_then(|l| l.sysctl().as_ref())),
        runtime: ct.runtime.clone(),
        resources: resources_of(spec),
        masked_paths: linux.and_then(|l| l.masked_paths().clone()),
        readonly_paths: linux.and_then(|l| l.readonly_paths().clone()),
        ..Default::default()
    }
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
    let images = api.engine().images().index().await?;
    let s = see(api, ct, &images).await?;
    let mut body = inspect_body(&s, &images, version, Utc::now().timestamp());
    if size && let Some(size) = crate::routes::df::sizes(api, &s.ct).await {
        // Pointers: present even when zero.
        body.size_rw = Some(size.rw);
        body.size_root_fs = Some(size.root_fs);
    }
    Ok(views::json(StatusCode::OK, &body))
}

/// Docker's `ContainerInspectResponse`.
fn inspect_body(s: &Seen, images: &ImageIndex, version: &str, now: i64) -> v::ContainerInspect {
    let spec = s.spec();
    let process = process(spec);
    let args = s.args();
    let entry = images.get(&s.image);
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
        sandbox_id: s.ct.sandbox.clone().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{container, named, seen, task, to_json};
    use super::super::list::summary;
    use super::super::spec::mount_points;
    use super::*;
    use commit_engine::{ImageIndex, TaskInfo, TaskState};
    use serde_json::{Value, json};

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

        // The engine reads nerdctl's networks and the CRI sandbox; these
        // are its typed answers.
        let with = |json_spec: Value, sandbox: Option<&str>, networks: &[&str]| Container {
            sandbox: sandbox.map(str::to_string),
            networks: networks.iter().map(|n| n.to_string()).collect(),
            ..container("n1", &[], json_spec)
        };
        let host = with(
            json!({ "linux": { "namespaces": [{ "type": "pid" }] } }),
            None,
            &[],
        );
        assert_eq!(network_mode(&host), "host");
        let fresh = json!({ "linux": { "namespaces": [{ "type": "network" }] } });
        assert_eq!(
            network_mode(&with(fresh.clone(), None, &["bridge"])),
            "bridge"
        );
        assert_eq!(network_mode(&with(fresh, None, &[])), "none");
        let cri = with(
            json!({
                "linux": { "namespaces": [
                    { "type": "network", "path": "/var/run/netns/cni-1" },
                    { "type": "ipc", "path": "/proc/9/ns/ipc" },
                ] },
            }),
            Some("5a00"),
            &[],
        );
        assert_eq!(network_mode(&cri), "container:5a00");
        assert_eq!(ns_mode(&cri, NsKind::Ipc, "private"), "container:5a00");
        assert_eq!(sandbox_key(cri.spec.as_ref()), "/var/run/netns/cni-1");
        assert_eq!(network_mode(&with(Value::Null, None, &[])), "");
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
        let ct = named(
            "web",
            container(
                "c1",
                &[],
                json!({"process": {"args": ["sh", "-c", "sleep 1"], "cwd": "/", "env": ["A=1"],
                                   "user": {"uid": 0, "gid": 0}},
                       "linux": {"namespaces": [{"type": "network"}]}}),
            ),
        );
        let running = TaskInfo {
            pid: 42,
            started_at: Some(0),
            ..task(TaskState::Paused)
        };
        let s = seen(ct, running);
        let images = ImageIndex::new(Vec::new());
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
