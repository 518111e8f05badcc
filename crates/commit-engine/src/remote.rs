//! Blobs this node no longer has, and where else they are.
//!
//! Nodes that run the CRI plugin with `discard_unpacked_layers = true`
//! delete a pulled image's layer blobs once they are unpacked: the image
//! runs, but its layers (and those of every image committed on top of it)
//! are not in the content store any more. containerd leaves on the pulled
//! manifest and config a label per source,
//! `containerd.io/distribution.source.<host>=<repo>[,<repo>…]`, saying where
//! they came from. The label's `<host>` has no port (containerd keeps the
//! URL's host name only); a local image named `<host>:<port>/<repo>` gives
//! the port back.
//!
//! [`missing`] lists an image's missing blobs with those sources: `push`
//! mounts them across repositories of the same registry or streams them
//! from their source registry, `save` streams them into the archive.
//! Source registries are read with the credentials of a configured
//! Docker-style `config.json` ([`source_credentials`]), as kubelet's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use docker_format::image::Descriptor;
use docker_format::reference::parse_normalized_named;
use docker_format::registry::{self, ConfigFile};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::catalog::Image;
use crate::client::Containerd;
use crate::content;
use crate::error::Result;

/// A registry could not be set up, reached or persuaded: the failures of a
/// push (and of a save's fetch of a discarded blob), each with the text its
/// client reads (Docker's words for refused credentials and denied access).
/// Those of a push under way end its progress stream
/// ([`crate::PushEvent::Failed`]); those before it starts are errors of the
/// call ([`crate::Error::Registry`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry client could not be built.
    #[error("setting up the registry client: {0}")]
    Client(String),
    /// The configured source registries' `config.json` cannot be read.
    #[error("reading source registry credentials {}: {detail}", path.display())]
    Credentials { path: PathBuf, detail: String },
    /// The registry wants credentials, or refused the ones given (401).
    #[error(
        "unauthorized: authentication required: {} ({what}: {detail})",
        login.refused_by(registry)
    )]
    Unauthorized {
        registry: String,
        login: Login,
        what: String,
        detail: String,
    },
    /// The registry denied access to the repository (403).
    #[error("denied: requested access to the resource is denied ({what}: {detail})")]
    Denied { what: String, detail: String },
    /// Any other failed registry call: the connection, or the registry's
    /// answer (an error status, an unexpected reply, another digest).
    #[error("{what}: {detail}")]
    Call { what: String, detail: String },
    /// Blobs this node discarded that no registry has: nothing was pushed.
    #[error(
        "cannot push {repository}: this node discarded {} of its blobs after unpacking and no registry has them: {}; nothing was pushed",
        .nowhere.len(),
        .nowhere.join("; ")
    )]
    Nowhere {
        repository: String,
        /// Each blob, with the sources tried.
        nowhere: Vec<String>,
    },
    /// A discarded blob could be fetched from none of its sources.
    #[error("fetching blob {digest} from its source: {why}")]
    Source { digest: String, why: String },
    /// What the push reads here failed (a manifest from the content store,
    /// the new image's record, a task of its own).
    #[error("{what}: {detail}")]
    Local { what: String, detail: String },
    /// The committed image was gone before its push could start.
    #[error("the new image is gone")]
    ImageGone,
    /// The registry refused the login, so the new layer's upload never began.
    #[error("not logged in to the registry")]
    NotLoggedIn,
    /// The client stopped reading the push's events.
    #[error("client went away")]
    ClientGone,
}

/// Which credentials a registry refused (said as Docker's hints say them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    Anonymous,
    User(String),
    Token,
}

impl Login {
    fn of(auth: &RegistryAuth) -> Login {
        match auth {
            RegistryAuth::Anonymous => Login::Anonymous,
            RegistryAuth::Basic(user, _) => Login::User(user.clone()),
            RegistryAuth::Bearer(_) => Login::Token,
        }
    }

    fn refused_by(&self, registry: &str) -> String {
        match self {
            Login::Anonymous => {
                format!("{registry} needs credentials (docker login {registry})")
            }
            Login::User(user) => format!("{registry} refused the credentials of {user}"),
            Login::Token => format!("{registry} refused the registry token"),
        }
    }
}

impl RegistryError {
    /// A failed registry call `what` to `registry` with `auth`: refused
    /// credentials and denied access in Docker's words, the rest as they
    /// came (with their causes).
    pub(crate) fn call(
        what: &str,
        err: &OciDistributionError,
        registry: &str,
        auth: &RegistryAuth,
    ) -> Self {
        let (what, detail) = (what.to_string(), chain(err));
        match status_of(err) {
            Some(401) => RegistryError::Unauthorized {
                registry: registry.to_string(),
                login: Login::of(auth),
                what,
                detail,
            },
            Some(403) => RegistryError::Denied { what, detail },
            _ => RegistryError::Call { what, detail },
        }
    }
}

