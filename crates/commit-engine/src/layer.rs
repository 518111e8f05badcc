//! Writing a layer into the content store as it is produced: the
//! uncompressed tar is hashed (diff ID), compressed on every core, hashed
//! again (digest) and written out, under the commit's lease. Memory stays
//! bounded whatever the layer's size.
//!
//! Two ways out, same result:
//! - **Local** (when containerd's content store directory is visible here,
//!   see [`ContentRoot`]): the blob is written straight into a temporary
//!   file in the store's root (beside `blobs/`, same filesystem, never
//!   inside it: containerd's collector walks `blobs/sha256` and fails its
//!   whole sweep on a name that is not a digest), synced, linked to its
//!   digest's name, and
//!   then registered with the content service: a write stream that sends no data,
//!   only the commit with expected digest, size and labels. containerd takes
//!   a blob already in its backing store as shared content (how it shares
//!   blobs across namespaces) and records it in the namespace under the
//!   lease. The blob is read back through the content service to prove
//!   containerd sees the very file. This skips containerd re-hashing and
//!   re-writing every byte, which on a 2-core machine costs it about a CPU
//!   second per 100 MB.
//! - **Stream**: the content service's write stream, in 1 MiB messages
//!   (a remote containerd, or a store that does not share content).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    AbortRequest, PluginsRequest, WriteAction, WriteContentRequest,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tracing::{debug, instrument, warn};

use crate::Compression;
use crate::client::Containerd;
use crate::content::{self, WRITE_CHUNK};
use crate::diff::{Layer, UNCOMPRESSED_LABEL};
use crate::error::{Error, Result};
use docker_format::image::{Descriptor, media_type};

/// Messages buffered between the producer and the gRPC stream.
const IN_FLIGHT: usize = 4;

/// Prefix of temporary blob files, made in the content store's root. Not
/// in `blobs/sha256`: containerd 1.6's content collector walks that
/// directory, hands a file whose name is not a digest to its delete, and
/// gives up the whole sweep on the error ("content garbage collection
/// failed: calculating blob path for delete"), so no unreferenced blob
/// would be removed while a commit writes its layer.
const TEMP_PREFIX: &str = ".commitd-";

/// Compression settings of the pipeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    pub compression: Compression,
    /// gzip level (1 fastest … 9 smallest; 1–3 igzip, 4–9 libdeflate).
    pub gzip_level: u32,
    /// zstd level (1 … 19).
    pub zstd_level: i32,
    /// Compression threads.
    pub threads: usize,
    /// Make a blob written into the content store directory durable
    /// (fdatasync) before containerd is told about it, as containerd's own
    /// content writer does.
    pub sync: bool,
}

impl Codec {
    pub(crate) fn media_type(&self) -> &'static str {
        match self.compression {
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            Compression::None => media_type::OCI_LAYER_TAR,
        }
    }
}

/// containerd's local content store directory, as containerd reports it.
#[derive(Debug, Clone)]
pub(crate) struct ContentRoot(PathBuf);

