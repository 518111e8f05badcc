//! A Kubernetes node without kubelet: a private containerd with its CRI plugin, a
//! registry it pulls from, and a CRI client that makes pods and containers the way
//! kubelet makes them.
//!
//! # The node
//!
//! [`CriNode::start`] (or [`shared_cri`], one per test process) starts, in one
//! watchdog-guarded directory (see the crate docs):
//!
//! - a private registry (Debian's `docker-registry`, [`Registry`]) on a free port;
//! - containerd with its CRI plugin: host-network pods only (no CNI),
//!   `restrict_oom_score_adj = true` (root here may not lower `oom_score_adj`),
//!   `discard_unpacked_layers = true` (layer blobs pulled through CRI are deleted once
//!   unpacked, as on many managed nodes), the registry as the plain-HTTP mirror of its
//!   own host, the stream server on a loopback port of its choice;
//! - the sandbox image [`SANDBOX_IMAGE`]: a busybox-static image whose process sleeps,
//!   built here and imported into `k8s.io` with `ctr` (nothing is pulled for it).
//!
//! [`CriNode::base_image`] pushes the testkit's busybox base to the registry (skopeo)
//! and pulls it through CRI once per node, so its layer blob is gone from the content
//! store afterwards — the state of a managed node.
//!
//! # What kubelet sends
//!
//! [`KubePod`] and [`KubeContainer`] describe a pod and a container as a user writes
//! them; [`CriNode::run_pod`] and [`Pod::start`] turn them into the CRI requests kubelet
//! (`pkg/kubelet/kuberuntime`) sends for a `hostNetwork: true` pod:
//!
//! - sandbox: metadata (name, namespace, uid, attempt 0), the pod's labels plus
//!   `io.kubernetes.pod.{name,namespace,uid}`, the pod's annotations
//!   (`kubernetes.io/config.source`, `kubernetes.io/config.seen` as the API server
//!   leaves them), the log directory `…/pods/NS_NAME_UID`, the host's DNS settings,
//!   namespace options network NODE, pid CONTAINER, ipc POD;
//! - container: metadata (name, attempt = restart count), the image by the ID its pull
//!   returned (`sha256:…`) with the name the user wrote as `user_specified_image`,
//!   command/args/working dir/env (with the service-link variables of the
//!   `kubernetes` service that kubelet adds to every container), labels
//!   `io.kubernetes.{pod.name,pod.namespace,pod.uid,container.name}`, annotations
//!   `io.kubernetes.container.{hash,restartCount,terminationMessagePath,terminationMessagePolicy,type}`
//!   and `io.kubernetes.pod.terminationGracePeriod`, the log path `NAME/ATTEMPT.log`,
//!   kubelet's masked and read-only `/proc` paths, BestEffort resources
//!   (`cpu_shares` 2, `oom_score_adj` 1000), and kubelet's mounts in kubelet's order:
//!   the user's volumes, the service-account token directory (a projected volume,
//!   read-only, at `/var/run/secrets/kubernetes.io/serviceaccount`), `/etc/hosts`
//!   (kubelet's `etc-hosts` file of the pod), then `/dev/termination-log` (a fresh file
//!   per attempt under the pod's `containers/NAME/` directory).
//!
//! Not sent: a cgroup parent (kubelet's `kubepods/…` hierarchy would outlive the
//! test; containerd then uses `/k8s.io/ID`), devices, SELinux and AppArmor options.
//! None of them changes what a container's filesystem holds.
//!
//! A restart ([`Pod::restart`]) is what kubelet does when a container exits: the
//! exited attempt N stays, attempt N+1 is created beside it with the same labels.
//!
//! ```no_run
//! use commitd_testkit::{KubeContainer, KubePod, shared_cri};
//!
//! let node = shared_cri();
//! let pod = node.run_pod(KubePod::new("team-a", "notebook-0"))?;
//! let image = node.base_image()?;
//! let id = pod.start(&KubeContainer::new("jupyter", &image).command(&["sleep", "1d"]))?;
//! node.sh(&id, "echo trained > /model")?;
//! // commit `team-a/notebook-0/jupyter` through the daemon on node.socket(), namespace k8s.io
//! # Ok::<(), commitd_testkit::Error>(())
//! ```
//!
//! # Limits
//!
//! - All pods live in containerd's `k8s.io` namespace (the CRI plugin's), shared by
//!   every test of the process: give pods unique names ([`KubePod::unique`]).
//! - Calls are blocking; each runs on a thread of its own against the node's tokio
//!   runtime, so they work from plain and async tests alike.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::containerd::{Containerd, Extra};
use crate::ctr::Ctr;
use crate::error::{Error, Result};
use crate::image::{BUSYBOX_IMAGE, ImageBuilder, import_checked};
use crate::registry::Registry;

