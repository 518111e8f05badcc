//! `changes`: Dockerfile instructions applied to a committed image's config
//! (`docker commit -c …`), as Docker's `BuildFromConfig` applies them.
//!
//! The changes are joined with newlines and read as a Dockerfile (line
//! continuations, comments, JSON and shell forms, quotes), each instruction
//! must be one Docker accepts for commit, and each is applied in order with
//! the semantics of Docker's builder: variable expansion against the
//! config's `Env` where the builder expands, ENTRYPOINT clearing CMD unless
//! CMD was set earlier in the same changes, relative WORKDIRs, EXPOSE port
//! ranges, and Docker's error texts.

use std::collections::BTreeMap;

use commit_engine::image::{Empty, HealthConfig, RunConfig};

/// A change Docker would refuse, with Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChangeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ChangeError> {
    Err(ChangeError(msg.into()))
}

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

/// Applies `changes` to `config`. No changes: the config as it is.
pub fn apply_changes(config: RunConfig, changes: &[String]) -> Result<RunConfig, ChangeError> {
    if changes.is_empty() {
        return Ok(config);
    }
    let lines = logical_lines(&changes.join("\n"));
    if lines.is_empty() {
        return err("file with no instructions");
    }
    // Docker checks and parses every instruction before applying any.
    let mut parsed = Vec::new();
    for line in &lines {
        let (cmd, flags, rest) = split_command(line)?;
        if !VALID.contains(&cmd.to_lowercase().as_str()) {
            return err(format!("{cmd} is not a valid change command"));
        }
        parsed.push(parse(&cmd, flags, &rest, line)?);
    }
    let mut state = State {
        config,
        cmd_set: false,
    };
    for instruction in parsed {
        state.dispatch(instruction)?;
    }
    Ok(state.config)
}

/// Joins continuation lines and drops comments and blank lines, as
/// buildkit's parser does (escape token `\`).
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    while let Some(first) = lines.next() {
        if is_comment(first) {
            continue;
        }
        let (mut buf, mut done) = trim_continuation(first);
        if done && buf.trim().is_empty() {
            continue;
        }
        while !done {
            let Some(next) = lines.next() else { break };
            if is_comment(next) || next.trim().is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(next);
            buf.push_str(&part);
            done = end;
        }
        if !buf.trim().is_empty() {
            out.push(buf);
        }
    }
    out
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// `(line without the trailing escape, whether the line ends here)`.
fn trim_continuation(line: &str) -> (String, bool) {
    let trimmed = line.trim_end_matches(|c: char| c.is_whitespace());
    match trimmed.strip_suffix('\\') {
        Some(rest) => (rest.to_string(), false),
        None => (line.to_string(), true),
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// `splitCommand`: the instruction word, its `--flags`, the rest.
fn split_command(line: &str) -> Result<(String, Vec<String>, String), ChangeError> {
    let line = line.trim();
    let (cmd, rest) = match line.find(is_ws) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_ws)),
        None => (line, ""),
    };
    let (rest, flags) = extract_flags(rest);
    Ok((cmd.to_string(), flags, rest.trim().to_string()))
}

/// Leading `--name[=value]` words (buildkit's `extractBuilderFlags`).
fn extract_flags(mut line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    loop {
        let trimmed = line.trim_start();
        if !trimmed.starts_with("--") || trimmed.len() == 2 && trimmed == "--" {
            return (trimmed, flags);
        }
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = &trimmed[..end];
        if word == "--" {
            return (trimmed[end..].trim_start(), flags);
        }
        flags.push(word.to_string());
        line = &trimmed[end..];
    }
}

/// Parsed flags of an instruction (`--name=value`).
struct Flags(Vec<String>);

