//! Docker's request bodies: the container config a commit may carry, read
//! as current Docker reads it (`decodeCommitRequest`: `httputils.ReadJSON`
//! into a struct embedding `*container.Config`), with Go's `encoding/json`
//! texts for every refusal — syntax (`invalid character …`) and types
//! (`json: cannot unmarshal number into Go struct field
//! commitRequest.Config.Cmd of type []string`, the field path as Go 1.24+
//! prints it, embedded struct included).
//!
//! Docker 20.10 differs here: it took a JSON string for `Cmd`,
//! `Entrypoint` and `Shell` (`StrSlice`), answered decode errors with 500
//! and named its wrapper `ContainerConfigWrapper`; current Docker takes
//! arrays only and answers 400.

use std::collections::BTreeMap;

use crate::go_json::{Cursor, Kind, ScanError, more, scan_value};
use crate::image::{Empty, HealthConfig, RunConfig};

/// The fields of Docker's `container.Config` a commit body may set.
/// `None`: absent or `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub user: Option<String>,
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub healthcheck: Option<HealthConfig>,
    pub args_escaped: Option<bool>,
    pub volumes: Option<BTreeMap<String, Empty>>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub shell: Option<Vec<String>>,
}

/// The fields Docker's `containerConfigToDockerOCIImageConfig` keeps.
impl From<ContainerConfig> for RunConfig {
    fn from(c: ContainerConfig) -> Self {
        RunConfig {
            user: c.user,
            exposed_ports: c.exposed_ports,
            env: c.env,
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            healthcheck: c.healthcheck,
            args_escaped: c.args_escaped,
            volumes: c.volumes,
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
    /// Not JSON, or JSON of the wrong shape: Go's decoder's words.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("unexpected content after JSON")]
    TrailingContent,
}

/// Reads a commit body as Docker's `ReadJSON`: empty → none; `null`, `{}`
/// or an object without config fields → none; otherwise the config.
pub fn decode_body(bytes: &[u8]) -> Result<Option<ContainerConfig>, BodyError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let (start, end) = scan_value(bytes).map_err(|e| match e {
        ScanError::Eof => BodyError::InvalidJson("got EOF while reading request body".into()),
        e => BodyError::InvalidJson(e.to_string()),
    })?;
    let value = &bytes[start..end];
    let config = Decoder::default()
        .request(value)
        .map_err(BodyError::InvalidJson)?;
    if more(bytes, end) {
        return Err(BodyError::TrailingContent);
    }
    Ok(config)
}

/// Go's decoder into `commitRequest{*container.Config}`: the first type
/// error is kept and reported after the whole value was read; an error
/// of a field's own parser (a bad port key) stops at once.
#[derive(Default)]
struct Decoder {
    saved: Option<String>,
    /// Field names from the request down (Go's `errorContext.FieldStack`).
    path: Vec<&'static str>,
    /// The innermost struct being decoded (`errorContext.Struct`).
    strukt: Vec<&'static str>,
}

type Fatal = String;

impl Decoder {
    fn request(mut self, value: &[u8]) -> Result<Option<ContainerConfig>, Fatal> {
        let mut c = Cursor::new(value);
        let config = match c.kind() {
            Kind::Null => None,
            Kind::Object => self.config(&mut c)?,
            k => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type container.commitRequest",
                    k.go_name()
                ));
            }
        };
        match self.saved {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    fn type_error(&mut self, value: String, ty: &str) {
        if self.saved.is_some() {
            return;
        }
        self.saved = Some(match self.strukt.last() {
            Some(s) => format!(
                "json: cannot unmarshal {value} into Go struct field {s}.{} of type {ty}",
                self.path.join(".")
            ),
            None => format!("json: cannot unmarshal {value} into Go value of type {ty}"),
        });
    }

    /// A value of the wrong kind for `ty`, skipped.
    fn wrong(&mut self, c: &mut Cursor<'_>, ty: &str) {
        let kind = c.kind();
        if kind == Kind::Null {
            c.skip();
            return;
        }
        self.type_error(kind.go_name().to_string(), ty);
        c.skip();
    }

    fn config(&mut self, c: &mut Cursor<'_>) -> Result<Option<ContainerConfig>, Fatal> {
        const FIELDS: &[&str] = &[
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
            "OnBuild",
            "Labels",
            "StopSignal",
            "StopTimeout",
            "Shell",
        ];
        let mut out = ContainerConfig::default();
        let mut present = false;
        c.begin_object();
        while let Some(key) = c.next_key() {
            let Some(field) = match_field(&key, FIELDS) else {
                c.skip();
                continue;
            };
            present = true;
            self.strukt.push("commitRequest");
            self.path.extend(["Config", field]);
            match field {
                "User" => keep(&mut out.user, self.string(c)),
                "WorkingDir" => keep(&mut out.working_dir, self.string(c)),
                "StopSignal" => keep(&mut out.stop_signal, self.string(c)),
                "Hostname" | "Domainname" | "Image" => {
                    self.string(c);
                }
                "AttachStdin" | "AttachStdout" | "AttachStderr" | "Tty" | "OpenStdin"
                | "StdinOnce" | "NetworkDisabled" => {
                    self.boolean(c);
                }
                "ArgsEscaped" => keep(&mut out.args_escaped, self.boolean(c)),
                "Env" => set_list(&mut out.env, self.strings(c)),
                "Cmd" => set_list(&mut out.cmd, self.strings(c)),
                "Entrypoint" => set_list(&mut out.entrypoint, self.strings(c)),
                "OnBuild" => set_list(&mut out.on_build, self.strings(c)),
                "Shell" => set_list(&mut out.shell, self.strings(c)),
                "Labels" => {
                    if let Some(l) = self.labels(c, out.labels.take()) {
                        out.labels = Some(l);
                    }
                }
                "Volumes" => {
                    if let Some(v) =
                        self.set(c, out.volumes.take(), "map[string]struct {}", |k| {
                            Ok(k.to_string())
                        })?
                    {
                        out.volumes = Some(v);
                    }
                }
                "ExposedPorts" => {
                    if let Some(p) = self.set(
                        c,
                        out.exposed_ports.take(),
                        "map[network.Port]struct {}",
                        port_key,
                    )? {
                        out.exposed_ports = Some(p);
                    }
                }
                "Healthcheck" => self.healthcheck(c, &mut out.healthcheck),
                "StopTimeout" => {
                    self.int(c, "int");
                }
                _ => c.skip(),
            }
            self.path.truncate(self.path.len() - 2);
            self.strukt.pop();
        }
        Ok(present.then_some(out))
    }

    /// A string; `None` (no change) for null, as Go leaves a string
    /// field alone on null, and for a type error.
    fn string(&mut self, c: &mut Cursor<'_>) -> Option<String> {
        match c.kind() {
            Kind::String => Some(c.string()),
            _ => {
                self.wrong(c, "string");
                None
            }
        }
    }

    fn boolean(&mut self, c: &mut Cursor<'_>) -> Option<bool> {
        match c.kind() {
            Kind::Bool => Some(c.literal() == "true"),
            _ => {
                self.wrong(c, "bool");
                None
            }
        }
    }

    /// An integer of Go type `ty` (`int`, `time.Duration`).
    fn int(&mut self, c: &mut Cursor<'_>, ty: &str) -> Option<i64> {
        match c.kind() {
            Kind::Number => {
                let lit = c.literal();
                match crate::go::parse_int(lit, 64) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.type_error(format!("number {lit}"), ty);
                        None
                    }
                }
            }
            Kind::Null => {
                c.skip();
                None
            }
            _ => {
                self.wrong(c, ty);
                None
            }
        }
    }

    /// `[]string`: `Some(None)` for null; elements of the wrong kind are
    /// errors (null elements are "").
    fn strings(&mut self, c: &mut Cursor<'_>) -> Option<Option<Vec<String>>> {
        match c.kind() {
            Kind::Array => {
                let mut out = Vec::new();
                c.begin_array();
                while c.next_element() {
                    match c.kind() {
                        Kind::String => out.push(c.string()),
                        Kind::Null => {
                            c.skip();
                            out.push(String::new());
                        }
                        _ => self.wrong(c, "string"),
                    }
                }
                Some(Some(out))
            }
            Kind::Null => {
                c.skip();
                Some(None)
            }
            _ => {
                self.wrong(c, "[]string");
                None
            }
        }
    }

    /// `map[string]string`, merged into what an earlier key decoded.
    fn labels(
        &mut self,
        c: &mut Cursor<'_>,
        mut into: Option<BTreeMap<String, String>>,
    ) -> Option<BTreeMap<String, String>> {
        match c.kind() {
            Kind::Object => {
                let map = into.get_or_insert_with(BTreeMap::new);
                c.begin_object();
                while let Some(k) = c.next_key() {
                    match c.kind() {
                        Kind::String => {
                            map.insert(k, c.string());
                        }
                        Kind::Null => {
                            c.skip();
                            map.insert(k, String::new());
                        }
                        _ => self.wrong(c, "string"),
                    }
                }
                into
            }
            Kind::Null => {
                c.skip();
                None
            }
            _ => {
                self.wrong(c, "map[string]string");
                into
            }
        }
    }

    /// `map[K]struct{}` (volumes, ports), keys read by `key`.
    fn set(
        &mut self,
        c: &mut Cursor<'_>,
        mut into: Option<BTreeMap<String, Empty>>,
        ty: &str,
        key: impl Fn(&str) -> Result<String, Fatal>,
    ) -> Result<Option<BTreeMap<String, Empty>>, Fatal> {
        match c.kind() {
            Kind::Object => {
                let map = into.get_or_insert_with(BTreeMap::new);
                c.begin_object();
                while let Some(k) = c.next_key() {
                    let k = key(&k)?;
                    match c.kind() {
                        Kind::Object | Kind::Null => c.skip(),
                        _ => self.wrong(c, "struct {}"),
                    }
                    map.insert(k, Empty {});
                }
                Ok(into)
            }
            Kind::Null => {
                c.skip();
                Ok(None)
            }
            _ => {
                self.wrong(c, ty);
                Ok(into)
            }
        }
    }

    fn healthcheck(&mut self, c: &mut Cursor<'_>, into: &mut Option<HealthConfig>) {
        const FIELDS: &[&str] = &[
            "Test",
            "Interval",
            "Timeout",
            "StartPeriod",
            "StartInterval",
            "Retries",
        ];
        match c.kind() {
            Kind::Object => {
                let h = into.get_or_insert_with(HealthConfig::default);
                c.begin_object();
                while let Some(key) = c.next_key() {
                    let Some(field) = match_field(&key, FIELDS) else {
                        c.skip();
                        continue;
                    };
                    self.strukt.push("HealthcheckConfig");
                    self.path.push(field);
                    match field {
                        "Test" => {
                            if let Some(t) = self.strings(c) {
                                h.test = t;
                            }
                        }
                        "Retries" => {
                            if let Some(n) = self.int(c, "int") {
                                h.retries = n;
                            }
                        }
                        f => {
                            if let Some(n) = self.int(c, "time.Duration") {
                                match f {
                                    "Interval" => h.interval = n,
                                    "Timeout" => h.timeout = n,
                                    "StartPeriod" => h.start_period = n,
                                    _ => h.start_interval = n,
                                }
                            }
                        }
                    }
                    self.path.pop();
                    self.strukt.pop();
                }
            }
            Kind::Null => {
                c.skip();
                *into = None;
            }
            _ => self.wrong(c, "v1.HealthcheckConfig"),
        }
    }
}

