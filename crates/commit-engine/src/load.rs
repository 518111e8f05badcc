//! `docker load`: an image archive — Docker's (`manifest.json`) or OCI's
//! (`oci-layout` + `index.json`), as a plain, gzip or zstd stream — read
//! as it arrives, its files streamed into the content store under a lease,
//! its images unpacked (so they run at once) and then named.
//!
//! The archive is read once, on a blocking thread (the `tar` crate), and
//! each file goes to containerd's content service as it is read: memory
//! holds a few chunks, whatever the archive's size. Blobs named by their
//! digest (`blobs/sha256/<hex>`) are checked against it. Docker archives
//! become Docker schema 2 manifests written exactly as containerd's
//! importer writes them (so `ctr images import` of the same archive gives
//! the same digests); OCI archives keep their manifests as they are.
//!
//! Nothing is named until everything is in: every blob an image needs is
//! present, every host-platform layer applied with the diff ID its config
//! says. A truncated or malformed archive is an error, the current ingest
//! is aborted and the lease deleted: nothing is left behind.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use containerd_client::services::v1::Image as Record;
use docker_format::image::{self, Descriptor, Index, Manifest, host_platform, media_type as mt};
use docker_format::reference::parse_normalized_named;
use tokio::sync::mpsc;
use tracing::{debug, instrument};

use crate::client::Containerd;
use crate::content;
use crate::error::{Error, Result};
use crate::images::{self, Resolved};
use crate::ingest::{Ingest, Stored};
use crate::keyed::{Key, KeyedLocks};
use crate::lease::Lease;
use crate::snapshot::Snapshots;

/// containerd's limit on `index.json`, `manifest.json` and the like.
const JSON_LIMIT: usize = 20 << 20;
/// Bytes read from the archive per message to the writer.
const CHUNK: usize = 1 << 20;
/// Messages queued between the reader thread and the writer.
const QUEUE: usize = 4;

/// One image the archive held, now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The record's name (`docker.io/library/busybox:latest`); `None` for
    /// an image the archive did not name.
    pub name: Option<String>,
    /// `sha256:…` of its config (Docker's image ID); the manifest digest
    /// for an image not of this host's platform.
    pub id: String,
}

/// How far the archive has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProgress {
    /// What is being read: the first 12 hex digits of a blob's digest, or
    /// the file's name.
    pub id: String,
    pub current: u64,
    pub total: u64,
}

/// What the reader thread tells the writer.
enum Msg {
    File { path: String, size: u64 },
    Data(Vec<u8>),
    End,
    Link { path: String, target: String },
    Failed(io::Error),
}

/// Reads the (possibly compressed) archive and sends its files along.
fn read_archive(input: impl Read + 'static, tx: &mpsc::Sender<Msg>) -> io::Result<()> {
    let send = |m: Msg| {
        tx.blocking_send(m)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the load stopped"))
    };
    let input = decompressed(input)?;
    let mut archive = tar::Archive::new(input);
    let mut buf = vec![0u8; CHUNK];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size()?;
                send(Msg::File {
                    path: path.clone(),
                    size,
                })?;
                let mut left = size;
                while left > 0 {
                    let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                    let n = entry.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("unexpected EOF: the archive ends inside {path}"),
                        ));
                    }
                    send(Msg::Data(buf[..n].to_vec()))?;
                    left -= n as u64;
                }
                send(Msg::End)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let joined = if dir.is_empty() {
                    target
                } else {
                    format!("{dir}/{target}")
                };
                send(Msg::Link {
                    path,
                    target: clean_path(&joined),
                })?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The archive, decompressed as its first bytes say.
