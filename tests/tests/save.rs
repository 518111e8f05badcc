//! `docker save`: an archive that docker, skopeo and umoci read, streamed.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;

use commitd_e2e::{World, daemon};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect(d: &commitd_e2e::Daemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.docker_ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

#[test]
fn saved_images_are_read_by_skopeo_and_umoci() {
    let w = World::new("save");
    let d = daemon!(w);
    w.running(
        "c",
        "mkdir -p /srv && echo saved > /srv/file && ln -s file /srv/link",
    );
    d.docker_ok(&["commit", "c", "acc/app:1"]);
    w.ctr
        .exec("c", &["sh", "-c", "echo two > /srv/two"])
        .unwrap();
    d.docker_ok(&["commit", "c", "other:2"]);

    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.tar");
    d.docker_ok(&["save", "-o", one.to_str().unwrap(), "acc/app:1"]);
    let local = inspect(&d, "acc/app:1");

    // skopeo, both ways of reading the archive: the same image.
    let sk: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", one.display()))))
    .unwrap();
    assert_eq!(sk["rootfs"]["diff_ids"], local["RootFS"]["Layers"]);
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", one.display())));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], local["Id"]);
    let digest = format!("sha256:{}", sha256(raw.as_bytes()));
    assert_eq!(
        serde_json::json!(digest),
        local["Descriptor"]["digest"],
        "the manifest, byte for byte"
    );

    // umoci unpacks the OCI layout into a bundle with our files.
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&one)
        .arg("-C")
        .arg(&layout));
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle));
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/srv/file")).unwrap(),
        "saved\n"
    );
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/srv/link"))
            .unwrap()
            .to_str(),
        Some("file")
    );
    let mf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(mf[0]["RepoTags"], serde_json::json!(["acc/app:1"]));

    // Two images sharing their base: each blob once; both in manifest.json.
    let out = Command::new("docker")
        .args([
            "-H",
            &format!("unix://{}", d.socket.display()),
            "save",
            "acc/app:1",
            "other:2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut a = tar::Archive::new(&out.stdout[..]);
    for e in a.entries().unwrap() {
        *names
            .entry(e.unwrap().path().unwrap().display().to_string())
            .or_default() += 1;
    }
    assert!(
        names.values().all(|&n| n == 1),
        "every entry once: {names:?}"
    );
    assert!(
        names.contains_key("manifest.json")
            && names.contains_key("index.json")
            && names.contains_key("oci-layout")
    );
    let two = dir.path().join("two.tar");
    std::fs::write(&two, &out.stdout).unwrap();
    let mf = run(Command::new("tar")
        .arg("-xOf")
        .arg(&two)
        .arg("manifest.json"));
    let mf: serde_json::Value = serde_json::from_str(&mf).unwrap();
    assert_eq!(mf.as_array().unwrap().len(), 2);

    let (ok, _, err) = d.docker(&[
        "save",
        "-o",
        dir.path().join("x.tar").to_str().unwrap(),
        "nope:1",
    ]);
    assert!(!ok && err.contains("No such image: nope:1"), "{err}");
}

#[test]
fn saving_a_large_image_stays_small_in_memory() {
    let w = World::new("save-big");
    let d = daemon!(w);
    w.running(
        "big",
        "dd if=/dev/urandom of=/big bs=1M count=300 2>/dev/null",
    );
    d.docker_ok(&["commit", "big", "big:1"]);
    // Peak RSS from here on (writing 5 to clear_refs resets VmHWM).
    std::fs::write(format!("/proc/{}/clear_refs", d.pid()), "5").unwrap();
    let before = d.status_kib("VmHWM");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker -H unix://{} save big:1 | wc -c",
            d.socket.display()
        ))
        .output()
        .unwrap();
    let bytes: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(bytes > 300 << 20, "the whole layer came out: {bytes}");
    let peak = d.status_kib("VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "peak RSS went from {before} KiB to {peak} KiB while streaming {bytes} bytes"
    );
}

fn sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
