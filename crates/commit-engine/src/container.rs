//! Finding a container the way Docker users name one: full ID, name, or a
//! unique ID prefix; and reading what a commit needs from its record.

use std::collections::HashMap;

use containerd_client::services::v1::{Container, GetContainerRequest, ListContainersRequest};
use oci_spec::runtime::Spec;
use serde_json::{Map, Value};

use crate::client::Containerd;
use crate::error::{Error, Result};

/// nerdctl's label for a container's name (what `docker ps` shows as NAMES).
pub(crate) const NAME_LABEL: &str = "nerdctl/name";
/// nerdctl's label for the platform a container's image was chosen for.
pub(crate) const PLATFORM_LABEL: &str = "nerdctl/platform";
/// The CRI plugin's labels: Kubernetes containers are named by these.
pub(crate) const K8S_CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
pub(crate) const K8S_POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub(crate) const K8S_POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The CRI plugin's label: `sandbox` or `container`.
pub(crate) const CRI_KIND_LABEL: &str = "io.cri-containerd.kind";
/// The CRI plugin's annotations on a container's spec: whether it is a
/// pod's sandbox or an app container, and which sandbox it belongs to.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// nerdctl's label listing a container's networks (a JSON array).
const NERDCTL_NETWORKS_LABEL: &str = "nerdctl/networks";
/// containerd's restart manager's label: `name[:count]`.
const RESTART_POLICY_LABEL: &str = "containerd.io/restart.policy";

/// Resolves `query` as Docker does: an exact ID, then an exact name, then a
/// unique ID prefix. Kubernetes containers also answer to
/// `<pod>/<container>` and `<pod-namespace>/<pod>/<container>`; when
/// several attempts of a restarted container answer (kubelet keeps the
/// exited one beside the new one, with the same labels), the running one
/// is meant, else the newest.
pub(crate) async fn resolve(c: &Containerd, query: &str) -> Result<Container> {
    if query.is_empty() {
        return Err(Error::ContainerNotFound(String::new()));
    }
    match get(c, query).await {
        Ok(found) => return Ok(found),
        Err(e) if e.kind() == Some(crate::error::Kind::NotFound) => {}
        Err(e) => return Err(e),
    }
    let all = list(c, Vec::new()).await?;
    let by_name: Vec<&Container> = all.iter().filter(|ct| answers_to_name(ct, query)).collect();
    match by_name.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        many => {
            if let Some(one) = current_attempt(c, many).await? {
                return Ok(one.clone());
            }
            return Err(Error::AmbiguousContainer {
                prefix: query.to_string(),
                matches: many.iter().map(|ct| ct.id.clone()).collect(),
            });
        }
    }
    let mut by_prefix: Vec<Container> = all
        .into_iter()
        .filter(|ct| ct.id.starts_with(query))
        .collect();
    match by_prefix.len() {
        0 => Err(Error::ContainerNotFound(query.to_string())),
        1 => Ok(by_prefix.remove(0)),
        _ => Err(Error::AmbiguousContainer {
            prefix: query.to_string(),
            matches: by_prefix.into_iter().map(|ct| ct.id).collect(),
        }),
    }
}

/// The app containers of a pod (`namespace`/`pod`), each by its name and
/// its current attempt ([`current_attempt`]), in name order. The sandbox
/// has no container name and is not one of them.
pub(crate) async fn pod_containers(
    c: &Containerd,
    namespace: &str,
    pod: &str,
) -> Result<Vec<(String, Container)>> {
    let all = list(c, Vec::new()).await?;
    let mut by_name: std::collections::BTreeMap<String, Vec<&Container>> = Default::default();
    for ct in &all {
        let label = |k: &str| ct.labels.get(k).map(String::as_str);
        if label(K8S_POD_NAME_LABEL) != Some(pod)
            || label(K8S_POD_NAMESPACE_LABEL).unwrap_or("default") != namespace
        {
            continue;
        }
        if let Some(name) = label(K8S_CONTAINER_NAME_LABEL) {
            by_name.entry(name.to_string()).or_default().push(ct);
        }
    }
    let mut out = Vec::new();
    for (name, attempts) in by_name {
        if let Some(ct) = current_attempt(c, &attempts).await? {
            out.push((name, ct.clone()));
        }
    }
    Ok(out)
}