fn decompressed(mut input: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut head = Vec::with_capacity(6);
    while head.len() < 6 {
        let mut b = [0u8; 6];
        let n = input.read(&mut b[..6 - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    let whole = io::Cursor::new(head.clone()).chain(input);
    match head.as_slice() {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(whole))),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Box::new(zstd::stream::read::Decoder::new(whole)?)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Err(io::Error::other(
            "xz-compressed archives are not supported: decompress it first",
        )),
        [b'B', b'Z', b'h', ..] => Err(io::Error::other(
            "bzip2-compressed archives are not supported: decompress it first",
        )),
        _ => Ok(Box::new(whole)),
    }
}

/// `path.Clean` of a relative archive path, without a leading `./` or `/`.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The digest an OCI layout path names (`blobs/sha256/<hex>`).
fn digest_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    (alg == "sha256" && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{alg}:{hex}"))
}

/// Files of the archive kept in memory to be read as JSON.
fn is_metadata(path: &str) -> bool {
    matches!(
        path,
        "oci-layout" | "index.json" | "manifest.json" | "repositories"
    )
}

/// The file of the archive being read.
struct Current {
    path: String,
    size: u64,
    /// Its blob being written (`None`: metadata, or a blob already here).
    ingest: Option<Ingest>,
    /// Its bytes, for metadata read as JSON.
    keep: Option<Vec<u8>>,
    done: u64,
}

/// What the archive held.
#[derive(Default)]
struct Files {
    stored: HashMap<String, Stored>,
    metadata: HashMap<String, Vec<u8>>,
    links: HashMap<String, String>,
}

impl Files {
    fn get(&self, path: &str) -> Option<&Stored> {
        let path = clean_path(path);
        self.stored.get(&path).or_else(|| {
            let target = self.links.get(&path)?;
            self.stored.get(target)
        })
    }
}

/// Why an archive does not load: what `docker load` answers a client
/// with (each a 400, as Docker's).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("normalize image ref {name:?}: {reason}")]
    Reference { name: String, reason: String },
    #[error("the archive holds no image")]
    NoImage,
    #[error("{path} in the archive is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    /// A file of the archive that did not load (its content is not what
    /// its name says).
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: Box<LoadError>,
    },
    /// A blob whose digest is not the one its name promised.
    #[error("unexpected commit digest {digest}, expected {expected}: failed precondition")]
    Digest { digest: String, expected: String },
    #[error("the archive cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("untar oci layout \"oci-layout\": {0}")]
    OciLayout(#[source] serde_json::Error),
    #[error("unsupported OCI version {0}")]
    OciVersion(String),
    #[error("missing index.json in OCI layout 1.0.0")]
    MissingIndex,
    #[error("index.json of the archive: {0}")]
    Index(#[source] serde_json::Error),
    #[error("unrecognized image format")]
    UnrecognizedFormat,
    #[error("untar manifest \"manifest.json\": {0}")]
    ManifestJson(#[source] serde_json::Error),
    #[error("image config {0:?} not found")]
    ConfigNotFound(String),
    #[error("layer {0:?} not found")]
    LayerNotFound(String),
    #[error("image config {config} lists {diff_ids} diff IDs for {layers} layers")]
    DiffIds {
        config: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{digest} ({media_type}) is not JSON: {source}")]
    NotJson {
        digest: String,
        media_type: String,
        source: serde_json::Error,
    },
    #[error("index {digest}: {source}")]
    BadIndex {
        digest: String,
        source: serde_json::Error,
    },
    #[error("manifest {digest}: {source}")]
    BadManifest {
        digest: String,
        source: serde_json::Error,
    },
    #[error("content digest {0}: not found (the archive does not hold it)")]
    MissingContent(String),
}

/// One image record to write.
struct Named {
    /// `None`: the archive does not name it.
    name: Option<String>,
    target: Descriptor,
}

/// `ParseDockerRef`: a normalized reference, tagged `latest` when it has
/// neither tag nor digest (a digest wins over a tag).
fn docker_ref(s: &str) -> Result<String> {
    let mut n = parse_normalized_named(s).map_err(|e| LoadError::Reference {
        name: s.to_string(),
        reason: e.to_string(),
    })?;
    if n.digest.is_some() {
        n.tag = None;
    } else if n.tag.is_none() {
        n.tag = Some("latest".into());
    }
    Ok(n.full())
}

/// The name an OCI index entry gives its image: containerd's
/// `io.containerd.image.name`, else an `org.opencontainers.image.ref.name`
/// that is a whole reference (a bare tag names no repository).
fn oci_name(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    let a = annotations?;
    if let Some(n) = a.get("io.containerd.image.name").filter(|n| !n.is_empty()) {
        return docker_ref(n).ok();
    }
    let r = a.get("org.opencontainers.image.ref.name")?;
    if r.contains('/') || r.contains(':') {
        docker_ref(r).ok()
    } else {
        None
    }
}

pub(crate) struct Loader<'a> {
    pub c: &'a Containerd,
    pub locks: &'a KeyedLocks,
    pub lease_expiry: std::time::Duration,
    pub snapshotter: &'a str,
}

impl Loader<'_> {
    #[instrument(skip_all)]
    pub(crate) async fn load<R>(
        &self,
        archive: R,
        progress: Option<mpsc::Sender<LoadProgress>>,
    ) -> Result<Vec<Loaded>>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let lease = Lease::create(self.c, self.lease_expiry).await?;
        let result = self.load_leased(&lease, archive, progress).await;
        lease.release().await;
        result
    }

    async fn load_leased<R>(
        &self,
        lease: &Lease,
        archive: R,
        progress: Option<mpsc::Sender<LoadProgress>>,
    ) -> Result<Vec<Loaded>>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let files = self.ingest(lease, archive, progress).await?;
        let named = self.images_of(lease, &files).await?;
        if named.is_empty() {
            return Err(LoadError::NoImage.into());
        }
        // Everything each image needs, before any name is written.
        let host = host_platform();
        let mut ready = Vec::new();
        for n in &named {
            let record = Record {
                name: n.name.clone().unwrap_or_default(),
                target: Some(images::to_proto(&n.target)),
                ..Default::default()
            };
            label_tree(self.c, &n.target).await?;
            let resolved = match images::resolve(self.c, &record, &host).await {
                Ok(r) => Some(r),
                // An image of other platforms only: kept, not unpacked.
                Err(Error::ImageNotFound(_)) => None,
                Err(e) if e.is_not_found() => return Err(missing(&n.target, e)),
                Err(e) => return Err(e),
            };
            if let Some(r) = &resolved {
                self.unpack(lease, r).await?;
            }
            ready.push(resolved);
        }
        let mut out: Vec<Loaded> = Vec::new();
        for (n, resolved) in named.iter().zip(ready) {
            let id = resolved
                .as_ref()
                .map(|r| r.manifest.config.digest.clone())
                .unwrap_or_else(|| n.target.digest.clone());
            let name = match &n.name {
                Some(name) => name.clone(),
                None if named
                    .iter()
                    .any(|o| o.name.is_some() && o.target.digest == n.target.digest) =>
                {
                    continue;
                }
                None => images::dangling_name(&n.target.digest),
            };
            {
                let _turn = self.locks.lock(Key::Images).await;
                images::name_image(self.c, &lease.id(), &name, &n.target).await?;
            }
            debug!(image = %name, %id, "loaded");
            let loaded = Loaded {
                name: n.name.clone(),
                id,
            };
            if !out.contains(&loaded) {
                out.push(loaded);
            }
        }
        Ok(out)
    }

    /// Streams every file of the archive into the content store.
    async fn ingest<R>(
        &self,
        lease: &Lease,
        archive: R,
        progress: Option<mpsc::Sender<LoadProgress>>,
    ) -> Result<Files>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let reader = tokio::task::spawn_blocking(move || {
            let input = tokio_util::io::SyncIoBridge::new(archive);
            if let Err(e) = read_archive(input, &tx) {
                let _ = tx.blocking_send(Msg::Failed(e));
            }
        });
        let mut files = Files::default();
        let mut current: Option<Current> = None;
        let mut n = 0u64;
        let result: Result<()> = async {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::File { path, size } => {
                        let keep = is_metadata(&path).then(Vec::new);
                        let ingest = match (&keep, digest_of_path(&path)) {
                            (Some(_), _) => None,
                            // Already here: attach it to the lease, skip its bytes.
                            (None, Some(d)) if content::info(self.c, &d).await.is_ok() => {
                                crate::lease::add_content(self.c, &lease.id(), &d).await?;
                                files.stored.insert(
                                    path.clone(),
                                    Stored {
                                        digest: d,
                                        size: size as i64,
                                    },
                                );
                                None
                            }
                            (None, _) => {
                                n += 1;
                                Some(Ingest::start(
                                    self.c,
                                    &lease.id(),
                                    format!("commitd-load-{}-{n}", crate::unique()),
                                ))
                            }
                        };
                        current = Some(Current {
                            path,
                            size,
                            ingest,
                            keep,
                            done: 0,
                        });
                    }
                    Msg::Data(data) => {
                        let Some(Current {
                            path,
                            size,
                            ingest,
                            keep,
                            done,
                        }) = current.as_mut()
                        else {
                            continue;
                        };
                        if let Some(k) = keep {
                            if k.len() + data.len() > JSON_LIMIT {
                                return Err(LoadError::TooLarge {
                                    path: path.clone(),
                                    limit: JSON_LIMIT,
                                }
                                .into());
                            }
                            k.extend_from_slice(&data);
                        }
                        if let Some(i) = ingest {
                            i.write(&data).await?;
                        }
                        *done += data.len() as u64;
                        if let Some(p) = &progress {
                            let id = digest_of_path(path)
                                .map(|d| d[7..19].to_string())
                                .unwrap_or_else(|| path.clone());
                            let _ = p.try_send(LoadProgress {
                                id,
                                current: *done,
                                total: *size,
                            });
                        }
                    }
                    Msg::End => {
                        let Some(Current {
                            path, ingest, keep, ..
                        }) = current.take()
                        else {
                            continue;
                        };
                        if let Some(k) = keep {
                            files.metadata.insert(path.clone(), k);
                        }
                        if let Some(i) = ingest {
                            let expected = digest_of_path(&path);
                            let stored = i
                                .commit(expected.as_deref(), HashMap::new())
                                .await
                                .map_err(|e| match e {
                                    Error::Load(e @ LoadError::Digest { .. }) => LoadError::File {
                                        path: path.clone(),
                                        source: Box::new(e),
                                    }
                                    .into(),
                                    other => other,
                                })?;
                            files.stored.insert(path, stored);
                        }
                    }
                    Msg::Link { path, target } => {
                        files.links.insert(path, target);
                    }
                    Msg::Failed(e) => {
                        return Err(LoadError::Unreadable(e).into());
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(rx);
        let _ = reader.await;
        if let Some(Current {
            ingest: Some(ingest),
            ..
        }) = current.take()
        {
            ingest.abort().await;
        }
        result.map(|()| files)
    }

    /// The images the archive names, with their records' targets.
    async fn images_of(&self, lease: &Lease, files: &Files) -> Result<Vec<Named>> {
        if let Some(layout) = files.metadata.get("oci-layout") {
            #[derive(serde::Deserialize)]
            struct Layout {
                #[serde(rename = "imageLayoutVersion", default)]
                version: String,
            }
            let l: Layout = serde_json::from_slice(layout).map_err(LoadError::OciLayout)?;
            if !l.version.is_empty() {
                if l.version != "1.0.0" {
                    return Err(LoadError::OciVersion(l.version).into());
                }
                let index = files
                    .metadata
                    .get("index.json")
                    .ok_or(LoadError::MissingIndex)?;
                let index: Index = serde_json::from_slice(index).map_err(LoadError::Index)?;
                return Ok(index
                    .manifests
                    .into_iter()
                    .map(|m| Named {
                        name: oci_name(m.annotations.as_ref()),
                        target: Descriptor {
                            platform: None,
                            ..m
                        },
                    })
                    .collect());
            }
        }
        let Some(manifests) = files.metadata.get("manifest.json") else {
            return Err(LoadError::UnrecognizedFormat.into());
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            #[serde(default)]
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(manifests).map_err(LoadError::ManifestJson)?;
        let mut out = Vec::new();
        for e in entries {
            let config = files
                .get(&e.config)
                .ok_or_else(|| LoadError::ConfigNotFound(e.config.clone()))?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let stored = files
                    .get(l)
                    .ok_or_else(|| LoadError::LayerNotFound(l.clone()))?;
                layers.push(ManifestDescriptor {
                    media_type: layer_media_type(self.c, &stored.digest).await?,
                    digest: stored.digest.clone(),
                    size: stored.size,
                });
            }
            let manifest = DockerManifest {
                schema_version: 2,
                media_type: mt::DOCKER_MANIFEST,
                config: ManifestDescriptor {
                    media_type: mt::DOCKER_CONFIG,
                    digest: config.digest.clone(),
                    size: config.size,
                },
                layers,
            };
            let bytes =
                serde_json::to_vec(&manifest).map_err(|e| Error::Malformed(e.to_string()))?;
            let size = bytes.len() as i64;
            let digest = content::write_blob(
                self.c,
                &lease.id(),
                &format!("commitd-load-manifest-{}", crate::unique()),
                bytes,
                HashMap::new(),
            )
            .await?;
            let target = Descriptor {
                media_type: mt::DOCKER_MANIFEST.into(),
                digest,
                size,
                annotations: None,
                platform: None,
                urls: None,
            };
            match e.repo_tags.filter(|t| !t.is_empty()) {
                None => out.push(Named { name: None, target }),
                Some(tags) => {
                    for t in tags {
                        out.push(Named {
                            name: Some(docker_ref(&t)?),
                            target: target.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies the image's layers into snapshots named by their chain IDs
    /// (those already there are kept), each checked against its diff ID,
    /// and labels the config with the top snapshot and each compressed
    /// layer with its diff ID, as containerd's unpacker does.
    async fn unpack(&self, lease: &Lease, r: &Resolved) -> Result<()> {
        let diff_ids = &r.config.rootfs.diff_ids;
        let layers = &r.manifest.layers;
        if diff_ids.len() != layers.len() {
            return Err(LoadError::DiffIds {
                config: r.manifest.config.digest.clone(),
                diff_ids: diff_ids.len(),
                layers: layers.len(),
            }
            .into());
        }
        let sn = Snapshots::new(self.c, self.snapshotter);
        let mut parent = String::new();
        for (i, layer) in layers.iter().enumerate() {
            content::info(self.c, &layer.digest)
                .await
                .map_err(|e| missing(layer, e))?;
            let chain = image::chain_id(&diff_ids[..=i]).unwrap_or_default();
            crate::diff::apply_checked(
                self.c,
                &lease.id(),
                &sn,
                &chain,
                &parent,
                layer,
                Some(&diff_ids[i]),
            )
            .await?;
            if layer.digest != diff_ids[i] {
                content::add_labels(
                    self.c,
                    &layer.digest,
                    HashMap::from([(
                        crate::diff::UNCOMPRESSED_LABEL.to_string(),
                        diff_ids[i].clone(),
                    )]),
                )
                .await?;
            }
            parent = chain;
        }
        if !parent.is_empty() {
            content::add_labels(
                self.c,
                &r.manifest.config.digest,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                    parent,
                )]),
            )
            .await?;
        }
        Ok(())
    }
}

/// A descriptor as containerd's importer writes it: media type, digest,
/// size — in that order, nothing else.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDescriptor {
    media_type: &'static str,
    digest: String,
    size: i64,
}

/// The Docker schema 2 manifest containerd's importer makes of a
/// `manifest.json` entry.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerManifest {
    schema_version: u32,
    media_type: &'static str,
    config: ManifestDescriptor,
    layers: Vec<ManifestDescriptor>,
}

/// A Docker archive layer's media type, as containerd's importer decides
/// it: compressed (by its first bytes) or not.
async fn layer_media_type(c: &Containerd, digest: &str) -> Result<&'static str> {
    let head = content::read_range(c, digest, 0, 10).await?;
    let compressed = matches!(
        head.as_slice(),
        [0x1f, 0x8b, ..]
            | [0x28, 0xb5, 0x2f, 0xfd, ..]
            | [b'B', b'Z', b'h', ..]
            | [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..]
    );
    Ok(if compressed {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.docker.image.rootfs.diff.tar"
    })
}

/// Puts containerd's garbage-collection references on an index's and a
/// manifest's blobs, down the tree (what is missing is skipped): what
/// keeps the image's content once the load's lease is gone.
async fn label_tree(c: &Containerd, top: &Descriptor) -> Result<()> {
    let mut todo = vec![top.clone()];
    let mut depth = 0;
    while let Some(d) = todo.pop() {
        depth += 1;
        if depth > 64 {
            break;
        }
        let bytes = match content::read_blob(c, &d.digest).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::NotJson {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                source,
            })?;
        let mut labels = HashMap::new();
        if value.get("manifests").is_some() {
            let index: Index =
                serde_json::from_value(value).map_err(|source| LoadError::BadIndex {
                    digest: d.digest.clone(),
                    source,
                })?;
            for (i, m) in index.manifests.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    m.digest.clone(),
                );
                todo.push(m.clone());
            }
        } else {
            let m: Manifest =
                serde_json::from_value(value).map_err(|source| LoadError::BadManifest {
                    digest: d.digest.clone(),
                    source,
                })?;
            labels.insert(
                "containerd.io/gc.ref.content.config".to_string(),
                m.config.digest.clone(),
            );
            for (i, l) in m.layers.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    l.digest.clone(),
                );
            }
        }
        content::add_labels(c, &d.digest, labels).await?;
    }
    Ok(())
}

