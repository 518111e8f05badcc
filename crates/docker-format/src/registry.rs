//! Registries as Docker names and reaches them: the `X-Registry-Auth`
//! header's credentials and the rules for plain-HTTP (insecure) registries.

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
