//! A containerd container's equivalent of Docker's container config: what
//! `docker commit` starts from (moby's `CreateImageFromContainer` takes
//! `container.Config`, the user's `docker create` config merged with the
//! image's), rebuilt from what containerd keeps — the container's OCI
//! runtime spec (process args, env, cwd, user) and its labels.
//!
//! How each field comes back:
//! - **Entrypoint / Cmd**: the process args, split against the image's
//!   Entrypoint: args starting with it keep it and the rest is Cmd (the
//!   image's Cmd when the rest is it); other args overrode the entrypoint
//!   (Docker's CLI takes one word for `--entrypoint`): the first word is
//!   Entrypoint, the rest Cmd. An image without an Entrypoint gives all
//!   args as Cmd — containerd keeps no record of where a `--entrypoint`
//!   list ended, so `--entrypoint sh` with `-c x` on such an image comes
//!   back as Cmd `sh -c x` (it runs the same).
//! - **Env**: the entries the runtime added or changed relative to the
//!   image (`-e`), first, then the image's others (Docker's order); the
//!   runtime's own additions are left out: containerd's default `PATH` when
//!   the image has none, `TERM=xterm` of a terminal, `HOSTNAME=` of the
//!   spec's hostname.
//! - **WorkingDir**: the cwd, unless it is the image's (or `/` for an
//!   image without one).
//! - **User**: the image's when the spec's uid/gid agree with it (a name
//!   cannot be checked: taken as agreeing unless the spec runs as root),
//!   else `uid:gid`.
//! - **Labels**: the container's, without the labels containerd, nerdctl,
//!   the CRI plugin and kubelet add (prefixes in [`SYSTEM_LABEL_PREFIXES`]),
//!   then the image's.
//! - The rest (ports, volumes, healthcheck, stop signal) is the image's.
//!   As in Docker, the image's build-time fields `OnBuild`, `Shell` and
//!   `ArgsEscaped` are not part of a container's config.

use std::collections::BTreeMap;

use crate::image::RunConfig;
use crate::merge::merge;

/// Label prefixes of the runtimes' own labels, not the user's: containerd
/// (`io.containerd.image.config.stop-signal`), nerdctl (`nerdctl/name`, …),
/// the CRI plugin (`io.cri-containerd.kind`, …) and kubelet
/// (`io.kubernetes.pod.name`, …).
pub const SYSTEM_LABEL_PREFIXES: &[&str] = &[
    "io.containerd.",
    "nerdctl/",
    "io.cri-containerd.",
    "io.kubernetes.",
    "annotation.io.kubernetes.",
];

/// containerd's default `PATH` (`oci.populateDefaultUnixSpec`).
pub const CONTAINERD_DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an OCI runtime spec a container config comes back from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// `process.args` (`None`: the spec has no process).
    pub args: Option<Vec<String>>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub terminal: bool,
    pub hostname: String,
}

impl Runtime {
    /// What a container's OCI runtime spec says of how it runs (the engine
    /// reads the spec, typed, once; see its `container::read_spec`).
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Runtime {
        let hostname = spec.hostname().clone().unwrap_or_default();
        match spec.process() {
            None => Runtime {
                hostname,
                ..Runtime::default()
            },
            Some(p) => Runtime {
                args: p.args().clone(),
                env: p.env().clone().unwrap_or_default(),
                cwd: p.cwd().to_string_lossy().into_owned(),
                uid: p.user().uid(),
                gid: p.user().gid(),
                terminal: p.terminal().unwrap_or(false),
                hostname,
            },
        }
    }
}