fn missing(d: &Descriptor, e: Error) -> Error {
    if e.is_not_found() {
        LoadError::MissingContent(d.digest.clone()).into()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_read_as_before() {
        // Their texts are what clients saw as `InvalidArgument`s.
        let e: Error = LoadError::File {
            path: "blobs/sha256/ab".into(),
            source: Box::new(LoadError::Digest {
                digest: "sha256:cd".into(),
                expected: "sha256:ab".into(),
            }),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "blobs/sha256/ab: unexpected commit digest sha256:cd, expected sha256:ab: failed precondition"
        );
        let json = serde_json::from_slice::<Vec<u8>>(b"{").unwrap_err();
        let text = format!("untar manifest \"manifest.json\": {json}");
        assert_eq!(Error::from(LoadError::ManifestJson(json)).to_string(), text);
        assert_eq!(
            Error::from(LoadError::ConfigNotFound("c.json".into())).to_string(),
            "image config \"c.json\" not found"
        );
    }

    #[test]
    fn archive_paths_are_cleaned() {
        assert_eq!(clean_path("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_path("/manifest.json"), "manifest.json");
        assert_eq!(clean_path("a/../b//c/"), "b/c");
    }

    #[test]
    fn blob_paths_name_their_digest() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_of_path(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_of_path("blobs/sha256/short"), None);
        assert_eq!(digest_of_path(&format!("{hex}/layer.tar")), None);
    }

    #[test]
    fn references_are_normalized_as_docker_ref() {
        assert_eq!(
            docker_ref("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(docker_ref("acc/x:1").unwrap(), "docker.io/acc/x:1");
        assert!(docker_ref("Bad").is_err());
    }

    #[test]
    fn oci_names_come_from_annotations() {
        let a = |k: &str, v: &str| Some(BTreeMap::from([(k.to_string(), v.to_string())]));
        assert_eq!(
            oci_name(a("io.containerd.image.name", "docker.io/acc/x:1").as_ref()),
            Some("docker.io/acc/x:1".into())
        );
        assert_eq!(
            oci_name(a("org.opencontainers.image.ref.name", "acc/x:2").as_ref()),
            Some("docker.io/acc/x:2".into())
        );
        assert_eq!(
            oci_name(a("org.opencontainers.image.ref.name", "1.0").as_ref()),
            None
        );
        assert_eq!(oci_name(None), None);
    }

    #[test]
    fn docker_manifests_are_written_as_containerds_importer() {
        let m = DockerManifest {
            schema_version: 2,
            media_type: mt::DOCKER_MANIFEST,
            config: ManifestDescriptor {
                media_type: mt::DOCKER_CONFIG,
                digest: "sha256:c".into(),
                size: 1,
            },
            layers: vec![ManifestDescriptor {
                media_type: "application/vnd.docker.image.rootfs.diff.tar",
                digest: "sha256:l".into(),
                size: 2,
            }],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":1},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":"sha256:l","size":2}]}"#
        );
    }
}
