//! `docker push` to a real registry (Debian's docker-registry, started here).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_e2e::{Daemon, World, daemon};

/// A private distribution registry on a loopback port.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(h) = htpasswd {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                h.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package) must be installed");
        let r = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn push_to_a_registry_and_read_it_back() {
    let w = World::new("push");
    let d = daemon!(w);
    let mut reg = Registry::start(None);
    let name = format!("{}/acc/app:1", reg.host());
    w.running("c", "echo pushed > /p");
    d.docker_ok(&["commit", "c", &name]);

    let out = d.docker_ok(&["push", &name]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/acc/app]",
            reg.host()
        )),
        "{out}"
    );
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let local = inspect(&d, &name);

    let (ok, raw) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert!(ok, "{raw}");
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        local["Descriptor"]["digest"].as_str().unwrap(),
        "same manifest digest"
    );
    let (ok, cfg) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        "--config",
        &format!("docker://{name}"),
    ]);
    assert!(ok, "{cfg}");
    assert_eq!(
        format!("sha256:{}", sha256_hex(cfg.as_bytes())),
        local["Id"].as_str().unwrap(),
        "same config digest"
    );

    // Again: every layer is already there.
    let out = d.docker_ok(&["push", &name]);
    assert!(
        out.contains("Layer already exists") && !out.contains("Pushed"),
        "{out}"
    );
    // Another image on the same base: the base is not sent again, in the
    // same repository (already there) or another (mounted from the first).
    w.ctr.exec("c", &["sh", "-c", "echo more > /q"]).unwrap();
    let name2 = format!("{}/acc/app:2", reg.host());
    d.docker_ok(&["commit", "c", &name2]);
    let out = d.docker_ok(&["push", &name2]);
    assert!(
        out.contains("Layer already exists") && out.contains("Pushed"),
        "{out}"
    );
    let name3 = format!("{}/acc/other:3", reg.host());
    d.docker_ok(&["tag", &name2, &name3]);
    let out = d.docker_ok(&["push", &name3]);
    assert!(
        out.contains("Mounted from acc/app") && !out.contains("Pushed"),
        "{out}"
    );

    // Registry down: a clear error, a failing CLI, the local image intact.
    reg.stop();
    let (ok, out, err) = d.docker(&["push", &name]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("connect") || err.contains("refused") || out.contains("refused"),
        "{out}{err}"
    );
    assert_eq!(inspect(&d, &name)["Id"], local["Id"]);
}

#[test]
fn push_with_credentials() {
    let w = World::new("push-auth");
    let d = daemon!(w);
    if Command::new("htpasswd").arg("-h").output().is_err() {
        let st = Command::new("apt-get")
            .args(["install", "-y", "-qq", "apache2-utils"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap();
        assert!(st.success(), "installing apache2-utils for htpasswd");
    }
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", "robot", "s3cret"])
        .output()
        .unwrap();
    std::fs::write(&htpasswd, out.stdout).unwrap();
    let reg = Registry::start(Some(&htpasswd));
    let name = format!("{}/team/img:1", reg.host());
    w.running("c", "echo secret > /s");
    d.docker_ok(&["commit", "c", &name]);

    let with_auth = |user: &str, pass: &str| {
        let cfg = docker_config(&d);
        std::fs::create_dir_all(&cfg).unwrap();
        let auth = base64(&format!("{user}:{pass}"));
        std::fs::write(
            cfg.join("config.json"),
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
                reg.host()
            ),
        )
        .unwrap();
        d.docker(&["push", &name])
    };
    let (ok, out, err) = with_auth("robot", "wrong");
    assert!(!ok, "refused credentials must fail: {out}");
    assert!(
        format!("{out}{err}").to_lowercase().contains("auth"),
        "a clear auth error: {out}{err}"
    );
    let (ok, out, err) = with_auth("robot", "s3cret");
    assert!(ok, "{out}{err}\n{}", d.log_text());
    assert!(out.contains("1: digest: sha256:"), "{out}");
}

#[test]
fn a_missing_local_blob_pushes_nothing() {
    let w = World::new("push-missing");
    let d = daemon!(w);
    let reg = Registry::start(None);
    let name = format!("{}/acc/partial:1", reg.host());
    w.running("c", "echo x > /x");
    d.docker_ok(&["commit", "c", &name]);
    // Lose the base layer, as a node that never pulled it would have.
    let base = inspect(&d, &w.image);
    let manifest: serde_json::Value = serde_json::from_str(
        &w.ctr
            .run(&[
                "content",
                "get",
                base["Descriptor"]["digest"].as_str().unwrap(),
            ])
            .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    w.ctr.run(&["content", "rm", &layer]).unwrap();
    let (ok, out, err) = d.docker(&["push", &name]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&layer) && err.contains("nothing was pushed"),
        "{err}"
    );
    let (exists, _) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert!(!exists, "no manifest in the registry");
}

fn docker_config(d: &Daemon) -> PathBuf {
    // The harness points DOCKER_CONFIG at <daemon dir>/docker-config.
    d.socket.parent().unwrap().join("docker-config")
}

fn base64(s: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.unwrap().stdout)
        .trim()
        .to_string()
}
