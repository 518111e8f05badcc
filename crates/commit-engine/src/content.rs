//! containerd's content store: reading small blobs (manifests, configs) and
//! writing blobs through the content service's write stream.

use std::collections::HashMap;

use containerd_client::services::v1::{
    DeleteContentRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::client::Containerd;
use crate::error::{Error, Result};

/// Manifests, indexes and configs larger than this are refused: they are
/// JSON documents, and a bigger one is not something to hold in memory.
pub(crate) const MAX_METADATA_BLOB: i64 = 8 << 20;

/// Chunk size of content writes, well under gRPC's 16 MiB message limit.
pub(crate) const WRITE_CHUNK: usize = 1 << 20;

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads a whole blob that is expected to be small metadata, in one call:
/// the read streams it to the end, and one that outgrows
/// [`MAX_METADATA_BLOB`] is refused as it comes.
pub(crate) async fn read_blob(c: &Containerd, digest: &str) -> Result<Vec<u8>> {
    read(c, digest, 0, 0, Some(MAX_METADATA_BLOB)).await
}

/// Reads `size` bytes at `offset` of a blob (`size` 0: to the end).
pub(crate) async fn read_range(
    c: &Containerd,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>> {
    read(c, digest, offset, size, None).await
}

/// One read call, streamed to its end into memory; past `limit` bytes it is
/// refused as it comes.
async fn read(
    c: &Containerd,
    digest: &str,
    offset: i64,
    size: i64,
    limit: Option<i64>,
) -> Result<Vec<u8>> {
    let req = c.request(ReadContentRequest {
        digest: digest.to_string(),
        offset,
        size,
    });
    let mut stream = c
        .content()
        .read(req)
        .await
        .map_err(|s| c.err("content read", s))?
        .into_inner();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| c.err("content read", s))?;
        out.extend_from_slice(&msg.data);
        if let Some(limit) = limit.filter(|l| out.len() as i64 > *l) {
            return Err(Error::Malformed(format!(
                "blob {digest} is over {limit} bytes, too large for metadata"
            )));
        }
    }
    Ok(out)
}

pub(crate) async fn info(c: &Containerd, digest: &str) -> Result<Info> {
    let req = c.request(InfoRequest {
        digest: digest.to_string(),
    });
    let resp = c
        .content()
        .info(req)
        .await
        .map_err(|s| c.err("content info", s))?;
    resp.into_inner()
        .info
        .ok_or_else(|| Error::Malformed(format!("content info of {digest} is empty")))
}

/// Writes a blob held in memory under `lease`, with `labels`. A blob that is
/// already in the store gets the labels added and is attached to the lease.
pub(crate) async fn write_blob(
    c: &Containerd,
    lease: &str,
    reference: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<String> {
    let digest = sha256_digest(&data);
    let total = data.len() as i64;
    // One message writes and commits; the server answers once and closes.
    let first = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.to_string(),
        total,
        expected: digest.clone(),
        offset: 0,
        data,
        labels: labels.clone(),
    };
    let req = c.leased(futures::stream::iter([first]), lease);
    let result = async {
        let mut responses = c.content().write(req).await?.into_inner();
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok::<_, tonic::Status>(())
    }
    .await;
    match result {
        Ok(()) => Ok(digest),
        Err(s) if s.code() == Code::AlreadyExists => {
            adopt(c, lease, &digest, labels).await?;
            Ok(digest)
        }
        Err(s) => Err(c.err("content write", s)),
    }
}

/// Takes a blob that a write found already in the store (`AlreadyExists`):
/// attaches it to `lease` first, then adds `labels`. In that order, because
/// an unreferenced blob can be collected at any moment until a lease holds
/// it; adding labels is also the check that it survived until then (a blob
/// collected in between answers NotFound, reported as an error naming the
/// race rather than as an image with a missing blob).
pub(crate) async fn adopt(
    c: &Containerd,
    lease: &str,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    crate::lease::add_content(c, lease, digest).await?;
    let labels_or_check = if labels.is_empty() {
        info(c, digest).await.map(|_| ())
    } else {
        add_labels(c, digest, labels).await
    };
    labels_or_check.map_err(|e| {
        if e.kind() == Some(crate::error::Kind::NotFound) {
            Error::Malformed(format!(
                "blob {digest} was garbage-collected while this commit adopted it; try again"
            ))
        } else {
            e
        }
    })
}

/// Adds labels to a blob's existing ones.
pub(crate) async fn add_labels(
    c: &Containerd,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let req = c.request(UpdateRequest {
        info: Some(Info {
            digest: digest.to_string(),
            labels,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    });
    c.content()
        .update(req)
        .await
        .map_err(|s| c.err("content update", s))?;
    Ok(())
}

/// Deletes a blob's record in this namespace; failures are logged.
pub(crate) async fn delete(c: &Containerd, digest: &str) {
    let req = c.request(DeleteContentRequest {
        digest: digest.to_string(),
    });
    if let Err(s) = c.content().delete(req).await {
        tracing::warn!(%digest, cause = %s.message(), "could not delete content record");
    }
}

/// Bytes read per call when a blob is streamed.
const READ_CHUNK: i64 = 4 << 20;

/// Reading blobs of the content store (`docker push`, `docker save`).
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Blobs {
    pub(crate) c: Containerd,
}

impl Blobs {
    /// A whole small blob (a manifest, an index, a config).
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>> {
        read_blob(&self.c, digest).await
    }

    /// A blob of `size` bytes, in chunks of a few MiB, each read when the
    /// previous one has been taken; a blob shorter than `size` ends with
    /// an error.
    pub fn chunks(
        &self,
        digest: &str,
        size: i64,
    ) -> impl futures::Stream<Item = Result<Vec<u8>>> + Send + 'static {
        let (c, digest) = (self.c.clone(), digest.to_string());
        futures::stream::unfold(Some(0i64), move |offset| {
            let (c, digest) = (c.clone(), digest.clone());
            async move {
                let offset = offset?;
                if offset >= size {
                    return None;
                }
                let want = (size - offset).min(READ_CHUNK);
                match read_range(&c, &digest, offset, want).await {
                    Ok(data) if !data.is_empty() => {
                        let next = offset + data.len() as i64;
                        Some((Ok(data), Some(next)))
                    }
                    Ok(_) => Some((
                        Err(Error::Malformed(format!(
                            "blob {digest} ended at {offset} of {size} bytes"
                        ))),
                        None,
                    )),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
    }
}