/// The containerd namespace of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The sandbox ("pause") image the node is configured with, imported locally.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// Repository and tag of the busybox base in the node's registry.
pub const CRI_BASE_REPO: &str = "library/commitd-busybox:latest";

/// How long one CRI call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);
/// How long [`CriNode::start`] waits for the CRI plugin to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The CRI node shared by every test of this process, started on first use and
/// cleaned up by its watchdog when the process exits.
///
/// # Panics
/// If the node cannot be started, with the reason: tests fail, never skip.
pub fn shared_cri() -> &'static CriNode {
    static SHARED: OnceLock<CriNode> = OnceLock::new();
    SHARED.get_or_init(|| {
        CriNode::start().unwrap_or_else(|e| panic!("commitd-testkit: cannot start a CRI node: {e}"))
    })
}

/// A private containerd with its CRI plugin, the registry it pulls from, and a CRI
/// client. Dropping it stops everything and removes the directory.
pub struct CriNode {
    // Field order is drop order: the client first, then the registry, then
    // containerd (whose watchdog removes the directory).
    runtime_client: RuntimeServiceClient<Channel>,
    image_client: ImageServiceClient<Channel>,
    rt: tokio::runtime::Runtime,
    registry: Registry,
    containerd: Containerd,
    kubelet_dir: PathBuf,
    logs_dir: PathBuf,
    base: OnceLock<std::result::Result<String, String>>,
}

impl std::fmt::Debug for CriNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriNode")
            .field("containerd", &self.containerd)
            .field("registry", &self.registry.host())
            .finish_non_exhaustive()
    }
}

impl CriNode {
    /// Starts registry and containerd with CRI in a fresh directory, imports the
    /// sandbox image and waits until the CRI plugin answers.
    pub fn start() -> Result<CriNode> {
        let mut registry = None;
        let containerd = Containerd::start_with(|dir| {
            let r = fs::create_dir_all(dir.join("registry"))
                .map_err(|e| Error::path("creating", &dir.join("registry"), e))
                .and_then(|()| Registry::start_in(&dir.join("registry")))?;
            let toml = cri_toml(dir, &r.host());
            registry = Some(r);
            Ok(Extra { cri: true, toml })
        })?;
        let registry =
            registry.ok_or_else(|| Error::Other("the registry was not started".into()))?;
        let dir = containerd
            .dir()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Other("a CRI node needs a private containerd".into()))?;
        let kubelet_dir = dir.join("kubelet");
        let logs_dir = dir.join("log/pods");
        for d in [&kubelet_dir, &logs_dir] {
            fs::create_dir_all(d).map_err(|e| Error::path("creating", d, e))?;
        }

