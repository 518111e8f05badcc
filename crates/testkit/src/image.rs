//! Base images built here, from busybox-static: no registry, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::containerd::Containerd;
use crate::error::{Error, Result};

/// The name [`busybox_image`] and `commitd-mkimage` give the default image.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/commitd-busybox:latest";

/// Every file and directory gets this mtime (2023-11-14T22:13:20Z), whole seconds
/// like most real layers, so builds are byte-for-byte reproducible.
pub const MTIME: u64 = 1_700_000_000;

/// Where the busybox-static binary is copied from.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked in `/bin` of the busybox base (all point to `/bin/busybox`).
pub const APPLETS: &[&str] = &[
    "[",
    "awk",
    "basename",
    "cat",
    "chgrp",
    "chmod",
    "chown",
    "cmp",
    "cp",
    "cut",
    "date",
    "dd",
    "df",
    "diff",
    "dirname",
    "du",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "gunzip",
    "gzip",
    "head",
    "hexdump",
    "hostname",
    "id",
    "kill",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mkfifo",
    "mknod",
    "mount",
    "mv",
    "nproc",
    "od",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sh",
    "sha1sum",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "sync",
    "tail",
    "tar",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "truncate",
    "umount",
    "uname",
    "uniq",
    "usleep",
    "wc",
    "which",
    "whoami",
    "xargs",
    "yes",
];

/// Builds an OCI image-layout archive, layer by layer, from a description of files.
///
/// ```no_run
/// # use commitd_testkit::{ImageBuilder, shared, unique_namespace};
/// let ns = unique_namespace("doc");
/// // busybox base, plus a second layer with 1,000 small files.
/// let image = ImageBuilder::busybox()
///     .layer()
///     .small_files("/data", 1_000, 64)
///     .import(shared(), &ns, "docker.io/library/two-layers:latest")?;
/// # Ok::<(), commitd_testkit::Error>(())
/// ```
///
/// Entries are written in the order given; a parent directory that no layer of this
/// builder declared is added (mode 0755) just before its first child. Ownership is
/// root:root, mtimes are [`MTIME`]. Layers are gzip-compressed tars.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    layers: Vec<Vec<Entry>>,
    cmd: Vec<String>,
    env: Vec<String>,
    /// Further fields of the config's `config` (`Entrypoint`, `OnBuild`, …).
    config: BTreeMap<String, serde_json::Value>,
    /// Every directory declared so far, in any layer.
    dirs: BTreeSet<String>,
}

#[derive(Clone, Debug)]
enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    HostFile {
        path: String,
        mode: u32,
        src: PathBuf,
    },
    Symlink {
        path: String,
        target: String,
    },
    Whiteout {
        path: String,
    },
    SmallFiles {
        dir: String,
        count: usize,
        size: usize,
    },
}

/// What [`ImageBuilder::write_archive`] wrote.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The name the archive gives the image.
    pub name: String,
    /// Digest of the manifest (what `ctr images ls` shows as the image's digest).
    pub manifest_digest: String,
    /// Digest of the config blob (the image ID in Docker's terms).
    pub config_digest: String,
    /// The layers, bottom first.
    pub layers: Vec<BuiltLayer>,
}

/// One layer of a [`BuiltImage`].
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob.
    pub size: u64,
}

