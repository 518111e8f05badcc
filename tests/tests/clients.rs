//! The other real clients: docker-py (the Docker SDK for Python) and
//! bollard (Rust), each against the daemon and a real containerd.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use commitd_e2e::{World, daemon};

/// A Python with docker-py and pytest: `COMMITD_TEST_PYTHON` (set by
/// scripts/test.sh), or a venv made under target/ on first use.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("COMMITD_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv");
    let py = venv.join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import docker, pytest"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "docker>=7,<8", "pytest>=8,<9"])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "installing docker-py and pytest from PyPI failed"
        );
    }
    py
}

#[test]
fn docker_py() {
    let w = World::new("docker-py");
    let d = daemon!(w);
    w.running("pyc", "echo docker-py > /made-by");
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/test_dockerpy.py"))
        .env("COMMITD_SOCKET", &d.socket)
        .env("COMMITD_CONTAINER", "pyc")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docker-py tests failed:\n{text}\ndaemon log:\n{}",
        d.log_text()
    );
    assert!(text.contains("5 passed"), "{text}");
    assert_eq!(w.run("docker.io/py/low:1", "cat /made-by"), "docker-py\n");
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bollard() {
    use bollard::query_parameters::{CommitContainerOptionsBuilder, ListImagesOptions};
    let w = World::new("bollard");
    let d = daemon!(w);
    w.running("bc", "echo bollard > /made-by");
    let docker = bollard::Docker::connect_with_unix(
        d.socket.to_str().unwrap(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    docker.ping().await.unwrap();
    let opts = CommitContainerOptionsBuilder::new()
        .container("bc")
        .repo("rs/bollard")
        .tag("1")
        .comment("from bollard")
        .author("cargo test")
        .changes("ENV FROM_RUST=1")
        .pause(true)
        .build();
    let res = docker
        .commit_container(opts, bollard::models::ContainerConfig::default())
        .await
        .unwrap();
    assert!(res.id.starts_with("sha256:"), "{res:?}");
    let img = docker.inspect_image("rs/bollard:1").await.unwrap();
    assert_eq!(img.id.as_deref(), Some(res.id.as_str()));
    let env = img.config.and_then(|c| c.env).unwrap_or_default();
    assert!(env.iter().any(|e| e == "FROM_RUST=1"), "{env:?}");
    let images = docker
        .list_images(Some(ListImagesOptions::default()))
        .await
        .unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == "rs/bollard:1"))
    );
    let err = docker
        .commit_container(
            CommitContainerOptionsBuilder::new()
                .container("nope")
                .build(),
            bollard::models::ContainerConfig::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("No such container: nope"), "{err}");
    assert_eq!(w.run("docker.io/rs/bollard:1", "cat /made-by"), "bollard\n");
    w.assert_clean();
}
