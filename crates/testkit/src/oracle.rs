//! Docker's engine as the oracle of a commit: the same base image in Docker and in
//! containerd, the same container and changes on both sides, the same commit
//! request to Docker and to the daemon under test, then the results compared field
//! by field.
//!
//! ```no_run
//! use commitd_testkit::{ImageBuilder, Oracle, RunSpec, shared, shared_dockerd, unique_namespace};
//!
//! let ns = unique_namespace("parity");
//! let oracle = Oracle::new(shared_dockerd(), shared(), &ns, &ImageBuilder::busybox())?;
//! let pair = oracle.run("c1", &RunSpec::sleeping().env("FOO=bar"))?;
//! pair.sh("echo hi > /hi && rm /etc/group")?;
//! // the daemon under test serves the Docker API on `commitd_socket`, namespace `ns`
//! # let commitd_socket = std::path::Path::new("/run/commitd/commitd.sock");
//! let outcome = oracle.commit(commitd_socket, &pair, "repo=parity/c1&tag=1", None)?;
//! assert_eq!(outcome.differences(&[]), Vec::<String>::new());
//! # Ok::<(), commitd_testkit::Error>(())
//! ```
//!
//! The base goes through one docker-archive (OCI layout → `skopeo copy` →
//! docker-archive), `docker load`ed and `ctr images import`ed:
//! [`Oracle::new`] checks that both engines then hold the same config digest and
//! diff IDs, so any difference later comes from the commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cmd;
use crate::containerd::Containerd;
use crate::ctr::{Ctr, SNAPSHOTTER};
use crate::dockerd::Dockerd;
use crate::error::{Error, Result};
use crate::http::{self, Response};
use crate::image::ImageBuilder;
use crate::layer::{LayerEntry, layer_entries};

/// The Docker API version both engines are spoken to with: Docker Engine 20.10's
/// highest.
pub const ORACLE_API: &str = "v1.41";

/// A base image present in both engines, and how to reach them.
#[derive(Debug)]
pub struct Oracle<'a> {
    docker: &'a Dockerd,
    ctr: Ctr,
    /// The base's name in both engines (`docker.io/library/parity-base-N:latest`,
    /// Docker shows it without `docker.io/library/`).
    pub base: String,
    /// The base's config digest (= Docker's image ID), the same on both sides.
    pub config_digest: String,
    /// The base's diff IDs, the same on both sides.
    pub diff_ids: Vec<String>,
}

/// How a container is made on both sides (`docker create` / `ctr run`).
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// `--entrypoint` (Docker: only its first word can be given on the command line;
    /// here the whole list is set through the API).
    pub entrypoint: Option<Vec<String>>,
    /// The command after the image (replaces the image's Cmd).
    pub cmd: Option<Vec<String>>,
    /// `-e K=V`.
    pub env: Vec<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `-u USER` (Docker only for now: `ctr run` of containerd 1.6 has no `--user`,
    /// so [`Oracle::run`] refuses it).
    pub user: Option<String>,
    /// `-l K=V` (container labels).
    pub labels: Vec<(String, String)>,
    /// Bind mounts: host path, container path, read-only (`-v HOST:DEST[:ro]`,
    /// `ctr run --mount type=bind,…`).
    pub binds: Vec<(String, String, bool)>,
    /// `-t`: a terminal for the container's process.
    pub tty: bool,
    /// Wait for the container's process to exit before returning.
    pub run_to_completion: bool,
}

impl RunSpec {
    /// A container whose process sleeps, to make changes in with [`Pair::sh`].
    pub fn sleeping() -> RunSpec {
        RunSpec {
            cmd: Some(vec!["sleep".into(), "100000".into()]),
            ..RunSpec::default()
        }
    }

    /// A container that runs `script` (`sh -c`) to completion.
    pub fn script(script: &str) -> RunSpec {
        RunSpec {
            cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
            run_to_completion: true,
            ..RunSpec::default()
        }
    }