impl Flags {
    /// Takes the allowed flags; any other is Docker's `Unknown flag` error.
    fn take(&self, allowed: &[&str]) -> Result<BTreeMap<String, String>, ChangeError> {
        let mut out = BTreeMap::new();
        for f in &self.0 {
            let body = &f[2..];
            let (name, value) = body.split_once('=').unwrap_or((body, ""));
            if !allowed.contains(&name) {
                return err(format!("Unknown flag: {name}"));
            }
            if body.split_once('=').is_none() {
                return err(format!("Missing a value on flag: {name}"));
            }
            out.insert(name.to_string(), value.to_string());
        }
        Ok(out)
    }
}

enum Instruction {
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

fn parse(
    cmd: &str,
    flags: Vec<String>,
    rest: &str,
    original: &str,
) -> Result<Instruction, ChangeError> {
    let flags = Flags(flags);
    let name = cmd.to_lowercase();
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
                return err("EXPOSE requires at least one argument");
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
                Json::NotStrings => return err("only string arrays are supported"),
                Json::No => rest
                    .split(is_ws)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            };
            if vols.is_empty() {
                return err("VOLUME requires at least one argument");
            }
            let mut out = Vec::new();
            for v in vols {
                let v = v.trim().to_string();
                if v.is_empty() {
                    return err("VOLUME specified can not be an empty string");
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
                return err("ONBUILD requires at least one argument");
            }
            match trigger.as_str() {
                "ONBUILD" => return err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
                "MAINTAINER" | "FROM" => {
                    return err(format!("{trigger} isn't allowed as an ONBUILD trigger"));
                }
                _ => {}
            }
            // The original text after `ONBUILD`, as written.
            let trimmed = original.trim_start();
            let after = trimmed[trimmed.find(is_ws).unwrap_or(trimmed.len())..]
                .trim_start_matches(char::is_whitespace);
            Instruction::Onbuild(after.to_string())
        }
        _ => return err(format!("{cmd} is not a valid change command")),
    })
}

fn one_arg(rest: &str, name: &str) -> Result<String, ChangeError> {
    if rest.is_empty() {
        return err(format!("{name} requires exactly one argument"));
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
        Json::NotStrings => err("only string arrays are supported"),
        Json::No => Ok((vec![rest.to_string()], false)),
    }
}

