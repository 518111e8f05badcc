//! Commit + push as one pipeline (`POST /commit?…&push=1`): what a node
//! agent that ships every snapshot to a registry asks for.
//!
//! While the container is captured, the base image's layers go up to the
//! registry (three at once, skipped when it has them, mounted from another
//! repository of it when it can, as `docker push`). The new layer is
//! uploaded while it is compressed: its bytes are handed from the layer
//! pipeline to a chunked blob upload as they are written (see
//! [`crate::layer::Tee`]), so it is never read back from the content store.
//! When the commit is done, the config and the manifest follow, byte for
//! byte as stored: the registry's manifest digest is the one `commit` then
//! `push` would give.
//!
//! The upload never fails the commit: a registry that refuses, stops
//! taking bytes, or ends with another digest (a squash folded the layer)
//! makes the pipeline send that layer again from the content store after
//! the commit, once; a push that still fails ends the events with the
//! error. The image is kept either way (as `docker commit` then `docker
//! push`): the commit's outcome is the commit's alone, and a failed commit
//! stops the uploads (blobs already sent stay on the registry, unnamed, as
//! after a failed `docker push`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use docker_format::image::Descriptor;
use docker_format::reference::Named;
use docker_format::registry;
use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::commit::{CommitRequest, Committed};
use crate::layer::Tee;
use crate::push::{Job, PARALLEL_UPLOADS, PushEvent, Sent};
use crate::remote::RegistryError;
use crate::{Engine, Result};

/// Where a commit is pushed.
pub struct PushTarget {
    /// The repository and tag (the commit's `repo:tag`).
    pub repository: Named,
    pub tag: String,
    pub auth: registry::RegistryAuth,
    /// Registries spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
}

/// Pieces of the new layer waiting for the upload (256 KiB each).
const TEE_QUEUE: usize = 8;

/// Bytes sent in one PATCH of the upload. A registry spends ~30 ms on a
/// PATCH whatever its size (distribution 2.8 here: 64 MiB took 3.4 s in
/// 1 MiB PATCHes, 0.6 s in 4 MiB ones); one is gathered while none is in
/// flight, so memory stays at one request and the queue.
const UPLOAD_CHUNK: usize = 4 << 20;

impl Engine {
    /// Commits a container and pushes the new image to `to` at once. Answers
    /// when the commit is done (or failed: then nothing is pushed under the
    /// tag); the push goes on, its events (Docker's push progress) arriving
    /// on the returned channel, the last being `Pushed` or `Failed`.
    /// Dropping the receiver stops the push.
    pub async fn commit_and_push(
        &self,
        req: CommitRequest,
        to: PushTarget,
        cancel: &CancellationToken,
    ) -> Result<(Committed, mpsc::UnboundedReceiver<PushEvent>)> {
        let images = self.images().list().await?;
        let ct = self.containers().resolve(&req.container).await?;
        let base = images
            .iter()
            .find(|e| !ct.image.is_empty() && e.names().contains(&ct.image.as_str()))
            .cloned();
        let credentials =
            crate::remote::source_credentials(self.cfg.source_credentials.as_deref()).await?;
        let pushed: Vec<&crate::Image> = base.iter().collect();
        let (job, rx) = Job::new(
            to.repository.clone(),
            to.auth,
            &to.insecure_registries,
            &pushed,
            &images,
            self.blobs(),
            credentials,
        )
        .await?;
        let job = Arc::new(job);
        let events = forward(rx);
        let reference = job.reference(&to.tag);

        // Logged in (true) or refused (false): the uploads wait for it.
        let (authed_tx, authed) = watch::channel(None::<bool>);
        let base_layers: Vec<Descriptor> = base
            .as_ref()
            .map(|b| b.resolved.manifest.layers.iter().rev().cloned().collect())
            .unwrap_or_default();
        let early = tokio::spawn({
            let (job, reference) = (job.clone(), reference.clone());
            async move {
                job.send(PushEvent::Repository(job.named.name())).await?;
                let logged_in = job.authenticate(&reference).await;
                let _ = authed_tx.send(Some(logged_in.is_ok()));
                logged_in?;
                push_layers(&job, &reference, base_layers).await
            }
        });
        let (tee_tx, tee_rx) = mpsc::channel(TEE_QUEUE);
        let tee = Mutex::new(Some(Tee {
            tx: tee_tx,
            handle: tokio::runtime::Handle::current(),
        }));
        let upload = tokio::spawn({
            let (job, reference, mut authed) = (job.clone(), reference.clone(), authed);
            async move {
                let ok = authed
                    .wait_for(Option::is_some)
                    .await
                    .is_ok_and(|v| *v == Some(true));
                if !ok {
                    return Err(RegistryError::NotLoggedIn);
                }
                let chunks = gather(tokio_stream::wrappers::ReceiverStream::new(tee_rx));
                job.client
                    .push_blob_stream_chunked(&reference, chunks)
                    .await
                    .map(|r| (r.blob_digest, r.size))
                    .map_err(|err| job.fail("uploading the new layer", &err, &reference))
            }
        });

        let content_root = self.content_root().await;
        let committed = self
            .committer(cancel, content_root.as_ref(), None, Some(&tee))
            .commit(req)
            .await;
        drop(tee);
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                early.abort();
                upload.abort();
                return Err(e);
            }
        };

        let image = self.images().list().await.map(|all| {
            all.into_iter()
                .find(|e| e.resolved.manifest_descriptor.digest == committed.manifest.digest)
        });
        let (tag, layer) = (to.tag, committed.layer.clone());
        tokio::spawn(async move {
            let result = async {
                let mut already = early.await.map_err(|e| RegistryError::Local {
                    what: "pushing the base layers".into(),
                    detail: e.to_string(),
                })??;
                let image = image
                    .map_err(|e| RegistryError::Local {
                        what: "reading the new image".into(),
                        detail: e.to_string(),
                    })?
                    .ok_or(RegistryError::ImageGone)?;
                let streamed = upload
                    .await
                    .map_err(|e| RegistryError::Local {
                        what: "uploading the new layer".into(),
                        detail: e.to_string(),
                    })
                    .and_then(|r| r);
                if let Some(l) = layer {
                    match streamed {
                        Ok((digest, size)) if digest == l.digest && size as i64 == l.size => {
                            job.send(PushEvent::Preparing {
                                layer: l.digest.clone(),
                            })
                            .await?;
                            job.send(PushEvent::Progress {
                                layer: l.digest.clone(),
                                current: l.size,
                                total: l.size,
                            })
                            .await?;
                            job.send(PushEvent::Layer {
                                layer: l.digest.clone(),
                                sent: Sent::Pushed,
                            })
                            .await?;
                            already.insert(l.digest, Sent::Pushed);
                        }
                        // Sent again from the content store with the rest.
                        Ok((digest, _)) => tracing::info!(
                            uploaded = %digest,
                            layer = %l.digest,
                            "the streamed upload is not the image's layer; sending it from the content store"
                        ),
                        Err(why) => tracing::info!(
                            cause = %why,
                            "streaming the new layer to the registry failed; sending it from the content store"
                        ),
                    }
                }
                job.push_one(&tag, &image, &already).await
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(repository = %job.named.name(), %tag, cause = %err, "push of a commit failed");
                let _ = job.send(PushEvent::Failed(err.to_string())).await;
            }
        });
        Ok((committed, events))
    }
}