    /// The image's own Cmd, run to completion.
    pub fn image_default() -> RunSpec {
        RunSpec {
            run_to_completion: true,
            ..RunSpec::default()
        }
    }

    /// Adds `-e K=V`.
    pub fn env(mut self, kv: &str) -> RunSpec {
        self.env.push(kv.into());
        self
    }

    /// Sets `-w`.
    pub fn workdir(mut self, dir: &str) -> RunSpec {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets `-u`.
    pub fn user(mut self, user: &str) -> RunSpec {
        self.user = Some(user.into());
        self
    }

    /// Adds `-l K=V`.
    pub fn label(mut self, k: &str, v: &str) -> RunSpec {
        self.labels.push((k.into(), v.into()));
        self
    }

    /// Adds a bind mount of host path `host` at `dest`.
    pub fn bind(mut self, host: &str, dest: &str, readonly: bool) -> RunSpec {
        self.binds.push((host.into(), dest.into(), readonly));
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint(mut self, argv: &[&str]) -> RunSpec {
        self.entrypoint = Some(argv.iter().map(|s| (*s).to_owned()).collect());
        self
    }
}

/// One container made the same way in both engines.
#[derive(Debug)]
pub struct Pair<'o, 'a> {
    oracle: &'o Oracle<'a>,
    /// Docker's container name and containerd's container ID (the same string).
    pub name: String,
}

impl Pair<'_, '_> {
    /// Runs `sh -c script` in both containers (`docker exec`, `ctr tasks exec`);
    /// both must exit 0.
    pub fn sh(&self, script: &str) -> Result<()> {
        self.oracle
            .docker
            .cli(&["exec", &self.name, "sh", "-c", script])?;
        self.oracle
            .ctr
            .exec(&self.name, &["sh", "-c", script])
            .map(drop)
    }

    /// Pauses both containers (`docker pause`, `ctr tasks pause`).
    pub fn pause(&self) -> Result<()> {
        self.oracle.docker.cli(&["pause", &self.name])?;
        self.oracle
            .ctr
            .run(&["tasks", "pause", &self.name])
            .map(drop)
    }

    /// Docker's state of the container (`running`, `paused`, `exited`) and containerd's
    /// task status.
    pub fn states(&self) -> Result<(String, crate::ctr::TaskStatus)> {
        let docker = self
            .oracle
            .docker
            .cli(&["inspect", "-f", "{{.State.Status}}", &self.name])?;
        Ok((
            docker.trim().to_owned(),
            self.oracle.ctr.task_status(&self.name)?,
        ))
    }

    /// Stops both containers (SIGKILL), leaving them to commit as stopped containers.
    pub fn kill(&self) -> Result<()> {
        self.oracle.docker.cli(&["kill", &self.name])?;
        self.oracle.ctr.kill_task(&self.name)
    }
}

impl Drop for Pair<'_, '_> {
    fn drop(&mut self) {
        let _ = self.oracle.docker.cli_output(&["rm", "-f", &self.name]);
        let _ = self.oracle.ctr.delete_container(&self.name);
    }
}

/// What one engine made of a commit request.
#[derive(Clone, Debug)]
pub struct Side {
    /// The status of `POST /commit`.
    pub status: u16,
    /// Its body (`{"Id": …}` or `{"message": …}`).
    pub body: Value,
    /// `GET /images/{name}/json` of the new image (`Null` when the commit failed).
    pub inspect: Value,
    /// `GET /images/{name}/history` (`Null` when the commit failed).
    pub history: Value,
    /// The entries of the new (top) layer, sorted by path.
    pub layer: Vec<LayerEntry>,
}

/// Docker's and the daemon's answers to the same commit.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Docker Engine 20.10's.
    pub docker: Side,
    /// The daemon under test's.
    pub commitd: Side,
}

/// Image-inspect fields that differ between any two commits or between the two
/// stores by design, left out of [`Outcome::differences`]: IDs and times, the
/// committing container's ID and config (Docker's `Container`, `ContainerConfig`),
/// storage details, the engine's version, the parent's ID (a local-store notion
/// containerd has not), repo tags and digests (compared by the caller when needed),
/// and the top layer's diff ID (layer bytes include mtimes; the layer's entries are
/// compared instead).
const UNCOMPARED: &[&str] = &[
    "Id",
    "Created",
    "Container",
    "ContainerConfig",
    "DockerVersion",
    "GraphDriver",
    "Metadata",
    "Parent",
    "RepoDigests",
    "RepoTags",
    "VirtualSize",
];

impl Outcome {
    /// Every field where the two differ, one line each (`field: docker=… commitd=…`),
    /// except those under a prefix in `allowed` (e.g. `"inspect.Size"`, `"history"`;
    /// `*` matches any run of characters: `"history[*].Size"`),
    /// which a case names when Docker 20.10 is known to differ from current Docker or
    /// from what commitd does on purpose.
    ///
    /// Compared: the commit's status and, on failure, its message; the image's
    /// inspect (all but the fields listed in `UNCOMPARED`; base layers by diff ID, the top layer by its
    /// entries); the history (`CreatedBy`, `Comment`, `Size`, `Tags` per row, newest
    /// first; the row's `Id` and `Created` are not); the top layer's entries (path,
    /// type, mode, owner, link target, size, content hash, device, xattrs).
    pub fn differences(&self, allowed: &[&str]) -> Vec<String> {
        let (d, c) = (&self.docker, &self.commitd);
        let mut out = Vec::new();
        let mut diff = |field: String, a: &Value, b: &Value| {
            if a != b && !allowed.iter().any(|p| glob_prefix(p, &field)) {
                out.push(format!("{field}: docker={a} commitd={b}"));
            }
        };
        diff("status".into(), &json!(d.status), &json!(c.status));
        if d.status >= 300 || c.status >= 300 {
            diff("message".into(), &d.body["message"], &c.body["message"]);
            return out;
        }
        let keys: std::collections::BTreeSet<&String> = d
            .inspect
            .as_object()
            .into_iter()
            .chain(c.inspect.as_object())
            .flat_map(|o| o.keys())
            .collect();
        for key in keys {
            if UNCOMPARED.contains(&key.as_str()) {
                continue;
            }
            if key == "RootFS" {
                let layers = |s: &Side| {
                    let all = s.inspect["RootFS"]["Layers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let n = all.len().saturating_sub(1);
                    (json!(all.len()), json!(all[..n]))
                };
                let ((dn, dl), (cn, cl)) = (layers(d), layers(c));
                diff("inspect.RootFS.Layers.len".into(), &dn, &cn);
                diff("inspect.RootFS.Layers[..top]".into(), &dl, &cl);
                diff(
                    "inspect.RootFS.Type".into(),
                    &d.inspect["RootFS"]["Type"],
                    &c.inspect["RootFS"]["Type"],
                );
                continue;
            }
            if key == "Config" {
                let fields: std::collections::BTreeSet<&String> = d.inspect["Config"]
                    .as_object()
                    .into_iter()
                    .chain(c.inspect["Config"].as_object())
                    .flat_map(|o| o.keys())
                    .collect();
                // Docker 20.10 (API 1.41) shows every field of a container config,
                // empty ones too (`{}`, `""`, `false`); current Docker leaves out what
                // an image config has not: absent and empty are the same value.
                let norm = |f: &str, v: &Value| match (f, v) {
                    ("Labels", Value::Null) => json!({}),
                    ("User" | "Domainname", Value::Null) => json!(""),
                    (
                        "AttachStdin" | "AttachStdout" | "AttachStderr" | "Tty" | "OpenStdin"
                        | "StdinOnce",
                        Value::Null,
                    ) => json!(false),
                    _ => v.clone(),
                };
                for f in fields {
                    diff(
                        format!("inspect.Config.{f}"),
                        &norm(f, &d.inspect["Config"][f]),
                        &norm(f, &c.inspect["Config"][f]),
                    );
                }
                continue;
            }
            diff(format!("inspect.{key}"), &d.inspect[key], &c.inspect[key]);
        }
        let rows = |s: &Side| -> Vec<Value> {
            s.history
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    json!({"CreatedBy": r["CreatedBy"], "Comment": r["Comment"], "Size": r["Size"], "Tags": r["Tags"]})
                })
                .collect()
        };
        let (dh, ch) = (rows(d), rows(c));
        diff("history.len".into(), &json!(dh.len()), &json!(ch.len()));
        for (i, (a, b)) in dh.iter().zip(&ch).enumerate() {
            for f in ["CreatedBy", "Comment", "Size", "Tags"] {
                diff(format!("history[{i}].{f}"), &a[f], &b[f]);
            }
        }
        let index = |s: &Side| -> BTreeMap<String, String> {
            s.layer
                .iter()
                .map(|e| (e.path.clone(), e.to_string()))
                .collect()
        };
        let (dl, cl) = (index(d), index(c));
        for path in dl
            .keys()
            .chain(cl.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let a = dl.get(path).map_or(Value::Null, |s| json!(s));
            let b = cl.get(path).map_or(Value::Null, |s| json!(s));
            diff(format!("layer[{path}]"), &a, &b);
        }
        out
    }
}

