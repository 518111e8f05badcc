//! `docker push` to a real registry (Debian's docker-registry, started here).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_e2e::{Daemon, World, daemon};

/// A private distribution registry on a loopback port.
struct Registry {
    child: Child,
    ip: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&Path>) -> Registry {
        Registry::start_on("127.0.0.1", htpasswd)
    }

    /// A registry listening on `ip` (an address of this host).
    fn start_on(ip: &str, htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
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
            ip: ip.to_string(),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Where the registry keeps repositories (absent until one is pushed).
    fn repositories(&self) -> PathBuf {
        self._dir
            .path()
            .join("data/docker/registry/v2/repositories")
    }

    fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
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

/// The JSON lines of a push stream.
fn json_lines(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `POST /images/{repo}/push?tag=` with curl: (status, JSON lines or the
/// error body).
fn push_raw(d: &Daemon, repo: &str, tag: &str, auth: &str) -> (u16, String) {
    let header = format!("X-Registry-Auth: {auth}");
    d.curl(
        "POST",
        &format!("/v1.47/images/{repo}/push?tag={tag}"),
        None,
        &[&header],
    )
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
    // Its new layer holds 10 MiB of noise: several chunks to upload.
    w.ctr
        .exec(
            "c",
            &[
                "sh",
                "-c",
                "echo more > /q && head -c 10485760 /dev/urandom > /big",
            ],
        )
        .unwrap();
    let name2 = format!("{}/acc/app:2", reg.host());
    d.docker_ok(&["commit", "c", &name2]);
    // This one through the API itself, to read Docker's JSON lines (the CLI
    // hides progress lines when not on a terminal). `e30=` is `{}` in
    // padded standard base64: anonymous.
    let repo = format!("{}/acc/app", reg.host());
    let (status, body) = push_raw(&d, &repo, "2", "e30=");
    assert_eq!(status, 200, "{body}");
    let lines = json_lines(&body);
    let local2 = inspect(&d, &name2);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(
        statuses[0],
        format!("The push refers to repository [{repo}]"),
        "{body}"
    );
    let layers = local2["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(
        statuses.iter().filter(|s| **s == "Preparing").count(),
        layers,
        "{body}"
    );
    assert!(statuses.contains(&"Layer already exists"), "{body}");
    assert!(statuses.contains(&"Pushed"), "{body}");
    // Progress per chunk sent, up to the whole layer.
    let pushing: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["status"] == "Pushing").collect();
    assert!(pushing.len() >= 3, "a line per 4 MiB chunk: {body}");
    let current: Vec<i64> = pushing
        .iter()
        .map(|l| l["progressDetail"]["current"].as_i64().unwrap())
        .collect();
    assert!(current.windows(2).all(|w| w[0] < w[1]), "{body}");
    let total = pushing[0]["progressDetail"]["total"].as_i64().unwrap();
    assert!(total > 10 << 20, "{body}");
    assert_eq!(*current.last().unwrap(), total, "{body}");
    assert_eq!(pushing[0]["id"].as_str().unwrap().len(), 12, "{body}");
    let digest2 = local2["Descriptor"]["digest"].as_str().unwrap();
    let size2 = local2["Descriptor"]["size"].as_i64().unwrap();
    assert!(
        statuses.contains(&format!("2: digest: {digest2} size: {size2}").as_str()),
        "{body}"
    );
    let aux = &lines.last().unwrap()["aux"];
    assert_eq!(aux["Tag"], "2", "{body}");
    assert_eq!(aux["Digest"], digest2, "{body}");
    assert_eq!(aux["Size"], size2, "{body}");
    assert!(!body.contains("errorDetail"), "{body}");
    let (ok, raw) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name2}"),
    ]);
    assert!(ok, "{raw}");
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest2);

    // No tag: every tag of the repository (`docker push --all-tags`).
    let (status, body) = push_raw(&d, &repo, "", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"1: digest: ") && body.contains("\"2: digest: "),
        "{body}"
    );
    // Unknown tag: as Docker, 200 and the error in the stream (Docker has
    // begun streaming when it looks the tag up).
    let (status, body) = push_raw(&d, &format!("{}/acc/nope", reg.host()), "1", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!(
            "\"error\":\"tag does not exist: {}/acc/nope:1\"",
            reg.host()
        )),
        "{body}"
    );
    let (status, body) = push_raw(&d, &repo, "bad%20tag", "");
    assert_eq!(status, 400, "{body}");
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
        err.contains(&reg.host()) && err.to_lowercase().contains("connect"),
        "a clear error naming the registry: {out}{err}"
    );
    let after = inspect(&d, &name);
    assert_eq!(after["Id"], local["Id"]);
    assert_eq!(after["Descriptor"], local["Descriptor"]);
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

    // The header as other clients send it: anonymous, then refused, then
    // accepted credentials in padded standard base64.
    let repo = format!("{}/team/img", reg.host());
    let (status, body) = push_raw(&d, &repo, "1", "");
    assert_eq!(status, 200, "{body}");
    let last = json_lines(&body).pop().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("unauthorized: authentication required"),
        "{body}"
    );
    assert_eq!(last["errorDetail"]["message"], last["error"], "{body}");
    let header = |user: &str, pass: &str| {
        base64(&format!(
            "{{\"username\":\"{user}\",\"password\":\"{pass}\",\"serveraddress\":\"{}\"}}",
            reg.host()
        ))
    };
    let (_, body) = push_raw(&d, &repo, "1", &header("robot", "nope"));
    let last = json_lines(&body).pop().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("refused the credentials of robot"),
        "{body}"
    );
    let (status, body) = push_raw(&d, &repo, "1", &header("robot", "s3cret"));
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("errorDetail"), "{body}");
    assert!(body.contains("Layer already exists"), "{body}");
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
    assert!(
        !reg.repositories().exists(),
        "nothing at all was pushed (no blob, no repository)"
    );
    // The push deleted nothing locally.
    inspect(&d, &name);
}