/// An error with its causes ("error sending request: … Connection refused").
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
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

/// The HTTP status behind a registry error, when there is one.
fn status_of(err: &OciDistributionError) -> Option<u16> {
    match err {
        OciDistributionError::RequestError(e) => e.status().map(|s| s.as_u16()),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Some(401),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().find_map(|e| match e.code {
                OciErrorCode::Unauthorized => Some(401),
                OciErrorCode::Denied => Some(403),
                _ => None,
            })
        }
        _ => None,
    }
}

/// containerd's label naming where a blob was pulled from.
pub(crate) const SOURCE_LABEL_PREFIX: &str = "containerd.io/distribution.source.";

/// A repository of a registry that may hold a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobSource {
    /// The registry as images name it (`registry.example.com`,
    /// `127.0.0.1:5000`, `docker.io`).
    pub domain: String,
    /// The repository path (`library/busybox`).
    pub repo: String,
}

impl std::fmt::Display for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repo)
    }
}

/// A blob of an image that is not in the content store.
#[derive(Debug, Clone)]
pub struct Missing {
    pub descriptor: Descriptor,
    /// Where it may be fetched from, best first (none known: empty).
    pub sources: Vec<BlobSource>,
}

/// The registry host of a domain without its port.
fn hostname(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    domain.rsplit_once(':').map_or(domain, |(h, _)| h)
}

