//! Blobs written into the content store as they arrive — one content
//! service write stream per blob, under a lease — for bytes that are
//! stored as they came (`docker load`): the digest is computed on the way
//! and, when the caller knows it, checked by containerd at commit.
//!
//! An ingest that does not finish is aborted, so a failed load leaves no
//! ingest behind; what was committed belongs to the lease and goes with it.

use std::collections::HashMap;

use containerd_client::services::v1::{AbortRequest, WriteAction, WriteContentRequest};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::client::Containerd;
use crate::content::WRITE_CHUNK;
use crate::error::{Error, Result};

/// Write requests queued ahead of the gRPC stream: bounds the memory one
/// ingest holds to a few chunks.
const QUEUE: usize = 4;

/// One blob being written.
pub(crate) struct Ingest {
    c: Containerd,
    lease: String,
    reference: String,
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    writer: Option<tokio::task::JoinHandle<std::result::Result<(), tonic::Status>>>,
    hash: Sha256,
    buf: Vec<u8>,
    offset: i64,
}

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub digest: String,
    pub size: i64,
}

impl Ingest {
    /// Starts writing a blob under `lease`; `reference` names the ingest
    /// (unique per writer).
    pub(crate) fn start(c: &Containerd, lease: &str, reference: String) -> Self {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(QUEUE);
        let req = c.leased(ReceiverStream::new(rx), lease);
        let client = c.clone();
        let writer = tokio::spawn(async move {
            let mut responses = client.content().write(req).await?.into_inner();
            while let Some(r) = responses.next().await {
                r?;
            }
            Ok(())
        });
        Self {
            c: c.clone(),
            lease: lease.to_string(),
            reference,
            tx: Some(tx),
            writer: Some(writer),
            hash: Sha256::new(),
            buf: Vec::with_capacity(WRITE_CHUNK),
            offset: 0,
        }
    }

    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.hash.update(data);
        while !data.is_empty() {
            let room = WRITE_CHUNK - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == WRITE_CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
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
        self.send(msg).await?;
        self.offset += len;
        Ok(())
    }

    async fn send(&mut self, msg: WriteContentRequest) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The stream ended early: its error says why.
        Err(self.finish_writer().await.err().unwrap_or_else(|| {
            Error::Malformed(format!("content write {} closed early", self.reference))
        }))
    }

    async fn finish_writer(&mut self) -> Result<()> {
        self.tx = None;
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        match w.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) if s.code() == Code::AlreadyExists => Ok(()),
            Ok(Err(s)) => Err(self.c.err("content write", s)),
            Err(e) => Err(Error::task("content writer")(e)),
        }
    }

    /// Commits the blob with `labels`. `expected`: the digest it must have
    /// (containerd refuses another). A blob that is in the store already
    /// is success, with `labels` added.
    pub(crate) async fn commit(
        mut self,
        expected: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<Stored> {
        let result = self.commit_inner(expected, labels).await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn commit_inner(
        &mut self,
        expected: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<Stored> {
        self.flush().await?;
        let digest = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hash).finalize())
        );
        if let Some(want) = expected {
            if want != digest {
                return Err(crate::load::LoadError::Digest {
                    digest,
                    expected: want.to_string(),
                }
                .into());
            }
        }
        let size = self.offset;
        let msg = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: size,
            expected: digest.clone(),
            offset: size,
            data: Vec::new(),
            labels: labels.clone(),
        };
        self.send(msg).await?;
        let already = match self.writer.take() {
            Some(w) => {
                self.tx = None;
                match w.await {
                    Ok(Ok(())) => false,
                    Ok(Err(s)) if s.code() == Code::AlreadyExists => true,
                    Ok(Err(s)) => return Err(self.c.err("content write", s)),
                    Err(e) => return Err(Error::task("content writer")(e)),
                }
            }
            None => false,
        };
        if already {
            crate::content::adopt(&self.c, &self.lease, &digest, labels).await?;
        }
        Ok(Stored { digest, size })
    }

    /// Drops the unfinished ingest.
    pub(crate) async fn abort(mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        let req = self.c.request(AbortRequest {
            r#ref: self.reference.clone(),
        });
        let _ = self.c.content().abort(req).await;
    }
}