/// buildkit's `parseWords`: whitespace-separated words, quotes kept (they
/// are removed by the word processing later).
fn parse_words(rest: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == '\\' {
                    match chars.next() {
                        None => continue,
                        Some(n) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == '\\' && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some(n) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV/LABEL pairs: `k=v k2="v 2"`, or the legacy `KEY name value…`.
fn parse_name_val(rest: &str, key: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let words = parse_words(rest);
    if words.is_empty() {
        return err(format!("{key} requires at least one argument"));
    }
    if !words[0].contains('=') {
        let mut parts = rest.splitn(2, is_ws);
        let (name, value) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").trim_start_matches(is_ws),
        );
        if value.is_empty() && !rest.contains(is_ws) {
            return err(format!("{key} must have two arguments"));
        }
        if name.is_empty() {
            return err(format!("{key} names can not be blank"));
        }
        return Ok(vec![(name.to_string(), value.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return err(format!("{key} names can not be blank"));
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
        return err("HEALTHCHECK requires at least one argument");
    }
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        if !after.is_empty() {
            return err("HEALTHCHECK NONE takes no arguments");
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
        return err(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"));
    }
    let (args, json) = maybe_json(after)?;
    if args.is_empty() {
        return err("Missing command after HEALTHCHECK CMD");
    }
    let mut test = vec![if json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(args);
    let interval = |name: &str| -> Result<i64, ChangeError> {
        let Some(v) = f.get(name).filter(|v| !v.is_empty()) else {
            return Ok(0);
        };
        let d = parse_duration(v).map_err(ChangeError)?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return err(format!("Interval {name:?} cannot be less than 1ms"));
        }
        Ok(d)
    };
    let retries = match f.get("retries").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => {
            let n: i64 = v
                .parse::<i32>()
                .map_err(|_| {
                    ChangeError(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
                })?
                .into();
            if n < 0 {
                return err(format!("--retries cannot be negative ({n})"));
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

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(format!("time: invalid duration {s:?}"));
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

/// The builder's state while dispatching changes.
struct State {
    config: RunConfig,
    /// CMD was set by these changes (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    fn env(&self) -> Vec<String> {
        self.config.env.clone().unwrap_or_default()
    }

    fn expand(&self, word: &str) -> Result<String, ChangeError> {
        process_word(word, &self.env())
    }

    fn dispatch(&mut self, i: Instruction) -> Result<(), ChangeError> {
        match i {
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(&k)?, self.expand(&v)?);
                    let entry = format!("{k}={v}");
                    let env = self.config.env.get_or_insert_with(Vec::new);
                    match env
                        .iter_mut()
                        .find(|e| e.split('=').next() == Some(k.as_str()))
                    {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(&k)?, self.expand(&v)?);
                    self.config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
            }
            Instruction::Expose(ports) => {
                let mut expanded = Vec::new();
                for p in ports {
                    expanded.extend(process_words(&p, &self.env())?);
                }
                let set = self.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in expanded {
                    for port in parse_port_spec(&p)? {
                        set.insert(port, Empty {});
                    }
                }
            }
            Instruction::User(u) => self.config.user = Some(self.expand(&u)?),
            Instruction::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(&v)?;
                    if v.is_empty() {
                        return err("VOLUME specified can not be an empty string");
                    }
                    out.push(v);
                }
                let set = self.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in out {
                    set.insert(v, Empty {});
                }
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(&s)?;
                parse_signal(&s)?;
                self.config.stop_signal = Some(s);
            }
            Instruction::Workdir(p) => {
                let p = self.expand(&p)?;
                if p.is_empty() {
                    return err("cannot normalize nothing");
                }
                let current = self.config.working_dir.clone().unwrap_or_default();
                self.config.working_dir = Some(normalize_workdir(&current, &p));
            }
            Instruction::Cmd { args, shell } => {
                let set = !args.is_empty();
                self.config.cmd = Some(self.with_shell(args, shell));
                self.config.args_escaped = None;
                if set {
                    self.cmd_set = true;
                }
            }
            Instruction::Entrypoint { args, shell } => {
                self.config.entrypoint = args.map(|a| self.with_shell(a, shell));
                self.config.args_escaped = None;
                if !self.cmd_set {
                    self.config.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => self.config.healthcheck = Some(h),
            Instruction::Onbuild(expr) => {
                self.config.on_build.get_or_insert_with(Vec::new).push(expr)
            }
        }
        Ok(())
    }

    /// Shell form runs under the config's `Shell`, or `/bin/sh -c`.
    fn with_shell(&self, args: Vec<String>, shell: bool) -> Vec<String> {
        if !shell {
            return args;
        }
        let mut out = match &self.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        };
        out.extend(args);
        out
    }
}

/// `filepath.Join("/", current, requested)` for a relative path, `Clean`
/// for an absolute one.
fn normalize_workdir(current: &str, requested: &str) -> String {
    let joined = if requested.starts_with('/') {
        requested.to_string()
    } else {
        format!("/{current}/{requested}")
    };
    clean_path(&joined)
}

/// Go's `path.Clean` for absolute paths.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// moby's `parsePortSpec` for EXPOSE: `[ip:][hostPort:]port[-end][/proto]`
/// gives `port/proto` for each port of the range.
fn parse_port_spec(raw: &str) -> Result<Vec<String>, ChangeError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let container = parts[parts.len() - 1];
    let (port, proto) = match container.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (container, "tcp".to_string()),
    };
    if port.is_empty() {
        return err(format!("no port specified: {raw}<empty>"));
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return err(format!("invalid proto: {proto}"));
    }
    let parse = |s: &str| s.parse::<u16>().ok();
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(port), parse(port)),
    };
    let (Some(start), Some(end)) = (start, end) else {
        return err(format!("invalid containerPort: {port}"));
    };
    if end < start {
        return err(format!("invalid containerPort: {port}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// moby/sys/signal `ParseSignal` (Linux): a number 1–255 or a name, with
/// or without `SIG`.
fn parse_signal(raw: &str) -> Result<(), ChangeError> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    if let Ok(n) = raw.parse::<u64>() {
        return if (1..=255).contains(&n) {
            Ok(())
        } else {
            err(format!("Invalid signal: {raw}"))
        };
    }
    let name = raw.to_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let rt = |base: &str| {
        name.strip_prefix(base)
            .and_then(|r| r.strip_prefix(['+', '-']))
            .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=15).contains(&n)))
    };
    if NAMES.contains(&name) || rt("RTMIN") || rt("RTMAX") {
        Ok(())
    } else {
        err(format!("Invalid signal: {raw}"))
    }
}

/// buildkit's `shell.Lex.ProcessWord`: quotes removed, escapes resolved,
/// `$VAR`/`${VAR}` and `${VAR:-x}` `${VAR-x}` `${VAR:+x}` `${VAR+x}`
/// `${VAR:?msg}` `${VAR?msg}` expanded from `env`.
pub fn process_word(word: &str, env: &[String]) -> Result<String, ChangeError> {
    Ok(Lexer::new(word, env).run(false)?.concat())
}

/// `ProcessWords`: like [`process_word`], but unquoted whitespace (also
/// from expansions) separates words.
pub fn process_words(word: &str, env: &[String]) -> Result<Vec<String>, ChangeError> {
    Lexer::new(word, env).run(true)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a [String],
}

impl<'a> Lexer<'a> {
    fn new(word: &str, env: &'a [String]) -> Self {
        Self {
            chars: word.chars().collect(),
            pos: 0,
            env,
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        // The last definition wins, as in Docker's env list.
        self.env.iter().rev().find_map(|e| match e.split_once('=') {
            Some((k, v)) if k == name => Some(v.to_string()),
            None if e == name => Some(String::new()),
            _ => None,
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn run(&mut self, split: bool) -> Result<Vec<String>, ChangeError> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut has = false;
        while let Some(c) = self.peek() {
            match c {
                '\'' => {
                    self.pos += 1;
                    has = true;
                    loop {
                        match self.peek() {
                            None => {
                                return err(
                                    "unexpected end of statement while looking for matching single-quote",
                                );
                            }
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(ch) => {
                                cur.push(ch);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    has = true;
                    loop {
                        match self.peek() {
                            None => {
                                return err(
                                    "unexpected end of statement while looking for matching double-quote",
                                );
                            }
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('$') => cur.push_str(&self.dollar()?),
                            Some('\\') => {
                                self.pos += 1;
                                match self.peek() {
                                    Some(n @ ('"' | '$' | '\\')) => {
                                        cur.push(n);
                                        self.pos += 1;
                                    }
                                    Some(n) => {
                                        cur.push('\\');
                                        cur.push(n);
                                        self.pos += 1;
                                    }
                                    None => cur.push('\\'),
                                }
                            }
                            Some(ch) => {
                                cur.push(ch);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '$' => {
                    let value = self.dollar()?;
                    if split {
                        let mut parts = value.split(char::is_whitespace);
                        if let Some(first) = parts.next() {
                            cur.push_str(first);
                            if !first.is_empty() {
                                has = true;
                            }
                        }
                        for p in parts {
                            if has || !cur.is_empty() {
                                words.push(std::mem::take(&mut cur));
                            }
                            has = false;
                            cur.push_str(p);
                            if !p.is_empty() {
                                has = true;
                            }
                        }
                    } else {
                        cur.push_str(&value);
                    }
                }
                '\\' => {
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        cur.push(n);
                        self.pos += 1;
                        has = true;
                    }
                }
                c if split && c.is_whitespace() => {
                    self.pos += 1;
                    if has || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                    has = false;
                }
                c => {
                    cur.push(c);
                    self.pos += 1;
                    has = true;
                }
            }
        }
        if !split || has || !cur.is_empty() {
            words.push(cur);
        }
        Ok(words)
    }

    /// At a `$`: the expansion.
    fn dollar(&mut self) -> Result<String, ChangeError> {
        self.pos += 1;
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return err("bad substitution");
                }
                match self.peek() {
                    Some('}') => {
                        self.pos += 1;
                        Ok(self.lookup(&name).unwrap_or_default())
                    }
                    Some(':') | Some('-') | Some('+') | Some('?') => {
                        let colon = self.peek() == Some(':');
                        if colon {
                            self.pos += 1;
                        }
                        let Some(op) = self.peek() else {
                            return err("syntax error: missing '}'");
                        };
                        if !matches!(op, '-' | '+' | '?') {
                            return err(format!("unsupported modifier ({op}) in substitution"));
                        }
                        self.pos += 1;
                        let word = self.until_brace()?;
                        let value = self.lookup(&name);
                        let set = if colon {
                            value.as_deref().is_some_and(|v| !v.is_empty())
                        } else {
                            value.is_some()
                        };
                        match op {
                            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                            '+' => Ok(if set { word } else { String::new() }),
                            _ => {
                                if set {
                                    Ok(value.unwrap_or_default())
                                } else {
                                    let msg = if word.is_empty() {
                                        "is not allowed to be unset".to_string()
                                    } else {
                                        word
                                    };
                                    err(format!("{name}: {msg}"))
                                }
                            }
                        }
                    }
                    Some(c) => err(format!("unsupported modifier ({c}) in substitution")),
                    None => err("syntax error: missing '}'"),
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.lookup(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    /// The word of a `${VAR:-word}`, itself expanded, up to the `}`.
    fn until_brace(&mut self) -> Result<String, ChangeError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return err("syntax error: missing '}'"),
                Some('}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some('\\') => {
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.pos += 1;
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunConfig {
        RunConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        }
    }

    fn apply(changes: &[&str]) -> Result<RunConfig, String> {
        apply_changes(
            base(),
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .map_err(|e| e.0)
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn no_changes_keep_the_config() {
        assert_eq!(apply_changes(base(), &[]).unwrap(), base());
        assert_eq!(
            apply(&["", "# only a comment"]).unwrap_err(),
            "file with no instructions"
        );
    }

    #[test]
    fn only_commit_instructions_are_accepted() {
        assert_eq!(
            apply(&["RUN echo hi"]).unwrap_err(),
            "RUN is not a valid change command"
        );
        assert_eq!(
            apply(&["run echo hi"]).unwrap_err(),
            "run is not a valid change command"
        );
        assert_eq!(
            apply(&["FROM x"]).unwrap_err(),
            "FROM is not a valid change command"
        );
        assert_eq!(
            apply(&["BOGUS"]).unwrap_err(),
            "BOGUS is not a valid change command"
        );
        assert_eq!(
            apply(&["ENV A=1", "COPY a b"]).unwrap_err(),
            "COPY is not a valid change command"
        );
    }

    #[test]
    fn env_pairs_quotes_and_expansion() {
        let c =
            apply(&[r#"ENV A=1 B="two words" C='$HOME' D=$HOME/x E=${HOME}y F=\$HOME"#]).unwrap();
        let env = c.env.unwrap();
        assert_eq!(
            &env[2..],
            [
                "A=1",
                "B=two words",
                "C=$HOME",
                "D=/root/x",
                "E=/rooty",
                "F=$HOME"
            ]
        );
        let c = apply(&["ENV PATH=$PATH:/opt/bin", "env NAME value with spaces"]).unwrap();
        assert_eq!(
            c.env.unwrap(),
            [
                "PATH=/usr/bin:/bin:/opt/bin",
                "HOME=/root",
                "NAME=value with spaces"
            ]
        );
        let c = apply(&["ENV X=${UNSET:-dflt} Y=${HOME:+set} Z=${UNSET:+no}"]).unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["X=dflt", "Y=set", "Z="]);
        assert_eq!(
            apply(&["ENV ONLYKEY"]).unwrap_err(),
            "ENV must have two arguments"
        );
        assert_eq!(
            apply(&["ENV"]).unwrap_err(),
            "ENV requires at least one argument"
        );
        assert_eq!(
            apply(&["ENV A=1 B"]).unwrap_err(),
            "Syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert_eq!(
            apply(&["ENV X=${UNSET:?required}"]).unwrap_err(),
            "UNSET: required"
        );
    }

    #[test]
    fn labels() {
        let c = apply(&[r#"LABEL a=b "c d"="e f" version=1.0"#, "LABEL a=z"]).unwrap();
        let l = c.labels.unwrap();
        assert_eq!(l["a"], "z");
        assert_eq!(l["c d"], "e f");
        assert_eq!(l["version"], "1.0");
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = apply(&[r#"CMD ["echo", "hi"]"#]).unwrap();
        assert_eq!(c.cmd, strs(&["echo", "hi"]));
        let c = apply(&["CMD echo $HOME"]).unwrap();
        assert_eq!(
            c.cmd,
            strs(&["/bin/sh", "-c", "echo $HOME"]),
            "no expansion in CMD"
        );
        let c = apply(&[r#"ENTRYPOINT ["/app"]"#]).unwrap();
        assert_eq!(
            (c.entrypoint, c.cmd),
            (strs(&["/app"]), None),
            "ENTRYPOINT clears an inherited CMD"
        );
        let c = apply(&[r#"CMD ["--flag"]"#, r#"ENTRYPOINT ["/app"]"#]).unwrap();
        assert_eq!(
            (c.entrypoint, c.cmd),
            (strs(&["/app"]), strs(&["--flag"])),
            "but not one set by the changes"
        );
        let c = apply(&["ENTRYPOINT /app --x"]).unwrap();
        assert_eq!(c.entrypoint, strs(&["/bin/sh", "-c", "/app --x"]));
        let mut with_shell = base();
        with_shell.shell = strs(&["/bin/bash", "-lc"]);
        let c = apply_changes(with_shell, &["CMD make".into()]).unwrap();
        assert_eq!(c.cmd, strs(&["/bin/bash", "-lc", "make"]));
        assert_eq!(
            apply(&["CMD [1, 2]"]).unwrap_err(),
            "only string arrays are supported"
        );
        let c = apply(&["CMD [not json"]).unwrap();
        assert_eq!(c.cmd, strs(&["/bin/sh", "-c", "[not json"]));
    }

    #[test]
    fn expose_ports() {
        let c = apply(&[
            "EXPOSE 80 443/tcp 53/udp 8000-8002",
            "ENV P=9090",
            "EXPOSE $P",
        ])
        .unwrap();
        let ports: Vec<String> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(
            ports,
            [
                "443/tcp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "9090/tcp"
            ]
        );
        assert_eq!(apply(&["EXPOSE 80/xyz"]).unwrap_err(), "invalid proto: xyz");
        assert_eq!(
            apply(&["EXPOSE abc"]).unwrap_err(),
            "invalid containerPort: abc"
        );
        assert_eq!(
            apply(&["EXPOSE"]).unwrap_err(),
            "EXPOSE requires at least one argument"
        );
    }

    #[test]
    fn user_workdir_volume_stopsignal() {
        let c = apply(&[
            "USER app:app",
            "WORKDIR /srv",
            "WORKDIR data/../web",
            "VOLUME /data /logs",
            r#"VOLUME ["/cache"]"#,
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("app:app"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv/web"));
        assert_eq!(
            c.volumes.unwrap().into_keys().collect::<Vec<_>>(),
            ["/cache", "/data", "/logs"]
        );
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        let c = apply(&["ENV D=/opt", "WORKDIR $D/app", "USER ${NOBODY:-65534}"]).unwrap();
        assert_eq!(
            (c.working_dir.as_deref(), c.user.as_deref()),
            (Some("/opt/app"), Some("65534"))
        );
        for ok in ["9", "TERM", "sigkill", "SIGRTMIN+3"] {
            apply(&[&format!("STOPSIGNAL {ok}")]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            apply(&["STOPSIGNAL SIGNOPE"]).unwrap_err(),
            "Invalid signal: SIGNOPE"
        );
        assert_eq!(apply(&["STOPSIGNAL 0"]).unwrap_err(), "Invalid signal: 0");
        assert_eq!(
            apply(&["USER"]).unwrap_err(),
            "USER requires exactly one argument"
        );
        assert_eq!(
            apply(&[r#"VOLUME [""]"#]).unwrap_err(),
            "VOLUME specified can not be an empty string"
        );
    }

    #[test]
    fn healthchecks() {
        let c = apply(&["HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 CMD curl -f http://localhost/"]).unwrap();
        let h = c.healthcheck.unwrap();
        assert_eq!(h.test, strs(&["CMD-SHELL", "curl -f http://localhost/"]));
        assert_eq!(
            (h.interval, h.timeout, h.start_period, h.retries),
            (30_000_000_000, 5_000_000_000, 60_000_000_000, 3)
        );
        let c = apply(&[r#"HEALTHCHECK CMD ["/bin/check", "-q"]"#]).unwrap();
        assert_eq!(
            c.healthcheck.unwrap().test,
            strs(&["CMD", "/bin/check", "-q"])
        );
        let c = apply(&["HEALTHCHECK NONE"]).unwrap();
        assert_eq!(c.healthcheck.unwrap().test, strs(&["NONE"]));
        assert_eq!(
            apply(&["HEALTHCHECK NONE x"]).unwrap_err(),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --bogus=1 CMD x"]).unwrap_err(),
            "Unknown flag: bogus"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --retries=-1 CMD x"]).unwrap_err(),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --interval=1us CMD x"]).unwrap_err(),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --interval=soon CMD x"]).unwrap_err(),
            "time: invalid duration \"soon\""
        );
        assert_eq!(
            apply(&["HEALTHCHECK CMD"]).unwrap_err(),
            "Missing command after HEALTHCHECK CMD"
        );
        assert_eq!(
            apply(&["HEALTHCHECK RUN x"]).unwrap_err(),
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
        );
    }

    #[test]
    fn onbuild_triggers() {
        let c = apply(&["ONBUILD RUN echo  hi", "onbuild COPY . /src"]).unwrap();
        assert_eq!(c.on_build, strs(&["RUN echo  hi", "COPY . /src"]));
        assert_eq!(
            apply(&["ONBUILD ONBUILD RUN x"]).unwrap_err(),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            apply(&["ONBUILD FROM x"]).unwrap_err(),
            "FROM isn't allowed as an ONBUILD trigger"
        );
    }

    #[test]
    fn dockerfile_syntax() {
        // One change may hold several lines, continuations and comments.
        let c = apply(&[
            "ENV A=1 \\\n    B=2\n# a comment\nLABEL x=y",
            "CMD [\"a\",\\\n \"b\"]",
        ])
        .unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["A=1", "B=2"]);
        assert_eq!(c.labels.unwrap()["x"], "y");
        assert_eq!(c.cmd, strs(&["a", "b"]));
        assert_eq!(apply(&["USER --bad app"]).unwrap_err(), "Unknown flag: bad");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1h2m3.5s").unwrap(), 3_723_500_000_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn words_split_after_expansion() {
        let env = vec!["P=80 443".to_string()];
        assert_eq!(process_words("$P", &env).unwrap(), ["80", "443"]);
        assert_eq!(process_words("\"$P\"", &env).unwrap(), ["80 443"]);
        assert_eq!(process_word("a\\ b", &env).unwrap(), "a b");
    }
}
