//! `docker ps` and `docker inspect` over containerd's containers and tasks,
//! with the real Docker CLI.
#![allow(clippy::unwrap_used)]

use commitd_e2e::{Daemon, World, daemon};
use serde_json::{Value, json};

fn lines(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = d.docker_ok(args).lines().map(str::to_string).collect();
    all.sort();
    all
}

fn inspect(d: &Daemon, name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&d.docker_ok(&["inspect", "--type", "container", name])).unwrap();
    v[0].clone()
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[test]
fn ps_and_inspect_as_docker() {
    let w = World::new("containers");
    let d = daemon!(w);
    w.running("run1", "");
    w.running("paused1", "");
    w.ctr.pause("paused1").unwrap();
    w.running("stopped1", "");
    w.ctr.kill_task("stopped1").unwrap();
    w.ctr
        .create(
            &w.image,
            "created1",
            &[("nerdctl/name", "created1-name"), ("team", "infra")],
        )
        .unwrap();

    // Running and paused ones by default; every one with -a.
    assert_eq!(
        lines(&d, &["ps", "--format", "{{.Names}} {{.State}}"]),
        ["paused1-name paused", "run1-name running"]
    );
    assert_eq!(
        lines(&d, &["ps", "-a", "--format", "{{.Names}}"]),
        [
            "created1-name",
            "paused1-name",
            "run1-name",
            "stopped1-name"
        ]
    );
    // Newest first: -n lists the last created whatever their state.
    assert_eq!(
        lines(&d, &["ps", "-n", "1", "--format", "{{.Names}}"]),
        ["created1-name"]
    );
    // Docker's status texts.
    let status = |name: &str| {
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                &format!("name=^{name}$"),
                "--format",
                "{{.Status}}",
            ],
        )
        .join("")
    };
    assert!(
        status("run1-name").starts_with("Up "),
        "{}",
        status("run1-name")
    );
    assert!(
        status("paused1-name").ends_with(" (Paused)"),
        "{}",
        status("paused1-name")
    );
    assert!(
        status("stopped1-name").starts_with("Exited (137) ")
            && status("stopped1-name").ends_with(" ago"),
        "{}",
        status("stopped1-name")
    );
    assert_eq!(status("created1-name"), "Created");
    // Filters: status, label, exited, name (a Go regexp), id, ancestor.
    assert_eq!(
        lines(
            &d,
            &["ps", "--filter", "status=paused", "--format", "{{.Names}}"]
        ),
        ["paused1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &["ps", "--filter", "status=exited", "--format", "{{.Names}}"]
        ),
        ["stopped1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "label=team=infra",
                "--format",
                "{{.Names}}"
            ]
        ),
        ["created1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "exited=137",
                "--format",
                "{{.Names}}"
            ]
        ),
        ["stopped1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "name=^/?run",
                "--format",
                "{{.Names}}"
            ]
        ),
        ["run1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "id=stopped",
                "--format",
                "{{.Names}}"
            ]
        ),
        ["stopped1-name"]
    );
    assert_eq!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "ancestor=commitd-busybox",
                "--format",
                "{{.Names}}"
            ]
        )
        .len(),
        4
    );
    assert!(
        lines(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "ancestor=nope:1",
                "--format",
                "{{.Names}}"
            ]
        )
        .is_empty()
    );
    // Image, command and ID columns.
    let row = d.docker_ok(&[
        "ps",
        "--no-trunc",
        "--filter",
        "id=run1",
        "--format",
        "{{.ID}}|{{.Image}}|{{.Command}}",
    ]);
    assert_eq!(
        row.trim(),
        "run1|commitd-busybox:latest|\"sh -c 'sleep 100000'\""
    );
    let (code, body) = d.curl("GET", "/containers/json?all=1", None, &[]);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let created1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Id"] == "created1")
        .unwrap();
    assert_eq!(created1["Names"], json!(["/created1-name"]));
    assert_eq!(created1["Labels"]["team"], "infra");
    assert!(created1["ImageID"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(created1["Ports"], json!([]));
    assert_eq!(created1["HostConfig"]["NetworkMode"], "none");

    // docker inspect: by name, ID and prefix.
    let c = inspect(&d, "run1-name");
    assert_eq!(c["Id"], "run1");
    assert_eq!(c["Name"], "/run1-name");
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(c["State"]["Paused"], false);
    assert!(c["State"]["Pid"].as_u64().unwrap() > 0);
    assert_ne!(c["State"]["StartedAt"], ZERO_TIME);
    assert_eq!(c["State"]["FinishedAt"], ZERO_TIME);
    assert_eq!(c["Path"], "sh");
    assert_eq!(c["Args"], json!(["-c", "sleep 100000"]));
    assert_eq!(c["Config"]["Cmd"], json!(["sh", "-c", "sleep 100000"]));
    assert_eq!(c["Config"]["Image"], "commitd-busybox:latest");
    assert_eq!(c["Driver"], "overlayfs");
    assert_eq!(c["Platform"], "linux");
    let image_id = c["Image"].as_str().unwrap().to_string();
    assert!(
        image_id.starts_with("sha256:") && image_id.len() == 71,
        "{image_id}"
    );
    assert_eq!(inspect(&d, "run1")["Id"], "run1");
    assert_eq!(inspect(&d, "stopp")["Id"], "stopped1");
    // `--format` templates read the same fields.
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "paused1"
        ])
        .trim(),
        "paused true"
    );
    let stopped = inspect(&d, "stopped1-name");
    assert_eq!(stopped["State"]["Status"], "exited");
    assert_eq!(stopped["State"]["Running"], false);
    assert_eq!(stopped["State"]["ExitCode"], 137);
    assert_eq!(stopped["State"]["Pid"], 0);
    assert_ne!(stopped["State"]["FinishedAt"], ZERO_TIME);
    let created = inspect(&d, "created1-name");
    assert_eq!(created["State"]["Status"], "created");
    assert_eq!(created["State"]["StartedAt"], ZERO_TIME);
    assert_eq!(created["Config"]["Labels"]["team"], "infra");

    // Errors in Docker's words.
    let (ok, _, err) = d.docker(&["inspect", "--type", "container", "nope"]);
    assert!(!ok && err.contains("No such container: nope"), "{err}");
    let (code, body) = d.curl("GET", "/containers/nope/json", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (404, "{\"message\":\"No such container: nope\"}")
    );
    // A unique ID prefix finds its container; a shared one is ambiguous.
    let (code, _) = d.curl("GET", "/containers/run/json", None, &[]);
    assert_eq!(code, 200);
    w.running("run2", "");
    let (code, body) = d.curl("GET", "/containers/run/json", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "{\"message\":\"multiple IDs found with provided prefix: run\"}"
        )
    );
    let (code, body) = d.curl(
        "GET",
        "/containers/json?filters=%7B%22status%22%3A%5B%22bogus%22%5D%7D",
        None,
        &[],
    );
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "{\"message\":\"invalid filter 'status=bogus': invalid value for state (bogus): must be one of created, running, paused, restarting, removing, exited, dead\"}"
        )
    );
    let (ok, _, err) = d.docker(&["ps", "--filter", "colour=red"]);
    assert!(!ok && err.contains("invalid filter 'colour'"), "{err}");

    // A commit that moves the container's image name: the container still
    // shows the image it was made from, by ID, as Docker does.
    let new_id = d.docker_ok(&["commit", "run1-name", "commitd-busybox:latest"]);
    let new_id = new_id.trim();
    assert_ne!(new_id, image_id);
    let c = inspect(&d, "run1");
    assert_eq!(c["Image"], image_id.as_str());
    assert_eq!(c["Config"]["Image"], "commitd-busybox:latest");
    assert_eq!(
        d.docker_ok(&[
            "ps",
            "--no-trunc",
            "--filter",
            "id=run1",
            "--format",
            "{{.Image}}"
        ])
        .trim(),
        image_id
    );
}

