//! Streaming a layer into the content store: the uncompressed tar is hashed
//! (diff ID), compressed on every core, hashed again (digest) and sent to
//! containerd's content service in 1 MiB messages as it is produced, under
//! the commit's lease. Memory stays bounded whatever the layer's size: a few
//! messages in flight, the compressor's blocks, nothing more.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};

use containerd_client::services::v1::{AbortRequest, WriteAction, WriteContentRequest};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tracing::{debug, instrument};

use crate::client::Containerd;
use crate::content::{self, WRITE_CHUNK};
use crate::diff::{Layer, UNCOMPRESSED_LABEL};
use crate::error::{Error, Result};
use crate::image::{media_type, Descriptor};
use crate::Compression;

/// Messages buffered between the producer and the gRPC stream.
const IN_FLIGHT: usize = 4;

/// Compression settings of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub compression: Compression,
    /// gzip level (1 fastest … 9 smallest).
    pub gzip_level: u32,
    /// zstd level (1 … 19).
    pub zstd_level: i32,
    /// Compression threads.
    pub threads: usize,
}

impl Codec {
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            Compression::None => media_type::OCI_LAYER_TAR,
        }
    }
}

/// The end of the pipeline: hashes the compressed bytes and sends them to
/// the content service in `WRITE_CHUNK` messages.
struct Upload {
    tx: mpsc::Sender<WriteContentRequest>,
    reference: String,
    buf: Vec<u8>,
    offset: i64,
    hash: Sha256,
}

impl Upload {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK));
        let len = data.len() as i64;
        let msg = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            total: 0,
            expected: String::new(),
            offset: self.offset,
            data,
            labels: HashMap::new(),
        };
        self.tx
            .blocking_send(msg)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "content write stream closed"))?;
        self.offset += len;
        Ok(())
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = WRITE_CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.hash.update(&data[..n]);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITE_CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor between the tar and the upload.
enum Compressor {
    Gzip(Box<dyn gzp::ZWriter<Upload> + Send>),
    Zstd(zstd::stream::write::Encoder<'static, Upload>),
    None(Upload),
}

impl Compressor {
    fn new(codec: &Codec, upload: Upload) -> io::Result<Self> {
        Ok(match codec.compression {
            Compression::Gzip => {
                let w = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                    .num_threads(codec.threads.max(1))
                    .map_err(io::Error::other)?
                    .compression_level(gzp::Compression::new(codec.gzip_level.clamp(1, 9)))
                    .from_writer(upload);
                Compressor::Gzip(Box::new(w))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(upload, codec.zstd_level)?;
                if codec.threads > 1 {
                    e.multithread(u32::try_from(codec.threads).unwrap_or(2))?;
                    // Small jobs keep memory low (default: 4 × window).
                    e.set_parameter(zstd::zstd_safe::CParameter::JobSize(2 << 20))?;
                }
                Compressor::Zstd(e)
            }
            Compression::None => Compressor::None(upload),
        })
    }

    fn finish(self) -> io::Result<Upload> {
        match self {
            Compressor::Gzip(mut w) => w.finish().map_err(io::Error::other),
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
pub struct TarSink {
    inner: Compressor,
    diff_id: Sha256,
    size: u64,
}

impl Write for TarSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.diff_id.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the pipeline made.
pub struct Streamed<R> {
    pub layer: Layer,
    pub uncompressed_size: u64,
    /// What the producer returned.
    pub produced: R,
}

/// Runs `produce` on a blocking thread, writing an uncompressed tar into
/// the sink it is given, and streams the result into the content store as a
/// layer blob labelled with its diff ID.
#[instrument(skip_all, fields(compression = ?codec.compression))]
pub async fn stream_layer<R, F>(c: &Containerd, lease: &str, codec: Codec, produce: F) -> Result<Streamed<R>>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<R> + Send + 'static,
{
    let reference = format!("commitd-layer-{}", crate::unique());
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(IN_FLIGHT);
    let req = c.leased(ReceiverStream::new(rx), lease);
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut responses = c.content().write(req).await?.into_inner();
            while let Some(r) = responses.next().await {
                r?;
            }
            Ok::<_, tonic::Status>(())
        })
    };

