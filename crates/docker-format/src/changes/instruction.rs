//! Stage two: one logical line parsed into an [`Instruction`], checked as
//! Docker checks it before anything is applied.

use crate::duration::parse_duration;
use crate::image::HealthConfig;

use super::ChangeError;
use super::lines::{Flags, Line, is_ws};
use super::words::parse_words;

/// The instructions `docker commit --change` accepts.
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

/// One parsed instruction, its words not yet expanded.
pub(super) enum Instruction {
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Workdir(String),
    Cmd {
        args: Vec<String>,
        shell: bool,
    },
    Entrypoint {
        args: Option<Vec<String>>,
        shell: bool,
    },
    Healthcheck(HealthConfig),
    Onbuild(String),
}

/// Parses one logical line: an instruction `docker commit --change`
/// accepts, with its arguments.
pub(super) fn parse_line(line: &str) -> Result<Instruction, ChangeError> {
    let Line {
        cmd,
        flags,
        rest,
        original,
    } = Line::split(line);
    let name = cmd.to_lowercase();
    if !VALID.contains(&name.as_str()) {
        return Err(ChangeError::NotAChangeCommand(cmd.to_string()));
    }
    if name != "healthcheck" {
        flags.take(&[])?;
    }
    Ok(match name.as_str() {
        "env" => Instruction::Env(parse_name_val(rest, "ENV")?),
        "label" => Instruction::Label(parse_name_val(rest, "LABEL")?),
        "expose" => {
            let mut ports: Vec<String> = rest
                .split(is_ws)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if ports.is_empty() {
                return Err(ChangeError::NoArgument("EXPOSE"));
            }
            ports.sort();
            Instruction::Expose(ports)
        }
        "user" => Instruction::User(one_arg(rest, "USER")?),
        "stopsignal" => Instruction::StopSignal(one_arg(rest, "STOPSIGNAL")?),
        "workdir" => Instruction::Workdir(one_arg(rest, "WORKDIR")?),
        "volume" => {
            let vols = match parse_json(rest) {
                Json::Array(a) => a,
                Json::NotStrings => return Err(ChangeError::NotStringArray),
                Json::No => rest
                    .split(is_ws)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            };
            if vols.is_empty() {
                return Err(ChangeError::NoArgument("VOLUME"));
            }
            let mut out = Vec::new();
            for v in vols {
                let v = v.trim().to_string();
                if v.is_empty() {
                    return Err(ChangeError::EmptyVolume);
                }
                out.push(v);
            }
            Instruction::Volume(out)
        }
        "cmd" => {
            let (args, json) = maybe_json(rest)?;
            Instruction::Cmd { args, shell: !json }
        }
        "entrypoint" => {
            let (args, json) = maybe_json(rest)?;
            Instruction::Entrypoint {
                args: if args.is_empty() { None } else { Some(args) },
                shell: !json,
            }
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(rest, &flags)?),
        "onbuild" => {
            let trigger = rest.split(is_ws).next().unwrap_or("").trim().to_uppercase();
            if trigger.is_empty() {
                return Err(ChangeError::NoArgument("ONBUILD"));
            }
            match trigger.as_str() {
                "ONBUILD" => return Err(ChangeError::OnbuildChained),
                "MAINTAINER" | "FROM" => {
                    return Err(ChangeError::OnbuildTrigger(trigger));
                }
                _ => {}
            }
            // The original text after `ONBUILD`, as written.
            let trimmed = original.trim_start();
            let after = trimmed[trimmed.find(is_ws).unwrap_or(trimmed.len())..]
                .trim_start_matches(char::is_whitespace);
            Instruction::Onbuild(after.to_string())
        }
        _ => return Err(ChangeError::NotAChangeCommand(cmd.to_string())),
    })
}

fn one_arg(rest: &str, name: &'static str) -> Result<String, ChangeError> {
    if rest.is_empty() {
        return Err(ChangeError::NotOneArgument(name));
    }
    Ok(rest.to_string())
}

enum Json {
    Array(Vec<String>),
    NotStrings,
    No,
}

/// A JSON array of strings (exec form), or not JSON at all.
fn parse_json(rest: &str) -> Json {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Json::No;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Ok(values) => {
            let strings: Option<Vec<String>> = values
                .into_iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            strings.map_or(Json::NotStrings, Json::Array)
        }
        Err(_) => Json::No,
    }
}

/// CMD/ENTRYPOINT arguments: `(args, exec form)`. Shell form is the whole
/// rest as one argument.
fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ChangeError> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Json::Array(a) => Ok((a, true)),
        Json::NotStrings => Err(ChangeError::NotStringArray),
        Json::No => Ok((vec![rest.to_string()], false)),
    }
}

/// ENV/LABEL pairs: `k=v k2="v 2"`, or the legacy `KEY name value…`.
fn parse_name_val(rest: &str, key: &'static str) -> Result<Vec<(String, String)>, ChangeError> {
    let words = parse_words(rest);
    if words.is_empty() {
        return Err(ChangeError::NoArgument(key));
    }
    if !words[0].contains('=') {
        let mut parts = rest.splitn(2, is_ws);
        let (name, value) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").trim_start_matches(is_ws),
        );
        if value.is_empty() && !rest.contains(is_ws) {
            return Err(ChangeError::NotTwoArguments(key));
        }
        if name.is_empty() {
            return Err(ChangeError::BlankName(key));
        }
        return Ok(vec![(name.to_string(), value.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ChangeError::NoEquals(w));
        };
        if k.is_empty() {
            return Err(ChangeError::BlankName(key));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn parse_healthcheck(rest: &str, flags: &Flags) -> Result<HealthConfig, ChangeError> {
    let (typ, after) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    if typ.is_empty() {
        return Err(ChangeError::NoArgument("HEALTHCHECK"));
    }
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        if !after.is_empty() {
            return Err(ChangeError::HealthcheckNoneArguments);
        }
        flags.take(&[])?;
        return Ok(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
    }
    let f = flags.take(&[
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ])?;
    if typ != "CMD" {
        return Err(ChangeError::HealthcheckType(typ));
    }
    let (args, json) = maybe_json(after)?;
    if args.is_empty() {
        return Err(ChangeError::HealthcheckCommand);
    }
    let mut test = vec![if json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(args);
    let interval = |name: &str| -> Result<i64, ChangeError> {
        let Some(v) = f.get(name).filter(|v| !v.is_empty()) else {
            return Ok(0);
        };
        let d = parse_duration(v)?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(ChangeError::IntervalTooShort(name.to_string()));
        }
        Ok(d)
    };
    let retries = match f.get("retries").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => {
            let n: i64 = v
                .parse::<i32>()
                .map_err(|_| ChangeError::Retries(v.clone()))?
                .into();
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