/// The blobs of `image` not in the content store, each with the sources
/// the labels of the images holding it name (`all`: every local image).
pub(crate) async fn missing(c: &Containerd, image: &Image, all: &[Image]) -> Result<Vec<Missing>> {
    let mut out = Vec::new();
    for d in image.resolved.blobs() {
        match content::info(c, &d.digest).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => out.push(Missing {
                descriptor: d.clone(),
                sources: Vec::new(),
            }),
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    // Labels of every image that holds a missing blob (the image itself,
    // the base it was committed on).
    let mut labels_of: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for m in &mut out {
        let mut found: Vec<(String, String)> = Vec::new();
        for img in all.iter().chain(std::iter::once(image)) {
            if !img
                .resolved
                .blobs()
                .any(|b| b.digest == m.descriptor.digest)
            {
                continue;
            }
            for digest in [
                &img.resolved.target.digest,
                &img.resolved.manifest_descriptor.digest,
                &img.resolved.manifest.config.digest,
            ] {
                if !labels_of.contains_key(digest.as_str()) {
                    let labels = match content::info(c, digest).await {
                        Ok(info) => sources_in(&info.labels),
                        Err(e) if e.is_not_found() => Vec::new(),
                        Err(e) => return Err(e),
                    };
                    labels_of.insert(digest.clone(), labels);
                }
                for s in &labels_of[digest.as_str()] {
                    if !found.contains(s) {
                        found.push(s.clone());
                    }
                }
            }
        }
        for (host, repo) in found {
            for s in resolve_source(&host, &repo, all) {
                if !m.sources.contains(&s) {
                    m.sources.push(s);
                }
            }
        }
    }
    Ok(out)
}

/// `(host, repo)` pairs of `containerd.io/distribution.source.*` labels.
fn sources_in(labels: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(SOURCE_LABEL_PREFIX)?, v)))
        .flat_map(|(host, repos)| {
            repos
                .split(',')
                .filter(|r| !r.is_empty())
                .map(move |r| (host.to_string(), r.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// The registries a label's port-less host may mean: the domains of local
/// images named `<host>[:port]/<repo>`, else the host itself.
fn resolve_source(host: &str, repo: &str, all: &[Image]) -> Vec<BlobSource> {
    let mut out = Vec::new();
    for img in all {
        for n in img.names() {
            let Ok(named) = parse_normalized_named(n) else {
                continue;
            };
            if hostname(&named.domain) == host && named.path == repo {
                let s = BlobSource {
                    domain: named.domain.clone(),
                    repo: repo.to_string(),
                };
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    if out.is_empty() {
        out.push(BlobSource {
            domain: host.to_string(),
            repo: repo.to_string(),
        });
    }
    out
}

/// The registry host the API is spoken to: Docker Hub's names live on
/// `registry-1.docker.io`.
pub(crate) fn registry_host(domain: &str) -> &str {
    match domain {
        "docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// A reference to a repository of a source, for blob calls.
pub(crate) fn source_ref(s: &BlobSource) -> Reference {
    Reference::with_tag(
        registry_host(&s.domain).to_string(),
        s.repo.clone(),
        "latest".into(),
    )
}

/// A registry client speaking plain HTTP to the insecure ones of `domains`.
pub(crate) fn client<'d>(
    domains: impl IntoIterator<Item = &'d str>,
    insecure_registries: &[String],
) -> std::result::Result<Client, RegistryError> {
    let plain: Vec<String> = domains
        .into_iter()
        .filter(|d| docker_format::registry::is_insecure(d, insecure_registries))
        .map(|d| registry_host(d).to_string())
        .collect();
    Client::try_from(ClientConfig {
        protocol: if plain.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(plain)
        },
        ..Default::default()
    })
    .map_err(|e| RegistryError::Client(chain(&e)))
}

/// The source registries' credentials: the configured Docker-style
/// `config.json` (kubelet's `/var/lib/kubelet/config.json`), read afresh
/// for each push or save so that a rewritten file counts. None configured,
/// or the file absent: anonymous pulls.
pub(crate) async fn source_credentials(
    path: Option<&Path>,
) -> std::result::Result<ConfigFile, RegistryError> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    match tokio::fs::read_to_string(path).await {
        Ok(text) => ConfigFile::parse(&text).map_err(|e| RegistryError::Credentials {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no source registry credentials file");
            Ok(ConfigFile::default())
        }
        Err(e) => Err(RegistryError::Credentials {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Docker's credentials as the registry client takes them.
pub(crate) fn oci_auth(auth: registry::RegistryAuth) -> RegistryAuth {
    match auth {
        registry::RegistryAuth::Anonymous => RegistryAuth::Anonymous,
        registry::RegistryAuth::Basic { username, password } => {
            RegistryAuth::Basic(username, password)
        }
        registry::RegistryAuth::Bearer(token) => RegistryAuth::Bearer(token),
    }
}

/// Streams a blob from the first of `sources` that serves it, with each
/// source registry's credentials from `credentials` (else anonymous). The
/// stream checks the digest as it ends.
pub(crate) async fn fetch(
    client: &Client,
    d: &Descriptor,
    sources: &[BlobSource],
    credentials: &ConfigFile,
) -> std::result::Result<oci_client::client::SizedStream, RegistryError> {
    let mut tried = Vec::new();
    for s in sources {
        let r = source_ref(s);
        let auth = oci_auth(credentials.auth_for(&s.domain));
        let _ = client.auth(&r, &auth, RegistryOperation::Pull).await;
        match client.pull_blob_stream(&r, d.digest.as_str()).await {
            Ok(stream) => return Ok(stream),
            Err(e) => tried.push(format!("{s}: {e}")),
        }
    }
    Err(RegistryError::Source {
        digest: d.digest.clone(),
        why: if tried.is_empty() {
            "no registry is known to hold it".into()
        } else {
            format!("tried {}", tried.join("; "))
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_failures_read_as_docker_says_them() {
        let refused = OciDistributionError::UnauthorizedError { url: "u".into() };
        let call = |auth: &RegistryAuth| {
            RegistryError::call("pushing blob b", &refused, "r:5000", auth).to_string()
        };
        assert_eq!(
            call(&RegistryAuth::Anonymous),
            "unauthorized: authentication required: r:5000 needs credentials (docker login r:5000) (pushing blob b: Not authorized: url u)"
        );
        assert_eq!(
            call(&RegistryAuth::Basic("ann".into(), "pw".into())),
            "unauthorized: authentication required: r:5000 refused the credentials of ann (pushing blob b: Not authorized: url u)"
        );
        assert!(
            call(&RegistryAuth::Bearer("t".into())).contains("r:5000 refused the registry token"),
        );
        let denied = OciDistributionError::ServerError {
            code: 403,
            url: "u".into(),
            message: "no".into(),
        };
        let e = RegistryError::call("x", &denied, "r", &RegistryAuth::Anonymous);
        assert!(matches!(e, RegistryError::Denied { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("denied: requested access to the resource is denied (x: ")
        );
        let gone = OciDistributionError::ServerError {
            code: 500,
            url: "u".into(),
            message: "m".into(),
        };
        let e = RegistryError::call("checking blob b", &gone, "r", &RegistryAuth::Anonymous);
        assert!(matches!(e, RegistryError::Call { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "checking blob b: Server error: url u, code: 500, message: m"
        );
        // Joined to the engine's error, the text is the same.
        let e = crate::Error::from(RegistryError::NotLoggedIn);
        assert_eq!(e.to_string(), "not logged in to the registry");
    }

    #[test]
    fn labels_name_hosts_and_repositories() {
        let labels = HashMap::from([
            (
                "containerd.io/distribution.source.127.0.0.1".to_string(),
                "library/a,team/b".to_string(),
            ),
            (
                "containerd.io/gc.ref.content.0".to_string(),
                "x".to_string(),
            ),
        ]);
        assert_eq!(
            sources_in(&labels),
            [
                ("127.0.0.1".into(), "library/a".into()),
                ("127.0.0.1".into(), "team/b".into())
            ]
        );
        assert_eq!(hostname("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(hostname("[::1]:5000"), "::1");
        assert_eq!(hostname("docker.io"), "docker.io");
        assert_eq!(
            resolve_source("docker.io", "library/x", &[])[0].to_string(),
            "docker.io/library/x"
        );
    }
}