impl<'a> Oracle<'a> {
    /// Puts the image `builder` describes into Docker (`docker load`) and into
    /// `namespace` of `containerd` (`ctr images import`) from one docker-archive, and
    /// checks that both hold the same config digest and diff IDs.
    pub fn new(
        docker: &'a Dockerd,
        containerd: &Containerd,
        namespace: &str,
        builder: &ImageBuilder,
    ) -> Result<Oracle<'a>> {
        static N: AtomicU32 = AtomicU32::new(0);
        let short = format!(
            "parity-base-{}-{}:latest",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let base = format!("docker.io/library/{short}");
        let tmp =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let oci = tmp.path().join("oci.tar");
        let archive = tmp.path().join("docker.tar");
        builder.write_archive(&oci, &base)?;
        cmd::run(
            Command::new("skopeo")
                .args(["copy", "--quiet"])
                .arg(format!("oci-archive:{}", oci.display()))
                .arg(format!("docker-archive:{}:{short}", archive.display())),
            cmd::SLOW,
        )?;
        docker.load(&archive)?;
        let ctr = containerd.ctr(namespace);
        let imported = ctr.import_archive(&archive)?;
        if !imported.contains(&base) {
            return Err(Error::Other(format!(
                "`ctr images import` made {imported:?}, not {base}"
            )));
        }
        let inspect = api_json(
            docker.socket(),
            "GET",
            &format!("/{ORACLE_API}/images/{short}/json"),
        )?;
        let config = ctr.image_config(&base)?;
        let manifest = ctr.image_manifest(&base)?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let docker_layers: Vec<String> = inspect["RootFS"]["Layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if inspect["Id"] != json!(config_digest) || docker_layers != diff_ids {
            return Err(Error::Other(format!(
                "the base differs between the engines: Docker {} {docker_layers:?}, containerd {config_digest} {diff_ids:?}",
                inspect["Id"]
            )));
        }
        Ok(Oracle {
            docker,
            ctr,
            base,
            config_digest,
            diff_ids,
        })
    }

