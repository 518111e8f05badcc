//! The JSON of `docker ps` and `docker inspect` for real containers, held
//! to a recorded answer (`tests/golden/container_views.json`): containers
//! made by `ctr` with nerdctl's name label (running with mounts, limits and
//! an environment; paused on the host's network; stopped; created; from a
//! committed image with an entrypoint whose name later moved) and a
//! Kubernetes pod made through the real CRI plugin, each read under several
//! API versions, plus `ps` filters. Whatever changes in these answers shows
//! as a difference here, field by field.
//!
//! Volatile values are masked before comparing: times, PIDs, uptimes, the
//! host's name, temp paths, pod names, and every 64-hex ID (numbered by
//! first appearance, so a swapped or lost ID still shows).
//!
//! When an answer changes on purpose, record it again:
//! `COMMITD_BLESS=1 cargo test -p commitd-e2e --test container_views`, and
//! read the diff of the golden file before committing it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use commitd_e2e::{Daemon, World, daemon};
use commitd_testkit::{CRI_NAMESPACE, KubeContainer, KubePod, shared_cri};
use serde_json::{Value, json};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/container_views.json");

/// API versions whose answers differ: old network fields and no
/// annotations (1.41), the manifest descriptor (1.48), the newest (1.53).
const VERSIONS: &[&str] = &["v1.41", "v1.48", "v1.53"];