/// The attempt users mean among Kubernetes containers of one name: the one
/// whose task runs (or is paused), else the newest. `None` when they are
/// not all Kubernetes containers.
async fn current_attempt<'a>(
    c: &Containerd,
    attempts: &[&'a Container],
) -> Result<Option<&'a Container>> {
    if !attempts
        .iter()
        .all(|ct| ct.labels.contains_key(K8S_CONTAINER_NAME_LABEL))
    {
        return Ok(None);
    }
    let mut live = Vec::with_capacity(attempts.len());
    for ct in attempts {
        let state = crate::task::state(c, &ct.id).await?;
        live.push(matches!(
            state,
            crate::task::TaskState::Running | crate::task::TaskState::Paused
        ));
    }
    Ok(pick_attempt(attempts, &live))
}

/// [`current_attempt`]'s choice: the newest live attempt, else the newest.
fn pick_attempt<'a>(attempts: &[&'a Container], live: &[bool]) -> Option<&'a Container> {
    let created = |ct: &Container| ct.created_at.map(|t| (t.seconds, t.nanos));
    let newest = |only_live: bool| {
        attempts
            .iter()
            .zip(live)
            .filter(|(_, l)| **l || !only_live)
            .max_by_key(|(ct, _)| created(ct))
            .map(|(ct, _)| *ct)
    };
    newest(true).or_else(|| newest(false))
}

fn answers_to_name(ct: &Container, query: &str) -> bool {
    let label = |k: &str| ct.labels.get(k).map(String::as_str);
    if label(NAME_LABEL) == Some(query.trim_start_matches('/')) {
        return true;
    }
    let (Some(container), Some(pod)) = (label(K8S_CONTAINER_NAME_LABEL), label(K8S_POD_NAME_LABEL))
    else {
        return false;
    };
    // A pod's sandbox ("pause") container carries the pod labels too but no
    // container name label, so it never matches here.
    let pod_ns = label(K8S_POD_NAMESPACE_LABEL).unwrap_or("default");
    query == format!("{pod}/{container}") || query == format!("{pod_ns}/{pod}/{container}")
}

/// The name users know a container by: nerdctl's name label, Kubernetes'
/// `namespace/pod/container`, or its ID.
pub(crate) fn display_name(ct: &Container) -> String {
    let label = |k: &str| ct.labels.get(k).map(String::as_str);
    if let Some(n) = label(NAME_LABEL) {
        return n.to_string();
    }
    // A pod's sandbox, as nerdctl shows it.
    if let (Some("sandbox"), Some(p)) = (label(CRI_KIND_LABEL), label(K8S_POD_NAME_LABEL)) {
        return format!(
            "k8s://{}/{p}",
            label(K8S_POD_NAMESPACE_LABEL).unwrap_or("default")
        );
    }
    if let (Some(c), Some(p)) = (label(K8S_CONTAINER_NAME_LABEL), label(K8S_POD_NAME_LABEL)) {
        return format!(
            "{}/{p}/{c}",
            label(K8S_POD_NAMESPACE_LABEL).unwrap_or("default")
        );
    }
    ct.id.clone()
}

async fn get(c: &Containerd, id: &str) -> Result<Container> {
    let req = c.request(GetContainerRequest { id: id.to_string() });
    let resp = c
        .containers()
        .get(req)
        .await
        .map_err(|s| c.err("container get", s))?;
    resp.into_inner()
        .container
        .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
}

pub(crate) async fn list(c: &Containerd, filters: Vec<String>) -> Result<Vec<Container>> {
    let req = c.request(ListContainersRequest { filters });
    let resp = c
        .containers()
        .list(req)
        .await
        .map_err(|s| c.err("container list", s))?;
    Ok(resp.into_inner().containers)
}

/// What the container's OCI runtime spec says of how it runs (process
/// args, env, cwd, user): with its labels, the stuff Docker's container
/// config is rebuilt from. `None` without a readable spec.
pub(crate) fn runtime(ct: &Container) -> Option<docker_format::container::Runtime> {
    let spec = read_spec(&ct.spec.as_ref()?.value)?;
    Some(docker_format::container::Runtime::from_spec(&spec))
}

/// A container as the engine shows it: containerd's record, in the
/// engine's words.
#[derive(Debug, Clone, Default)]
pub struct ContainerRecord {
    pub id: String,
    /// The name users know it by: nerdctl's name label, Kubernetes'
    /// `namespace/pod/container`, or its ID.
    pub name: String,
    /// Its image record's name ("" for a container without one).
    pub image: String,
    pub labels: HashMap<String, String>,
    /// Unix seconds and nanoseconds of its creation.
    pub created: Option<(i64, i32)>,
    pub snapshotter: String,
    pub snapshot_key: String,
    /// The runtime's name (`io.containerd.runc.v2`).
    pub runtime: String,
    /// Its OCI runtime spec (`None` when it has none or it does not read;
    /// see [`read_spec`]).
    pub spec: Option<Spec>,
    /// The restart policy a manager keeps it running by (containerd's
    /// restart label), if it has one.
    pub restart: Option<RestartPolicy>,
    /// The networks nerdctl attached it to, in its order.
    pub networks: Vec<String>,
    /// For a Kubernetes app container: the ID of its pod's sandbox, whose
    /// namespaces it joined.
    pub sandbox: Option<String>,
}