/// The container's config as Docker would hold it: its run-time settings
/// (`runtime`, `labels`) over the image's config.
pub fn container_config<'a>(
    image: Option<&RunConfig>,
    runtime: Option<&Runtime>,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> RunConfig {
    let empty = RunConfig::default();
    let image = image.unwrap_or(&empty);
    let mut user = RunConfig::default();
    let user_labels: BTreeMap<String, String> = labels
        .into_iter()
        .filter(|(k, _)| !SYSTEM_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !user_labels.is_empty() {
        user.labels = Some(user_labels);
    }
    if let Some(rt) = runtime {
        let (entrypoint, cmd) = split_args(rt.args.as_deref().unwrap_or_default(), image);
        user.entrypoint = entrypoint;
        user.cmd = cmd;
        let env = runtime_env(rt, image);
        if !env.is_empty() {
            user.env = Some(env);
        }
        let image_dir = image.working_dir.as_deref().unwrap_or("");
        let default_dir = if image_dir.is_empty() { "/" } else { image_dir };
        if !rt.cwd.is_empty() && rt.cwd != default_dir {
            user.working_dir = Some(rt.cwd.clone());
        }
        user.user = runtime_user(rt.uid, rt.gid, image.user.as_deref().unwrap_or(""));
    }
    let mut config = merge(user, image);
    config.on_build = None;
    config.shell = None;
    config.args_escaped = None;
    config
}

/// Process args back into `(Entrypoint, Cmd)` against the image's
/// Entrypoint (`None`s are filled from the image by the merge).
fn split_args(args: &[String], image: &RunConfig) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if args.is_empty() {
        return (None, None);
    }
    let image_ep = image.entrypoint.as_deref().unwrap_or_default();
    if image_ep.is_empty() {
        return (None, Some(args.to_vec()));
    }
    if let Some(rest) = args.strip_prefix(image_ep) {
        let cmd = (!rest.is_empty()).then(|| rest.to_vec());
        return (Some(image_ep.to_vec()), cmd);
    }
    let cmd = (args.len() > 1).then(|| args[1..].to_vec());
    (Some(vec![args[0].clone()]), cmd)
}

fn key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// The env entries the container was given beyond the image's, in the
/// runtime's order; the runtime's own additions left out.
fn runtime_env(rt: &Runtime, image: &RunConfig) -> Vec<String> {
    let image_env = image.env.as_deref().unwrap_or_default();
    let image_has = |k: &str| image_env.iter().any(|e| key(e) == k);
    rt.env
        .iter()
        .filter(|e| !image_env.contains(e))
        .filter(|e| e.as_str() != CONTAINERD_DEFAULT_PATH || image_has("PATH"))
        .filter(|e| !rt.terminal || e.as_str() != "TERM=xterm" || image_has("TERM"))
        .filter(|e| {
            rt.hostname.is_empty()
                || image_has("HOSTNAME")
                || e.as_str() != format!("HOSTNAME={}", rt.hostname)
        })
        .cloned()
        .collect()
}

