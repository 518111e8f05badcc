//! The daemon runs as root beside every container: who may reach it, and
//! what a hostile or broken client can make it do.
//!
//! - The socket is 0660 with the configured group: a user outside it is
//!   refused by the kernel, a user in it gets in.
//! - No TCP listener unless configured; a configured one speaks only TLS
//!   and only to clients with a certificate from the configured CA (as
//!   Docker's `--tlsverify`), with the real Docker CLI as the client.
//! - Limits: body size (413), `changes` count (400), header and query size
//!   (431), clients too slow with their head or body (408) — and a 64 MiB
//!   body does not grow the daemon's memory.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use commitd_e2e::{World, daemon};

fn config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

/// curl over the unix socket as another user and group (`setpriv`): the
/// HTTP status, or 0 when the connection was refused.
fn curl_as(socket: &Path, uid: &str, gid: &str) -> (u16, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            uid,
            "--regid",
            gid,
            "--clear-groups",
            "curl",
            "-s",
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
        .arg(socket)
        .arg("http://d/_ping")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_socket_is_0660_for_its_group_only() {
    let w = World::new("sock-perm");
    // `nogroup` (65534) as the API's group; `nobody` is the outsider.
    let d = daemon!(w, ["--socket-group", "nogroup"]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660, "mode {:o}", meta.mode());
    assert_eq!(meta.gid(), 65534, "group");
    // Let others reach the socket's directory, so that only the socket's
    // own mode decides.
    let dir = d.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        curl_as(&d.socket, "nobody", "nogroup").0,
        200,
        "the group may"
    );
    let (code, _) = curl_as(&d.socket, "nobody", "daemon");
    assert_eq!(code, 0, "outside the group: refused");
    assert_eq!(
        d.curl("GET", "/_ping", None, &[]),
        (200, "OK".into()),
        "root may"
    );
}

#[test]
fn an_unknown_socket_group_is_refused_at_start() {
    let w = World::new("sock-badgroup");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("never.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_commitd-under-test"))
        .arg("--socket")
        .arg(&socket)
        .args(["--socket-group", "no-such-group-x"])
        .arg("--containerd")
        .arg(&w.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-group-x"), "{err}");
    assert!(!socket.exists(), "no socket file left");
}

/// The TCP ports a process listens on, from /proc (its socket inodes
/// matched against the kernel's listening TCP sockets).
fn tcp_listeners(pid: u32) -> Vec<u16> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.to_string_lossy().into_owned();
            if let Some(n) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(n.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // local_address, st (0A: LISTEN), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn no_tcp_listener_unless_configured() {
    let w = World::new("no-tcp");
    let d = daemon!(w);
    assert!(
        tcp_listeners(d.pid()).is_empty(),
        "{:?}",
        tcp_listeners(d.pid())
    );
    // A [tcp] section without certificates is a configuration error.
    let cfg = config("[tcp]\naddress = \"127.0.0.1:0\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_commitd-under-test"))
        .args(["--check", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "no TLS, no TCP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls"), "says what is missing: {err}");
}

/// A CA, a server certificate for 127.0.0.1, a client certificate from the
/// CA, and one from another CA; made with openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let sh = r#"set -e
q() { "$@" >/dev/null 2>&1; }
for ca in ca rogue; do
  q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$ca" -keyout $ca-key.pem -out $ca.pem