/// A restart policy: its name (`always`, `on-failure`, `unless-stopped`)
/// and, for `on-failure`, how many restarts it allows (0: no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// containerd's restart label read: `name` or `name:count` (a count that
/// does not read is 0).
fn restart_policy(labels: &HashMap<String, String>) -> Option<RestartPolicy> {
    let p = labels.get(RESTART_POLICY_LABEL)?;
    Some(match p.split_once(':') {
        Some((name, n)) => RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: n.parse::<i64>().unwrap_or(0),
        },
        None => RestartPolicy {
            name: p.clone(),
            maximum_retry_count: 0,
        },
    })
}

/// nerdctl's networks label read (none when it does not read).
fn networks(labels: &HashMap<String, String>) -> Vec<String> {
    labels
        .get(NERDCTL_NETWORKS_LABEL)
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .unwrap_or_default()
}

/// The CRI sandbox a Kubernetes app container shares namespaces with.
fn cri_sandbox(spec: Option<&Spec>) -> Option<String> {
    let ann = spec?.annotations().as_ref()?;
    (ann.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("container"))
        .then(|| ann.get(CRI_SANDBOX_ID))
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
}

impl ContainerRecord {
    pub(crate) fn of(ct: Container) -> Self {
        let spec = ct.spec.as_ref().and_then(|s| read_spec(&s.value));
        Self {
            name: display_name(&ct),
            created: ct.created_at.map(|t| (t.seconds, t.nanos)),
            runtime: ct.runtime.map(|r| r.name).unwrap_or_default(),
            restart: restart_policy(&ct.labels),
            networks: networks(&ct.labels),
            sandbox: cri_sandbox(spec.as_ref()),
            id: ct.id,
            image: ct.image,
            labels: ct.labels,
            snapshotter: ct.snapshotter,
            snapshot_key: ct.snapshot_key,
            spec,
        }
    }
}

/// Reads a container's OCI runtime spec (JSON).
///
/// oci-spec's vocabularies are closed (capabilities, rlimit types, seccomp
/// actions and architectures, …) and a few fields are required (the
/// process's `user` and `cwd`); a spec from a newer runtime, or one a client
/// wrote by hand, may not read whole. Rather than lose the whole spec over
/// one such word, it is read again with only the parts a container's view
/// is made of — the process's basics, root, hostname, mounts, annotations,
/// namespaces, resource limits, masked and read-only paths, sysctls, mount
/// label — and a missing `user`/`cwd` as root and "". `None` when not even
/// those read (or it is not JSON).
pub(crate) fn read_spec(json: &[u8]) -> Option<Spec> {
    if let Ok(spec) = serde_json::from_slice(json) {
        return Some(spec);
    }
    let whole: Value = serde_json::from_slice(json).ok()?;
    let mut spec = pick(
        &whole,
        &[
            "ociVersion",
            "hostname",
            "domainname",
            "root",
            "mounts",
            "annotations",
        ],
    );
    if whole.get("process").is_some_and(Value::is_object) {
        let mut process = pick(
            &whole["process"],
            &[
                "terminal",
                "consoleSize",
                "args",
                "env",
                "cwd",
                "oomScoreAdj",
                "apparmorProfile",
                "selinuxLabel",
            ],
        );
        process.insert(
            "user".into(),
            Value::Object(pick(&whole["process"]["user"], &["uid", "gid"])),
        );
        process.entry("cwd").or_insert_with(|| Value::from(""));
        spec.insert("process".into(), Value::Object(process));
    }
    if whole.get("linux").is_some_and(Value::is_object) {
        let linux = &whole["linux"];
        let mut out = pick(
            linux,
            &[
                "namespaces",
                "maskedPaths",
                "readonlyPaths",
                "sysctl",
                "mountLabel",
            ],
        );
        if linux.get("resources").is_some_and(Value::is_object) {
            let res = &linux["resources"];
            let mut r = pick(res, &["memory", "cpu", "pids"]);
            if res.get("blockIO").is_some_and(Value::is_object) {
                r.insert(
                    "blockIO".into(),
                    Value::Object(pick(&res["blockIO"], &["weight"])),
                );
            }
            out.insert("resources".into(), Value::Object(r));
        }
        spec.insert("linux".into(), Value::Object(out));
    }
    match serde_json::from_value(Value::Object(spec)) {
        Ok(spec) => {
            tracing::debug!("runtime spec read without the parts oci-spec does not know");
            Some(spec)
        }
        Err(e) => {
            tracing::debug!(cause = %e, "runtime spec does not read");
            None
        }
    }
}

