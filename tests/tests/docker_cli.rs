//! End to end: the daemon on a temporary socket, driven by the real Docker
//! CLI (and curl), against a real containerd with runc containers.
#![allow(clippy::unwrap_used)]

use commitd_e2e::{World, daemon};
use commitd_testkit::TaskStatus;

#[test]
fn docker_commit_makes_an_image_that_runs_at_once() {
    let w = World::new("cli-commit");
    let d = daemon!(w);
    w.running(
        "app",
        "echo hello > /greeting && rm /etc/hosts && mkdir -p /srv && echo data > /srv/f",
    );

    let out = d.docker_ok(&[
        "commit",
        "-a",
        "Alice <a@example.com>",
        "-m",
        "first snapshot",
        "-c",
        "ENV GREETING=hi MODE=test",
        "-c",
        "CMD [\"sh\", \"-c\", \"cat /greeting\"]",
        "-c",
        "EXPOSE 8080/tcp",
        "-c",
        "LABEL org.example.team=infra",
        "-c",
        "WORKDIR /srv",
        "app-name",
        "acc/one:v1",
    ]);
    let id = out.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    assert_eq!(
        w.ctr.task_status("app").unwrap(),
        TaskStatus::Running,
        "resumed"
    );

    // The image runs at once, with the changes and the new config.
    let image = "docker.io/acc/one:v1";
    assert_eq!(
        w.run(
            image,
            "cat /greeting; test -e /etc/hosts || echo hosts-gone; pwd; echo $GREETING $MODE"
        ),
        "hello\nhosts-gone\n/srv\nhi test\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["image", "inspect", "acc/one:v1"])).unwrap();
    let img = &inspect[0];
    assert_eq!(img["Id"], id);
    assert_eq!(img["Author"], "Alice <a@example.com>");
    assert_eq!(img["Comment"], "first snapshot");
    assert_eq!(
        img["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "cat /greeting"])
    );
    assert_eq!(img["Config"]["WorkingDir"], "/srv");
    assert_eq!(
        img["Config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(img["Config"]["Labels"]["org.example.team"], "infra");
    let env: Vec<String> = serde_json::from_value(img["Config"]["Env"].clone()).unwrap();
    for want in ["GREETING=hi", "MODE=test"] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "the parent's PATH kept: {env:?}"
    );
    assert_eq!(img["RepoTags"], serde_json::json!(["acc/one:v1"]));

    // Nothing temporary left behind.
    w.assert_clean();
}

#[test]
fn pause_off_and_untagged_commits() {
    let w = World::new("cli-untagged");
    let d = daemon!(w);
    w.running("c", "echo 1 > /one");
    let id = d
        .docker_ok(&["commit", "--pause=false", "c"])
        .trim()
        .to_string();
    assert_eq!(w.ctr.task_status("c").unwrap(), TaskStatus::Running);
    // Untagged, but listed and reachable by its ID.
    let listed = d.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(listed.contains(&format!("{id} <none>:<none>")), "{listed}");
    let short = &id[7..19];
    let inspect: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["image", "inspect", short])).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    d.docker_ok(&["tag", short, "named:now"]);
    let listed = d.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(
        listed.contains(&format!("{id} named:now")) && !listed.contains("<none>"),
        "{listed}"
    );
    w.assert_clean();
}

#[test]
fn errors_are_dockers() {
    let w = World::new("cli-errors");
    let d = daemon!(w);
    w.running("c", "");

    let (ok, _, err) = d.docker(&["commit", "nope", "x"]);
    assert!(!ok);
    assert!(err.contains("No such container: nope"), "{err}");

    let (ok, _, err) = d.docker(&["commit", "-c", "RUN echo hi", "c", "x"]);
    assert!(!ok);
    assert!(err.contains("RUN is not a valid change command"), "{err}");

    // The CLI checks references itself; the daemon must too.
    let (code, body) = d.curl("POST", "/commit?container=c&repo=Upper", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "{\"message\":\"invalid reference format: repository name (library/Upper) must be lowercase\"}"
        )
    );
    let (code, body) = d.curl("POST", "/commit?container=c&repo=x@sha256:0123456789012345678901234567890123456789012345678901234567890123", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (400, "{\"message\":\"cannot import digest reference\"}")
    );
    let (code, body) = d.curl(
        "POST",
        "/commit?container=c",
        Some("{not json"),
        &["Content-Type: application/json"],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("{\"message\":\"invalid JSON"), "{body}");
    let (code, body) = d.curl(
        "POST",
        "/commit?container=c",
        Some("{} {}"),
        &["Content-Type: application/json"],
    );
    assert_eq!(
        (code, body.as_str()),
        (400, "{\"message\":\"unexpected content after JSON\"}")
    );
    let (code, _) = d.curl(
        "POST",
        "/commit?container=c",
        Some("null"),
        &["Content-Type: application/json"],
    );
    assert_eq!(code, 201);
    let (code, body) = d.curl("POST", "/commit?container=", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "{\"message\":\"invalid name or ID supplied: \\\"\\\"\"}"
        )
    );
    let (code, body) = d.curl("GET", "/nope", None, &[]);
    assert_eq!(
        (code, body.as_str()),
        (404, "{\"message\":\"page not found\"}")
    );
    let (code, body) = d.curl("GET", "/v1.12/version", None, &[]);
    assert_eq!(code, 400);
    assert!(body.contains("client version 1.12 is too old"), "{body}");
    let (code, body) = d.curl("GET", "/v9.99/version", None, &[]);
    assert_eq!(code, 400);
    assert!(body.contains("client version 9.99 is too new"), "{body}");

    // The daemon kept serving through all of it.
    let (code, body) = d.curl("GET", "/_ping", None, &[]);
    assert_eq!((code, body.as_str()), (200, "OK"));
    w.assert_clean();
}