impl ContentRoot {
    /// Asks containerd where its content store lives; `None` when it does
    /// not say or the directory is not visible from here.
    pub(crate) async fn discover(c: &Containerd) -> Option<Self> {
        let req = c.request(PluginsRequest {
            filters: vec!["type==io.containerd.content.v1".into()],
        });
        let plugins = c
            .introspection()
            .plugins(req)
            .await
            .ok()?
            .into_inner()
            .plugins;
        let root = plugins
            .iter()
            .find_map(|p| p.exports.get("root").cloned())?;
        let blobs = Path::new(&root).join("blobs").join("sha256");
        blobs.is_dir().then(|| ContentRoot(PathBuf::from(root)))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    fn blobs(&self) -> PathBuf {
        self.0.join("blobs").join("sha256")
    }

    /// Where temporary blob files are made: the store's root, on the
    /// blobs' filesystem (a hard link moves them into place) but outside
    /// the directory containerd's collector walks.
    fn temp_dir(&self) -> &Path {
        &self.0
    }

    /// Removes temporary files left by commitd processes that died. A
    /// writer touches its file with every block, so one untouched for a
    /// quarter of an hour is abandoned (a pid check would not do: another
    /// commitd may run in another pid namespace). Also sweeps `blobs/sha256`,
    /// where earlier versions made them.
    pub(crate) fn sweep_stale(&self) {
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(15 * 60);
        let entries = [self.temp_dir().to_path_buf(), self.blobs()]
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten();
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Where compressed bytes go, hashed on the way (for a local file, by the
/// thread that writes it).
enum Sink {
    Stream {
        tx: mpsc::Sender<WriteContentRequest>,
        reference: String,
        buf: Vec<u8>,
        offset: i64,
    },
    Local {
        /// The writer while bytes come; taken when they stop.
        file: Option<crate::direct::Offload>,
        /// The written file, once the writer is done.
        done: Option<File>,
        offset: i64,
    },
}

struct Out {
    sink: Sink,
    hash: Sha256,
    /// A copy of the bytes for a registry upload (commit + push).
    tee: Option<TeeOut>,
}

/// A copy of a layer's compressed bytes, handed on as they are written: a
/// commit pushed at once uploads its layer to the registry while it is
/// made (see [`crate::pipeline`]). The copy never fails nor holds up the
/// layer for long: when the receiver is gone, or does not take a chunk
/// within [`TEE_WAIT`], the copy stops and the layer goes on alone. A
/// layer that fails ends the copy with an error item, so the receiver
/// never takes a cut-short copy for a whole one; one that succeeds ends it
/// by closing the channel.
pub(crate) struct Tee {
    pub tx: mpsc::Sender<std::result::Result<bytes::Bytes, String>>,
    /// The runtime the blocking producer waits on for the receiver.
    pub handle: tokio::runtime::Handle,
}

/// Bytes handed on at once (the receiver gathers them into requests).
pub(crate) const TEE_PIECE: usize = 256 << 10;

/// How long the layer waits for the receiver to take a chunk.
pub(crate) const TEE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

struct TeeOut {
    tee: Tee,
    buf: Vec<u8>,
    finished: bool,
}

impl TeeOut {
    fn new(tee: Tee) -> Self {
        Self {
            tee,
            buf: Vec::with_capacity(TEE_PIECE),
            finished: false,
        }
    }

    /// Copies `data`; false when the copy stopped.
    fn write(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(TEE_PIECE - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == TEE_PIECE && !self.hand_on() {
                return false;
            }
        }
        true
    }

    fn hand_on(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(TEE_PIECE),
        ));
        self.send(Ok(chunk))
    }

    fn send(&self, item: std::result::Result<bytes::Bytes, String>) -> bool {
        let tx = self.tee.tx.clone();
        matches!(
            self.tee
                .handle
                .block_on(async { tokio::time::timeout(TEE_WAIT, tx.send(item)).await }),
            Ok(Ok(()))
        )
    }

    /// The layer is whole: the last bytes go, and the channel closes.
    fn finish(mut self) {
        if self.hand_on() {
            self.finished = true;
        }
    }
}

impl Drop for TeeOut {
    fn drop(&mut self) {
        if !self.finished {
            // Not waited for: a receiver that is not reading has stopped.
            let _ = self
                .tee
                .tx
                .try_send(Err("the layer was not finished".into()));
        }
    }
}

impl Out {
    fn send(&mut self) -> io::Result<()> {
        let Sink::Stream {
            tx,
            reference,
            buf,
            offset,
        } = &mut self.sink
        else {
            return Ok(());
        };
        if buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(buf, Vec::with_capacity(WRITE_CHUNK));
        let len = data.len() as i64;
        let msg = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total: 0,
            expected: String::new(),
            offset: *offset,
            data,
            labels: HashMap::new(),
        };
        tx.blocking_send(msg).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "content write stream closed")
        })?;
        *offset += len;
        Ok(())
    }

    /// The digest of everything written; for a local file this waits for
    /// its writer to finish.
    fn digest(&mut self) -> io::Result<String> {
        let hash = match &mut self.sink {
            Sink::Stream { .. } => self.hash.clone(),
            Sink::Local { file, done, .. } => {
                let writer = file
                    .take()
                    .ok_or_else(|| io::Error::other("layer writer already finished"))?;
                let (hash, f) = writer.finish()?;
                *done = Some(f);
                hash
            }
        };
        Ok(format!("sha256:{}", hex::encode(hash.finalize())))
    }

    /// Hands `data` on to the tee, if any; drops a tee that stopped.
    fn copy(&mut self, data: &[u8]) {
        if let Some(t) = &mut self.tee {
            if !t.write(data) {
                debug!("the layer's copy for the registry stopped");
                self.tee = None;
            }
        }
    }

    fn size(&self) -> i64 {
        match &self.sink {
            Sink::Stream { offset, buf, .. } => *offset + buf.len() as i64,
            Sink::Local { offset, .. } => *offset,
        }
    }
}

