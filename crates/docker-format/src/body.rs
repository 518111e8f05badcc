//! Docker's request bodies: the container config a commit may carry.

use std::collections::BTreeMap;

use crate::image::{Empty, HealthConfig, RunConfig};
use serde::Deserialize;

/// Docker's `container.Config` as a commit body: what Docker reads of it.
/// Unknown fields (and `HostConfig`/`NetworkingConfig`, which Docker's
/// wrapper accepts) are ignored, every field may be `null`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub user: Option<String>,
    pub exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "str_slice")]
    pub cmd: Option<Vec<String>>,
    pub healthcheck: Option<HealthConfig>,
    pub args_escaped: Option<bool>,
    pub volumes: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "str_slice")]
    pub entrypoint: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    #[serde(deserialize_with = "str_slice")]
    pub shell: Option<Vec<String>>,
}

/// Docker's `StrSlice`: a JSON string or an array of strings.
fn str_slice<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<S>::deserialize(d)?.map(|s| match s {
        S::One(x) => vec![x],
        S::Many(v) => v,
    }))
}

/// The fields Docker's `containerConfigToDockerOCIImageConfig` keeps.
impl From<ContainerConfig> for RunConfig {
    fn from(c: ContainerConfig) -> Self {
        let set = |m: Option<BTreeMap<String, serde::de::IgnoredAny>>| {
            m.map(|m| m.into_keys().map(|k| (k, Empty {})).collect())
        };
        RunConfig {
            user: c.user,
            exposed_ports: set(c.exposed_ports),
            env: c.env,
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            healthcheck: c.healthcheck,
            args_escaped: c.args_escaped,
            volumes: set(c.volumes),
            working_dir: c.working_dir,
            on_build: c.on_build,
            labels: c.labels,
            stop_signal: c.stop_signal,
            shell: c.shell,
            extra: Default::default(),
        }
    }
}

/// Why a body was refused (Docker's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or JSON of the wrong shape: the decoder's words.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A JSON value other than an object.
    #[error("invalid JSON: json: cannot unmarshal {0} into Go value of type container.Config")]
    NotAnObject(&'static str),
    #[error("unexpected content after JSON")]
    TrailingContent,
}

/// Config fields whose presence makes a body "carry a config" (Docker's
/// wrapper embeds `*container.Config`, which stays nil otherwise).
const CONFIG_FIELDS: &[&str] = &[
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
];

/// Reads a commit body as Docker's `ReadJSON`: empty → none; `null` →
/// none; bad JSON → `invalid JSON: …`; content after the value → error.
pub fn decode_body(bytes: &[u8]) -> Result<Option<ContainerConfig>, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
    let value = match stream.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) if e.is_eof() => return Err(BodyError::InvalidJson("unexpected EOF".into())),
        Some(Err(e)) => return Err(BodyError::InvalidJson(e.to_string())),
        None => {
            return Err(BodyError::InvalidJson(
                "got EOF while reading request body".into(),
            ));
        }
    };
    if stream.next().is_some() {
        return Err(BodyError::TrailingContent);
    }
    let obj = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Object(o) => o,
        other => {
            return Err(BodyError::NotAnObject(go_type(&other)));
        }
    };
    if !obj.keys().any(|k| CONFIG_FIELDS.contains(&k.as_str())) {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::Object(obj))
        .map(Some)
        .map_err(|e| BodyError::InvalidJson(e.to_string()))
}

fn go_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_null_and_configless_bodies_are_none() {
        assert_eq!(decode_body(b"").unwrap(), None);
        assert_eq!(decode_body(b"  \n").unwrap(), None);
        assert_eq!(decode_body(b"null").unwrap(), None);
        assert_eq!(decode_body(b"{}").unwrap(), None);
        assert_eq!(
            decode_body(br#"{"HostConfig":{"Memory":1}}"#).unwrap(),
            None
        );
    }

    #[test]
    fn docker_shapes_are_read() {
        let c = decode_body(br#"{"Cmd":"echo hi","Entrypoint":null,"Env":["A=1"],"ExposedPorts":{"80/tcp":{}},"Hostname":"x","Labels":{"a":"b"},"Healthcheck":{"Test":["CMD","x"],"Interval":1000000}}"#)
            .unwrap()
            .unwrap();
        let r: RunConfig = c.into();
        assert_eq!(r.cmd, Some(vec!["echo hi".to_string()]));
        assert_eq!(r.entrypoint, None);
        assert_eq!(r.exposed_ports.unwrap().len(), 1);
        assert_eq!(r.healthcheck.unwrap().interval, 1_000_000);
        assert!(r.extra.is_empty(), "Hostname is not an image field");
    }

    #[test]
    fn bad_bodies_say_why() {
        assert!(
            decode_body(b"{nope")
                .unwrap_err()
                .to_string()
                .starts_with("invalid JSON: ")
        );
        assert_eq!(
            decode_body(b"{} {}").unwrap_err().to_string(),
            "unexpected content after JSON"
        );
        assert_eq!(
            decode_body(b"{\"Env\":[\"A\"]}x").unwrap_err().to_string(),
            "unexpected content after JSON"
        );
        assert!(
            decode_body(b"[1]")
                .unwrap_err()
                .to_string()
                .contains("cannot unmarshal array")
        );
        assert!(
            decode_body(br#"{"Env":"A=1"}"#)
                .unwrap_err()
                .to_string()
                .starts_with("invalid JSON: ")
        );
    }
}