/// The `keys` of a JSON object that it has.
fn pick(v: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some((k.to_string(), v.get(*k)?.clone())))
        .collect()
}

/// The containers of the engine's namespace, read only.
pub struct Containers<'a> {
    pub(crate) c: &'a Containerd,
}

impl Containers<'_> {
    pub async fn list(&self) -> Result<Vec<ContainerRecord>> {
        Ok(list(self.c, Vec::new())
            .await?
            .into_iter()
            .map(ContainerRecord::of)
            .collect())
    }

    /// The container a user named: an exact ID, then an exact name (also
    /// `pod/container` and `namespace/pod/container`), then a unique ID
    /// prefix.
    pub async fn resolve(&self, query: &str) -> Result<ContainerRecord> {
        resolve(self.c, query).await.map(ContainerRecord::of)
    }

    /// Its task (no task: `state` is [`TaskState::None`]); for an exited
    /// Kubernetes container, whose task the CRI plugin deleted, the exit
    /// the plugin keeps ([`TaskState::Stopped`]).
    ///
    /// [`TaskState::None`]: crate::task::TaskState::None
    /// [`TaskState::Stopped`]: crate::task::TaskState::Stopped
    pub async fn task(&self, id: &str) -> Result<crate::task::TaskInfo> {
        let info = crate::task::info(self.c, id).await?;
        if info.state == Some(crate::task::TaskState::None) {
            if let Some(exited) = crate::task::cri_exit(self.c, id).await {
                return Ok(exited);
            }
        }
        Ok(info)
    }

    /// The image `ct` was made from, among `images`
    /// ([`ImageIndex::image_of`], by its snapshot's parent).
    ///
    /// [`ImageIndex::image_of`]: crate::catalog::ImageIndex::image_of
    pub async fn image_of(
        &self,
        ct: &ContainerRecord,
        images: &crate::catalog::ImageIndex,
    ) -> crate::catalog::ImageOf {
        images.image_of(ct, self.snapshot_parent(ct).await.as_deref())
    }

    /// The parent of its snapshot: the chain ID of the layers it stands on
    /// (none when it cannot be read).
    async fn snapshot_parent(&self, ct: &ContainerRecord) -> Option<String> {
        if ct.snapshot_key.is_empty() {
            return None;
        }
        crate::snapshot::Snapshots::new(self.c, snapshotter_of(&ct.snapshotter))
            .stat(&ct.snapshot_key)
            .await
            .ok()
            .map(|i| i.parent)
            .filter(|p| !p.is_empty())
    }
}