impl Write for Out {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match &mut self.sink {
            Sink::Stream { buf, .. } => {
                let n = data.len().min(WRITE_CHUNK - buf.len());
                buf.extend_from_slice(&data[..n]);
                n
            }
            Sink::Local { file, offset, .. } => {
                let writer = file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("layer writer already finished"))?;
                let n = writer.write(data)?;
                *offset += n as i64;
                // Hashed by the writer's thread.
                self.copy(&data[..n]);
                return Ok(n);
            }
        };
        self.hash.update(&data[..n]);
        self.copy(&data[..n]);
        if let Sink::Stream { buf, .. } = &self.sink {
            if buf.len() == WRITE_CHUNK {
                self.send()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor between the tar and the output.
enum Compressor {
    Gzip(crate::pgzip::ParGzip<Out>),
    Zstd(zstd::stream::write::Encoder<'static, Out>),
    None(Out),
}

impl Compressor {
    fn new(codec: &Codec, out: Out) -> io::Result<Self> {
        Ok(match codec.compression {
            Compression::Gzip => Compressor::Gzip(crate::pgzip::ParGzip::new(
                out,
                codec.gzip_level.clamp(1, 9),
                codec.threads,
            )?),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, codec.zstd_level)?;
                if codec.threads > 1 {
                    e.multithread(u32::try_from(codec.threads).unwrap_or(2))?;
                    // Small jobs keep memory low (default: 4 × window).
                    e.set_parameter(zstd::zstd_safe::CParameter::JobSize(1 << 20))?;
                }
                Compressor::Zstd(e)
            }
            Compression::None => Compressor::None(out),
        })
    }

    fn finish(self) -> io::Result<Out> {
        match self {
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::None(u) => Ok(u),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(w) => w.write(data),
            Compressor::Zstd(w) => w.write(data),
            Compressor::None(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The start of the pipeline: what the producer writes the tar into.
struct TarSink {
    inner: Compressor,
    /// The diff ID's hash; `None` when the blob is the tar itself
    /// (no compression), whose digest is then the diff ID: hashed once.
    diff_id: Option<Sha256>,
    size: u64,
    /// Docker's unpacked size, read from the tar's headers as they pass.
    unpacked: crate::unpacked::Sizer,
}

impl Write for TarSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        if let Some(h) = &mut self.diff_id {
            h.update(&data[..n]);
        }
        self.unpacked.feed(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the pipeline made.
pub(crate) struct Streamed {
    pub layer: Layer,
    pub uncompressed_size: u64,
}

/// A layer blob written but maybe not yet durable and registered with
/// containerd: that goes on in the future, while what needs only the
/// blob's digests and size (the image's config and manifest, its snapshot)
/// is written. No image record may name the blob before it answers `Ok`.
pub(crate) type Settling = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Hashes and results of a finished pipeline.
#[derive(Clone)]
struct Finished {
    diff_id: String,
    uncompressed: u64,
    /// Docker's unpacked size, when the tar's headers told it.
    unpacked: Option<i64>,
    digest: String,
    size: i64,
}

/// Runs the pipeline on the current (blocking) thread: `produce` writes the
/// tar into the compressor, which writes into `out`.
fn run_pipeline<R>(
    codec: &Codec,
    out: Out,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<R>,
) -> io::Result<(Finished, Out)> {
    let sink = TarSink {
        inner: Compressor::new(codec, out)?,
        diff_id: (codec.compression != Compression::None).then(Sha256::new),
        size: 0,
        unpacked: crate::unpacked::Sizer::new(),
    };
    let mut buffered = BufWriter::with_capacity(256 << 10, sink);
    match produce(&mut buffered).and_then(|_| buffered.flush()) {
        Ok(()) => {}
        Err(e) => {
            // Finish the compressor explicitly (its threads stop).
            let (sink, _) = buffered.into_parts();
            let _ = sink.inner.finish();
            return Err(e);
        }
    };
    let (sink, _) = buffered.into_parts();
    let diff_id = sink
        .diff_id
        .map(|h| format!("sha256:{}", hex::encode(h.finalize())));
    let uncompressed = sink.size;
    let unpacked = sink.unpacked.finish();
    let mut out = sink.inner.finish()?;
    out.flush()?;
    out.send()?;
    let digest = out.digest()?;
    if let Some(t) = out.tee.take() {
        t.finish();
    }
    let diff_id = diff_id.unwrap_or_else(|| digest.clone());
    let size = out.size();
    Ok((
        Finished {
            diff_id,
            uncompressed,
            unpacked,
            digest,
            size,
        },
        out,
    ))
}

/// Runs `produce` on a blocking thread, writing an uncompressed tar into
/// the sink it is given, and puts the result into the content store as a
/// layer blob labelled with its diff ID.
#[instrument(skip_all, fields(phase = "layer", compression = ?codec.compression, local = root.is_some()))]
pub(crate) async fn stream_layer<R, F>(
    c: &Containerd,
    lease: &str,
    codec: Codec,
    root: Option<&ContentRoot>,
    produce: F,
) -> Result<Streamed>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    stream_layer_tee(c, lease, codec, root, None, produce).await
}

/// [`stream_layer`], handing the compressed bytes on to `tee` as well.
pub(crate) async fn stream_layer_tee<R, F>(
    c: &Containerd,
    lease: &str,
    codec: Codec,
    root: Option<&ContentRoot>,
    tee: Option<Tee>,
    produce: F,
) -> Result<Streamed>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    let (streamed, settling) = stream_layer_settling(c, lease, codec, root, tee, produce).await?;
    settling.await?;
    Ok(streamed)
}

/// [`stream_layer_tee`], answering once the blob's bytes are written, with
/// the rest (making it durable, registering it) still to await.
pub(crate) async fn stream_layer_settling<R, F>(
    c: &Containerd,
    lease: &str,
    codec: Codec,
    root: Option<&ContentRoot>,
    tee: Option<Tee>,
    produce: F,
) -> Result<(Streamed, Settling)>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    let tee = tee.map(TeeOut::new);
    let (f, settling) = match root {
        Some(root) => write_local(c, lease, codec, root, tee, produce).await?,
        None => {
            let f = write_stream(c, lease, codec, tee, produce).await?;
            (f, Box::pin(async { Ok(()) }) as Settling)
        }
    };
    debug!(digest = %f.digest, diff_id = %f.diff_id, size = f.size, uncompressed = f.uncompressed, "layer written");
    let streamed = Streamed {
        layer: Layer {
            descriptor: Descriptor {
                media_type: codec.media_type().to_string(),
                digest: f.digest,
                size: f.size,
                annotations: None,
                platform: None,
                urls: None,
            },
            diff_id: f.diff_id,
        },
        uncompressed_size: f.uncompressed,
    };
    Ok((streamed, settling))
}

/// The blob's labels: its diff ID, and its unpacked size when known (so
/// no `docker images` has to read the blob to tell it).
fn labels(f: &Finished) -> HashMap<String, String> {
    let mut l = HashMap::from([(UNCOMPRESSED_LABEL.to_string(), f.diff_id.clone())]);
    if let Some(u) = f.unpacked {
        l.insert(crate::unpacked::LABEL.to_string(), u.to_string());
    }
    l
}

async fn write_stream<R, F>(
    c: &Containerd,
    lease: &str,
    codec: Codec,
    tee: Option<TeeOut>,
    produce: F,
) -> Result<Finished>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    let reference = format!("commitd-layer-{}", crate::unique());
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(IN_FLIGHT);
    let writer = spawn_writer(c, lease, rx);
    let producer = {
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || -> io::Result<Finished> {
            let sink = Sink::Stream {
                tx: tx.clone(),
                reference: reference.clone(),
                buf: Vec::with_capacity(WRITE_CHUNK),
                offset: 0,
            };
            let (f, _) = run_pipeline(
                &codec,
                Out {
                    sink,
                    hash: Sha256::new(),
                    tee,
                },
                produce,
            )?;
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference,
                total: f.size,
                expected: f.digest.clone(),
                offset: f.size,
                data: Vec::new(),
                labels: labels(&f),
            };
            tx.blocking_send(commit).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "content write stream closed")
            })?;
            Ok(f)
        })
    };
    let produced = producer.await.map_err(Error::task("layer producer"))?;
    let written = writer.await.map_err(Error::task("layer upload"))?;
    match (produced, written) {
        (Ok(f), Ok(())) => Ok(f),
        (Ok(f), Err(s)) if s.code() == Code::AlreadyExists => {
            // The same blob is in the store already (an identical layer).
            content::adopt(c, lease, &f.digest, labels(&f)).await?;
            Ok(f)
        }
        (_, Err(s)) => {
            abort(c, &reference).await;
            Err(c.err("content write", s))
        }
        (Err(e), Ok(())) => {
            abort(c, &reference).await;
            Err(Error::io("writing the layer", e))
        }
    }
}