    /// The base's name as Docker shows it (`parity-base-…:latest`).
    pub fn docker_base(&self) -> &str {
        self.base.trim_start_matches("docker.io/library/")
    }

    /// The containerd namespace.
    pub fn ctr(&self) -> &Ctr {
        &self.ctr
    }

    /// The Docker engine.
    pub fn docker(&self) -> &Dockerd {
        self.docker
    }

    /// Makes container `name` of the base in both engines as `spec` says, started
    /// (and run to completion if `spec.run_to_completion`).
    pub fn run(&self, name: &str, spec: &RunSpec) -> Result<Pair<'_, 'a>> {
        self.run_from(name, self.docker_base(), &self.base, spec)
    }

    /// Like [`run`](Self::run), of another image present in both engines: Docker's
    /// `docker_image` (a name or ID) and containerd's `containerd_image` (a full
    /// name), e.g. the images an earlier commit made.
    pub fn run_from(
        &self,
        name: &str,
        docker_image: &str,
        containerd_image: &str,
        spec: &RunSpec,
    ) -> Result<Pair<'_, 'a>> {
        let pair = Pair {
            oracle: self,
            name: name.to_owned(),
        };
        // Docker: through the API, so that a whole entrypoint list can be given.
        let mut config = json!({
            "Image": docker_image,
            "Env": spec.env,
            "Labels": spec.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "HostConfig": {
                "NetworkMode": "none",
                "Binds": spec.binds.iter().map(|(h, d, ro)| {
                    if *ro { format!("{h}:{d}:ro") } else { format!("{h}:{d}") }
                }).collect::<Vec<_>>(),
            },
        });
        if let Some(e) = &spec.entrypoint {
            config["Entrypoint"] = json!(e);
        }
        if let Some(c) = &spec.cmd {
            config["Cmd"] = json!(c);
        }
        if let Some(w) = &spec.workdir {
            config["WorkingDir"] = json!(w);
        }
        if spec.tty {
            config["Tty"] = json!(true);
        }
        if let Some(u) = &spec.user {
            config["User"] = json!(u);
        }
        let body = serde_json::to_vec(&config).unwrap_or_default();
        let r = self.docker.api(
            "POST",
            &format!(
                "/{ORACLE_API}/containers/create?name={}",
                http::query_escape(name)
            ),
            Some(&body),
        )?;
        if r.status != 201 {
            return Err(Error::Other(format!(
                "docker create {name}: {} {}",
                r.status,
                r.text()
            )));
        }
        self.docker.cli(&["start", name])?;
        if spec.run_to_completion {
            self.docker.cli(&["wait", name])?;
        }

        // containerd: `ctr run` with the process args Docker would run.
        let image_config = self.ctr.image_config(containerd_image)?;
        let image = &image_config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let entrypoint = spec
            .entrypoint
            .clone()
            .unwrap_or_else(|| strings(&image["Entrypoint"]));
        let cmd = match (&spec.cmd, &spec.entrypoint) {
            (Some(c), _) => c.clone(),
            (None, Some(_)) => Vec::new(),
            (None, None) => strings(&image["Cmd"]),
        };
        let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        let mut c = self.ctr.command();
        c.args(["run", "--snapshotter", SNAPSHOTTER]);
        if !spec.run_to_completion {
            c.arg("-d");
        }
        if spec.tty {
            c.arg("-t");
        }
        for e in &spec.env {
            c.arg("--env").arg(e);
        }
        if let Some(w) = &spec.workdir {
            c.arg("--cwd").arg(w);
        }
        if spec.user.is_some() {
            return Err(Error::Other(
                "RunSpec::user: `ctr run` of containerd 1.6 cannot set a user".into(),
            ));
        }
        for (k, v) in &spec.labels {
            c.arg("--label").arg(format!("{k}={v}"));
        }
        for (h, d, ro) in &spec.binds {
            let options = if *ro { "rbind:ro" } else { "rbind:rw" };
            c.arg("--mount")
                .arg(format!("type=bind,src={h},dst={d},options={options}"));
        }
        c.arg("--label").arg(format!("nerdctl/name={name}"));
        c.arg(containerd_image).arg(name).args(&argv);
        if spec.tty {
            // `ctr run -t` needs a terminal of its own: `script` gives it one.
            let line = cmd::show(&c);
            let mut s = Command::new("script");
            s.args(["-qec", &line, "/dev/null"]);
            cmd::run(&mut s, cmd::SLOW)?;
            return Ok(pair);
        }
        cmd::run(&mut c, cmd::SLOW)?;
        Ok(pair)
    }

