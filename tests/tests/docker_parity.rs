//! commitd against Docker Engine 20.10 side by side (issue 11's differential test):
//! one base image in both engines (one docker-archive, identical config digest and
//! diff IDs), the same container and changes on both sides, the same
//! `POST /v1.41/commit`, then image inspect, history, top-layer entries and error
//! status/message compared field by field (`commitd_testkit::Oracle`).
//!
//! Each case names the fields it allows to differ, and why.
#![allow(clippy::unwrap_used)]

use commitd_e2e::Daemon;
use commitd_testkit::{
    ImageBuilder, ORACLE_API, Oracle, Outcome, RunSpec, query_escape, shared, shared_dockerd,
    unique_namespace,
};

/// Fields no case compares: Docker writes the committing container's hostname (its
/// short ID) into `Config.Hostname`, and `Config.Image` holds the name the container
/// was created from, which differs between the engines' name forms.
const ALWAYS: &[&str] = &["inspect.Config.Hostname", "inspect.Config.Image"];

/// Docker 20.10 answers API 1.41, older than what commitd serves: its image inspect
/// has no `Descriptor` (API 1.48). (Its `Config` shows every container-config field,
/// empty ones too: the oracle takes absent and empty as the same.)
const API_1_41: &[&str] = &["inspect.Descriptor"];

/// Differences commitd has today (issue 11), allowed here until they are fixed:
/// sizes are compressed sizes, not Docker's unpacked ones (`Size`, history `Size`);
/// `docker history` lists no tags on the parent's row (Docker lists the parent
/// image's repo tags there).
const KNOWN_TODAY: &[&str] = &["inspect.Size", "history[*].Size", "history[*].Tags"];

/// A base whose Cmd keeps the container running, so that an unmodified container's
/// config equals the image's on both sides. `case` makes its config (and so its ID)
/// the case's own: Docker lists every tag of an image, and cases run in parallel.
fn base(case: &str) -> ImageBuilder {
    ImageBuilder::busybox()
        .cmd(&["sleep", "100000"])
        .env("BASE=1")
        .env(&format!("PARITY_CASE={case}"))
}

struct Case {
    oracle: Oracle<'static>,
    daemon: Daemon,
    ns: String,
}

impl Case {
    fn new(name: &str) -> Case {
        let ns = unique_namespace(name);
        Case::with_base(ns.clone(), &base(&ns))
    }

    fn with_base(ns: String, image: &ImageBuilder) -> Case {
        let oracle = Oracle::new(shared_dockerd(), shared(), &ns, image)
            .unwrap_or_else(|e| panic!("preparing the base in both engines: {e}"));
        let daemon = Daemon::start(
            env!("CARGO_BIN_EXE_commitd-under-test"),
            shared().socket(),
            &ns,
            &[],
        );
        Case { oracle, daemon, ns }
    }

    /// A name unique in the shared dockerd.
    fn unique(&self, what: &str) -> String {
        format!("{what}-{}", self.ns)
    }

    /// Runs `spec`, then `script` in it (if any), commits with `query` on both sides.
    fn commit(
        &self,
        spec: &RunSpec,
        script: &str,
        query: &str,
        body: Option<serde_json::Value>,
    ) -> Outcome {
        let name = self.unique("c");
        let pair = self.oracle.run(&name, spec).unwrap();
        if !script.is_empty() {
            pair.sh(script).unwrap();
        }
        let repo = format!("parity/{name}");
        let q = if query.is_empty() {
            format!("repo={repo}&tag=1")
        } else {
            format!("repo={repo}&tag=1&{query}")
        };
        self.oracle
            .commit(&self.daemon.socket, &pair, &q, body.as_ref())
            .unwrap()
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = self.oracle.ctr().remove_all();
        let images = self
            .oracle
            .docker()
            .cli(&[
                "images",
                "-q",
                "--filter",
                &format!("reference=parity/*-{}", self.ns),
            ])
            .unwrap_or_default();
        for id in images.split_whitespace() {
            let _ = self.oracle.docker().cli_output(&["rmi", "-f", id]);
        }
        let _ = self
            .oracle
            .docker()
            .cli_output(&["rmi", "-f", self.oracle.docker_base()]);
    }
}

fn assert_same(outcome: &Outcome, allowed: &[&str]) {
    let allowed: Vec<&str> = ALWAYS
        .iter()
        .chain(API_1_41)
        .chain(KNOWN_TODAY)
        .chain(allowed)
        .copied()
        .collect();
    let diffs = outcome.differences(&allowed);
    assert!(
        diffs.is_empty(),
        "commitd differs from Docker Engine 20.10:\n  {}\n\nDocker: {:#}\ncommitd: {:#}",
        diffs.join("\n  "),
        outcome.docker.inspect,
        outcome.commitd.inspect
    );
}

/// `changes` as the Docker CLI sends them (`--change` repeated: one per line).
fn changes(lines: &[&str]) -> String {
    format!("changes={}", query_escape(&lines.join("\n")))
}

#[test]
fn the_base_is_identical_in_both_engines() {
    let case = Case::new("parity-base");
    assert!(case.oracle.config_digest.starts_with("sha256:"));
    assert_eq!(case.oracle.diff_ids.len(), 1);
}