/// The gRPC side of a content write stream: sends what `rx` yields and
/// drains the answers.
fn spawn_writer(
    c: &Containerd,
    lease: &str,
    rx: mpsc::Receiver<WriteContentRequest>,
) -> tokio::task::JoinHandle<std::result::Result<(), tonic::Status>> {
    let req = c.leased(ReceiverStream::new(rx), lease);
    let c = c.clone();
    tokio::spawn(async move {
        let mut responses = c.content().write(req).await?.into_inner();
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok(())
    })
}

async fn write_local<R, F>(
    c: &Containerd,
    lease: &str,
    codec: Codec,
    root: &ContentRoot,
    tee: Option<TeeOut>,
    produce: F,
) -> Result<(Finished, Settling)>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    let blobs = root.blobs();
    let tmp = root
        .temp_dir()
        .join(format!("{TEMP_PREFIX}{}", crate::unique()));
    let produced = {
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || -> io::Result<(Finished, File)> {
            let sink = Sink::Local {
                file: Some(crate::direct::Offload::new(
                    crate::direct::DirectFile::create_new(&tmp)?,
                )?),
                done: None,
                offset: 0,
            };
            let (f, out) = run_pipeline(
                &codec,
                Out {
                    sink,
                    hash: Sha256::new(),
                    tee,
                },
                produce,
            )?;
            let Sink::Local {
                done: Some(file), ..
            } = out.sink
            else {
                unreachable!("a finished local pipeline")
            };
            Ok((f, file))
        })
        .await
    };
    let (f, file) = match produced {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("writing the layer", e));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::task("layer producer")(e));
        }
    };
    let path = blobs.join(f.digest.trim_start_matches("sha256:"));
    let (c, lease, settled) = (c.clone(), lease.to_string(), f.clone());
    let settling = async move {
        // Durable before containerd is told about it, as its own
        // content writer makes it. The data went around the page
        // cache (O_DIRECT) but for the tail: this flushes the tail,
        // the blob's size and blocks, and waits for no other file's
        // dirty pages — measured with 1 GiB of unrelated dirty data,
        // or under writeback, on ext4 here: 0.1–13 ms for a 200 MiB
        // blob, the same as without it.
        let synced = tokio::task::spawn_blocking(move || -> io::Result<()> {
            if codec.sync {
                file.sync_data()?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(0o444))
        })
        .await;
        let result = match synced {
            Ok(Ok(())) => {
                let placed = Placed {
                    labels: labels(&settled),
                    digest: settled.digest,
                    size: settled.size,
                };
                place_and_register(&c, &lease, &tmp, &path, &placed).await
            }
            Ok(Err(e)) => Err(Error::io("writing the layer", e)),
            Err(e) => Err(Error::task("layer sync")(e)),
        };
        let _ = std::fs::remove_file(&tmp);
        result
    };
    Ok((f, Box::pin(settling)))
}