impl ImageBuilder {
    /// An image with no layers yet; the first entry added opens one.
    pub fn scratch() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            config: BTreeMap::new(),
            dirs: BTreeSet::from([String::new()]),
        }
    }

    /// The busybox base, one layer: `/bin/busybox` from the host with the [`APPLETS`]
    /// linked to it, `/usr/bin/env`, `/etc/{passwd,group,hosts,hostname,resolv.conf}`,
    /// and the directories `/dev /proc /sys /run /tmp /etc /root /usr/bin /var`.
    /// Further entries go into this layer until [`layer`](Self::layer) opens another.
    ///
    /// An untouched container of this image started by `ctr run` has an empty upper
    /// directory (a test checks it). On an image that lacks them, runc creates the
    /// mount points `/dev`, `/proc`, `/sys` and `/run` in the upper directory (root
    /// owned, 0755) — nothing else: `/dev/pts`, `/dev/shm`, `/dev/mqueue` land in the
    /// `/dev` tmpfs, and `ctr` bind-mounts no `/etc/hosts` or `/etc/resolv.conf`.
    pub fn busybox() -> ImageBuilder {
        let mut b = ImageBuilder::scratch().layer();
        for d in [
            "/bin", "/dev", "/etc", "/proc", "/run", "/sys", "/usr", "/usr/bin", "/var",
        ] {
            b = b.dir(d, 0o755);
        }
        b = b.dir("/tmp", 0o1777).dir("/root", 0o700);
        b = b.host_file("/bin/busybox", HOST_BUSYBOX, 0o755);
        for applet in APPLETS {
            b = b.symlink(&format!("/bin/{applet}"), "busybox");
        }
        b.symlink("/usr/bin/env", "/bin/busybox")
            .file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
            .file("/etc/group", "root:x:0:\nnogroup:x:65534:\n")
            .file("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            .file("/etc/hostname", "commitd-test\n")
            .file("/etc/resolv.conf", "")
    }

    /// Opens a new layer; the entries that follow go into it.
    pub fn layer(mut self) -> ImageBuilder {
        self.layers.push(Vec::new());
        self
    }

    /// The number of layers so far.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Adds a directory with `mode` (permission bits, e.g. `0o755`).
    pub fn dir(mut self, path: &str, mode: u32) -> ImageBuilder {
        let path = clean(path);
        self.dirs.insert(path.clone());
        self.entry(Entry::Dir { path, mode })
    }

    /// Adds a regular file, mode 0644.
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>) -> ImageBuilder {
        self.file_with_mode(path, data, 0o644)
    }

    /// Adds a regular file with `mode`.
    pub fn file_with_mode(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> ImageBuilder {
        self.entry(Entry::File {
            path: clean(path),
            mode,
            data: data.into(),
        })
    }

    /// Adds a copy of the host file `src` (read when the archive is written).
    pub fn host_file(self, path: &str, src: impl Into<PathBuf>, mode: u32) -> ImageBuilder {
        self.entry(Entry::HostFile {
            path: clean(path),
            mode,
            src: src.into(),
        })
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(self, path: &str, target: &str) -> ImageBuilder {
        self.entry(Entry::Symlink {
            path: clean(path),
            target: target.into(),
        })
    }

    /// Deletes `path` of a lower layer (an OCI whiteout `.wh.NAME` in this layer).
    pub fn whiteout(self, path: &str) -> ImageBuilder {
        self.entry(Entry::Whiteout { path: clean(path) })
    }

    /// Adds `count` regular files of `size` bytes in `dir` (created if needed), named
    /// `000000`, `000001`, …, each with different contents. Generated while the archive
    /// is written, so 100,000 files cost no memory.
    pub fn small_files(mut self, dir: &str, count: usize, size: usize) -> ImageBuilder {
        let dir = clean(dir);
        if self.dirs.insert(dir.clone()) {
            self = self.entry(Entry::Dir {
                path: dir.clone(),
                mode: 0o755,
            });
        }
        self.entry(Entry::SmallFiles { dir, count, size })
    }

    /// Sets the config's `Cmd` (default `["sh"]`).
    pub fn cmd(mut self, cmd: &[&str]) -> ImageBuilder {
        self.cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Adds a `KEY=value` to the config's `Env` (which starts with `PATH`).
    pub fn env(mut self, var: &str) -> ImageBuilder {
        self.env.push(var.to_owned());
        self
    }

    /// Sets another field of the config's `config` (`Entrypoint`, `OnBuild`,
    /// `Shell`, `Labels`, `User`, `WorkingDir`, …), overriding the defaults above.
    pub fn config(mut self, field: &str, value: serde_json::Value) -> ImageBuilder {
        self.config.insert(field.to_owned(), value);
        self
    }

    fn entry(mut self, entry: Entry) -> ImageBuilder {
        let path = match &entry {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::HostFile { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Whiteout { path } => path.clone(),
            Entry::SmallFiles { dir, .. } => format!("{dir}/x"),
        };
        if self.layers.is_empty() {
            self.layers.push(Vec::new());
        }
        // Missing parents first, outermost first.
        let mut missing = Vec::new();
        let mut parent = parent_of(&path);
        while !self.dirs.contains(parent) {
            missing.push(parent.to_owned());
            parent = parent_of(parent);
        }
        let layer = self.layers.last_mut().expect("a layer was just ensured");
        for dir in missing.into_iter().rev() {
            layer.push(Entry::Dir {
                path: dir.clone(),
                mode: 0o755,
            });
            self.dirs.insert(dir);
        }
        layer.push(entry);
        self
    }

    /// Writes the OCI image-layout archive (`oci-layout`, `index.json`,
    /// `blobs/sha256/…`) to `out`, naming the image `name` in the index annotations
    /// `io.containerd.image.name` and `org.opencontainers.image.ref.name`.
    pub fn write_archive(&self, out: &Path, name: &str) -> Result<BuiltImage> {
        if self.layers.is_empty() {
            return Err(Error::Other("an image needs at least one layer".into()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".commitd-image-")
            .tempdir_in(
                out.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )
            .map_err(|e| Error::path("creating a temporary directory next to", out, e))?;

        let mut blobs: Vec<(String, PathBuf)> = Vec::new();
        let mut layers = Vec::new();
        for (i, entries) in self.layers.iter().enumerate() {
            let path = tmp.path().join(format!("layer{i}"));
            let layer = write_layer(entries, &path)?;
            blobs.push((layer.digest.clone(), path));
            layers.push(layer);
        }

        let (os, architecture, variant) = platform();
        let mut config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": architecture,
            "os": os,
            "config": { "Env": self.env, "Cmd": self.cmd, "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created": "2023-11-14T22:13:20Z",
                "created_by": format!("commitd-testkit ImageBuilder, layer {}", i + 1),
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        for (k, v) in &self.config {
            config["config"][k] = v.clone();
        }
        let config =
            serde_json::to_vec(&config).map_err(|e| Error::Other(format!("config JSON: {e}")))?;
        let config_digest = sha256(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Other(format!("manifest JSON: {e}")))?;
        let manifest_digest = sha256(&manifest);
        let mut platform = json!({ "architecture": architecture, "os": os });
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": platform,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": ref_name(name),
                },
            }],
        });
        let index =
            serde_json::to_vec(&index).map_err(|e| Error::Other(format!("index JSON: {e}")))?;

        let write = || -> io::Result<()> {
            let file = File::create(out)?;
            let mut tar = tar::Builder::new(BufWriter::new(file));
            append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            append_bytes(&mut tar, "index.json", &index)?;
            append_dir(&mut tar, "blobs/", 0o755)?;
            append_dir(&mut tar, "blobs/sha256/", 0o755)?;
            append_bytes(&mut tar, &blob_path(&config_digest), &config)?;
            append_bytes(&mut tar, &blob_path(&manifest_digest), &manifest)?;
            for (digest, path) in &blobs {
                let mut h = header(tar::EntryType::Regular, 0o644);
                let mut f = File::open(path)?;
                h.set_size(f.metadata()?.len());
                tar.append_data(&mut h, blob_path(digest), &mut f)?;
            }
            tar.into_inner()?.flush()
        };
        write().map_err(|e| Error::path("writing the image archive", out, e))?;
        Ok(BuiltImage {
            name: name.to_owned(),
            manifest_digest,
            config_digest,
            layers,
        })
    }

    /// Writes the archive to a temporary file and imports it with `ctr images import`
    /// into `namespace`, unpacked into overlayfs. Returns `name`.
    pub fn import(&self, containerd: &Containerd, namespace: &str, name: &str) -> Result<String> {
        let tmp =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let archive = tmp.path().join("image.tar");
        self.write_archive(&archive, name)?;
        import_checked(containerd, namespace, &archive, name)
    }
}

/// Imports the default busybox image ([`ImageBuilder::busybox`], named
/// [`BUSYBOX_IMAGE`]) into `namespace` and returns its name. The archive is built once
/// per process and reused.
pub fn busybox_image(containerd: &Containerd, namespace: &str) -> Result<String> {
    // Kept in memory: a static's temporary file would never be removed.
    static ARCHIVE: OnceLock<std::result::Result<Vec<u8>, String>> = OnceLock::new();
    let bytes = ARCHIVE.get_or_init(|| {
        let dir =
            tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
        let path = dir.path().join("busybox.tar");
        ImageBuilder::busybox()
            .write_archive(&path, BUSYBOX_IMAGE)
            .map_err(|e| e.to_string())?;
        fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    });
    let bytes = bytes
        .as_ref()
        .map_err(|e| Error::Other(format!("building the busybox image: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let archive = dir.path().join("busybox.tar");
    fs::write(&archive, bytes).map_err(|e| Error::path("writing", &archive, e))?;
    import_checked(containerd, namespace, &archive, BUSYBOX_IMAGE)
}

pub(crate) fn import_checked(
    containerd: &Containerd,
    namespace: &str,
    archive: &Path,
    name: &str,
) -> Result<String> {
    let imported = containerd.ctr(namespace).import_archive(archive)?;
    if !imported.iter().any(|n| n == name) {
        return Err(Error::Other(format!(
            "`ctr images import` did not create {name}; it created {imported:?}"
        )));
    }
    Ok(name.to_owned())
}

/// Writes one gzip layer blob to `path`, hashing the tar (diff ID) and the blob as it goes.
fn write_layer(entries: &[Entry], path: &Path) -> Result<BuiltLayer> {
    let write = || -> io::Result<BuiltLayer> {
        let blob = Hashing::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
        let gz = GzEncoder::new(blob, Compression::default());
        let mut tar = tar::Builder::new(Hashing::new(gz));
        for entry in entries {
            append_entry(&mut tar, entry)?;
        }
        let diff = tar.into_inner()?;
        let diff_id = diff.digest();
        let mut blob = diff.inner.finish()?;
        blob.inner.flush()?;
        Ok(BuiltLayer {
            digest: blob.digest(),
            diff_id,
            size: blob.len,
        })
    };
    write().map_err(|e| Error::path("writing a layer to", path, e))
}

fn append_entry<W: Write>(tar: &mut tar::Builder<W>, entry: &Entry) -> io::Result<()> {
    match entry {
        Entry::Dir { path, mode } => append_dir(tar, &format!("{path}/"), *mode),
        Entry::File { path, mode, data } => {
            let mut h = header(tar::EntryType::Regular, *mode);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path, data.as_slice())
        }
        Entry::HostFile { path, mode, src } => {
            let mut f = File::open(src)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
            let mut h = header(tar::EntryType::Regular, *mode);
            h.set_size(f.metadata()?.len());
            tar.append_data(&mut h, path, &mut f)
        }
        Entry::Symlink { path, target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777);
            tar.append_link(&mut h, path, target)
        }
        Entry::Whiteout { path } => {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let wh = if dir.is_empty() {
                format!(".wh.{name}")
            } else {
                format!("{dir}/.wh.{name}")
            };
            append_bytes(tar, &wh, b"")
        }
        Entry::SmallFiles { dir, count, size } => {
            let mut data = vec![0u8; *size];
            for i in 0..*count {
                // Different bytes per file: its number, repeated.
                let stamp = format!("{i:06}\n");
                for (b, s) in data.iter_mut().zip(stamp.bytes().cycle()) {
                    *b = s;
                }
                append_bytes(tar, &format!("{dir}/{i:06}"), &data)?;
            }
            Ok(())
        }
    }
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, path, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode);
    tar.append_data(&mut h, path, io::empty())
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

/// `/a//b/` → `a/b`: tar paths are relative.
fn clean(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The tag (or digest) part of a reference, for `org.opencontainers.image.ref.name`.
fn ref_name(name: &str) -> &str {
    if let Some((_, digest)) = name.split_once('@') {
        return digest;
    }
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => "latest",
    }
}

/// The host's platform in OCI terms: (os, architecture, variant).
pub(crate) fn platform() -> (&'static str, &'static str, Option<&'static str>) {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "x86" => ("386", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" => ("ppc64", None),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        other => (other, None),
    };
    ("linux", arch, variant)
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