        // The sandbox image: present locally, as the config names it.
        let archive = dir.join("pause.tar");
        // Not the busybox base: a layer of its own, or the base's layer blob would be
        // kept for the sandbox image's sake.
        ImageBuilder::scratch()
            .dir("/dev", 0o755)
            .dir("/proc", 0o755)
            .dir("/sys", 0o755)
            .host_file("/bin/busybox", crate::image::HOST_BUSYBOX, 0o755)
            .cmd(&["/bin/busybox", "sleep", "2147483647"])
            .write_archive(&archive, SANDBOX_IMAGE)?;
        import_checked(&containerd, CRI_NAMESPACE, &archive, SANDBOX_IMAGE)?;
        let _ = fs::remove_file(&archive);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("commitd-testkit-cri")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting a tokio runtime for the CRI client", e))?;
        let socket = containerd.socket().to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]:0")
                    .map_err(|e| e.to_string())?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    }))
                    .await
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| Error::Other(format!("connecting to the CRI plugin: {e}")))?;
        let node = CriNode {
            runtime_client: RuntimeServiceClient::new(channel.clone()),
            image_client: ImageServiceClient::new(channel),
            rt,
            registry,
            containerd,
            kubelet_dir,
            logs_dir,
            base: OnceLock::new(),
        };
        node.wait_ready()?;
        Ok(node)
    }

    /// Until the CRI plugin answers `Status` with the runtime ready and sees the
    /// sandbox image (its image store follows containerd's events).
    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let ready = self
                .runtime(
                    |mut c| async move { c.status(cri::StatusRequest { verbose: false }).await },
                )
                .map(|s| {
                    s.status.is_some_and(|st| {
                        st.conditions
                            .iter()
                            .any(|c| c.r#type == "RuntimeReady" && c.status)
                    })
                });
            let last = match ready {
                Ok(true) => match self.image_id(SANDBOX_IMAGE) {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => format!("{SANDBOX_IMAGE} not in the CRI image store yet"),
                    Err(e) => e.to_string(),
                },
                Ok(false) => "runtime not ready".into(),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Other(format!(
                    "the CRI plugin was not ready within {READY_TIMEOUT:?}: {last}; containerd's log:\n{}",
                    self.containerd.log_tail(30)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The containerd (socket, root, log).
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// containerd's socket: give it to the daemon with namespace [`CRI_NAMESPACE`].
    pub fn socket(&self) -> &Path {
        self.containerd.socket()
    }

    /// `ctr` on the CRI plugin's namespace.
    pub fn ctr(&self) -> Ctr {
        self.containerd.ctr(CRI_NAMESPACE)
    }

    /// The registry the node pulls from (configured as a plain-HTTP mirror of itself).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where kubelet's per-pod files of this node live (`pods/UID/…`).
    pub fn kubelet_dir(&self) -> &Path {
        &self.kubelet_dir
    }

    /// The busybox base ([`ImageBuilder::busybox`]) as a pod would get it: pushed to the
    /// registry as [`CRI_BASE_REPO`] once per node and pulled through CRI, so its layer
    /// blob was discarded after unpacking. Returns its reference
    /// (`127.0.0.1:PORT/library/commitd-busybox:latest`).
    pub fn base_image(&self) -> Result<String> {
        self.base
            .get_or_init(|| {
                let image = self
                    .publish(&ImageBuilder::busybox(), CRI_BASE_REPO)
                    .map_err(|e| e.to_string())?;
                self.pull(&image).map_err(|e| e.to_string())?;
                Ok(image)
            })
            .clone()
            .map_err(|e| Error::Other(format!("preparing the CRI base image: {e}")))
    }

    /// Pushes the image `builder` describes to the node's registry as `repo_tag`
    /// (`team/app:1`) and returns its reference; nothing is pulled.
    pub fn publish(&self, builder: &ImageBuilder, repo_tag: &str) -> Result<String> {
        let tmp =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let archive = tmp.path().join("image.tar");
        builder.write_archive(&archive, BUSYBOX_IMAGE)?;
        self.registry.push_oci_archive(&archive, repo_tag)
    }

    /// `PullImage` through CRI (as kubelet does); returns the image ID (`sha256:…`).
    /// containerd's garbage collector runs before this returns, so the layer blobs the
    /// CRI plugin let go of are gone, as they soon are on a node.
    pub fn pull(&self, image: &str) -> Result<String> {
        let id = self.pull_only(image)?;
        self.collect_garbage()?;
        Ok(id)
    }

    /// Runs containerd's garbage collector now and waits for it (deleting a lease
    /// with `--sync` does that).
    pub fn collect_garbage(&self) -> Result<()> {
        self.ctr().collect_garbage()
    }

    /// [`pull`](Self::pull) with an image pull secret's credentials, as kubelet
    /// sends them.
    pub fn pull_with_login(&self, image: &str, user: &str, password: &str) -> Result<String> {
        let auth = cri::AuthConfig {
            username: user.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        };
        let id = self.pull_as(image, Some(auth))?;
        self.collect_garbage()?;
        Ok(id)
    }

    fn pull_only(&self, image: &str) -> Result<String> {
        self.pull_as(image, None)
    }

    fn pull_as(&self, image: &str, auth: Option<cri::AuthConfig>) -> Result<String> {
        let image = image.to_owned();
        let r = self.images(|mut c| async move {
            c.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image,
                    ..Default::default()
                }),
                auth,
                sandbox_config: None,
            })
            .await
        })?;
        Ok(r.image_ref)
    }

    /// kubelet's `IfNotPresent`: the image's ID if the CRI plugin has it, else
    /// [`pull`](Self::pull)ed.
    pub fn ensure_image(&self, image: &str) -> Result<String> {
        match self.image_id(image)? {
            Some(id) => Ok(id),
            None => self.pull(image),
        }
    }

    /// `ImageStatus`: the image's ID, `None` if the CRI plugin does not know it.
    pub fn image_id(&self, image: &str) -> Result<Option<String>> {
        let image = image.to_owned();
        let r = self.images(|mut c| async move {
            c.image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
        })?;
        Ok(r.image.map(|i| i.id))
    }

    /// `ListImages`, as kubelet sees them.
    pub fn list_images(&self) -> Result<Vec<cri::Image>> {
        Ok(self
            .images(
                |mut c| async move { c.list_images(cri::ListImagesRequest { filter: None }).await },
            )?
            .images)
    }

    /// `RunPodSandbox` with kubelet's sandbox config for `pod`. The [`Pod`] stops and
    /// removes the sandbox (and its containers) when dropped.
    pub fn run_pod(&self, pod: KubePod) -> Result<Pod<'_>> {
        let dir = self.kubelet_dir.join("pods").join(&pod.uid);
        let logs = self
            .logs_dir
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid));
        for d in [&dir, &logs] {
            fs::create_dir_all(d).map_err(|e| Error::path("creating", d, e))?;
        }
        // kubelet's etc-hosts of a host-network pod: the node's hosts file, marked.
        let hosts = dir.join("etc-hosts");
        let node_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
        fs::write(
            &hosts,
            format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}"),
        )
        .map_err(|e| Error::path("writing", &hosts, e))?;

        let mut labels = pod.labels.clone();
        labels.insert(POD_NAME.into(), pod.name.clone());
        labels.insert(POD_NAMESPACE.into(), pod.namespace.clone());
        labels.insert(POD_UID.into(), pod.uid.clone());
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            // kubelet leaves the hostname empty for host-network pods.
            hostname: String::new(),
            log_directory: logs.to_string_lossy().into_owned(),
            dns_config: host_dns(),
            port_mappings: Vec::new(),
            labels: labels.into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network_namespaces()),
                    seccomp: Some(unconfined()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        };
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .runtime(|mut c| async move { c.run_pod_sandbox(request).await })?
            .pod_sandbox_id;
        Ok(Pod {
            node: self,
            id,
            spec: pod,
            config,
            dir,
            logs,
        })
    }

    /// `ExecSync` of `argv` in container `id` (at most 60 s).
    pub fn exec(&self, id: &str, argv: &[&str]) -> Result<ExecOutput> {
        let request = cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 60,
        };
        let r = self.runtime(|mut c| async move { c.exec_sync(request).await })?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        })
    }

    /// Runs `sh -c script` in container `id` and returns its stdout; fails unless it
    /// exits 0.
    pub fn sh(&self, id: &str, script: &str) -> Result<String> {
        let out = self.exec(id, &["sh", "-c", script])?;
        if out.exit_code == 0 {
            Ok(out.stdout)
        } else {
            Err(Error::Other(format!(
                "`sh -c {script:?}` in CRI container {id} exited {}: {}{}",
                out.exit_code, out.stderr, out.stdout
            )))
        }
    }

    /// `ContainerStatus` of container `id`.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.runtime(|mut c| async move { c.container_status(request).await })?
            .status
            .ok_or_else(|| Error::Other(format!("CRI has no status for container {id}")))
    }

    /// `ListContainers` (all states) of the pod `sandbox`, or of every pod.
    pub fn list_containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>> {
        let filter = sandbox.map(|s| cri::ContainerFilter {
            pod_sandbox_id: s.to_owned(),
            ..Default::default()
        });
        Ok(self
            .runtime(|mut c| async move {
                c.list_containers(cri::ListContainersRequest { filter })
                    .await
            })?
            .containers)
    }

    /// `StopContainer` with a grace period of `timeout` seconds (0: SIGKILL at once).
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let request = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        self.runtime(|mut c| async move { c.stop_container(request).await })
            .map(drop)
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let request = cri::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.runtime(|mut c| async move { c.remove_container(request).await })
            .map(drop)
    }

    /// Runs a call of the runtime service to completion (see the module docs).
    pub fn runtime<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut + Send,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>> + Send,
        T: Send,
    {
        let client = self.runtime_client.clone();
        self.block_on(call(client))
    }

    /// Runs a call of the image service to completion.
    pub fn images<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ImageServiceClient<Channel>) -> Fut + Send,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>> + Send,
        T: Send,
    {
        let client = self.image_client.clone();
        self.block_on(call(client))
    }

    fn block_on<T: Send>(
        &self,
        fut: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>> + Send,
    ) -> Result<T> {
        // On a thread of its own: `block_on` panics on a thread already inside a
        // runtime (an async test), and this keeps every call alike.
        let handle = self.rt.handle();
        thread::scope(|s| {
            s.spawn(|| handle.block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await }))
                .join()
        })
        .map_err(|_| Error::Other("a CRI call panicked".into()))?
        .map_err(|_| Error::Other(format!("a CRI call took over {CALL_TIMEOUT:?}")))?
        .map(tonic::Response::into_inner)
        .map_err(|s| Error::Other(format!("CRI: {:?}: {}", s.code(), s.message())))
    }
}