/// A blob written to a temporary file in the content store's root, to be
/// linked into place and registered.
pub(crate) struct Placed {
    pub(crate) digest: String,
    pub(crate) size: i64,
    pub(crate) labels: HashMap<String, String>,
}

/// Writes a small blob (an image's config or manifest) the way layers are
/// written locally: a temporary file in the store's root, synced, linked to
/// its digest's name and registered with `labels`. containerd's own writer
/// syncs the file inside its metadata transaction, so two blobs written at
/// once wait for each other's sync; synced here, two blobs' syncs overlap
/// and containerd only records them.
pub(crate) async fn write_small_local(
    c: &Containerd,
    lease: &str,
    root: &ContentRoot,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<String> {
    let placed = Placed {
        digest: content::sha256_digest(&data),
        size: data.len() as i64,
        labels,
    };
    let tmp = root
        .temp_dir()
        .join(format!("{TEMP_PREFIX}{}", crate::unique()));
    let written = {
        let tmp = tmp.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut file = File::options().write(true).create_new(true).open(&tmp)?;
            file.write_all(&data)?;
            file.sync_data()?;
            file.set_permissions(std::fs::Permissions::from_mode(0o444))
        })
        .await
    };
    let result = match written {
        Ok(Ok(())) => {
            let path = root
                .blobs()
                .join(placed.digest.trim_start_matches("sha256:"));
            place_and_register(c, lease, &tmp, &path, &placed).await
        }
        Ok(Err(e)) => Err(Error::io("writing a blob", e)),
        Err(e) => Err(Error::task("blob writer")(e)),
    };
    let _ = std::fs::remove_file(&tmp);
    result.map(|()| placed.digest)
}

