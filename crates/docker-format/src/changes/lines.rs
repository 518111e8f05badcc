//! Stage one: the text as lines of a Dockerfile. Continuations are
//! joined, comments and blank lines dropped (buildkit's parser, escape
//! token `\`); each line is split into its instruction word, its
//! `--flags` and the rest.

use std::collections::BTreeMap;

use super::ChangeError;

/// Joins continuation lines and drops comments and blank lines, as
/// buildkit's parser does (escape token `\`).
pub(super) fn logical_lines(text: &str) -> Vec<String> {
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

pub(super) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// One logical line, split as buildkit's `splitCommand` splits it.
pub(super) struct Line<'a> {
    /// The instruction word as written (`env`, `ENV`).
    pub cmd: &'a str,
    pub flags: Flags,
    /// The arguments after the flags, trimmed.
    pub rest: &'a str,
    /// The whole line (ONBUILD keeps its trigger as written).
    pub original: &'a str,
}

impl<'a> Line<'a> {
    pub(super) fn split(line: &'a str) -> Self {
        let trimmed = line.trim();
        let (cmd, rest) = match trimmed.find(is_ws) {
            Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(is_ws)),
            None => (trimmed, ""),
        };
        let (rest, flags) = extract_flags(rest);
        Self {
            cmd,
            flags: Flags(flags),
            rest: rest.trim(),
            original: line,
        }
    }
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
pub(super) struct Flags(Vec<String>);

impl Flags {
    /// Takes the allowed flags; any other is Docker's `Unknown flag` error.
    pub(super) fn take(&self, allowed: &[&str]) -> Result<BTreeMap<String, String>, ChangeError> {
        let mut out = BTreeMap::new();
        for f in &self.0 {
            let body = &f[2..];
            let (name, value) = body.split_once('=').unwrap_or((body, ""));
            if !allowed.contains(&name) {
                return Err(ChangeError::UnknownFlag(name.to_string()));
            }
            if body.split_once('=').is_none() {
                return Err(ChangeError::FlagWithoutValue(name.to_string()));
            }
            out.insert(name.to_string(), value.to_string());
        }
        Ok(out)
    }
}
