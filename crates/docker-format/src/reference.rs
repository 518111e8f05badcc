//! Docker's image references: `repo[:tag]` as users write them, normalized
//! the way Docker's `reference.ParseNormalizedNamed` does
//! (`app` → `docker.io/library/app:latest`), with Docker's error texts.
//! The grammar is distribution/reference's, ASCII as in Go.

use std::sync::LazyLock;

use regex::Regex;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// distribution's `NameTotalLengthMax`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// distribution/reference's `ReferenceRegexp`: `name[:tag][@digest]`,
/// capturing the three. Its classes are ASCII, as Go's `\w` is: built
/// with Unicode's `\w` (as `oci_spec`'s is) it took ~20 MiB to compile
/// and kept 7 MiB, in every daemon, for good.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let alnum = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]*)";
    let component = format!("{alnum}(?:(?:{separator}{alnum})+)?");
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"{domain_component}(?:(?:\.{domain_component})+)?(?::[0-9]+)?");
    let name = format!("(?:{domain}/)?{component}(?:(?:/{component})+)?");
    let tag = "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";
    Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).expect("static regex")
});

/// `reference.Parse` of a string with its domain written out: the name,
/// tag and digest it holds.
fn parse(s: &str) -> Result<(&str, Option<&str>, Option<&str>), ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::NameEmpty);
    }
    let caps = REFERENCE.captures(s).ok_or(ReferenceError::Format)?;
    let part = |i| caps.get(i).map(|m| m.as_str());
    let (name, tag, digest) = (part(1).unwrap_or(""), part(2), part(3));
    // The repository without its domain (and with Docker Hub's `library/`).
    let repository = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => match first {
            DEFAULT_DOMAIN | LEGACY_DEFAULT_DOMAIN if !rest.contains('/') => {
                OFFICIAL_REPO_PREFIX.len() + rest.len()
            }
            _ => rest.len(),
        },
        Some(_) => name.len(),
        None => OFFICIAL_REPO_PREFIX.len() + name.len(),
    };
    if repository > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong);
    }
    // Hex of the algorithm's length.
    if let Some(d) = digest {
        let ok = match d.split_once(':') {
            Some(("sha256", hex)) => hex.len() == 64,
            Some(("sha384", hex)) => hex.len() == 96,
            Some(("sha512", hex)) => hex.len() == 128,
            _ => false,
        };
        if !ok {
            return Err(ReferenceError::Format);
        }
    }
    Ok((name, tag, digest))
}

/// A reference Docker would refuse, with Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    #[error("invalid tag format")]
    Tag,
    #[error("invalid reference format")]
    Format,
    /// An image ID that is not one (`sha256:xyz`).
    #[error("invalid reference format: {0}")]
    FormatOf(String),
    #[error("cannot import digest reference")]
    DigestReference,
}

/// A normalized, named reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Named {
    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full normalized string, as containerd's image records are named.
    pub fn full(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// Docker's "familiar" form: `docker.io/library/app:1` → `app:1`.
    pub fn familiar(&self) -> String {
        let full = self.full();
        familiar_name(&full).to_string()
    }
}

/// Strips Docker Hub's domain and `library/` from a normalized name.
pub fn familiar_name(full: &str) -> &str {
    let Some(rest) = full.strip_prefix("docker.io/") else {
        return full;
    };
    match rest.strip_prefix(OFFICIAL_REPO_PREFIX) {
        // `docker.io/library/a/b` stays `library/a/b`.
        Some(official)
            if !official
                .split(['@', ':'])
                .next()
                .unwrap_or("")
                .contains('/') =>
        {
            official
        }
        _ => rest,
    }
}

/// `reference.ParseNormalizedNamed`.
pub fn parse_normalized_named(s: &str) -> Result<Named, ReferenceError> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReferenceError::HexName(s.to_string()));
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote = remainder.split(':').next().unwrap_or("");
    if remote.to_lowercase() != remote {
        return Err(ReferenceError::Uppercase(remote.to_string()));
    }
    let joined = format!("{domain}/{remainder}");
    let (_, tag, digest) = parse(&joined)?;
    // Keep the tag only if the user wrote one.
    let wrote_tag = {
        let without_digest = remainder.split('@').next().unwrap_or("");
        without_digest
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    };
    let tag = if wrote_tag {
        tag.map(str::to_string)
    } else {
        None
    };
    // Domain and path as Docker splits them (an upper-case first component
    // is a registry: `Foo/bar` is `bar` on registry `Foo`), not as oci_spec
    // re-splits the joined string.
    let without_digest = remainder.split('@').next().unwrap_or("");
    let path = match without_digest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => p,
        _ => without_digest,
    };
    Ok(Named {
        domain,
        path: path.to_string(),
        tag,
        digest: digest.map(str::to_string),
    })
}

fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (
            DEFAULT_DOMAIN.into(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, remote) = if maybe_domain == "localhost"
        || maybe_domain.contains(['.', ':'])
        || maybe_domain.to_lowercase() != maybe_domain
    {
        (maybe_domain.to_string(), maybe_remote.to_string())
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN.to_string(), maybe_remote.to_string())
    } else {
        (DEFAULT_DOMAIN.to_string(), name.to_string())
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain, remote)
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `httputils.RepoTagReference`: the image name a commit (or tag) request
/// asks for. Empty `repo`: no name. Empty `tag`: the repo's own tag, or
/// `latest`.
pub fn repo_tag_reference(repo: &str, tag: &str) -> Result<Option<Named>, ReferenceError> {
    if repo.is_empty() {
        return Ok(None);
    }
    let mut named = parse_normalized_named(repo)?;
    if named.digest.is_some() {
        return Err(ReferenceError::DigestReference);
    }
    if !tag.is_empty() {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag);
        }
        named.tag = Some(tag.to_string());
    } else if named.tag.is_none() {
        named.tag = Some(DEFAULT_TAG.to_string());
    }
    Ok(Some(named))
}

/// What a user typed in an image position (`docker image inspect X`,
/// `docker rmi X`), read the way Docker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A normalized record name (`docker.io/library/app:latest`). A short
    /// hex ID is also a valid repository name: `or_id_prefix` is then that
    /// ID, tried when no image has the name (Docker tries the name first).
    Name {
        name: String,
        or_id_prefix: Option<String>,
    },
    /// A full image ID (`sha256:<64 hex>`).
    Id(String),
    /// The start of an image ID (`sha256:<hex>`).
    IdPrefix(String),
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if let Some(hex) = input.strip_prefix("sha256:") {
            if hex.len() == 64 && is_hex(hex) {
                return Ok(ImageRef::Id(input.to_string()));
            }
            if is_hex(hex) && !hex.is_empty() {
                return Ok(ImageRef::IdPrefix(input.to_string()));
            }
            return Err(ReferenceError::FormatOf(input.to_string()));
        }
        if input.len() == 64 && is_hex(input) {
            return Ok(ImageRef::Id(format!("sha256:{input}")));
        }
        let mut named = parse_normalized_named(input)?;
        if named.tag.is_none() && named.digest.is_none() {
            named.tag = Some(DEFAULT_TAG.into());
        }
        Ok(ImageRef::Name {
            name: named.full(),
            or_id_prefix: is_hex(input).then(|| input.to_string()),
        })
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The first 12 hex digits of an ID (`sha256:…` or bare), as Docker shows
/// IDs in messages.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar accepts and splits what distribution's (as ported by
    /// `oci_spec`) does, but for non-ASCII tags, which Go refuses.
    #[test]
    fn grammar_is_distributions() {
        use oci_spec::distribution::Reference;
        use std::str::FromStr;
        let hex = "0123456789abcdef".repeat(4);
        let long = "a".repeat(250);
        let inputs = [
            "docker.io/library/busybox".to_string(),
            "docker.io/library/busybox:1.36".into(),
            format!("docker.io/library/busybox@sha256:{hex}"),
            format!("docker.io/library/busybox:v1@sha256:{hex}"),
            format!("docker.io/library/busybox@sha256:{}", &hex[..40]),
            format!("docker.io/library/busybox@sha512:{hex}"),
            format!("docker.io/library/busybox@md5:{hex}"),
            "localhost:5000/a/b-c__d.e:t_1.x-y".into(),
            "localhost/app:1".into(),
            "registry.example.com:443/team/app:latest".into(),
            "index.docker.io/app".into(),
            "docker.io/a--b/c".into(),
            "docker.io/a_b/c".into(),
            "docker.io/a___b/c".into(),
            "docker.io/library/UPPER".into(),
            "docker.io/library/app:".into(),
            "docker.io/library/app:.x".into(),
            format!("docker.io/library/app:{}", "t".repeat(128)),
            format!("docker.io/library/app:{}", "t".repeat(129)),
            format!("docker.io/library/{long}"),
            format!("docker.io/library/{}", "a".repeat(247)),
            format!("docker.io/library/{}", "a".repeat(248)),
            format!("example.com/{long}/{long}"),
            format!("docker.io/x/{}", "a".repeat(253)),
            format!("docker.io/x/{}", "a".repeat(254)),
            "docker.io//a".into(),
            "docker.io/-a".into(),
            "".into(),
        ];
        for input in &inputs {
            let theirs = Reference::from_str(input);
            let ours = parse(input);
            match (&theirs, &ours) {
                (Ok(r), Ok((_, tag, digest))) => {
                    let tag = tag.or(digest.is_none().then_some(DEFAULT_TAG));
                    assert_eq!((r.tag(), r.digest()), (tag, *digest), "{input}");
                }
                (Err(e), Err(o)) => {
                    let want = match e {
                        oci_spec::distribution::ParseError::NameEmpty => ReferenceError::NameEmpty,
                        oci_spec::distribution::ParseError::NameTooLong => {
                            ReferenceError::NameTooLong
                        }
                        _ => ReferenceError::Format,
                    };
                    assert_eq!(o, &want, "{input}");
                }
                _ => panic!("{input}: oci_spec {theirs:?}, ours {ours:?}"),
            }
        }
        // Go's `\w` is ASCII.
        assert!(Reference::from_str("docker.io/library/app:é").is_ok());
        assert_eq!(
            parse("docker.io/library/app:é"),
            Err(ReferenceError::Format)
        );
    }

    #[test]
    fn image_refs_read_like_docker() {
        let id = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ImageRef::parse(&id).unwrap(), ImageRef::Id(id.clone()));
        assert_eq!(ImageRef::parse(&"a".repeat(64)).unwrap(), ImageRef::Id(id));
        assert_eq!(
            ImageRef::parse("sha256:abc").unwrap(),
            ImageRef::IdPrefix("sha256:abc".into())
        );
        assert_eq!(
            ImageRef::parse("app").unwrap(),
            ImageRef::Name {
                name: "docker.io/library/app:latest".into(),
                or_id_prefix: None
            }
        );
        assert_eq!(
            ImageRef::parse("abc123").unwrap(),
            ImageRef::Name {
                name: "docker.io/library/abc123:latest".into(),
                or_id_prefix: Some("abc123".into())
            }
        );
        assert_eq!(
            ImageRef::parse("acc/one:v1").unwrap(),
            ImageRef::Name {
                name: "docker.io/acc/one:v1".into(),
                or_id_prefix: None
            }
        );
        assert!(ImageRef::parse("Bad").is_err());
        assert!(ImageRef::parse("sha256:xyz").is_err());
    }

    fn full(repo: &str, tag: &str) -> String {
        repo_tag_reference(repo, tag).unwrap().unwrap().full()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(full("app", ""), "docker.io/library/app:latest");
        assert_eq!(full("acc/one", ""), "docker.io/acc/one:latest");
        assert_eq!(full("acc/one", "v2"), "docker.io/acc/one:v2");
        assert_eq!(full("acc/one:v1", ""), "docker.io/acc/one:v1");
        assert_eq!(full("acc/one:v1", "v2"), "docker.io/acc/one:v2");
        assert_eq!(full("localhost:5000/x", ""), "localhost:5000/x:latest");
        assert_eq!(full("localhost/x", "t"), "localhost/x:t");
        // Found by fuzzing (fuzz/artifacts/reference).
        assert_eq!(full("Foo/bar", ""), "Foo/bar:latest");
        assert!(repo_tag_reference("a:é", "").is_err());
        assert!(repo_tag_reference("acc/one:v١", "").is_err());
        assert_eq!(
            full("registry.example.com/a/b/c", ""),
            "registry.example.com/a/b/c:latest"
        );
        assert_eq!(
            full("index.docker.io/app", ""),
            "docker.io/library/app:latest"
        );
        assert_eq!(
            full("docker.io/library/app", ""),
            "docker.io/library/app:latest"
        );
        assert_eq!(full("127.0.0.1:5000/app", "1.0"), "127.0.0.1:5000/app:1.0");
        assert_eq!(repo_tag_reference("", "x").unwrap(), None);
    }

    #[test]
    fn rejects_like_docker() {
        let err = |repo: &str, tag: &str| repo_tag_reference(repo, tag).unwrap_err().to_string();
        assert_eq!(
            err("Foo", ""),
            "invalid reference format: repository name (library/Foo) must be lowercase"
        );
        assert_eq!(
            err("acc/Foo", ""),
            "invalid reference format: repository name (acc/Foo) must be lowercase"
        );
        assert_eq!(err("a b", ""), "invalid reference format");
        assert_eq!(err("app!", ""), "invalid reference format");
        assert_eq!(err("app", "bad tag"), "invalid tag format");
        assert_eq!(err("app", "-x"), "invalid tag format");
        assert_eq!(err("app", &"t".repeat(129)), "invalid tag format");
        assert_eq!(
            err(
                "app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                ""
            ),
            "cannot import digest reference"
        );
        let hex = "a".repeat(64);
        assert_eq!(
            err(&hex, ""),
            format!("invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings")
        );
        assert!(err(&format!("{}/x", "a".repeat(300)), "").contains("255"));
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar_name("docker.io/library/app:latest"), "app:latest");
        assert_eq!(familiar_name("docker.io/acc/one:v1"), "acc/one:v1");
        assert_eq!(familiar_name("docker.io/library/a/b:1"), "library/a/b:1");
        assert_eq!(familiar_name("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(familiar_name("ghcr.io/library/x:1"), "ghcr.io/library/x:1");
    }
}