#[test]
fn new_file_in_a_running_container() {
    // moby TestCommitNewFile
    let case = Case::new("parity-new-file");
    let o = case.commit(&RunSpec::default(), "echo koye > /foo", "", None);
    assert_eq!(o.docker.status, 201);
    assert_same(&o, &[]);
}

#[test]
fn changes_deletes_links_and_modes() {
    let case = Case::new("parity-tree");
    let o = case.commit(
        &RunSpec::default(),
        "mkdir -p /srv/a/b && echo x > /srv/a/b/f && chmod 0640 /srv/a/b/f && chown 65534:65534 /srv/a/b/f \
         && ln -s ../a /srv/link && rm /etc/group && echo changed >> /etc/passwd && mkfifo /srv/fifo \
         && rm -r /var && mkdir /var && touch /var/new",
        "",
        None,
    );
    assert_same(&o, &[]);
}

#[test]
fn author_comment_and_no_pause() {
    // moby TestCommitWithoutPause; the CLI reference's `-a`/`-m` example.
    let case = Case::new("parity-meta");
    let o = case.commit(
        &RunSpec::default(),
        "echo hi > /hi",
        "author=John%20Hannibal%20Smith%20%3Changnibal%40a-team.com%3E&comment=new%20version&pause=0",
        None,
    );
    assert_same(&o, &[]);
}

#[test]
fn commit_of_an_unknown_container_is_a_404_with_dockers_message() {
    let case = Case::new("parity-404");
    let path = format!("/{ORACLE_API}/commit?container=no-such-container-xyz&repo=x");
    let (d, c) = case
        .oracle
        .both(&case.daemon.socket, "POST", &path, None)
        .unwrap();
    assert_eq!(
        (d.status, c.status),
        (404, 404),
        "{} / {}",
        d.text(),
        c.text()
    );
    assert_eq!(d.json()["message"], c.json()["message"]);
}

// ---- moby integration-cli/docker_cli_commit_test.go ----

#[test]
fn commit_hardlink() {
    // TestCommitHardlink: a hard link stays a hard link.
    let case = Case::new("parity-hardlink");
    let o = case.commit(
        &RunSpec::default(),
        "touch /file1 && ln /file1 /file2",
        "",
        None,
    );
    assert_same(&o, &[]);
}

#[test]
fn commit_paused_container_without_pausing() {
    // TestCommitPausedContainer: pause=0 on a paused container leaves it paused.
    let case = Case::new("parity-paused");
    let name = case.unique("c");
    let pair = case.oracle.run(&name, &RunSpec::default()).unwrap();
    pair.sh("echo p > /p").unwrap();
    pair.pause().unwrap();
    let o = case
        .oracle
        .commit(
            &case.daemon.socket,
            &pair,
            &format!("repo=parity/{name}&tag=1&pause=0"),
            None,
        )
        .unwrap();
    assert_same(&o, &[]);
    let (docker, containerd) = pair.states().unwrap();
    assert_eq!(docker, "paused");
    assert_eq!(containerd, commitd_testkit::TaskStatus::Paused);
}

#[test]
fn commit_change() {
    // TestCommitChange: every instruction `--change` takes.
    let case = Case::new("parity-change");
    let o = case.commit(
        &RunSpec::default(),
        "",
        &changes(&[
            "EXPOSE 8080",
            "ENV DEBUG true",
            "ENV test 1",
            "ENV PATH /foo",
            "LABEL foo bar",
            "CMD [\"/bin/sh\"]",
            "WORKDIR /opt",
            "ENTRYPOINT [\"/bin/sh\"]",
            "USER testuser",
            "VOLUME /var/lib/docker",
            "ONBUILD /usr/local/bin/python-build --dir /app/src",
        ]),
        None,
    );
    assert_same(&o, &[]);
}

#[test]
fn commit_change_labels() {
    // TestCommitChangeLabels: a change overrides the container's label.
    let case = Case::new("parity-change-labels");
    let o = case.commit(
        &RunSpec::default().label("some", "label"),
        "",
        &changes(&["LABEL some=label2"]),
        None,
    );
    assert_same(&o, &[]);
}

// ---- moby integration/container/commit_test.go, API commit tests ----

#[test]
fn commit_inherits_env() {
    // TestCommitInheritsEnv
    let case = Case::new("parity-env");
    let o = case.commit(&RunSpec::default(), "", &changes(&["ENV PATH=/bin"]), None);
    assert_same(&o, &[]);
}

#[test]
fn api_commit_with_labels_in_the_body() {
    // TestContainerAPICommitWithLabelInConfig
    let case = Case::new("parity-body-labels");
    let body = serde_json::json!({"Labels": {"key1": "value1", "key2": "value2"}});
    let o = case.commit(&RunSpec::default(), "touch /test", "", Some(body));
    assert_same(&o, &[]);
}

// ---- the Docker CLI reference's `docker commit` examples ----

#[test]
fn reference_change_env() {
    let case = Case::new("parity-ref-env");
    let o = case.commit(&RunSpec::default(), "", &changes(&["ENV DEBUG=true"]), None);
    assert_same(&o, &[]);
}

