//! `docker ps` and `docker inspect` over containerd's containers and tasks.
#![allow(clippy::unwrap_used)]

use commitd_e2e::{World, daemon};

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

    let names = |args: &[&str]| {
        let mut all: Vec<String> = d.docker_ok(args).lines().map(str::to_string).collect();
        all.sort();
        all
    };
    assert_eq!(
        names(&["ps", "--format", "{{.Names}} {{.State}}"]),
        ["paused1-name paused", "run1-name running"]
    );
    assert_eq!(
        names(&["ps", "-a", "--format", "{{.Names}}"]),
        [
            "created1-name",
            "paused1-name",
            "run1-name",
            "stopped1-name"
        ]
    );
    assert_eq!(
        names(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}} {{.Status}}"
        ])
        .len(),
        1
    );
    assert!(
        names(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Status}}"
        ])[0]
            .starts_with("Exited (137)")
    );
    assert_eq!(
        names(&[
            "ps",
            "-a",
            "--filter",
            "label=team=infra",
            "--format",
            "{{.Names}}"
        ]),
        ["created1-name"]
    );
    assert!(
        d.docker_ok(&["ps", "--format", "{{.Status}}", "--filter", "status=paused"])
            .contains("(Paused)")
    );

    let v: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["inspect", "run1-name"])).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], "run1");
    assert_eq!(c["Name"], "/run1-name");
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_u64().unwrap() > 0);
    assert_eq!(c["Path"], "sh");
    assert_eq!(c["Args"], serde_json::json!(["-c", "sleep 100000"]));
    assert_eq!(c["Config"]["Image"], "commitd-busybox:latest");
    assert!(c["Image"].as_str().unwrap().starts_with("sha256:"));
    let v: serde_json::Value = serde_json::from_str(&d.docker_ok(&["inspect", "paused1"])).unwrap();
    assert_eq!(
        (&v[0]["State"]["Status"], &v[0]["State"]["Paused"]),
        (&serde_json::json!("paused"), &serde_json::json!(true))
    );
    let (ok, _, err) = d.docker(&["inspect", "--type", "container", "nope"]);
    assert!(!ok && err.contains("No such container: nope"), "{err}");
    let (code, body) = d.curl(
        "GET",
        "/containers/json?filters=%7B%22status%22%3A%5B%22bogus%22%5D%7D",
        None,
        &[],
    );
    assert_eq!(
        (code, body.as_str()),
        (400, "{\"message\":\"invalid filter 'status=bogus'\"}")
    );
}