/// How often a blob is linked into place again when containerd's garbage
/// collector removed it before it was registered.
const PLACE_ATTEMPTS: usize = 5;

/// Links the finished temporary file to its digest's name and registers it.
///
/// Until it is registered, the blob is a file containerd's metadata does
/// not know, and a garbage collection running meanwhile (any lease deleted
/// by any client triggers one) deletes it. The temporary file, whose name
/// is not a digest, is left alone by the collector: the blob is linked from
/// it again and registration retried, so a collection costs a retry, never
/// the data. Falls back to streaming the bytes when containerd will not
/// take the file as shared content.
async fn place_and_register(
    c: &Containerd,
    lease: &str,
    tmp: &Path,
    path: &Path,
    b: &Placed,
) -> Result<()> {
    for attempt in 1..=PLACE_ATTEMPTS {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {}
            // The same blob (same digest, same bytes) is there already.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("linking a blob into the content store", e)),
        }
        match register(c, lease, b).await {
            Ok(()) if sees_our_file(c, b, path).await => return Ok(()),
            Ok(()) => {
                // Registered, but containerd does not read our file (it is
                // not the file it sees): take the record back.
                content::delete(c, &b.digest).await;
                return Err(Error::Malformed(format!(
                    "containerd registered {} but does not read the file written at {}",
                    b.digest,
                    path.display()
                )));
            }
            Err(e)
                if e.kind() == Some(crate::error::Kind::FailedPrecondition)
                    && attempt < PLACE_ATTEMPTS =>
            {
                debug!(digest = %b.digest, attempt, "blob collected before it was registered; linking it again");
            }
            Err(e) => {
                // Not taken as shared content (e.g. an "isolated" content
                // sharing policy): send the bytes after all.
                warn!(cause = %e, digest = %b.digest, "registering the layer file failed; streaming it instead");
                return upload_file(c, lease, tmp, b).await;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Registers a blob already in the backing store: a write stream with the
/// commit only.
async fn register(c: &Containerd, lease: &str, b: &Placed) -> Result<()> {
    let commit = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: format!("commitd-layer-{}", crate::unique()),
        total: b.size,
        expected: b.digest.clone(),
        // At the end of the blob: containerd's writer for a blob its store
        // already holds stands at offset = size, and a message at offset 0
        // would make it truncate to 0 and start over (then the commit fails
        // its size check).
        offset: b.size,
        data: Vec::new(),
        labels: b.labels.clone(),
    };
    let req = c.leased(futures::stream::iter([commit]), lease);
    let result = async {
        let mut responses = c.content().write(req).await?.into_inner();
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok::<_, tonic::Status>(())
    }
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            match content::adopt(c, lease, &b.digest, b.labels.clone()).await {
                // An unreferenced blob of the same digest (e.g. an earlier
                // commit's that failed later) collected before the lease
                // held it: our file is linked again and registered (see
                // `place_and_register`).
                Err(_)
                    if content::info(c, &b.digest)
                        .await
                        .is_err_and(|e| e.kind() == Some(crate::error::Kind::NotFound)) =>
                {
                    Err(Error::Containerd {
                        op: "content register",
                        kind: crate::error::Kind::FailedPrecondition,
                        message: format!("{} was collected while being adopted", b.digest),
                    })
                }
                adopted => adopted,
            }
        }
        Err(s) => Err(c.err("content register", s)),
    }
}