#[test]
fn reference_change_cmd_and_expose() {
    let case = Case::new("parity-ref-cmd");
    let o = case.commit(
        &RunSpec::default(),
        "",
        &changes(&["CMD [\"apachectl\", \"-DFOREGROUND\"]", "EXPOSE 80"]),
        None,
    );
    assert_same(&o, &[]);
}

#[test]
fn commit_with_host_bind_mounts() {
    // TestCommitWithHostBindMount: the mount points the runtime made for bind mounts
    // (a file and a directory the image lacks) are committed as Docker commits them.
    let case = Case::new("parity-binds");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "host").unwrap();
    let o = case.commit(
        &RunSpec::default()
            .bind("/dev/null", "/media/dev/null", false)
            .bind(dir.path().to_str().unwrap(), "/data/vol", true),
        "echo c > /c",
        "",
        None,
    );
    assert_same(&o, &[]);
}

// ---- layer shapes (what the overlay upper directory can hold) ----

/// One commit per script, compared with Docker.
fn layer_case(name: &str, script: &str) {
    let case = Case::new(name);
    let o = case.commit(&RunSpec::default(), script, "", None);
    assert_same(&o, &[]);
}

#[test]
fn layer_opaque_directory() {
    layer_case(
        "parity-opaque",
        "rm -rf /usr && mkdir /usr && echo new > /usr/only",
    );
}

#[test]
fn layer_type_changes() {
    layer_case(
        "parity-types",
        "rm /etc/group && mkdir /etc/group && rm -r /root && echo f > /root \
         && rm /bin/ls && echo notalink > /bin/ls && rm /etc/passwd && ln -s group /etc/passwd",
    );
}

#[test]
fn layer_metadata_only_changes() {
    layer_case(
        "parity-meta-only",
        "chmod 4755 /bin/busybox && chown 1:2 /etc/group && chmod 1777 /var && touch /etc/passwd",
    );
}

#[test]
fn layer_hard_links_to_lower_and_new_files() {
    layer_case(
        "parity-hardlinks",
        "ln /etc/group /group-link && echo n > /new && ln /new /new2 && ln /new /etc/new3",
    );
}

#[test]
fn layer_odd_names_and_long_paths() {
    layer_case(
        "parity-names",
        "mkdir -p '/odd dir/ü' && echo x > '/odd dir/ü/ä b' && touch '/odd dir/.wh' \
         && d=/long; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do d=$d/segment-$i-abcdefghijklmnop; done \
         && mkdir -p $d && echo deep > $d/file-with-a-rather-long-name-as-well.txt",
    );
}

#[test]
fn layer_devices_fifos_and_sparse_files() {
    layer_case(
        "parity-special",
        "mknod /dev-null-copy c 1 3 && mkfifo /fifo && dd if=/dev/zero of=/sparse bs=1 count=1 seek=10485760 2>/dev/null \
         && yes abcdefg | head -c 3145728 > /big",
    );
}

#[test]
fn layer_deleted_and_recreated_in_place() {
    layer_case(
        "parity-recreate",
        "rm /etc/group && echo g > /etc/group && rm -r /usr && mkdir -p /usr/bin && echo x > /usr/bin/x",
    );
}

#[test]
fn changes_as_separate_parameters_as_the_docker_cli_sends_them() {
    // `docker commit --change A --change B` sends `changes=A&changes=B`.
    let case = Case::new("parity-cli-changes");
    let query = [
        "ENV A=1",
        "LABEL l=v",
        "CMD [\"/bin/sh\"]",
        "EXPOSE 80/udp",
        "VOLUME [\"/data\"]",
    ]
    .iter()
    .map(|c| format!("changes={}", query_escape(c)))
    .collect::<Vec<_>>()
    .join("&");
    let o = case.commit(&RunSpec::default(), "", &query, None);
    assert_same(&o, &[]);
}

/// What a container of each new image sees, every path with type, mode, owner,
/// size, link target and content hash: the whole image, not only the new layer.
/// Docker's runtime files (its init layer's `/.dockerenv` and `/etc/mtab`, its
/// bind-mounted `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`) are left out.
#[test]
fn the_committed_images_look_the_same_from_inside() {
    let case = Case::new("parity-inside");
    let o = case.commit(
        &RunSpec::default(),
        "mkdir -p /srv/a && echo x > /srv/a/f && chmod 600 /srv/a/f && ln -s a /srv/l \
         && rm /etc/group && rm -r /var && mkdir /var && echo v > /var/v && ln /srv/a/f /srv/h",
        "",
        None,
    );
    assert_same(&o, &[]);
    let (docker, commitd) = case.oracle.inside(&o, commitd_e2e::LIST_FS).unwrap();
    let keep = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                ![
                    "./.dockerenv ",
                    "./etc/hosts ",
                    "./etc/hostname ",
                    "./etc/resolv.conf ",
                    "./etc/mtab ",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    };
    let (docker, commitd) = (keep(&docker), keep(&commitd));
    assert!(docker.len() > 80, "{docker:?}");
    assert_eq!(docker, commitd);
}