/// What [`CriNode::exec`] gives back.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// A pod as the API server hands it to kubelet: namespace, name, UID, labels and
/// annotations. Host network; one sandbox attempt.
#[derive(Clone, Debug)]
pub struct KubePod {
    /// The Kubernetes namespace (`team-a`).
    pub namespace: String,
    /// The pod's name (`notebook-0`).
    pub name: String,
    /// Its UID (a random v4 UUID).
    pub uid: String,
    /// The pod's labels (`app` by default).
    pub labels: BTreeMap<String, String>,
    /// The pod's annotations (`kubernetes.io/config.{source,seen}` by default).
    pub annotations: BTreeMap<String, String>,
}

impl KubePod {
    /// A pod `namespace/name` with a fresh UID, the label `app=NAME` and the
    /// annotations the API server and kubelet leave on every pod.
    pub fn new(namespace: &str, name: &str) -> KubePod {
        let seen = rfc3339_now();
        KubePod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uuid_v4(),
            labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
            annotations: BTreeMap::from([
                ("kubernetes.io/config.seen".to_owned(), seen),
                ("kubernetes.io/config.source".to_owned(), "api".to_owned()),
            ]),
        }
    }

    /// [`KubePod::new`] with the name made unique in this process and run
    /// (`NAME-PID-N`): tests share the node's `k8s.io` namespace.
    pub fn unique(namespace: &str, name: &str) -> KubePod {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        KubePod::new(
            namespace,
            &format!(
                "{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        )
    }

    /// Adds a pod label.
    pub fn label(mut self, key: &str, value: &str) -> KubePod {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a pod annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> KubePod {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// A container of a pod spec: what [`Pod::start`] turns into kubelet's
/// `ContainerConfig`.
#[derive(Clone, Debug)]
pub struct KubeContainer {
    /// Its name in the pod.
    pub name: String,
    /// The image as the user wrote it.
    pub image: String,
    /// `command` (replaces the image's entrypoint when not empty).
    pub command: Vec<String>,
    /// `args` (replace the image's cmd when not empty).
    pub args: Vec<String>,
    /// `workingDir`.
    pub working_dir: String,
    /// `env`, in order (kubelet's service-link variables are added after them).
    pub env: Vec<(String, String)>,
    /// `emptyDir` volumes mounted at these paths.
    pub empty_dirs: Vec<String>,
    /// `terminationMessagePath` (`/dev/termination-log`; empty: no mount).
    pub termination_message_path: String,
    /// Whether the service-account token is mounted (`automountServiceAccountToken`).
    pub service_account_token: bool,
    /// Whether kubelet mounts its `/etc/hosts` (it does for every Linux pod).
    pub etc_hosts: bool,
}

impl KubeContainer {
    /// A container `name` of `image` with kubelet's defaults.
    pub fn new(name: &str, image: &str) -> KubeContainer {
        KubeContainer {
            name: name.to_owned(),
            image: image.to_owned(),
            command: Vec::new(),
            args: Vec::new(),
            working_dir: String::new(),
            env: Vec::new(),
            empty_dirs: Vec::new(),
            termination_message_path: "/dev/termination-log".into(),
            service_account_token: true,
            etc_hosts: true,
        }
    }

    /// Sets `command`.
    pub fn command(mut self, argv: &[&str]) -> KubeContainer {
        self.command = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets `args`.
    pub fn args(mut self, argv: &[&str]) -> KubeContainer {
        self.args = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> KubeContainer {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets `workingDir`.
    pub fn working_dir(mut self, dir: &str) -> KubeContainer {
        self.working_dir = dir.into();
        self
    }

    /// Mounts an `emptyDir` volume at `path`.
    pub fn empty_dir(mut self, path: &str) -> KubeContainer {
        self.empty_dirs.push(path.into());
        self
    }
}

/// A running pod sandbox; stopped and removed with its containers when dropped.
#[derive(Debug)]
pub struct Pod<'a> {
    node: &'a CriNode,
    /// The sandbox ID (64 hex digits).
    pub id: String,
    /// What it was made from.
    pub spec: KubePod,
    config: cri::PodSandboxConfig,
    dir: PathBuf,
    logs: PathBuf,
}

impl Pod<'_> {
    /// Creates and starts `container` as its first attempt (restart count 0); returns
    /// the container ID.
    pub fn start(&self, container: &KubeContainer) -> Result<String> {
        let id = self.create(container, 0)?;
        self.start_created(&id)?;
        Ok(id)
    }

    /// Creates attempt `attempt` of `container` (kubelet's `CreateContainer`: the image
    /// by ID, found or pulled first) without starting it.
    pub fn create(&self, container: &KubeContainer, attempt: u32) -> Result<String> {
        let image_id = self.node.ensure_image(&container.image)?;
        let config = self.container_config(container, attempt, &image_id)?;
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        Ok(self
            .node
            .runtime(|mut c| async move { c.create_container(request).await })?
            .container_id)
    }

    /// `StartContainer`.
    pub fn start_created(&self, id: &str) -> Result<()> {
        let request = cri::StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.node
            .runtime(|mut c| async move { c.start_container(request).await })
            .map(drop)
    }

    /// What kubelet does when attempt `previous` of `container` has exited: it stays
    /// (exited), and the next attempt is created beside it and started. `previous` is
    /// killed first if it still runs. Returns the new container's ID.
    pub fn restart(&self, container: &KubeContainer, previous: &str) -> Result<String> {
        let status = self.node.container_status(previous)?;
        if status.state() != cri::ContainerState::ContainerExited {
            self.node.stop_container(previous, 0)?;
        }
        let attempt = status.metadata.map_or(0, |m| m.attempt) + 1;
        let id = self.create(container, attempt)?;
        self.start_created(&id)?;
        Ok(id)
    }

    /// The pod's kubelet directory (`pods/UID`: `etc-hosts`, `containers/`, `volumes/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pod's log directory.
    pub fn log_dir(&self) -> &Path {
        &self.logs
    }

    fn container_config(
        &self,
        c: &KubeContainer,
        attempt: u32,
        image_id: &str,
    ) -> Result<cri::ContainerConfig> {
        let pod = &self.spec;
        let labels = BTreeMap::from([
            (POD_NAME.to_owned(), pod.name.clone()),
            (POD_NAMESPACE.to_owned(), pod.namespace.clone()),
            (POD_UID.to_owned(), pod.uid.clone()),
            (CONTAINER_NAME.to_owned(), c.name.clone()),
        ]);
        let annotations = BTreeMap::from([
            (
                "io.kubernetes.container.hash".to_owned(),
                format!("{:x}", fnv1a32(&format!("{c:?}"))),
            ),
            (
                "io.kubernetes.container.restartCount".to_owned(),
                attempt.to_string(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".to_owned(),
                c.termination_message_path.clone(),
            ),
            (
                "io.kubernetes.container.terminationMessagePolicy".to_owned(),
                "File".to_owned(),
            ),
            (
                "io.kubernetes.container.type".to_owned(),
                "container".to_owned(),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_owned(),
                "30".to_owned(),
            ),
        ]);
        let mut envs: Vec<cri::KeyValue> = c
            .env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        envs.extend(SERVICE_LINKS.iter().map(|(k, v)| cri::KeyValue {
            key: (*k).to_owned(),
            value: (*v).to_owned(),
        }));

        let mut mounts = Vec::new();
        let mount = |host: &Path, container: &str, readonly: bool| cri::Mount {
            container_path: container.to_owned(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        };
        for (i, path) in c.empty_dirs.iter().enumerate() {
            let host = self
                .dir
                .join("volumes/kubernetes.io~empty-dir")
                .join(format!("{}-vol-{i}", c.name));
            fs::create_dir_all(&host).map_err(|e| Error::path("creating", &host, e))?;
            mounts.push(mount(&host, path, false));
        }
        if c.service_account_token {
            let host = self.service_account_volume()?;
            mounts.push(mount(
                &host,
                "/var/run/secrets/kubernetes.io/serviceaccount",
                true,
            ));
        }
        if c.etc_hosts {
            mounts.push(mount(&self.dir.join("etc-hosts"), "/etc/hosts", false));
        }
        if !c.termination_message_path.is_empty() {
            // A fresh, empty file per attempt: `containers/NAME/RANDOM`.
            let dir = self.dir.join("containers").join(&c.name);
            fs::create_dir_all(&dir).map_err(|e| Error::path("creating", &dir, e))?;
            let file = dir.join(format!("{:08x}", random_u32()));
            fs::write(&file, "").map_err(|e| Error::path("creating", &file, e))?;
            mounts.push(mount(&file, &c.termination_message_path, false));
        }
        // kubelet makes the container's log directory; CRI makes the file.
        let log_dir = self.logs.join(&c.name);
        fs::create_dir_all(&log_dir).map_err(|e| Error::path("creating", &log_dir, e))?;

        Ok(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: image_id.to_owned(),
                user_specified_image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            envs,
            mounts,
            labels: labels.into_iter().collect(),
            annotations: annotations.into_iter().collect(),
            log_path: format!("{}/{attempt}.log", c.name),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(host_network_namespaces()),
                    masked_paths: MASKED_PATHS.iter().map(|s| (*s).to_owned()).collect(),
                    readonly_paths: READONLY_PATHS.iter().map(|s| (*s).to_owned()).collect(),
                    seccomp: Some(unconfined()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        })
    }

    /// The pod's projected service-account volume, laid out as kubelet's atomic
    /// writer leaves it: `..TIMESTAMP/{ca.crt,namespace,token}`, `..data` pointing
    /// there, and top-level links through `..data`.
    fn service_account_volume(&self) -> Result<PathBuf> {
        let vol = self
            .dir
            .join("volumes/kubernetes.io~projected/kube-api-access-x7k2q");
        if vol.join("..data").exists() {
            return Ok(vol);
        }
        let stamp = "..2026_01_01_00_00_00.000000001";
        let data = vol.join(stamp);
        fs::create_dir_all(&data).map_err(|e| Error::path("creating", &data, e))?;
        let files = [
            (
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nMIIB (commitd-testkit)\n-----END CERTIFICATE-----\n"
                    .to_owned(),
            ),
            ("namespace", self.spec.namespace.clone()),
            (
                "token",
                "eyJhbGciOiJSUzI1NiJ9.commitd-testkit.signature".to_owned(),
            ),
        ];
        let io = |e, p: &Path| Error::path("writing", p, e);
        for (name, text) in files {
            fs::write(data.join(name), text).map_err(|e| io(e, &data.join(name)))?;
            symlink(format!("..data/{name}"), vol.join(name))
                .map_err(|e| io(e, &vol.join(name)))?;
        }
        symlink(stamp, vol.join("..data")).map_err(|e| io(e, &vol.join("..data")))?;
        Ok(vol)
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        let stopped = self
            .node
            .runtime(|mut c| async move { c.stop_pod_sandbox(stop).await });
        let removed = self
            .node
            .runtime(|mut c| async move { c.remove_pod_sandbox(remove).await });
        if let Err(e) = stopped.and(removed) {
            eprintln!("commitd-testkit: removing pod {}: {e}", self.spec.name);
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir_all(&self.logs);
    }
}

/// The service-link variables kubelet adds to every container of a namespace with the
/// default `kubernetes` service (ClusterIP 10.96.0.1).
pub const SERVICE_LINKS: &[(&str, &str)] = &[
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
    ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
    ("KUBERNETES_PORT_443_TCP_PORT", "443"),
    ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
];

/// kubelet's masked paths for the default `procMount`.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// kubelet's read-only paths for the default `procMount`.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn host_network_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node.into(),
        pid: cri::NamespaceMode::Container.into(),
        ipc: cri::NamespaceMode::Pod.into(),
        ..Default::default()
    }
}

fn unconfined() -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined.into(),
        localhost_ref: String::new(),
    }
}

/// kubelet's DNS config of a host-network pod (`dnsPolicy: ClusterFirst` falls back
/// to the node's): the node's resolv.conf.
fn host_dns() -> Option<cri::DnsConfig> {
    let text = fs::read_to_string("/etc/resolv.conf").ok()?;
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.map(str::to_owned)),
            Some("search") => dns.searches.extend(words.map(str::to_owned)),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    (!dns.servers.is_empty() || !dns.searches.is_empty()).then_some(dns)
}

/// The containerd config sections of a CRI node whose files are under `dir`, pulling
/// from the registry at `registry` (`127.0.0.1:PORT`).
fn cri_toml(dir: &Path, registry: &str) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"]";
    format!(
        "\n{cri}\n\
         \x20 disable_tcp_service = true\n\
         \x20 stream_server_address = \"127.0.0.1\"\n\
         \x20 stream_server_port = \"0\"\n\
         \x20 sandbox_image = \"{SANDBOX_IMAGE}\"\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 enable_selinux = false\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
         \x20   snapshotter = \"overlayfs\"\n\
         \x20   discard_unpacked_layers = true\n\
         \x20   default_runtime_name = \"runc\"\n\
         \x20   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20     runtime_type = \"io.containerd.runc.v2\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   bin_dir = {cni_bin}\n\
         \x20   conf_dir = {cni_conf}\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{registry}\"]\n\
         \x20   endpoint = [\"http://{registry}\"]\n",
        cni_bin = q(&dir.join("cni/bin")),
        cni_conf = q(&dir.join("cni/conf")),
    )
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    buf
}

fn random_u32() -> u32 {
    u32::from_le_bytes(random_bytes::<4>())
}

fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn fnv1a32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ids() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid_v4(), u);
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
    }
}