fn get(d: &Daemon, path: &str) -> Value {
    let (code, body) = d.curl("GET", path, None, &[]);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `ps -a` under each version and `inspect` of each container under each.
fn views(d: &Daemon, names: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for v in VERSIONS {
        out.insert(
            format!("ps {v}"),
            get(d, &format!("/{v}/containers/json?all=1")),
        );
        for name in names {
            out.insert(
                format!("inspect {name} {v}"),
                get(d, &format!("/{v}/containers/{name}/json")),
            );
        }
    }
    Value::Object(out)
}

/// The names `ps` lists for a filter (`all=1`).
fn ps_names(d: &Daemon, filters: Value) -> Value {
    let q: String = filters
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = d.curl(
        "GET",
        &format!("/containers/json?all=1&filters={q}"),
        None,
        &[],
    );
    if code != 200 {
        return json!({ "status": code, "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)) });
    }
    let list: Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_string())
        .collect();
    names.sort();
    json!(names)
}

/// Masks what differs from run to run.
struct Mask {
    /// Literal strings replaced by a placeholder, longest first.
    literals: Vec<(String, String)>,
    /// 64-hex IDs by first appearance.
    ids: BTreeMap<String, String>,
}

impl Mask {
    fn new(literals: &[(&str, &str)]) -> Self {
        let mut literals: Vec<(String, String)> = literals
            .iter()
            .filter(|(from, _)| from.len() >= 4)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        literals.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        Self {
            literals,
            ids: BTreeMap::new(),
        }
    }

    fn value(&mut self, key: &str, v: &Value) -> Value {
        match v {
            // A committed image's manifest names its config's size, whose
            // digit count follows the config's `created` (Go's RFC 3339
            // with trailing zeros of the nanoseconds dropped).
            Value::Object(m) if key == "ImageManifestDescriptor" => Value::Object(
                m.iter()
                    .map(|(k, v)| match k.as_str() {
                        "size" => (k.clone(), json!("<size>")),
                        _ => (self.text(k), self.value(k, v)),
                    })
                    .collect(),
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (self.text(k), self.value(k, v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.value(key, v)).collect()),
            Value::String(s) if key == "SandboxKey" && s.starts_with("/proc/") => {
                json!("/proc/<pid>/ns/net")
            }
            Value::String(s) => Value::String(Self::termination_log(self.field(key, s))),
            Value::Number(n) if key == "Pid" && n.as_i64() != Some(0) => json!("<pid>"),
            Value::Number(_) if key == "Created" => json!("<time>"),
            other => other.clone(),
        }
    }

    fn field(&mut self, key: &str, s: &str) -> String {
        match key {
            "Created" | "StartedAt" | "FinishedAt" if s != "0001-01-01T00:00:00Z" => {
                "<time>".into()
            }
            "Status" if s.starts_with("Up ") => match s.strip_suffix(" (Paused)") {
                Some(_) => "Up <t> (Paused)".into(),
                None => "Up <t>".into(),
            },
            "Status" if s.starts_with("Exited (") && s.ends_with(" ago") => {
                let code = s.split(')').next().unwrap_or_default();
                format!("{code}) <t> ago")
            }
            _ => self.text(s),
        }
    }

    /// kubelet's per-attempt termination-log file name is random.
    fn termination_log(s: String) -> String {
        const AT: &str = "/containers/app/";
        match s.find(AT) {
            Some(i) if s.len() >= i + AT.len() + 8 => {
                format!("{}{AT}<n>{}", &s[..i], &s[i + AT.len() + 8..])
            }
            _ => s,
        }
    }

    fn text(&mut self, s: &str) -> String {
        let mut s = s.to_string();
        for (from, to) in &self.literals {
            s = s.replace(from.as_str(), to);
        }
        // 64-hex runs.
        let bytes = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let run = bytes[i..]
                .iter()
                .take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                .count();
            if run >= 64 {
                let id = &s[i..i + run];
                let n = self.ids.len() + 1;
                let tag = self.ids.entry(id.to_string()).or_insert(format!("<id{n}>"));
                out.push_str(tag);
                i += run;
            } else if run > 0 {
                out.push_str(&s[i..i + run]);
                i += run;
            } else {
                let ch = s[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Containers of a plain containerd namespace, made with `ctr` as nerdctl
/// users' would be.
fn ctr_views() -> Value {
    let w = World::new("views");
    let d = daemon!(w);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let mut run = w.ctr.command();
    run.args(["run", "-d", "--null-io", "--snapshotter", "overlayfs"])
        .args(["--label", "nerdctl/name=web", "--label", "team=infra"])
        .args(["--env", "A=1", "--env", "B=two words", "--cwd", "/tmp"])
        .args(["--memory-limit", "536870912", "--cpu-quota", "50000"])
        .args(["--cpu-period", "100000", "--cpu-shares", "512"])
        .arg("--mount")
        .arg(format!(
            "type=bind,src={data_dir},dst=/data,options=rbind:ro"
        ))
        .arg("--mount")
        .arg(format!(
            "type=bind,src={data_dir},dst=/rw,options=rbind:rw:rslave"
        ))
        .args(["--annotation", "org.example/purpose=views"])
        .args([&w.image, "web1", "sh", "-c", "sleep 100000"]);
    assert!(run.status().unwrap().success(), "ctr run web1");
    let mut host = w.ctr.command();
    host.args(["run", "-d", "--null-io", "--snapshotter", "overlayfs"])
        .args(["--net-host", "--read-only", "--label", "nerdctl/name=host"])
        .args([&w.image, "host1", "sleep", "100000"]);
    assert!(host.status().unwrap().success(), "ctr run host1");
    w.ctr.pause("host1").unwrap();
    w.running("stopped1", "");
    w.ctr.kill_task("stopped1").unwrap();
    w.ctr
        .create(&w.image, "created1", &[("nerdctl/name", "made")])
        .unwrap();
    // An image with an entrypoint, a container of it, then its name moved
    // to another commit: the container keeps its image (by ID).
    d.docker_ok(&[
        "commit",
        "--change",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        "--change",
        r#"CMD ["sleep 100000"]"#,
        "--change",
        "EXPOSE 8080/tcp",
        "--change",
        "VOLUME /cache",
        "--change",
        "WORKDIR /srv",
        "--change",
        "LABEL tier=web",
        "--change",
        "ENV MODE=prod",
        "web",
        "app:1",
    ]);
    let mut ep = w.ctr.command();
    ep.args(["run", "-d", "--null-io", "--snapshotter", "overlayfs"])
        .args(["--label", "nerdctl/name=ep"])
        .args(["docker.io/library/app:1", "ep1"]);
    assert!(ep.status().unwrap().success(), "ctr run ep1");
    // Record times are in seconds: the move must come a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    d.docker_ok(&["commit", "--change", "LABEL tier=api", "web", "app:1"]);
    let names = ["web", "host", "stopped1-name", "made", "ep", "ep1"];
    let mut out = views(&d, &names);
    let ep_image = out["inspect ep v1.53"]["Image"]
        .as_str()
        .unwrap()
        .to_string();
    let short = ep_image["sha256:".len().."sha256:".len() + 12].to_string();
    let filters = [
        json!({"status": ["paused"]}),
        json!({"status": ["exited"]}),
        json!({"label": ["team=infra"]}),
        json!({"label": ["tier"]}),
        json!({"name": ["^/?e"]}),
        json!({"id": ["web1"]}),
        json!({"id": ["w"]}),
        json!({"ancestor": [w.image.clone()]}),
        json!({"ancestor": ["app:1"]}),
        json!({"ancestor": [ep_image.clone()]}),
        json!({"ancestor": [short.clone()]}),
        json!({"volume": ["/data"]}),
        json!({"before": ["ep"]}),
        json!({"since": ["host"]}),
        json!({"exited": ["137"]}),
        json!({"network": ["host"]}),
        json!({"health": ["none"]}),
    ];
    for f in filters {
        let key = format!("ps filters={f}")
            .replace(&ep_image, "<ID of ep's image>")
            .replace(&short, "<short ID of ep's image>");
        let names = ps_names(&d, f);
        out.as_object_mut().unwrap().insert(key, names);
    }
    let mut mask = Mask::new(&[
        (&data_dir, "<data>"),
        (&w.ns, "<ns>"),
        (&hostname(), "<hostname>"),
    ]);
    mask.value("", &out)
}

/// A Kubernetes pod made through the real CRI plugin, as kubelet makes it.
fn cri_views() -> Value {
    let node = shared_cri();
    let base = node.base_image().unwrap();
    let pod = node.run_pod(KubePod::unique("team", "views")).unwrap();
    let app = pod
        .start(
            &KubeContainer::new("app", &base)
                .command(&["sh", "-c", "sleep 100000"])
                .env("MODE", "test")
                .working_dir("/work")
                .empty_dir("/scratch"),
        )
        .unwrap();
    let d = Daemon::start(
        env!("CARGO_BIN_EXE_commitd-under-test"),
        node.socket(),
        CRI_NAMESPACE,
        &[],
    );
    let name = format!("team/{}/app", pod.spec.name);
    let out = views(&d, &[&name, &app]);
    let root = node.containerd().root().to_str().unwrap().to_string();
    let kubelet = node.kubelet_dir().to_str().unwrap().to_string();
    let pod_dir = pod.dir().to_str().unwrap().to_string();
    let pod_name = pod.spec.name.clone();
    let dir = node
        .containerd()
        .dir()
        .map(|d| d.to_str().unwrap().to_string())
        .unwrap_or_else(|| root.clone());
    let registry = node.registry().host();
    let mut mask = Mask::new(&[
        (&dir, "<dir>"),
        (&registry, "<registry>"),
        (&pod_dir, "<pod-dir>"),
        (&kubelet, "<kubelet>"),
        (&root, "<root>"),
        (&pod.spec.uid, "<pod-uid>"),
        (&pod.spec.annotations["kubernetes.io/config.seen"], "<seen>"),
        (&pod_name, "<pod>"),
        (&hostname(), "<hostname>"),
    ]);
    // Other tests' pods share the node: only this pod's containers.
    let mut out = mask.value("", &out);
    for (k, v) in out.as_object_mut().unwrap() {
        if k.starts_with("ps ") {
            let kept: Vec<Value> = v
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c.to_string().contains("<pod>"))
                .cloned()
                .collect();
            *v = Value::Array(kept);
        }
    }
    out
}

#[test]
fn ps_and_inspect_answer_as_recorded() {
    let got = json!({ "ctr": ctr_views(), "cri": cri_views() });
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("COMMITD_BLESS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, &text).unwrap();
        return;
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(GOLDEN)
            .unwrap_or_else(|e| panic!("{GOLDEN}: {e} (record it with COMMITD_BLESS=1)")),
    )
    .unwrap();
    let mut diffs = Vec::new();
    diff("", &want, &got, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} differences from {GOLDEN}:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Every path where `want` and `got` differ.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: missing (was {x})")),
                    (None, Some(y)) => out.push(format!("{p}: new: {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{i}"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}