#[test]
fn only_configured_registries_are_plain_http() {
    // A registry on a non-loopback address of this host: HTTPS unless
    // listed in `registry.insecure_registries`.
    let out = Command::new("hostname").arg("-I").output().unwrap();
    let ip = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
        .expect("this test needs a non-loopback IPv4 address on the host");
    let w = World::new("push-insecure");
    let reg = Registry::start_on(&ip, None);
    let name = format!("{}/acc/lan:1", reg.host());
    let d = daemon!(w);
    w.running("c", "echo lan > /l");
    d.docker_ok(&["commit", "c", &name]);
    let (ok, out, err) = d.docker(&["push", &name]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("https://{}/v2/", reg.host())),
        "spoken to over HTTPS by default: {err}"
    );
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("commitd.toml");
    std::fs::write(
        &cfg,
        format!("[registry]\ninsecure_registries = [\"{}\"]\n", reg.host()),
    )
    .unwrap();
    let d = daemon!(w, ["--config", cfg.to_str().unwrap()]);
    let out = d.docker_ok(&["push", &name]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let (ok, raw) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert!(ok, "{raw}");
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        inspect(&d, &name)["Descriptor"]["digest"].as_str().unwrap()
    );
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

/// `POST /commit?…&push=1` with curl: (status, JSON lines or the error body).
fn commit_push(d: &Daemon, query: &str, auth: &str) -> (u16, String) {
    let header = format!("X-Registry-Auth: {auth}");
    d.curl(
        "POST",
        &format!("/v1.47/commit?{query}&push=1"),
        None,
        &[&header],
    )
}

/// Commit + push as one request: the registry gets the image `commit`
/// then `push` would give (same manifest digest), skopeo reads and copies
/// it, another namespace pulls and runs it with the container's files.
#[test]
fn commit_and_push_in_one_request() {
    let w = World::new("commit-push");
    let d = daemon!(w);
    let reg = Registry::start(None);
    let repo = format!("{}/acc/snap", reg.host());
    // 10 MiB of noise: several chunks of the streamed upload.
    w.running(
        "c",
        "echo pushed > /p && head -c 10485760 /dev/urandom > /big",
    );
    // The same moment twice, reproducibly (timestamp=): once commit then
    // push, once as one request.
    let q = |tag: &str| format!("container=c&repo={repo}&tag={tag}&timestamp=1700000000&pause=1");
    let (status, body) = d.curl("POST", &format!("/v1.47/commit?{}", q("two")), None, &[]);
    assert_eq!(status, 201, "{body}");
    let (status, body) = push_raw(&d, &repo, "two", "e30=");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("errorDetail"), "{body}");
    let two = inspect(&d, &format!("{repo}:two"));

    let (status, body) = commit_push(&d, &q("one"), "e30=");
    assert_eq!(status, 200, "{body}\n{}", d.log_text());
    let lines = json_lines(&body);
    assert!(!body.contains("errorDetail"), "{body}\n{}", d.log_text());
    let one = inspect(&d, &format!("{repo}:one"));
    assert_eq!(
        lines[0]["aux"]["ID"], one["Id"],
        "the image ID first: {body}"
    );
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(
        statuses[0],
        format!("The push refers to repository [{repo}]"),
        "{body}"
    );
    let layers = one["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(
        statuses.iter().filter(|s| **s == "Preparing").count(),
        layers,
        "{body}"
    );
    // The base was pushed with `two`; the new layer too (same bytes).
    assert!(statuses.contains(&"Layer already exists"), "{body}");
    let digest = one["Descriptor"]["digest"].as_str().unwrap();
    let size = one["Descriptor"]["size"].as_i64().unwrap();
    assert_eq!(
        digest,
        two["Descriptor"]["digest"].as_str().unwrap(),
        "commit + push makes the image commit then push makes"
    );
    assert!(
        statuses.contains(&format!("one: digest: {digest} size: {size}").as_str()),
        "{body}"
    );
    let aux = &lines.last().unwrap()["aux"];
    assert_eq!(aux["Tag"], "one", "{body}");
    assert_eq!(aux["Digest"], digest, "{body}");
    assert_eq!(aux["Size"], size, "{body}");
    for tag in ["one", "two"] {
        let (ok, raw) = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{repo}:{tag}"),
        ]);
        assert!(ok, "{raw}");
        assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    }

    // A change never pushed before: its layer is streamed to the registry
    // as it is made, the base is there already.
    w.ctr
        .exec(
            "c",
            &[
                "sh",
                "-c",
                "echo again > /p2 && head -c 6291456 /dev/urandom > /big2",
            ],
        )
        .unwrap();
    let (status, body) = commit_push(&d, &format!("container=c&repo={repo}&tag=three"), "");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("errorDetail"), "{body}\n{}", d.log_text());
    let three = inspect(&d, &format!("{repo}:three"));
    let new_layer = three["RootFS"]["Layers"].as_array().unwrap().len();
    let lines = json_lines(&body);
    let pushed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["status"] == "Pushed").collect();
    assert_eq!(pushed.len(), 1, "only the new layer is sent: {body}");
    let manifest = w.ctr.image_manifest(&format!("{repo}:three")).unwrap();
    let top = manifest["layers"][new_layer - 1]["digest"]
        .as_str()
        .unwrap();
    assert_eq!(
        pushed[0]["id"].as_str().unwrap(),
        &top["sha256:".len().."sha256:".len() + 12],
        "{body}"
    );
    assert!(
        d.log_text()
            .lines()
            .all(|l| !l.contains("sending it from the content store")),
        "the new layer went up as it was made: {}",
        d.log_text()
    );
    let digest3 = three["Descriptor"]["digest"].as_str().unwrap();
    let (ok, raw) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{repo}:three"),
    ]);
    assert!(ok, "{raw}");
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest3);
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{repo}:three"),
        &format!("oci:{}:three", dir.path().join("layout").display()),
    ]);
    assert!(ok, "skopeo copy: {out}");

    // Another namespace pulls it from the registry and runs it.
    let other = commitd_testkit::Ctr::new(w.ctr.address(), &format!("{}-pull", w.ns));
    other
        .run(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            commitd_testkit::SNAPSHOTTER,
            &format!("{repo}:three"),
        ])
        .unwrap_or_else(|e| panic!("ctr pull: {e}"));
    let out = other
        .run_image(
            &format!("{repo}:three"),
            "pulled",
            &["sh", "-c", "cat /p /p2 && wc -c < /big2"],
        )
        .unwrap();
    let _ = other.remove_all();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["pushed", "again", "6291456"],
        "{out}"
    );
    w.assert_clean();
}

