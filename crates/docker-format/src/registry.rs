//! Registries as Docker names and reaches them: the `X-Registry-Auth`
//! header's credentials, Docker-style `config.json` credential files, and
//! the rules for plain-HTTP (insecure) registries.

use std::net::IpAddr;

use base64::Engine as _;
use serde_json::Value;

/// Credentials for a registry, as a client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry token, sent as a bearer token.
    Bearer(String),
}

/// An `X-Registry-Auth` header Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("X-Registry-Auth is not base64")]
    NotBase64,
    #[error("X-Registry-Auth is not JSON: {0}")]
    NotJson(String),
}

/// Docker's `X-Registry-Auth`: base64url (or standard) JSON; absent or
/// empty is anonymous.
pub fn decode_auth(header: Option<&str>) -> Result<RegistryAuth, AuthError> {
    let Some(raw) = header.map(str::trim).filter(|s| !s.is_empty()) else {
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
        .ok_or(AuthError::NotBase64)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| AuthError::NotJson(e.to_string()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(
        match (
            s("username"),
            s("password"),
            s("registrytoken"),
            s("identitytoken"),
        ) {
            (_, _, token, _) if !token.is_empty() => RegistryAuth::Bearer(token),
            // An identity token is an OAuth refresh token; sent as the
            // password of basic auth to the token service, as registries
            // that issue them (ACR, Harbor) accept.
            (user, _, _, token) if !token.is_empty() => RegistryAuth::Basic {
                username: if user.is_empty() {
                    "<token>".into()
                } else {
                    user
                },
                password: token,
            },
            (username, password, _, _) if !username.is_empty() => {
                RegistryAuth::Basic { username, password }
            }
            _ => RegistryAuth::Anonymous,
        },
    )
}

/// Credentials of a Docker-style `config.json` (`~/.docker/config.json`,
/// kubelet's `/var/lib/kubelet/config.json`): `{"auths": {KEY: {"auth":
/// base64(user:pass)} | {"username", "password"} | {"identitytoken"} |
/// {"registrytoken"}}}`. Keys are a registry's `host[:port]`, or a URL of
/// it (`https://host/v1/`); Docker Hub's key is `https://index.docker.io/v1/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    auths: Vec<(String, RegistryAuth)>,
}

/// A config file that is not Docker's `config.json` shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Docker config.json: {0}")]
pub struct ConfigFileError(String);

impl ConfigFile {
    /// Reads a config file's text.
    pub fn parse(text: &str) -> Result<ConfigFile, ConfigFileError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigFileError(e.to_string()))?;
        let Some(auths) = v.get("auths") else {
            return Ok(ConfigFile::default());
        };
        let auths = auths
            .as_object()
            .ok_or_else(|| ConfigFileError("\"auths\" is not an object".into()))?;
        let mut out = Vec::new();
        for (key, entry) in auths {
            let s = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (mut username, mut password) = (s("username"), s("password"));
            let encoded = s("auth");
            if !encoded.is_empty() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| ConfigFileError(format!("the auth of {key} is not base64")))?;
                let pair = String::from_utf8(bytes)
                    .map_err(|_| ConfigFileError(format!("the auth of {key} is not UTF-8")))?;
                let (u, p) = pair.split_once(':').ok_or_else(|| {
                    ConfigFileError(format!("the auth of {key} is not user:password"))
                })?;
                (username, password) = (u.to_string(), p.to_string());
            }
            let (registry_token, identity_token) = (s("registrytoken"), s("identitytoken"));
            let auth = if !registry_token.is_empty() {
                RegistryAuth::Bearer(registry_token)
            } else if !identity_token.is_empty() {
                RegistryAuth::Basic {
                    username: if username.is_empty() {
                        "<token>".into()
                    } else {
                        username
                    },
                    password: identity_token,
                }
            } else if !username.is_empty() {
                RegistryAuth::Basic { username, password }
            } else {
                continue;
            };
            out.push((config_key_domain(key), auth));
        }
        Ok(ConfigFile { auths: out })
    }

    /// The credentials for registry `domain` (as images name it:
    /// `docker.io`, `registry.example.com:5000`); anonymous if none.
    pub fn auth_for(&self, domain: &str) -> RegistryAuth {
        self.auths
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, a)| a.clone())
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// The domain a config file's key names: scheme and path dropped, Docker
/// Hub's hosts as `docker.io`.
fn config_key_domain(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// Docker's default: loopback registries speak plain HTTP; others only
/// when configured as insecure, by `host[:port]` or by a CIDR that holds
/// the registry's IP address.
pub fn is_insecure(host: &str, configured: &[String]) -> bool {
    if configured.iter().any(|c| c == host) {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let ip = name.parse::<IpAddr>().ok();
    if name == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    ip.is_some_and(|ip| {
        configured
            .iter()
            .filter_map(|c| parse_cidr(c))
            .any(|(net, len)| cidr_contains(net, len, ip))
    })
}

/// An `insecure-registries` entry Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsecureRegistryError {
    #[error("an insecure registry entry is empty")]
    Empty,
    #[error("insecure registry {0} should not contain '://'")]
    Scheme(String),
    #[error("insecure registry {0} is neither host[:port] nor a CIDR")]
    Neither(String),
}

/// Whether an `insecure-registries` entry is one Docker accepts:
/// `host[:port]` or a CIDR, no scheme.
pub fn check_insecure_registry(entry: &str) -> Result<(), InsecureRegistryError> {
    if entry.is_empty() {
        return Err(InsecureRegistryError::Empty);
    }
    if entry.contains("://") {
        return Err(InsecureRegistryError::Scheme(entry.to_string()));
    }
    if entry.contains('/') && parse_cidr(entry).is_none() {
        return Err(InsecureRegistryError::Neither(entry.to_string()));
    }
    Ok(())
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (net, len) = s.split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((net, len))
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("localhost", &[]));
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("127.8.0.1", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("registry.example.com", &[]));
        assert!(!is_insecure("10.1.2.3:5000", &[]));
        assert!(is_insecure(
            "registry.example.com:5000",
            &["registry.example.com:5000".into()]
        ));
        assert!(!is_insecure(
            "registry.example.com",
            &["registry.example.com:5000".into()]
        ));
        assert!(is_insecure("10.1.2.3:5000", &["10.0.0.0/8".into()]));
        assert!(!is_insecure("11.1.2.3:5000", &["10.0.0.0/8".into()]));
        assert!(is_insecure("[fd00::1]:5000", &["fd00::/8".into()]));
    }

    #[test]
    fn config_files_give_credentials_per_registry() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                "127.0.0.1:5000": {{"username": "alice", "password": "s3cret"}},
                "https://registry.example.com/v2/": {{"auth": "{ex}"}},
                "tokens.example.com": {{"registrytoken": "tok"}},
                "empty.example.com": {{}}
            }}, "credsStore": "secretservice"}}"#,
            hub = enc("bob:hub:pass"),
            ex = enc("carol:pw")
        );
        let c = ConfigFile::parse(&text).unwrap();
        let basic = |u: &str, p: &str| RegistryAuth::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(c.auth_for("docker.io"), basic("bob", "hub:pass"));
        assert_eq!(c.auth_for("127.0.0.1:5000"), basic("alice", "s3cret"));
        assert_eq!(c.auth_for("registry.example.com"), basic("carol", "pw"));
        assert_eq!(
            c.auth_for("tokens.example.com"),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(c.auth_for("empty.example.com"), RegistryAuth::Anonymous);
        assert_eq!(c.auth_for("127.0.0.1:5001"), RegistryAuth::Anonymous);
        assert_eq!(ConfigFile::parse("{}").unwrap(), ConfigFile::default());
        assert!(ConfigFile::parse("not json").is_err());
        assert!(ConfigFile::parse(r#"{"auths": {"h": {"auth": "%%%"}}}"#).is_err());
        assert!(
            ConfigFile::parse(&format!(
                r#"{{"auths": {{"h": {{"auth": "{}"}}}}}}"#,
                enc("nocolon")
            ))
            .is_err()
        );
    }

    #[test]
    fn insecure_entries_are_checked() {
        assert!(check_insecure_registry("registry.example.com:5000").is_ok());
        assert!(check_insecure_registry("10.0.0.0/8").is_ok());
        assert!(check_insecure_registry("http://registry.example.com").is_err());
        assert!(check_insecure_registry("10.0.0.0/33").is_err());
        assert!(check_insecure_registry("").is_err());
    }

    #[test]
    fn auth_headers_decode() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        assert_eq!(decode_auth(None).unwrap(), RegistryAuth::Anonymous);
        assert_eq!(
            decode_auth(Some(&enc("{}"))).unwrap(),
            RegistryAuth::Anonymous
        );
        assert_eq!(
            decode_auth(Some(&enc(
                r#"{"username":"u","password":"p","serveraddress":"r"}"#
            )))
            .unwrap(),
            RegistryAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        // Standard, unpadded base64 too.
        let std_nopad = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(r#"{"username":"u?>","password":"p~~"}"#);
        assert!(matches!(
            decode_auth(Some(&std_nopad)).unwrap(),
            RegistryAuth::Basic { .. }
        ));
        assert!(matches!(
            decode_auth(Some(&enc(r#"{"registrytoken":"t"}"#))).unwrap(),
            RegistryAuth::Bearer(_)
        ));
        assert!(decode_auth(Some("!!!")).is_err());
    }
}