/// The user string: the image's when the spec agrees with it, else
/// `uid:gid` (`None`: the merge takes the image's).
fn runtime_user(uid: u32, gid: u32, image_user: &str) -> Option<String> {
    let explicit = || Some(format!("{uid}:{gid}"));
    if image_user.is_empty() {
        return if uid == 0 && gid == 0 {
            None
        } else {
            explicit()
        };
    }
    let (u, g) = image_user
        .split_once(':')
        .map_or((image_user, None), |(u, g)| (u, Some(g)));
    let agrees_uid = match u.parse::<u32>() {
        Ok(n) => n == uid,
        Err(_) => (u == "root") == (uid == 0),
    };
    let agrees_gid = match g.map(|g| (g, g.parse::<u32>())) {
        None => true,
        Some((_, Ok(n))) => n == gid,
        Some((g, Err(_))) => (g == "root") == (gid == 0),
    };
    if agrees_uid && agrees_gid {
        None
    } else {
        explicit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Empty;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> RunConfig {
        RunConfig {
            env: Some(s(&["PATH=/bin", "BASE=1"])),
            cmd: Some(s(&["serve"])),
            entrypoint: Some(s(&["/entry", "--x"])),
            working_dir: Some("/srv".into()),
            labels: Some([("team".to_string(), "infra".to_string())].into()),
            exposed_ports: Some([("80/tcp".to_string(), Empty {})].into()),
            on_build: Some(s(&["RUN make"])),
            shell: Some(s(&["/bin/bash", "-c"])),
            args_escaped: Some(true),
            stop_signal: Some("SIGINT".into()),
            ..Default::default()
        }
    }

    fn rt(args: &[&str], env: &[&str], cwd: &str) -> Runtime {
        Runtime {
            args: Some(s(args)),
            env: s(env),
            cwd: cwd.into(),
            ..Runtime::default()
        }
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn an_unchanged_container_is_the_image_without_build_time_fields() {
        let c = container_config(
            Some(&image()),
            Some(&rt(
                &["/entry", "--x", "serve"],
                &["PATH=/bin", "BASE=1"],
                "/srv",
            )),
            &none(),
        );
        let want = RunConfig {
            on_build: None,
            shell: None,
            args_escaped: None,
            ..image()
        };
        assert_eq!(c, want);
    }

    #[test]
    fn command_env_cwd_and_labels_of_the_container() {
        let labels: BTreeMap<String, String> = [
            ("extra", "1"),
            ("nerdctl/name", "web"),
            ("io.containerd.image.config.stop-signal", "SIGINT"),
            ("io.kubernetes.pod.name", "p"),
            ("team", "web"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = container_config(
            Some(&image()),
            Some(&rt(
                &["/entry", "--x", "other", "arg"],
                &["PATH=/bin", "BASE=2", "FOO=bar"],
                "/tmp",
            )),
            &labels,
        );
        assert_eq!(c.entrypoint, Some(s(&["/entry", "--x"])));
        assert_eq!(c.cmd, Some(s(&["other", "arg"])));
        assert_eq!(c.env, Some(s(&["BASE=2", "FOO=bar", "PATH=/bin"])));
        assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
        let l = c.labels.unwrap();
        assert_eq!(l.keys().collect::<Vec<_>>(), ["extra", "team"]);
        assert_eq!(l["team"], "web");
    }

    #[test]
    fn args_split_against_the_images_entrypoint() {
        let img = image();
        // Entrypoint overridden: its first word, the rest is Cmd.
        assert_eq!(
            split_args(&s(&["sh", "-c", "x"]), &img),
            (Some(s(&["sh"])), Some(s(&["-c", "x"])))
        );
        assert_eq!(
            split_args(&s(&["/entry", "--x"]), &img),
            (Some(s(&["/entry", "--x"])), None)
        );
        let plain = RunConfig {
            cmd: Some(s(&["sh"])),
            ..Default::default()
        };
        assert_eq!(
            split_args(&s(&["sh", "-c", "x"]), &plain),
            (None, Some(s(&["sh", "-c", "x"])))
        );
        let c = container_config(Some(&plain), Some(&rt(&["sh"], &[], "/")), &none());
        assert_eq!(
            (c.entrypoint, c.cmd, c.working_dir),
            (None, Some(s(&["sh"])), None)
        );
    }

    #[test]
    fn the_runtimes_own_env_is_left_out() {
        let plain = RunConfig::default();
        let mut r = rt(
            &["sh"],
            &[CONTAINERD_DEFAULT_PATH, "TERM=xterm", "HOSTNAME=box", "A=1"],
            "/",
        );
        r.terminal = true;
        r.hostname = "box".into();
        let c = container_config(Some(&plain), Some(&r), &none());
        assert_eq!(c.env, Some(s(&["A=1"])));
    }

    #[test]
    fn users() {
        assert_eq!(runtime_user(0, 0, ""), None);
        assert_eq!(runtime_user(1000, 0, "").as_deref(), Some("1000:0"));
        assert_eq!(runtime_user(1000, 1000, "1000:1000"), None);
        assert_eq!(runtime_user(1000, 5, "1000"), None);
        assert_eq!(runtime_user(0, 0, "1000").as_deref(), Some("0:0"));
        assert_eq!(runtime_user(33, 33, "www-data"), None);
        assert_eq!(runtime_user(0, 0, "www-data").as_deref(), Some("0:0"));
        assert_eq!(runtime_user(0, 0, "root"), None);
    }

    #[test]
    fn specs_read_as_runtimes() {
        let spec: oci_spec::runtime::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"terminal":true,"user":{"uid":5,"gid":6,"additionalGids":[7]},"args":["sh"],"env":["A=1"],"cwd":"/w"},"hostname":"h","linux":{}}"#,
        )
        .unwrap();
        assert_eq!(
            Runtime::from_spec(&spec),
            Runtime {
                args: Some(s(&["sh"])),
                env: s(&["A=1"]),
                cwd: "/w".into(),
                uid: 5,
                gid: 6,
                terminal: true,
                hostname: "h".into(),
            }
        );
        let empty: oci_spec::runtime::Spec = serde_json::from_str("{}").unwrap();
        assert_eq!(Runtime::from_spec(&empty), Runtime::default());
    }
}
