//! The private Docker Engine: starts, runs a container, and leaves nothing when
//! dropped with the container still running.

use commitd_testkit::Dockerd;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[test]
fn a_dropped_dockerd_leaves_nothing() -> Result {
    let docker = Dockerd::start()?;
    let dir = docker.dir().to_path_buf();
    let version = docker.get("/version")?.json();
    assert!(
        version["Version"]
            .as_str()
            .is_some_and(|v| v.starts_with("20.10")),
        "{version}"
    );
    let tmp = tempfile::tempdir()?;
    let archive = tmp.path().join("img.tar");
    let oci = tmp.path().join("oci.tar");
    commitd_testkit::ImageBuilder::busybox().write_archive(&oci, "docker.io/library/dk:1")?;
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", oci.display()))
        .arg(format!("docker-archive:{}:dk:1", archive.display()))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(docker.load(&archive)?, ["dk:1"]);
    docker.cli(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "c1",
        "dk:1",
        "sleep",
        "100000",
    ])?;
    assert_eq!(docker.cli(&["exec", "c1", "echo", "hi"])?, "hi\n");
    drop(docker);
    assert!(!dir.exists(), "{} is left", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(&format!("{}/", dir.display())),
        "mounts left"
    );
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()?;
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.contains(&dir.display().to_string()),
        "processes left:\n{ps}"
    );
    Ok(())
}