/// A container's snapshotter: containerd's default when it names none.
pub(crate) fn snapshotter_of(name: &str) -> &str {
    if name.is_empty() { "overlayfs" } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(id: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names_come_from_nerdctl_and_kubernetes_labels() {
        let n = ct("abc", &[(NAME_LABEL, "web")]);
        assert!(answers_to_name(&n, "web"));
        assert!(answers_to_name(&n, "/web"));
        assert!(!answers_to_name(&n, "we"));
        let k = ct(
            "def",
            &[
                (K8S_CONTAINER_NAME_LABEL, "app"),
                (K8S_POD_NAME_LABEL, "nb-0"),
                (K8S_POD_NAMESPACE_LABEL, "team"),
            ],
        );
        assert!(answers_to_name(&k, "nb-0/app"));
        assert!(answers_to_name(&k, "team/nb-0/app"));
        assert!(!answers_to_name(&k, "app"));
        let sandbox = ct("ghi", &[(K8S_POD_NAME_LABEL, "nb-0")]);
        assert!(!answers_to_name(&sandbox, "nb-0/app"));
    }

    #[test]
    fn the_running_attempt_else_the_newest() {
        let at = |id: &str, secs: i64| Container {
            created_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..ct(id, &[])
        };
        let (old, new, newer) = (at("old", 1), at("new", 2), at("newer", 3));
        let all = [&old, &new, &newer];
        let id = |c: Option<&Container>| c.map(|c| c.id.clone());
        assert_eq!(
            id(pick_attempt(&all, &[false, true, false])),
            Some("new".into())
        );
        assert_eq!(
            id(pick_attempt(&all, &[false, false, false])),
            Some("newer".into())
        );
        assert_eq!(
            id(pick_attempt(&all, &[true, true, false])),
            Some("new".into())
        );
        assert_eq!(id(pick_attempt(&[], &[])), None);
    }

    #[test]
    fn records_are_named_as_users_know_them() {
        let named = |labels: &[(&str, &str)]| ContainerRecord::of(ct("abc", labels)).name;
        assert_eq!(named(&[(NAME_LABEL, "web")]), "web");
        assert_eq!(
            named(&[
                (K8S_POD_NAMESPACE_LABEL, "team"),
                (K8S_POD_NAME_LABEL, "nb-0"),
                (K8S_CONTAINER_NAME_LABEL, "app"),
            ]),
            "team/nb-0/app"
        );
        assert_eq!(named(&[]), "abc");
        assert_eq!(
            named(&[
                (CRI_KIND_LABEL, "sandbox"),
                (K8S_POD_NAMESPACE_LABEL, "team"),
                (K8S_POD_NAME_LABEL, "nb-0"),
            ]),
            "k8s://team/nb-0"
        );
    }

    #[test]
    fn runtime_read_from_spec() {
        let mut c = ct("x", &[]);
        c.spec = Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: br#"{"process":{"args":["sh","-c","echo hi"],"cwd":"/"}}"#.to_vec(),
        });
        let rt = runtime(&c).unwrap();
        assert_eq!(rt.args.unwrap(), ["sh", "-c", "echo hi"]);
        assert!(runtime(&ct("y", &[])).is_none());
    }

    #[test]
    fn specs_read_typed_even_with_words_oci_spec_does_not_know() {
        let spec = read_spec(
            br#"{"ociVersion":"1.0.2","hostname":"box",
                "process":{"args":["sh"],"cwd":"/w","user":{"uid":1000,"gid":0},
                           "capabilities":{"bounding":["CAP_FROM_THE_FUTURE"]}},
                "linux":{"namespaces":[{"type":"network"}],
                         "seccomp":{"defaultAction":"SCMP_ACT_NEW"},
                         "resources":{"memory":{"limit":1024},
                                      "blockIO":{"weight":10,"weightDevice":[{"bogus":1}]}}}}"#,
        )
        .unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.cwd().to_str(), Some("/w"));
        assert!(process.capabilities().is_none());
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 1);
        assert!(linux.seccomp().is_none());
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(1024));
        assert_eq!(res.block_io().as_ref().unwrap().weight(), Some(10));
        // A process with no user or cwd: root, "".
        let bare = read_spec(br#"{"process":{"args":["sh"]}}"#).unwrap();
        assert_eq!(bare.process().as_ref().unwrap().user().uid(), 0);
        assert!(read_spec(b"not json").is_none());
        assert!(read_spec(br#"{"linux":{"namespaces":[{"type":"nope"}]}}"#).is_none());
    }

    #[test]
    fn runtime_labels_and_annotations_read_typed() {
        let labels = |kv: &[(&str, &str)]| ct("c", kv).labels;
        let p = |name: &str, n| {
            Some(RestartPolicy {
                name: name.into(),
                maximum_retry_count: n,
            })
        };
        assert_eq!(
            restart_policy(&labels(&[(RESTART_POLICY_LABEL, "on-failure:3")])),
            p("on-failure", 3)
        );
        assert_eq!(
            restart_policy(&labels(&[(RESTART_POLICY_LABEL, "always")])),
            p("always", 0)
        );
        assert_eq!(
            restart_policy(&labels(&[(RESTART_POLICY_LABEL, "on-failure:x")])),
            p("on-failure", 0)
        );
        assert_eq!(restart_policy(&labels(&[])), None);
        assert_eq!(
            networks(&labels(&[(NERDCTL_NETWORKS_LABEL, r#"["bridge","n2"]"#)])),
            ["bridge", "n2"]
        );
        assert!(networks(&labels(&[(NERDCTL_NETWORKS_LABEL, "bridge")])).is_empty());
        let spec = |v: serde_json::Value| read_spec(v.to_string().as_bytes());
        let app = spec(serde_json::json!({"annotations": {
            CRI_CONTAINER_TYPE: "container", CRI_SANDBOX_ID: "5a00"}}));
        assert_eq!(cri_sandbox(app.as_ref()).as_deref(), Some("5a00"));
        let sandbox = spec(serde_json::json!({"annotations": {
            CRI_CONTAINER_TYPE: "sandbox", CRI_SANDBOX_ID: "5a00"}}));
        assert_eq!(cri_sandbox(sandbox.as_ref()), None);
        assert_eq!(cri_sandbox(None), None);
    }
}