/// A commit asked to push: the commit's errors answer as a plain commit's,
/// a registry's errors end the stream; the image is kept locally, nothing
/// leaks, the container runs, the daemon serves.
#[test]
fn commit_and_push_failures() {
    let w = World::new("commit-push-fail");
    let d = daemon!(w);
    w.running("c", "echo x > /x");
    let mut reg = Registry::start(None);
    let host = reg.host();
    // No repository to push to.
    let (status, body) = commit_push(&d, "container=c", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("push needs a repository"), "{body}");
    // The commit fails: its own status and words, nothing pushed.
    let (status, body) = commit_push(&d, &format!("container=nope&repo={host}/a/b"), "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such container: nope"), "{body}");
    assert!(!reg.repositories().join("a/b/_manifests").exists());

    // The registry down: the image is made and kept, the stream ends with
    // the error naming the registry.
    reg.stop();
    let (status, body) = commit_push(&d, &format!("container=c&repo={host}/a/b&tag=1"), "");
    assert_eq!(status, 200, "{body}");
    let lines = json_lines(&body);
    let id = lines[0]["aux"]["ID"].as_str().unwrap().to_string();
    let last = lines.last().unwrap();
    let err = last["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(
        err.contains(&host) && err.to_lowercase().contains("connect"),
        "{body}"
    );
    assert_eq!(inspect(&d, &format!("{host}/a/b:1"))["Id"], id.as_str());
    assert_eq!(
        w.ctr.task_status("c").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
    w.assert_clean();

    // Credentials refused: Docker's words.
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
    let host = reg.host();
    let auth = |pass: &str| {
        base64(&format!(
            "{{\"username\":\"robot\",\"password\":\"{pass}\",\"serveraddress\":\"{host}\"}}"
        ))
    };
    let (status, body) = commit_push(
        &d,
        &format!("container=c&repo={host}/a/b&tag=2"),
        &auth("wrong"),
    );
    assert_eq!(status, 200, "{body}");
    let last = json_lines(&body).pop().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unauthorized: authentication required"),
        "{body}"
    );
    assert!(!reg.repositories().join("a/b/_manifests").exists());
    assert_eq!(
        w.ctr.task_status("c").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
    w.assert_clean();
    // The same with the right credentials: pushed; the daemon serves.
    let (status, body) = commit_push(
        &d,
        &format!("container=c&repo={host}/a/b&tag=3"),
        &auth("s3cret"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("errorDetail"), "{body}");
    assert!(body.contains("\"3: digest: "), "{body}");
    w.assert_clean();
}