/// Go's field matching: the exact name, else one equal but for case.
fn match_field(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    fields.iter().copied().find(|f| *f == key).or_else(|| {
        let upper = key.to_uppercase();
        fields.iter().copied().find(|f| f.to_uppercase() == upper)
    })
}

/// A decoded scalar replaces the field; null and errors leave it.
fn keep<T>(slot: &mut Option<T>, v: Option<T>) {
    if v.is_some() {
        *slot = v;
    }
}

/// A decoded list replaces the field, null clears it (Go's `SetZero`),
/// an error leaves it.
fn set_list(slot: &mut Option<Vec<String>>, v: Option<Option<Vec<String>>>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// `network.Port.UnmarshalText`: `port[/proto]`, normalized to
/// `port/proto` (proto lowercased, tcp by default); "" is the zero port.
fn port_key(k: &str) -> Result<String, Fatal> {
    if k.is_empty() {
        return Ok(String::new());
    }
    let (port, proto) = k.split_once('/').unwrap_or((k, ""));
    let n = if port.is_empty() {
        Err("value is empty")
    } else if !port.bytes().all(|b| b.is_ascii_digit()) {
        Err("invalid syntax")
    } else {
        port.parse::<u16>().map_err(|_| "value out of range")
    };
    let n = n.map_err(|why| format!("invalid port '{port}': {why}"))?;
    let proto = if proto.is_empty() {
        "tcp".to_string()
    } else {
        proto.to_lowercase()
    };
    Ok(format!("{n}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_body(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn empty_null_and_configless_bodies_are_none() {
        assert_eq!(decode_body(b"").unwrap(), None);
        assert_eq!(decode_body(b"null").unwrap(), None);
        assert_eq!(decode_body(b"{}").unwrap(), None);
        assert_eq!(
            decode_body(br#"{"HostConfig":{"Memory":1},"MacAddress":"x"}"#).unwrap(),
            None
        );
        assert_eq!(
            err("  \n"),
            "invalid JSON: got EOF while reading request body"
        );
    }

    #[test]
    fn docker_shapes_are_read() {
        let c = decode_body(br#"{"Cmd":["echo","hi"],"Entrypoint":null,"Env":["A=1",null],"ExposedPorts":{"80":{},"53/UDP":null},"Hostname":"x","labels":{"a":"b"},"Healthcheck":{"Test":["CMD","x"],"interval":1000000}}"#)
            .unwrap()
            .unwrap();
        let r: RunConfig = c.into();
        assert_eq!(r.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(r.entrypoint, None);
        assert_eq!(r.env, Some(vec!["A=1".to_string(), String::new()]));
        assert_eq!(
            r.exposed_ports.unwrap().into_keys().collect::<Vec<_>>(),
            ["53/udp", "80/tcp"]
        );
        assert_eq!(r.labels.unwrap()["a"], "b");
        assert_eq!(r.healthcheck.unwrap().interval, 1_000_000);
        // A config field, even null, makes the body carry a config.
        assert_eq!(
            decode_body(br#"{"Cmd":null}"#).unwrap(),
            Some(ContainerConfig::default())
        );
    }

    #[test]
    fn type_errors_in_gos_words() {
        assert_eq!(
            err(r#"{"Cmd": 5}"#),
            "invalid JSON: json: cannot unmarshal number into Go struct field commitRequest.Config.Cmd of type []string"
        );
        assert_eq!(
            err(r#"{"Cmd": "echo hi"}"#),
            "invalid JSON: json: cannot unmarshal string into Go struct field commitRequest.Config.Cmd of type []string"
        );
        assert_eq!(
            err(r#"{"Env": ["A", 5], "User": 1}"#),
            "invalid JSON: json: cannot unmarshal number into Go struct field commitRequest.Config.Env of type string"
        );
        assert_eq!(
            err(r#"{"Healthcheck": {"Interval": "5s"}}"#),
            "invalid JSON: json: cannot unmarshal string into Go struct field HealthcheckConfig.Config.Healthcheck.Interval of type time.Duration"
        );
        assert_eq!(
            err(r#"{"StopTimeout": 1.5}"#),
            "invalid JSON: json: cannot unmarshal number 1.5 into Go struct field commitRequest.Config.StopTimeout of type int"
        );
        assert_eq!(
            err(r#"{"Labels": []}"#),
            "invalid JSON: json: cannot unmarshal array into Go struct field commitRequest.Config.Labels of type map[string]string"
        );
        assert_eq!(
            err("[1]"),
            "invalid JSON: json: cannot unmarshal array into Go value of type container.commitRequest"
        );
        assert_eq!(
            err(r#"{"User": 1, "ExposedPorts": {"http": {}}}"#),
            "invalid JSON: invalid port 'http': invalid syntax"
        );
    }

    #[test]
    fn syntax_errors_and_trailing_content() {
        assert_eq!(
            err("{nope"),
            "invalid JSON: invalid character 'n' looking for beginning of object key string"
        );
        assert_eq!(err(r#"{"Env":["#), "invalid JSON: unexpected EOF");
        assert_eq!(err("{} {}"), "unexpected content after JSON");
        assert_eq!(err(r#"{"Env":["A"]}x"#), "unexpected content after JSON");
        assert_eq!(decode_body(b"{}]").unwrap(), None);
    }
}