    /// Sends `POST /v1.41/commit?container=NAME&QUERY` with `body` to Docker and to the
    /// daemon on `commitd` and reads back what each made. `query` is the rest of the
    /// query string, already escaped (`repo=x&tag=1&changes=…`); the image is looked
    /// up by `repo:tag` (or by the returned ID when there is no `repo`).
    pub fn commit(
        &self,
        commitd: &Path,
        pair: &Pair<'_, '_>,
        query: &str,
        body: Option<&Value>,
    ) -> Result<Outcome> {
        let path = format!(
            "/{ORACLE_API}/commit?container={}{}{query}",
            http::query_escape(&pair.name),
            if query.is_empty() { "" } else { "&" },
        );
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let docker = self.side(self.docker.socket(), &path, body.as_deref(), true)?;
        let commitd = self.side(commitd, &path, body.as_deref(), false)?;
        Ok(Outcome { docker, commitd })
    }

    /// `GET /containers/{name}/changes` (`docker diff`) on both, each sorted by path.
    pub fn changes(&self, commitd: &Path, pair: &Pair<'_, '_>) -> Result<(Response, Response)> {
        let path = format!(
            "/{ORACLE_API}/containers/{}/changes",
            http::query_escape(&pair.name)
        );
        let (mut d, mut c) = self.both(commitd, "GET", &path, None)?;
        for r in [&mut d, &mut c] {
            if let Value::Array(mut rows) = r.json() {
                rows.sort_by(|a, b| a["Path"].as_str().cmp(&b["Path"].as_str()));
                r.body = serde_json::to_vec(&rows).unwrap_or_default();
            }
        }
        Ok((d, c))
    }

