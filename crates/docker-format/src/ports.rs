//! Docker's port notations: EXPOSE's port specs and the `publish` /
//! `expose` filters of `docker ps`.

/// A port Docker would refuse, with Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no port specified: {0}<empty>")]
    NoPort(String),
    #[error("invalid proto: {0}")]
    Proto(String),
    #[error("invalid containerPort: {0}")]
    ContainerPort(String),
    #[error("filter for '{key}' should not contain ':': {value}")]
    FilterColon { key: String, value: String },
    #[error("error while looking up for {key} {value}: invalid port range")]
    FilterRange { key: String, value: String },
}

/// moby's `parsePortSpec` for EXPOSE: `[ip:][hostPort:]port[-end][/proto]`
/// gives `port/proto` for each port of the range.
pub(crate) fn parse_port_spec(raw: &str) -> Result<Vec<String>, PortError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let container = parts[parts.len() - 1];
    let (port, proto) = match container.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (container, "tcp".to_string()),
    };
    if port.is_empty() {
        return Err(PortError::NoPort(raw.to_string()));
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(PortError::Proto(proto));
    }
    let parse = |s: &str| s.parse::<u16>().ok();
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(port), parse(port)),
    };
    let (Some(start), Some(end)) = (start, end) else {
        return Err(PortError::ContainerPort(port.to_string()));
    };
    if end < start {
        return Err(PortError::ContainerPort(port.to_string()));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `80`, `80/tcp`, `8000-8080/udp`: Docker's check of a `publish` or
/// `expose` filter value of `docker ps`.
pub fn check_port_filter(key: &str, value: &str) -> Result<(), PortError> {
    if value.contains(':') {
        return Err(PortError::FilterColon {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    let port = value.split_once('/').map(|(p, _)| p).unwrap_or(value);
    let (start, end) = port.split_once('-').unwrap_or((port, port));
    match (start.parse::<u16>(), end.parse::<u16>()) {
        (Ok(a), Ok(b)) if a <= b => Ok(()),
        _ => Err(PortError::FilterRange {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}
