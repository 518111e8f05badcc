//! schemathesis against `api/openapi.yaml` over the real daemon and a real
//! containerd: generated requests, valid and malformed, for every route the
//! spec describes; every answer must match the spec (status, content type,
//! headers, body schema) and none may be a 5xx.
//!
//! The daemon's socket is bridged to a loopback port with socat, as
//! schemathesis speaks TCP only. `/events` (a stream that only ends at
//! `until`) and push (which would dial registries named by generated
//! input) are left out; their own tests cover them.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commitd_e2e::{World, daemon};

/// The environment variable naming the schemathesis executable
/// (`scripts/test.sh` installs it in the test venv).
const SCHEMATHESIS: &str = "COMMITD_TEST_SCHEMATHESIS";

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_generated_request_gets_an_answer_the_spec_describes() {
    let bin = std::env::var(SCHEMATHESIS).unwrap_or_else(|_| {
        panic!("{SCHEMATHESIS} is not set: run the tests with scripts/test.sh, which installs schemathesis")
    });
    let w = World::new("schema");
    w.running("c1", "echo x > /x");
    let d = daemon!(w);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _bridge = Bridge(
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("UNIX-CONNECT:{}", d.socket.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("socat (scripts/deps.sh --test installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.yaml");
    let examples = std::env::var("COMMITD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let started = Instant::now();
    // Its example database and reports go to a directory of its own.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .current_dir(scratch.path())
        .args(["run", spec, "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--exclude-path-regex",
            "/events$|/push$",
            "--max-examples",
            &examples,
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--workers",
            "2",
            "--no-color",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{text}\nschemathesis took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // It really ran: operations were tested and requests answered.
    assert!(text.contains("passed"), "{text}");
    // The daemon is fine afterwards, and so is the container.
    assert_eq!(d.curl("GET", "/_ping", None, &[]), (200, "OK".into()));
    assert_eq!(
        w.ctr.task_status("c1").unwrap(),
        commitd_testkit::TaskStatus::Running
    );
}
