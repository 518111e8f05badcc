//! Stage two: each parsed instruction checked and typed as buildkit's
//! `instructions.ParseCommand` does (argument counts, flags, HEALTHCHECK's
//! options), after Docker checked it is one `docker commit --change` takes.

use crate::duration::parse_duration;
use crate::go;
use crate::image::HealthConfig;

use super::ChangeError;
use super::parser::Node;

/// The instructions `docker commit --change` accepts (moby's
/// `validCommitCommands`).
const VALID: &[&str] = &[
    "cmd",
    "entrypoint",
    "healthcheck",
    "env",
    "expose",
    "label",
    "onbuild",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `name=value` (or `name value`) of ENV and LABEL, not yet expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kv {
    pub key: String,
    pub value: String,
}

/// A checked instruction, its words not yet expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Env(Vec<Kv>),
    Label(Vec<Kv>),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Workdir(String),
    /// The command line (`None`: ENTRYPOINT without arguments), and whether
    /// it is shell form (the shell goes in front).
    Cmd {
        line: Vec<String>,
        shell: bool,
    },
    Entrypoint {
        line: Option<Vec<String>>,
        shell: bool,
    },
    Healthcheck(HealthConfig),
    Onbuild(String),
}

/// Checks `node` is a commit instruction and parses it.
pub(super) fn parse_command(node: &Node) -> Result<Command, ChangeError> {
    let name = node.cmd.to_lowercase();
    if !VALID.contains(&name.as_str()) {
        return Err(ChangeError::NotAChangeCommand(node.cmd.clone()));
    }
    let args = &node.args;
    let mut flags = Flags::new(&node.flags);
    Ok(match name.as_str() {
        "env" => {
            flags.parse()?;
            Command::Env(kvps(args, "ENV")?)
        }
        "label" => {
            flags.parse()?;
            Command::Label(kvps(args, "LABEL")?)
        }
        "onbuild" => {
            if args.is_empty() {
                return Err(ChangeError::NoArgument("ONBUILD"));
            }
            flags.parse()?;
            let trigger = args[0].trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => return Err(ChangeError::OnbuildChained),
                "MAINTAINER" | "FROM" => return Err(ChangeError::OnbuildTrigger(trigger)),
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_string();
            for (name, content) in &node.heredocs {
                expression.push('\n');
                expression.push_str(content);
                expression.push_str(name);
            }
            Command::Onbuild(expression)
        }
        "workdir" => {
            let path = one_arg(args, "WORKDIR")?;
            flags.parse()?;
            Command::Workdir(path)
        }
        "cmd" => {
            flags.parse()?;
            Command::Cmd {
                line: json_args(args, node.json),
                shell: !node.json,
            }
        }
        "entrypoint" => {
            flags.parse()?;
            let line = json_args(args, node.json);
            Command::Entrypoint {
                line: (!line.is_empty()).then_some(line),
                shell: !node.json,
            }
        }
        "healthcheck" => Command::Healthcheck(healthcheck(node, &mut flags)?),
        "expose" => {
            if args.is_empty() {
                return Err(ChangeError::NoArgument("EXPOSE"));
            }
            flags.parse()?;
            let mut ports = args.clone();
            ports.sort();
            Command::Expose(ports)
        }
        "user" => {
            let user = one_arg(args, "USER")?;
            flags.parse()?;
            Command::User(user)
        }
        "volume" => {
            if args.is_empty() {
                return Err(ChangeError::NoArgument("VOLUME"));
            }
            flags.parse()?;
            let mut vols = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(ChangeError::EmptyVolume);
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        // STOPSIGNAL's flags are not looked at.
        "stopsignal" => Command::StopSignal(one_arg(args, "STOPSIGNAL")?),
        _ => return Err(ChangeError::NotAChangeCommand(node.cmd.clone())),
    })
}

/// The expression after `ONBUILD` (buildkit's `(?i)^\s*ONBUILD\s*`).
fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start_matches([' ', '\t', '\n', '\x0c', '\r']);
    match t.get(..7) {
        Some(w) if w.eq_ignore_ascii_case("onbuild") => {
            t[7..].trim_start_matches([' ', '\t', '\n', '\x0c', '\r'])
        }
        _ => original,
    }
}

fn one_arg(args: &[String], name: &'static str) -> Result<String, ChangeError> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(ChangeError::NotOneArgument(name)),
    }
}

/// `parseKvps`: `[name, value, separator]` triples.
fn kvps(args: &[String], name: &'static str) -> Result<Vec<Kv>, ChangeError> {
    if args.is_empty() {
        return Err(ChangeError::NoArgument(name));
    }
    if args.len() % 3 != 0 {
        return Err(ChangeError::TooManyArguments(name));
    }
    let mut out = Vec::new();
    for t in args.chunks(3) {
        if t[0].is_empty() {
            return Err(ChangeError::BlankName(name));
        }
        out.push(Kv {
            key: t[0].clone(),
            value: t[1].clone(),
        });
    }
    Ok(out)
}