    let producer = {
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || -> io::Result<(R, String, u64, String, i64)> {
            let upload = Upload { tx: tx.clone(), reference: reference.clone(), buf: Vec::with_capacity(WRITE_CHUNK), offset: 0, hash: Sha256::new() };
            let sink = TarSink { inner: Compressor::new(&codec, upload)?, diff_id: Sha256::new(), size: 0 };
            let mut buffered = BufWriter::with_capacity(256 << 10, sink);
            let produced = match produce(&mut buffered).and_then(|p| buffered.flush().map(|()| p)) {
                Ok(p) => p,
                Err(e) => {
                    // Finish the compressor explicitly: gzp's drop would
                    // unwrap the error again.
                    let (sink, _) = buffered.into_parts();
                    let _ = sink.inner.finish();
                    return Err(e);
                }
            };
            let (sink, _) = buffered.into_parts();
            let diff_id = format!("sha256:{}", hex::encode(sink.diff_id.finalize()));
            let uncompressed = sink.size;
            let mut upload = sink.inner.finish()?;
            upload.send()?;
            let digest = format!("sha256:{}", hex::encode(upload.hash.clone().finalize()));
            let total = upload.offset;
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference,
                total,
                expected: digest.clone(),
                offset: total,
                data: Vec::new(),
                labels: HashMap::from([(UNCOMPRESSED_LABEL.to_string(), diff_id.clone())]),
            };
            tx.blocking_send(commit).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "content write stream closed"))?;
            Ok((produced, diff_id, uncompressed, digest, total))
        })
    };

    let produced = producer.await.map_err(|e| Error::Malformed(format!("layer producer failed: {e}")))?;
    let written = writer.await.map_err(|e| Error::Malformed(format!("layer upload failed: {e}")))?;
    let (produced, diff_id, uncompressed_size, digest, size) = match (produced, written) {
        (Ok(p), Ok(())) => p,
        (Ok(p), Err(s)) if s.code() == Code::AlreadyExists => {
            // The same blob is in the store already (an identical layer).
            let (_, diff_id, _, digest, _) = &p;
            content::add_labels(c, digest, HashMap::from([(UNCOMPRESSED_LABEL.to_string(), diff_id.clone())])).await?;
            crate::lease::add_content(c, lease, digest).await?;
            p
        }
        (_, Err(s)) => {
            abort(c, &reference).await;
            return Err(c.err("content write", s));
        }
        (Err(e), Ok(())) => {
            abort(c, &reference).await;
            return Err(Error::io("writing the layer", e));
        }
    };
    debug!(%digest, %diff_id, size, uncompressed_size, "layer streamed");
    Ok(Streamed {
        layer: Layer {
            descriptor: Descriptor {
                media_type: codec.media_type().to_string(),
                digest,
                size,
                annotations: None,
                platform: None,
                urls: None,
            },
            diff_id,
        },
        uncompressed_size,
        produced,
    })
}

/// Drops an unfinished ingest (it belongs to the lease anyway).
async fn abort(c: &Containerd, reference: &str) {
    let req = c.request(AbortRequest { r#ref: reference.to_string() });
    let _ = c.content().abort(req).await;
}

/// A blocking reader over a blob in the content store, for a producer
/// thread: reads ranges through the runtime.
pub struct BlobReader {
    c: Containerd,
    digest: String,
    offset: i64,
    size: i64,
    buf: Vec<u8>,
    pos: usize,
    rt: tokio::runtime::Handle,
}

impl BlobReader {
    pub fn new(c: Containerd, digest: String, size: i64) -> Self {
        Self { c, digest, offset: 0, size, buf: Vec::new(), pos: 0, rt: tokio::runtime::Handle::current() }
    }
}

impl io::Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.offset >= self.size {
                return Ok(0);
            }
            let want = (self.size - self.offset).min(4 << 20);
            self.buf = self
                .rt
                .block_on(content::read_range(&self.c, &self.digest, self.offset, want))
                .map_err(io::Error::other)?;
            if self.buf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob ended early"));
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