    /// Runs `sh -c script` in a fresh container of each engine's new image (Docker:
    /// `docker run --rm`; containerd: `ctr run --rm`) and returns both outputs: what
    /// the committed images look like from inside, as a user of each would see them.
    pub fn inside(&self, outcome: &Outcome, script: &str) -> Result<(String, String)> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let docker_id = outcome.docker.body["Id"]
            .as_str()
            .ok_or_else(|| Error::Other("Docker's commit made no image".into()))?;
        let docker = self.docker.cli(&[
            "run",
            "--rm",
            "--network",
            "none",
            docker_id,
            "sh",
            "-c",
            script,
        ])?;
        let tag = outcome.commitd.inspect["RepoTags"][0]
            .as_str()
            .ok_or_else(|| Error::Other("commitd's image has no tag to run".into()))?;
        let containerd = self.ctr.run_image(
            &normalize(tag),
            &format!("inside-{}-{n}", std::process::id()),
            &["sh", "-c", script],
        )?;
        Ok((docker, containerd))
    }

    /// Sends the same raw request to both (for error cases beyond `/commit`): status
    /// and body of each.
    pub fn both(
        &self,
        commitd: &Path,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Response, Response)> {
        let d = http::request(self.docker.socket(), method, path, body, cmd::SLOW)?;
        let c = http::request(commitd, method, path, body, cmd::SLOW)?;
        Ok((d, c))
    }

    fn side(&self, socket: &Path, path: &str, body: Option<&[u8]>, docker: bool) -> Result<Side> {
        let r = http::request(socket, "POST", path, body, cmd::SLOW)?;
        let body = r.json();
        let mut side = Side {
            status: r.status,
            body: if body.is_null() {
                json!({"message": r.text()})
            } else {
                body
            },
            inspect: Value::Null,
            history: Value::Null,
            layer: Vec::new(),
        };
        if r.status != 201 {
            return Ok(side);
        }
        let id = side.body["Id"].as_str().unwrap_or_default().to_owned();
        let inspect = api_json(socket, "GET", &format!("/{ORACLE_API}/images/{id}/json"))?;
        side.history = api_json(socket, "GET", &format!("/{ORACLE_API}/images/{id}/history"))?;
        side.layer = if docker {
            self.docker_top_layer(&id)?
        } else {
            let name = self
                .ctr
                .images()?
                .into_iter()
                .find(|i| {
                    inspect["RepoTags"].as_array().is_some_and(|t| {
                        t.iter()
                            .any(|t| normalize(t.as_str().unwrap_or_default()) == i.name)
                    })
                })
                .map(|i| i.name);
            match name {
                Some(n) => self.ctr.top_layer_entries(&n)?,
                None => self.untagged_top_layer(&inspect)?,
            }
        };
        side.layer.sort();
        side.inspect = inspect;
        Ok(side)
    }

    /// The top layer of Docker image `id`, from `docker save` (`/images/{id}/get`).
    fn docker_top_layer(&self, id: &str) -> Result<Vec<LayerEntry>> {
        let r = self
            .docker
            .api("GET", &format!("/{ORACLE_API}/images/{id}/get"), None)?;
        if r.status != 200 {
            return Err(Error::Other(format!(
                "docker save {id}: {} {}",
                r.status,
                r.text()
            )));
        }
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut archive = tar::Archive::new(r.body.as_slice());
        let bad = |e: std::io::Error| Error::Other(format!("reading docker save of {id}: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            if path == "manifest.json" || path.ends_with("layer.tar") {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).map_err(bad)?;
                files.insert(path, data);
            }
        }
        let manifest: Value =
            serde_json::from_slice(files.get("manifest.json").map_or(&[][..], Vec::as_slice))
                .map_err(|e| Error::Other(format!("docker save of {id}: manifest.json: {e}")))?;
        let top = manifest[0]["Layers"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l.as_str())
            .ok_or_else(|| Error::Other(format!("docker save of {id} lists no layer")))?;
        layer_entries(files.get(top).map_or(&[][..], Vec::as_slice))
    }

    /// The top layer of a commitd image with no name: found by its config digest.
    fn untagged_top_layer(&self, inspect: &Value) -> Result<Vec<LayerEntry>> {
        let id = inspect["Id"].as_str().unwrap_or_default();
        for image in self.ctr.images()? {
            let manifest = self.ctr.image_manifest(&image.name)?;
            if manifest["config"]["digest"] == json!(id) {
                return self.ctr.top_layer_entries(&image.name);
            }
        }
        Err(Error::Other(format!(
            "no image record in containerd for {id}"
        )))
    }
}