/// `handleJSONArgs`: exec form as it is, shell form as one string.
fn json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    if json {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

fn healthcheck(node: &Node, flags: &mut Flags<'_>) -> Result<HealthConfig, ChangeError> {
    let args = &node.args;
    if args.is_empty() {
        return Err(ChangeError::NoArgument("HEALTHCHECK"));
    }
    let typ = args[0].to_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        // Flags are not looked at.
        if !rest.is_empty() {
            return Err(ChangeError::HealthcheckNoneArguments);
        }
        return Ok(HealthConfig {
            test: Some(vec![typ]),
            ..Default::default()
        });
    }
    flags.define(&[
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ]);
    flags.parse()?;
    if typ != "CMD" {
        return Err(ChangeError::HealthcheckType(go::quote(&typ)));
    }
    let line = json_args(rest, node.json);
    if line.is_empty() {
        return Err(ChangeError::HealthcheckCommand);
    }
    let kind = if node.json { "CMD" } else { "CMD-SHELL" };
    let mut test = vec![kind.to_string()];
    test.extend(line);
    let interval = |name: &str| -> Result<i64, ChangeError> {
        let v = flags.value(name);
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_duration(v)?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(ChangeError::IntervalTooShort(go::quote(name)));
        }
        Ok(d)
    };
    let retries = match flags.value("retries") {
        "" => 0,
        v => {
            let n = go::parse_int(v, 32)
                .map_err(|e| ChangeError::Retries(go::parse_int_error(v, e)))?;
            if n < 0 {
                return Err(ChangeError::NegativeRetries(n));
            }
            n
        }
    };
    Ok(HealthConfig {
        test: Some(test),
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

/// buildkit's `BFlags`: string flags an instruction defines, read from its
/// `--name=value` words.
struct Flags<'a> {
    args: &'a [String],
    defined: Vec<&'static str>,
    values: Vec<(&'static str, String)>,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        Flags {
            args,
            defined: Vec::new(),
            values: Vec::new(),
        }
    }

    fn define(&mut self, names: &[&'static str]) {
        self.defined.extend_from_slice(names);
    }

    fn value(&self, name: &str) -> &str {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn parse(&mut self) -> Result<(), ChangeError> {
        for a in self.args {
            if a == "--" {
                return Ok(());
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(ChangeError::FlagNotAFlag(a.clone()));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let flag_name = format!("--{name}");
            let Some(defined) = self.defined.iter().copied().find(|d| *d == name) else {
                return Err(ChangeError::UnknownFlag {
                    flag: flag_name,
                    suggestion: suggest(name, &self.defined),
                });
            };
            if self.values.iter().any(|(n, _)| *n == defined) {
                return Err(ChangeError::DuplicateFlag(flag_name));
            }
            let Some(value) = value else {
                return Err(ChangeError::FlagWithoutValue(flag_name));
            };
            self.values.push((defined, value.to_string()));
        }
        Ok(())
    }
}

/// buildkit's `suggest.Search`: the closest option within two edits.
fn suggest(value: &str, options: &[&str]) -> Option<String> {
    let mut best = None;
    let mut min = 3;
    for o in options {
        if *o == value {
            return None;
        }
        let d = levenshtein(value, o);
        if d < min {
            min = d;
            best = Some(o.to_string());
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::parser;

    fn cmd(text: &str) -> Result<Command, String> {
        let p = parser::parse(text).map_err(|e| e.to_string())?;
        parse_command(&p.nodes[0]).map_err(|e| e.to_string())
    }

    #[test]
    fn only_commit_instructions_keep_their_case_in_the_message() {
        assert_eq!(
            cmd("FROM x").unwrap_err(),
            "FROM is not a valid change command"
        );
        assert_eq!(
            cmd("run echo").unwrap_err(),
            "run is not a valid change command"
        );
    }

    #[test]
    fn flags_in_buildkits_words() {
        assert_eq!(cmd("USER --bad app").unwrap_err(), "unknown flag: --bad");
        assert_eq!(
            cmd("HEALTHCHECK --intervl=1s CMD x").unwrap_err(),
            "unknown flag: --intervl (did you mean interval?)"
        );
        assert_eq!(
            cmd("HEALTHCHECK --interval CMD x").unwrap_err(),
            "missing a value on flag: --interval"
        );
        assert_eq!(
            cmd("HEALTHCHECK --retries=1 --retries=2 CMD x").unwrap_err(),
            "duplicate flag specified: --retries"
        );
        assert_eq!(
            cmd("HEALTHCHECK --interval=5s NONE").unwrap(),
            Command::Healthcheck(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            })
        );
        assert_eq!(
            cmd("STOPSIGNAL --x=1 TERM").unwrap(),
            Command::StopSignal("TERM".into())
        );
        assert_eq!(
            cmd("HEALTHCHECK --retries=x CMD a").unwrap_err(),
            r#"strconv.ParseInt: parsing "x": invalid syntax"#
        );
    }

    #[test]
    fn cmd_and_entrypoint_lines() {
        assert_eq!(
            cmd("CMD").unwrap(),
            Command::Cmd {
                line: vec![],
                shell: true
            }
        );
        assert_eq!(
            cmd("ENTRYPOINT []").unwrap(),
            Command::Entrypoint {
                line: None,
                shell: false
            }
        );
        assert_eq!(
            cmd("ONBUILD  RUN echo  hi").unwrap(),
            Command::Onbuild("RUN echo  hi".into())
        );
    }
}