done
leaf() { # name ca ext
  q openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout $1-key.pem -out $1.csr
  printf '%s\n' "$3" > $1.ext
  q openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2-key.pem -CAcreateserial -days 2 -extfile $1.ext -out $1-cert.pem
}
leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf intruder rogue "extendedKeyUsage=clientAuth"
"#;
        let st = Command::new("sh")
            .args(["-c", sh])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "openssl made the certificates");
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl over TCP+TLS with the CA and, when given, a client certificate:
/// the HTTP status, 0 when TLS failed.
fn curl_tls(pki: &Pki, port: u16, client: Option<&str>) -> u16 {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .args(["--cacert", &pki.path("ca.pem")]);
    if let Some(name) = client {
        c.args(["--cert", &pki.path(&format!("{name}-cert.pem"))])
            .args(["--key", &pki.path(&format!("{name}-key.pem"))]);
    }
    let out = c
        .arg(format!("https://127.0.0.1:{port}/_ping"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn tcp_is_tls_with_client_certificates_only() {
    let w = World::new("tls");
    w.running("remote", "echo over-tls > /tls");
    let pki = Pki::new();
    let port = free_port();
    let cfg = config(&format!(
        "[tcp]\naddress = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
        pki.path("server-cert.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    ));
    let d = daemon!(w, ["--config", cfg.path().to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcp_listeners(d.pid()).is_empty() {
        assert!(Instant::now() < deadline, "no TCP listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tcp_listeners(d.pid()), [port]);

    assert_eq!(curl_tls(&pki, port, Some("client")), 200, "the CA's client");
    assert_eq!(curl_tls(&pki, port, None), 0, "no client certificate");
    assert_eq!(
        curl_tls(&pki, port, Some("intruder")),
        0,
        "another CA's client"
    );
    // Plain HTTP on the TLS port gets no API answer.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://127.0.0.1:{port}/_ping"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "200");

    // The Docker CLI with --tlsverify, as against dockerd.
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(["--tlsverify", "--tlscacert", &pki.path("ca.pem")])
            .args(["--tlscert", &pki.path("client-cert.pem")])
            .args(["--tlskey", &pki.path("client-key.pem")])
            .args(["-H", &format!("tcp://127.0.0.1:{port}")])
            .args(args)
            .env("DOCKER_CONFIG", pki.dir.path())
            .output()
            .unwrap()
    };
    let out = docker(&["commit", "remote", "tls-commit:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.run("docker.io/library/tls-commit:1", "cat /tls"),
        "over-tls\n"
    );
    let out = Command::new("docker")
        .args(["-H", &format!("tcp://127.0.0.1:{port}"), "version"])
        .env("DOCKER_CONFIG", pki.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain client refused");
}

/// A raw HTTP exchange on the unix socket: writes `head`, then `body`
/// after `pause`, and returns what came back (the status line first).
fn raw(socket: &Path, head: &str, body: &[u8], pause: Duration) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(pause);
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn request_limits_answer_4xx() {
    let w = World::new("limits");
    w.running("lim", "");
    let cfg = config(
        "[limits]\nmax_body_bytes = 4096\nmax_header_bytes = 8192\nmax_changes = 4\nheader_timeout_secs = 1\nbody_timeout_secs = 1\n",
    );
    let d = daemon!(w, ["--config", cfg.path().to_str().unwrap()]);
    let message = |body: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v["message"].as_str().unwrap().to_string()
    };

    // Body over the limit.
    let big = format!("{{\"Env\":[\"{}\"]}}", "x".repeat(8000));
    let (code, body) = d.curl(
        "POST",
        "/commit?container=lim",
        Some(&big),
        &["Content-Type: application/json"],
    );
    assert_eq!(code, 413, "{body}");
    assert!(message(&body).contains("4096"), "{body}");

    // Too many changes.
    let q: String = (0..5).map(|i| format!("&changes=ENV+A{i}%3D1")).collect();
    let (code, body) = d.curl("POST", &format!("/commit?container=lim{q}"), None, &[]);
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("changes"), "{body}");

    // A query (request line) or a header over the head limit.
    let long = "a".repeat(10_000);
    let (code, _) = d.curl(
        "POST",
        &format!("/commit?container=lim&comment={long}"),
        None,
        &[],
    );
    assert_eq!(code, 431);
    let (code, _) = d.curl("GET", "/_ping", None, &[&format!("X-Big: {long}")]);
    assert_eq!(code, 431);

    // A client that stalls in its head, then one that stalls in its body.
    let started = Instant::now();
    let answer = raw(
        &d.socket,
        "POST /commit?container=lim HTTP/1.1\r\nHost: d\r\n",
        b"",
        Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let answer = raw(
        &d.socket,
        "POST /commit?container=lim HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        b"{\"Env\":",
        Duration::ZERO,
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A 64 MiB body is refused as it arrives, not buffered.
    let before = d.status_kib("VmHWM");
    let blob = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blob.path(), vec![b'x'; 64 << 20]).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg("--data-binary")
        .arg(format!("@{}", blob.path().display()))
        .arg("http://d/commit?container=lim")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "413");
    let grown = d.status_kib("VmHWM").saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "peak memory grew {grown} KiB on a 64 MiB body"
    );

    // And the daemon serves on.
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
    assert_eq!(
        w.ctr.task_status("lim").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
}