#[test]
fn ping_and_version_as_docker() {
    let w = World::new("cli-version");
    let d = daemon!(w);
    let out = d.docker_ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}} {{.Server.Version}}",
    ]);
    assert_eq!(
        out.trim(),
        format!(
            "{} linux {}",
            commit_api_version(),
            env!("CARGO_PKG_VERSION")
        )
    );
    let (code, body) = d.curl("GET", "/v1.45/version", None, &[]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Components"][1]["Name"], "containerd");
    assert!(
        v["ContainerdVersion"].as_str().unwrap().starts_with("1."),
        "{v}"
    );
}

fn commit_api_version() -> &'static str {
    "1.53"
}

#[test]
fn image_routes_with_the_cli() {
    let w = World::new("cli-images");
    let d = daemon!(w);
    w.running("c", "echo v1 > /v");
    d.docker_ok(&["commit", "-m", "one", "c", "acc/app:1"]);
    w.ctr.exec("c", &["sh", "-c", "echo v2 > /v"]).unwrap();
    d.docker_ok(&["commit", "-m", "two", "c", "acc/app:2"]);

    let listed = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "acc/*"]);
    assert_eq!(listed, "acc/app:2\nacc/app:1\n");
    let history = d.docker_ok(&[
        "history",
        "--format",
        "{{.Comment}}|{{.CreatedBy}}",
        "acc/app:2",
    ]);
    assert!(history.starts_with("two|sh -c sleep 100000\n"), "{history}");
    d.docker_ok(&["tag", "acc/app:1", "acc/app:latest"]);
    let out = d.docker_ok(&["rmi", "acc/app:latest"]);
    assert_eq!(out, "Untagged: acc/app:latest\n");
    let out = d.docker_ok(&["rmi", "acc/app:1"]);
    assert!(
        out.starts_with("Untagged: acc/app:1\nDeleted: sha256:"),
        "{out}"
    );
    let (ok, _, err) = d.docker(&["rmi", "acc/app:1"]);
    assert!(!ok && err.contains("No such image: acc/app:1"), "{err}");
    // Re-committing to a tag leaves the old image listed as <none>, as Docker does.
    d.docker_ok(&["commit", "c", "acc/app:2"]);
    let dangling = d.docker_ok(&["images", "-f", "dangling=true", "-q"]);
    assert_eq!(dangling.lines().count(), 1, "{dangling}");
    w.assert_clean();
}