/// Whether `field` starts with `pattern`, where `*` in the pattern matches any run of
/// characters.
fn glob_prefix(pattern: &str, field: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return true;
    };
    let Some(mut rest) = field.strip_prefix(first) else {
        return false;
    };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// `name:tag` as containerd records it (`docker.io/library/` added to short names).
fn normalize(name: &str) -> String {
    let first = name.split('/').next().unwrap_or_default();
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

fn api_json(socket: &Path, method: &str, path: &str) -> Result<Value> {
    let r = http::request(socket, method, path, None, Duration::from_secs(120))?;
    if r.status >= 300 {
        return Err(Error::Other(format!(
            "{method} {path} on {}: {} {}",
            socket.display(),
            r.status,
            r.text()
        )));
    }
    Ok(r.json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_fields_match_by_glob_prefix() {
        assert!(glob_prefix("inspect.Size", "inspect.Size"));
        assert!(glob_prefix("history", "history[3].Tags"));
        assert!(glob_prefix("history[*].Size", "history[12].Size"));
        assert!(!glob_prefix("history[*].Size", "history[1].Tags"));
        assert!(!glob_prefix("inspect.Config.User", "inspect.Config.Env"));
        assert_eq!(normalize("parity/x:1"), "docker.io/parity/x:1");
        assert_eq!(normalize("x:1"), "docker.io/library/x:1");
        assert_eq!(normalize("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
    }
}
