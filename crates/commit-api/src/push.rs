//! `docker push`: `POST /images/{name}/push?tag=` with `X-Registry-Auth`.
//!
//! The image's blobs are streamed from containerd's content store to the
//! registry with `oci-client` (blobs the registry has are skipped), then
//! the manifest is pushed byte for byte as stored, so the registry's digest
//! is the local one. Progress goes out as Docker's JSON lines. Every blob is
//! checked locally first: an image whose base layers were never pulled
//! (common on Kubernetes nodes) fails before anything is pushed. A push
//! never deletes anything locally.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use commit_engine::catalog::ImageEntry;
use commit_engine::content;
use commit_engine::image::Descriptor;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Api;
use crate::commit::Query;
use crate::error::ApiError;
use crate::images;
use crate::reference::{familiar_name, parse_normalized_named, valid_tag};

/// Bytes read from the content store per chunk pushed.
const CHUNK: i64 = 4 << 20;

/// Docker's `X-Registry-Auth`: base64url (or standard) JSON.
pub fn decode_auth(header: Option<&HeaderValue>) -> Result<RegistryAuth, ApiError> {
    let Some(raw) = header
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(raw).ok())
        .ok_or_else(|| ApiError::bad_request("X-Registry-Auth is not base64"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("X-Registry-Auth is not JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(
        match (
            s("username"),
            s("password"),
            s("registrytoken"),
            s("identitytoken"),
        ) {
            (_, _, token, _) if !token.is_empty() => RegistryAuth::Bearer(token),
            (user, _, _, token) if !token.is_empty() => RegistryAuth::Basic(
                if user.is_empty() {
                    "<token>".into()
                } else {
                    user
                },
                token,
            ),
            (user, pass, _, _) if !user.is_empty() => RegistryAuth::Basic(user, pass),
            _ => RegistryAuth::Anonymous,
        },
    )
}

/// Docker's default: loopback registries speak plain HTTP; others only
/// when configured as insecure.
pub fn is_insecure(host: &str, configured: &[String]) -> bool {
    if configured.iter().any(|c| c == host) {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn line(v: Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// An error with its causes ("error sending request: … Connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Pushes an image to its registry, streaming Docker's progress messages.
pub async fn push(
    api: &Api,
    name: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    let mut named = parse_normalized_named(name).map_err(ApiError::bad_request)?;
    let tag = q.get("tag");
    if !tag.is_empty() {
        if !valid_tag(tag) {
            return Err(ApiError::bad_request("invalid tag format"));
        }
        named.tag = Some(tag.to_string());
    }
    // No tag: every tag of the repository (Docker's `push --all-tags`).
    let mut targets: Vec<(String, ImageEntry)> = Vec::new();
    match &named.tag {
        Some(_) => {
            let full = named.full();
            let entry = images::find(api, &full).await?;
            targets.push((full, entry));
        }
        None => {
            let engine = api.engine();
            let prefix = format!("{}:", named.name());
            for e in commit_engine::catalog::list(engine.containerd(), engine.cache()).await? {
                for n in e.names() {
                    if n.starts_with(&prefix) && !n.contains('@') {
                        targets.push((n.to_string(), e.clone()));
                    }
                }
            }
            if targets.is_empty() {
                return Err(ApiError::not_found(format!(
                    "An image does not exist locally with the tag: {}",
                    familiar_name(&named.name())
                )));
            }
        }
    }
    let auth = decode_auth(headers.get("x-registry-auth"))?;

    // Everything must be here before anything is pushed.
    let c = api.engine().containerd();
    for (full, e) in &targets {
        let r = &e.resolved;
        for d in std::iter::once(&r.manifest.config)
            .chain(&r.manifest.layers)
            .chain([&r.manifest_descriptor])
        {
            if let Err(err) = content::info(c, &d.digest).await {
                return Err(match err.is_not_found() {
                    true => ApiError::internal(format!(
                        "cannot push {}: its blob {} is not in the local content store (a base layer never pulled on this node?); nothing was pushed",
                        familiar_name(full),
                        d.digest
                    )),
                    false => err.into(),
                });
            }
        }
    }

    // Where else on this registry our blobs may already be (other local
    // names with the same domain): Docker mounts from those repositories
    // instead of uploading again.
    let mut sources: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    {
        let engine = api.engine();
        let prefix = format!("{}/", named.domain);
        for e in commit_engine::catalog::list(engine.containerd(), engine.cache()).await? {
            for n in e.names() {
                let Some(rest) = n.strip_prefix(&prefix) else {
                    continue;
                };
                let repo = rest.split([':', '@']).next().unwrap_or(rest).to_string();
                if repo == named.path {
                    continue;
                }
                for l in &e.resolved.manifest.layers {
                    let v = sources.entry(l.digest.clone()).or_default();
                    if !v.contains(&n.to_string()) {
                        v.push(n.to_string());
                    }
                }
            }
        }
    }
    let registry = named.domain.clone();
    let insecure = is_insecure(&registry, &api.options().insecure_registries);
    let client = Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    });
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let c = c.clone();
    let repo = familiar_name(&named.name()).to_string();
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(line(
                json!({ "status": format!("The push refers to repository [{repo}]") }),
            )))
            .await;
        for (full, e) in targets {
            if let Err(msg) = push_one(&client, &auth, &c, &full, &e, &sources, &tx).await {
                let _ = tx
                    .send(Ok(line(
                        json!({ "errorDetail": { "message": msg }, "error": msg }),
                    )))
                    .await;
                return;
            }
        }
    });
    let mut resp = (
        StatusCode::OK,
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

type Lines = mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn push_one(
    client: &Client,
    auth: &RegistryAuth,
    c: &commit_engine::Containerd,
    full: &str,
    e: &ImageEntry,
    sources: &std::collections::HashMap<String, Vec<String>>,
    tx: &Lines,
) -> Result<(), String> {
    let reference: Reference = full
        .parse()
        .map_err(|err| format!("invalid reference {full}: {err}"))?;
    let tag = reference.tag().unwrap_or("latest").to_string();
    client
        .auth(&reference, auth, RegistryOperation::Push)
        .await
        .map_err(|err| {
            format!(
                "authenticating to {}: {}",
                reference.registry(),
                chain(&err)
            )
        })?;
    let r = &e.resolved;
    let send = |v: Value| async move {
        tx.send(Ok(line(v)))
            .await
            .map_err(|_| "client went away".to_string())
    };
    for l in r.manifest.layers.iter().rev() {
        send(json!({ "status": "Preparing", "progressDetail": {}, "id": short(&l.digest) }))
            .await?;
    }
    for l in r.manifest.layers.iter().rev() {
        let id = short(&l.digest);
        let from = sources.get(&l.digest).map(Vec::as_slice).unwrap_or(&[]);
        let status = match push_blob(client, c, &reference, l, from).await? {
            Sent::Existed => "Layer already exists".to_string(),
            Sent::Mounted(repo) => format!("Mounted from {}", familiar_name(&repo)),
            Sent::Pushed => "Pushed".to_string(),
        };
        send(json!({ "status": status, "progressDetail": {}, "id": id })).await?;
    }
    push_blob(client, c, &reference, &r.manifest.config, &[]).await?;
    let manifest = content::read_blob(c, &r.manifest_descriptor.digest)
        .await
        .map_err(|err| err.to_string())?;
    let media =
        HeaderValue::from_str(&r.manifest_descriptor.media_type).map_err(|err| err.to_string())?;
    client
        .push_manifest_raw(&reference, manifest.clone(), media)
        .await
        .map_err(|err| format!("pushing the manifest of {full}: {}", chain(&err)))?;
    let digest = &r.manifest_descriptor.digest;
    let size = manifest.len();
    send(json!({ "status": format!("{tag}: digest: {digest} size: {size}") })).await?;
    send(json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": digest, "Size": size } }))
        .await?;
    Ok(())
}

/// What became of a blob.
enum Sent {
    Existed,
    Mounted(String),
    Pushed,
}

/// Pushes one blob unless the registry has it in this repository, or can
/// mount it from one of `from` (other repositories of the same registry).
async fn push_blob(
    client: &Client,
    c: &commit_engine::Containerd,
    reference: &Reference,
    d: &Descriptor,
    from: &[String],
) -> Result<Sent, String> {
    if client
        .blob_exists(reference, &d.digest)
        .await
        .map_err(|err| format!("checking blob {}: {}", d.digest, chain(&err)))?
    {
        return Ok(Sent::Existed);
    }
    for source in from {
        let Ok(src) = source.parse::<Reference>() else {
            continue;
        };
        if client.mount_blob(reference, &src, &d.digest).await.is_ok() {
            return Ok(Sent::Mounted(src.repository().to_string()));
        }
    }
    let (c, digest, size) = (c.clone(), d.digest.clone(), d.size);
    let chunks = futures::stream::unfold(0i64, move |offset| {
        let (c, digest) = (c.clone(), digest.clone());
        async move {
            if offset >= size {
                return None;
            }
            let want = (size - offset).min(CHUNK);
            match content::read_range(&c, &digest, offset, want).await {
                Ok(data) if !data.is_empty() => {
                    let next = offset + data.len() as i64;
                    Some((Ok(Bytes::from(data)), next))
                }
                Ok(_) => Some((
                    Err(oci_client::errors::OciDistributionError::GenericError(
                        Some(format!("blob {digest} ended early")),
                    )),
                    size,
                )),
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::GenericError(
                        Some(e.to_string()),
                    )),
                    size,
                )),
            }
        }
    });
    client
        .push_blob_stream(
            reference,
            chunks,
            &d.digest,
            Some(u64::try_from(d.size).unwrap_or(0)),
        )
        .await
        .map_err(|err| format!("pushing blob {}: {}", d.digest, chain(&err)))?;
    Ok(Sent::Pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("registry.example.com", &[]));
        assert!(is_insecure(
            "registry.example.com:5000",
            &["registry.example.com:5000".into()]
        ));
    }

    #[test]
    fn auth_headers_decode() {
        let enc = |s: &str| {
            HeaderValue::from_str(&base64::engine::general_purpose::URL_SAFE.encode(s)).unwrap()
        };
        assert!(matches!(
            decode_auth(None).unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            decode_auth(Some(&enc("{}"))).unwrap(),
            RegistryAuth::Anonymous
        ));
        match decode_auth(Some(&enc(
            r#"{"username":"u","password":"p","serveraddress":"r"}"#,
        )))
        .unwrap()
        {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("u", "p")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_auth(Some(&enc(r#"{"registrytoken":"t"}"#))).unwrap(),
            RegistryAuth::Bearer(_)
        ));
        assert!(decode_auth(Some(&HeaderValue::from_static("!!!"))).is_err());
    }
}