/// Whether containerd reads back, at the end of the blob, the bytes of the
/// file we wrote.
async fn sees_our_file(c: &Containerd, b: &Placed, path: &Path) -> bool {
    let n = b.size.min(4096);
    let off = b.size - n;
    let Ok(theirs) = content::read_range(c, &b.digest, off, n).await else {
        return false;
    };
    let ours = (|| -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        file.seek(io::SeekFrom::Start(u64::try_from(off).unwrap_or(0)))?;
        let mut buf = vec![0; usize::try_from(n).unwrap_or(0)];
        file.read_exact(&mut buf)?;
        Ok(buf)
    })();
    ours.is_ok_and(|o| o == theirs)
}

/// Streams a file into the content store (fallback of the local path).
async fn upload_file(c: &Containerd, lease: &str, path: &Path, b: &Placed) -> Result<()> {
    let reference = format!("commitd-layer-{}", crate::unique());
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(IN_FLIGHT);
    let writer = spawn_writer(c, lease, rx);
    let (path, size, digest, blob_labels, r) = (
        path.to_path_buf(),
        b.size,
        b.digest.clone(),
        b.labels.clone(),
        reference.clone(),
    );
    let sent = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut file = File::open(&path)?;
        let mut offset = 0i64;
        loop {
            let mut data = vec![0; WRITE_CHUNK];
            let n = file.read(&mut data)?;
            if n == 0 {
                break;
            }
            data.truncate(n);
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: r.clone(),
                offset,
                data,
                ..Default::default()
            };
            tx.blocking_send(msg)
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            offset += n as i64;
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: r,
            total: size,
            expected: digest,
            offset,
            data: Vec::new(),
            labels: blob_labels,
        };
        tx.blocking_send(commit)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    })
    .await
    .map_err(Error::task("layer upload"))?;
    let written = writer.await.map_err(Error::task("layer upload"))?;
    match (sent, written) {
        (_, Err(s)) if s.code() == Code::AlreadyExists => {
            content::adopt(c, lease, &b.digest, b.labels.clone()).await
        }
        (Ok(()), Ok(())) => Ok(()),
        (_, Err(s)) => {
            abort(c, &reference).await;
            Err(c.err("content write", s))
        }
        (Err(e), Ok(())) => {
            abort(c, &reference).await;
            Err(Error::io("uploading the layer", e))
        }
    }
}

/// Drops an unfinished ingest (it belongs to the lease anyway).
async fn abort(c: &Containerd, reference: &str) {
    let req = c.request(AbortRequest {
        r#ref: reference.to_string(),
    });
    let _ = c.content().abort(req).await;
}

/// A blocking reader over a blob in the content store, for a producer
/// thread: reads ranges through the runtime.
pub(crate) struct BlobReader {
    c: Containerd,
    digest: String,
    offset: i64,
    size: i64,
    buf: Vec<u8>,
    pos: usize,
    rt: tokio::runtime::Handle,
}

impl BlobReader {
    pub(crate) fn new(c: Containerd, digest: String, size: i64) -> Self {
        Self {
            c,
            digest,
            offset: 0,
            size,
            buf: Vec::new(),
            pos: 0,
            rt: tokio::runtime::Handle::current(),
        }
    }
}

impl io::Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.offset >= self.size {
                return Ok(0);
            }
            // 1 MiB a call: a 4 MiB range held ~12 MiB at once (the
            // range being read, the one being consumed, gRPC's buffers).
            let want = (self.size - self.offset).min(1 << 20);
            self.buf = self
                .rt
                .block_on(content::read_range(
                    &self.c,
                    &self.digest,
                    self.offset,
                    want,
                ))
                .map_err(io::Error::other)?;
            if self.buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob ended early",
                ));
            }
            self.offset += self.buf.len() as i64;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