/// bollard's typed models read both routes (every field Docker's type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bollard_reads_the_routes() {
    use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let w = World::new("containers-bollard");
    let d = daemon!(w);
    w.running("b1", "");
    w.ctr
        .create(&w.image, "b2", &[("nerdctl/name", "b2-name")])
        .unwrap();
    let docker = bollard::Docker::connect_with_unix(
        d.socket.to_str().unwrap(),
        60,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let all = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
        .await
        .unwrap();
    let mut states: Vec<(String, Option<ContainerSummaryStateEnum>)> = all
        .iter()
        .map(|c| (c.id.clone().unwrap(), c.state))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        [
            ("b1".to_string(), Some(ContainerSummaryStateEnum::RUNNING)),
            ("b2".to_string(), Some(ContainerSummaryStateEnum::CREATED)),
        ]
    );
    let b1 = all.iter().find(|c| c.id.as_deref() == Some("b1")).unwrap();
    assert_eq!(b1.names, Some(vec!["/b1-name".to_string()]));
    assert!(b1.image_id.as_deref().unwrap().starts_with("sha256:"));
    assert!(b1.image_manifest_descriptor.is_some());

    for (id, status) in [
        ("b1-name", ContainerStateStatusEnum::RUNNING),
        ("b2", ContainerStateStatusEnum::CREATED),
    ] {
        let c = docker.inspect_container(id, None).await.unwrap();
        assert_eq!(c.state.unwrap().status, Some(status), "{id}");
        assert_eq!(
            c.config.unwrap().image.as_deref(),
            Some("commitd-busybox:latest")
        );
        assert_eq!(c.graph_driver.unwrap().name, "overlayfs");
        assert!(c.host_config.is_some() && c.network_settings.is_some());
    }
    let err = docker.inspect_container("nope", None).await.unwrap_err();
    assert!(err.to_string().contains("No such container: nope"), "{err}");
}