/// Pushes `layers` (up to [`PARALLEL_UPLOADS`] at once), telling each as
/// `docker push` does; answers how each went.
async fn push_layers(
    job: &Job,
    reference: &oci_client::Reference,
    layers: Vec<Descriptor>,
) -> std::result::Result<HashMap<String, Sent>, RegistryError> {
    for l in &layers {
        job.send(PushEvent::Preparing {
            layer: l.digest.clone(),
        })
        .await?;
    }
    let mut uploads = futures::stream::iter(layers)
        .map(|l| async move {
            let sent = job.push_blob(reference, &l, true).await?;
            job.send(PushEvent::Layer {
                layer: l.digest.clone(),
                sent: sent.clone(),
            })
            .await?;
            Ok::<_, RegistryError>((l.digest, sent))
        })
        .buffer_unordered(PARALLEL_UPLOADS);
    let mut done = HashMap::new();
    while let Some(r) = uploads.next().await {
        let (digest, sent) = r?;
        done.insert(digest, sent);
    }
    Ok(done)
}

/// The tee's pieces gathered into [`UPLOAD_CHUNK`]s (the last one
/// shorter); an error piece ends the stream with it.
fn gather(
    pieces: impl futures::Stream<Item = std::result::Result<bytes::Bytes, String>> + Send + Unpin,
) -> impl futures::Stream<Item = std::result::Result<bytes::Bytes, OciDistributionError>> + Send {
    futures::stream::unfold(
        (pieces, bytes::BytesMut::new(), false),
        |(mut pieces, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                if buf.len() >= UPLOAD_CHUNK {
                    let chunk = buf.split_to(UPLOAD_CHUNK).freeze();
                    return Some((Ok(chunk), (pieces, buf, false)));
                }
                match pieces.next().await {
                    Some(Ok(b)) => {
                        if buf.capacity() == 0 {
                            buf.reserve(UPLOAD_CHUNK);
                        }
                        buf.extend_from_slice(&b);
                    }
                    Some(Err(e)) => {
                        let err = OciDistributionError::GenericError(Some(e));
                        return Some((Err(err), (pieces, buf, true)));
                    }
                    None if buf.is_empty() => return None,
                    None => {
                        let last = buf.split().freeze();
                        return Some((Ok(last), (pieces, buf, true)));
                    }
                }
            }
        },
    )
}

/// The push's events, buffered without bound while the commit runs (the
/// client reads them once it is done); dropping the receiver stops the
/// push.
fn forward(mut rx: mpsc::Receiver<PushEvent>) -> mpsc::UnboundedReceiver<PushEvent> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(pieces: Vec<std::result::Result<bytes::Bytes, String>>) -> Vec<Result<usize, ()>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(
            gather(futures::stream::iter(pieces))
                .map(|r| r.map(|b| b.len()).map_err(|_| ()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn pieces_are_gathered_into_whole_requests() {
        let piece = |n: usize| Ok(bytes::Bytes::from(vec![7u8; n]));
        // 17 pieces of 256 KiB and a short one: 4 MiB, then the rest.
        let mut pieces: Vec<_> = (0..17).map(|_| piece(256 << 10)).collect();
        pieces.push(piece(10));
        assert_eq!(
            sizes(pieces),
            [Ok(UPLOAD_CHUNK), Ok((256 << 10) + 10)],
            "whole chunks, then what is left"
        );
        // A piece larger than a chunk is cut at chunk boundaries.
        assert_eq!(
            sizes(vec![piece(UPLOAD_CHUNK * 2 + 1)]),
            [Ok(UPLOAD_CHUNK), Ok(UPLOAD_CHUNK), Ok(1)]
        );
        // Nothing: no request.
        assert!(sizes(Vec::new()).is_empty());
        // A layer that failed: the stream ends with the error, never with
        // a short chunk taken for the end of the blob.
        assert_eq!(
            sizes(vec![piece(100), Err("the layer was not finished".into())]),
            [Err(())]
        );
    }
}
