//! Stage one: the text as a Dockerfile, read as buildkit's `parser.Parse`
//! reads it: parser directives on the first lines (`# escape=`` ` ``,
//! `# syntax=…`, `# check=…`), line continuations with the escape token,
//! comments, heredocs, and each instruction split into its word, its
//! `--flags` and its arguments by the instruction's own line parser (JSON
//! arrays, `name=value` pairs, whitespace lists, …). Errors found here come
//! before any instruction is checked.

use std::sync::LazyLock;

use regex::Regex;

use super::ChangeError;
use super::words::{Env, Lex};

/// One instruction as the parser leaves it (buildkit's `Node`, its
/// arguments flattened as `instructions.nodeArgs` flattens them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// The instruction word as written (`env`, `ENV`).
    pub cmd: String,
    /// Leading `--name[=value]` words.
    pub flags: Vec<String>,
    pub args: Vec<String>,
    /// Written as a JSON array (exec form).
    pub json: bool,
    /// The whole logical line.
    pub original: String,
    /// Heredoc bodies (`RUN <<EOF`), each with its terminator.
    pub heredocs: Vec<(String, String)>,
}

/// The parsed text: its instructions and the escape token in force.
#[derive(Debug)]
pub(super) struct Parsed {
    pub nodes: Vec<Node>,
    pub escape: char,
}

/// bufio.Scanner's limit on one line.
const MAX_LINE: usize = 64 * 1024 - 1;

static WHITESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\t\x0b\x0c\r ]+").expect("static regex"));
static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([a-zA-Z][a-zA-Z0-9]*)[\t\n\x0c\r ]*=[\t\n\x0c\r ]*(.+?)[\t\n\x0c\r ]*$")
        .expect("static regex")
});
static HEREDOC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d*)<<(-?)[\t\n\x0c\r ]*([^<]*)$").expect("static regex"));

/// Parser directives and the escape token (buildkit's `directives` and
/// `DirectiveParser`).
struct Directives {
    escape: char,
    continuation: Regex,
    seen: Vec<String>,
    done: bool,
}

impl Directives {
    fn new() -> Self {
        let mut d = Directives {
            escape: '\\',
            continuation: continuation_regex('\\'),
            seen: Vec::new(),
            done: false,
        };
        d.set_escape("\\")
            .expect("the default escape token is valid");
        d
    }

    fn set_escape(&mut self, s: &str) -> Result<(), ChangeError> {
        if s != "`" && s != "\\" {
            return Err(ChangeError::InvalidEscape(s.to_string()));
        }
        let c = s.chars().next().unwrap_or('\\');
        self.escape = c;
        self.continuation = continuation_regex(c);
        Ok(())
    }

    /// `DirectiveParser.ParseLine`: directives only until the first line
    /// that is not one.
    fn possible_directive(&mut self, line: &str) -> Result<(), ChangeError> {
        if self.done {
            return Ok(());
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(());
        };
        let rest = rest.trim_start();
        let Some(m) = DIRECTIVE.captures(rest) else {
            self.done = true;
            return Ok(());
        };
        let key = m[1].to_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(ChangeError::DuplicateDirective(key));
        }
        self.seen.push(key.clone());
        if key == "escape" {
            self.set_escape(&m[2])?;
        }
        Ok(())
    }

    /// `trimContinuationCharacter`: `(line, ends here)`.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        if self.continuation.is_match(line) {
            (
                self.continuation.replace_all(line, "$1").into_owned(),
                false,
            )
        } else {
            (line.to_string(), true)
        }
    }
}

/// A line ending in the escape token (not itself escaped), then blanks.
fn continuation_regex(escape: char) -> Regex {
    let e = regex::escape(&escape.to_string());
    Regex::new(&format!(r"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")).expect("escape regex")
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// buildkit's `parser.Parse`.
pub(super) fn parse(text: &str) -> Result<Parsed, ChangeError> {
    let mut d = Directives::new();
    let mut nodes = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let mut too_long = false;
    let mut next_line = |too_long: &mut bool| -> Option<&str> {
        let l = lines.next()?;
        if trim_newline(l).len() > MAX_LINE {
            *too_long = true;
            return None;
        }
        Some(l)
    };
    while let Some(raw) = next_line(&mut too_long) {
        let first = process_line(&mut d, raw, true)?;
        let (first, mut end) = d.trim_continuation(&first);
        if end && first.is_empty() {
            continue;
        }
        let mut buf = first;
        while !end {
            let Some(raw) = next_line(&mut too_long) else {
                break;
            };
            let part = process_line(&mut d, raw, false)?;
            if is_comment(raw) || part.trim_start().is_empty() {
                continue;
            }
            let (part, e) = d.trim_continuation(&part);
            buf.push_str(&part);
            end = e;
        }
        let mut node = node_from_line(&buf, &d)?;
        if can_contain_heredoc(&node) && buf.contains("<<") {
            for (name, chomp) in heredocs_from_line(&buf) {
                let mut content = String::new();
                let mut terminated = false;
                while let Some(raw) = next_line(&mut too_long) {
                    let mut candidate = trim_newline(raw);
                    if chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return Err(ChangeError::UnterminatedHeredoc);
                }
                node.heredocs.push((name, content));
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ChangeError::NoInstructions);
    }
    if too_long {
        return Err(ChangeError::LineTooLong(MAX_LINE));
    }
    Ok(Parsed {
        nodes,
        escape: d.escape,
    })
}

/// `processLine`: newline trimmed, leading blanks too on an instruction's
/// first line, directives looked for, comments dropped.
fn process_line(d: &mut Directives, raw: &str, strip_left: bool) -> Result<String, ChangeError> {
    let mut line = trim_newline(raw);
    if strip_left {
        line = line.trim_start();
    }
    d.possible_directive(line)?;
    Ok(if is_comment(line) {
        String::new()
    } else {
        line.to_string()
    })
}

/// Go's `unicode.IsSpace` of a byte taken as a rune (as buildkit's
/// byte-wise loops do).
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// `newNodeFromLine`: the instruction word, flags, and arguments as the
/// instruction's line parser reads them.
fn node_from_line(line: &str, d: &Directives) -> Result<Node, ChangeError> {
    let (cmd, flags, rest) = split_command(line, d);
    let (args, json) = match cmd.to_lowercase().as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(&rest)?,
        "arg" => (parse_words(&rest, d), false),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest)?,
        "env" => (name_val(&rest, "ENV", d)?, false),
        "label" => (name_val(&rest, "LABEL", d)?, false),
        "expose" | "from" => (whitespace_list(&rest), false),
        "healthcheck" => health_config(&rest)?,
        "onbuild" => {
            if rest.is_empty() {
                (Vec::new(), false)
            } else {
                // The trigger's form decides whether a heredoc may follow.
                let child = node_from_line(&rest, d)?;
                let mut args = vec![child.cmd];
                args.extend(child.args);
                (args, child.json)
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                (Vec::new(), false)
            } else {
                (vec![rest.clone()], false)
            }
        }
        // Not an instruction: kept with an empty argument (`parseIgnore`).
        _ => (vec![String::new()], false),
    };
    Ok(Node {
        cmd,
        flags,
        args,
        json,
        original: line.to_string(),
        heredocs: Vec::new(),
    })
}

/// `splitCommand`: `(instruction, flags, arguments)`.
fn split_command(line: &str, d: &Directives) -> (String, Vec<String>, String) {
    let trimmed = line.trim();
    let mut parts = WHITESPACE.splitn(trimmed, 2);
    let cmd = parts.next().unwrap_or("").to_string();
    match parts.next() {
        Some(rest) => {
            let (rest, flags) = extract_flags(rest.as_bytes(), d.escape);
            (cmd, flags, rest.trim().to_string())
        }
        None => (cmd, Vec::new(), String::new()),
    }
}

/// `extractBuilderFlags`, byte by byte as buildkit goes.
fn extract_flags(line: &[u8], escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let rest = |pos: usize| String::from_utf8_lossy(&line[pos..]).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= line.len() {
        let ch = line.get(pos).copied().unwrap_or(0);
        let at_end = pos == line.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == line.len() || line[pos + 1] != b'-' {
                return (rest(pos), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return (String::new(), words);
        }
        match phase {
            Phase::Word => {
                if is_space_byte(ch) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (rest(pos), words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == b'\'' || ch == b'"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                    pos += 1;
                    continue;
                }
                let mut c = ch;
                if u32::from(ch) == escape as u32 {
                    if pos + 1 == line.len() {
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    c = line[pos];
                }
                word.push(char::from(c));
                pos += 1;
            }
            Phase::Quote => {
                if ch == quote {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                let mut c = ch;
                if u32::from(ch) == escape as u32 {
                    if pos + 1 == line.len() {
                        phase = Phase::Word;
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    c = line[pos];
                }
                word.push(char::from(c));
                pos += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    (String::new(), words)
}

/// `parseWords`: whitespace-separated words, quotes and escapes kept (the
/// lexer removes them later).
fn parse_words(rest: &str, d: &Directives) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                }
                if ch == d.escape {
                    if pos + 1 == chars.len() {
                        pos += 1;
                        continue;
                    }
                    word.push(ch);
                    pos += 1;
                    ch = chars[pos];
                }
                word.push(ch);
                pos += 1;
            }
            Phase::Quote => {
                if ch == quote {
                    phase = Phase::Word;
                }
                if ch == d.escape && quote != '\'' {
                    if pos + 1 == chars.len() {
                        phase = Phase::Word;
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    word.push(ch);
                    ch = chars[pos];
                }
                word.push(ch);
                pos += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    words
}

/// `parseNameVal` (ENV, LABEL): `name value…` or `name=value …`, as
/// `[name, value, separator]` triples.
fn name_val(rest: &str, key: &'static str, d: &Directives) -> Result<Vec<String>, ChangeError> {
    let words = parse_words(rest, d);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts: Vec<&str> = WHITESPACE.splitn(rest, 2).collect();
        if parts.len() < 2 {
            return Err(ChangeError::NotTwoArguments(key));
        }
        return Ok(vec![
            parts[0].to_string(),
            parts[1].to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ChangeError::NoEquals(w));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// `parseStringsWhitespaceDelimited`.
fn whitespace_list(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    WHITESPACE.split(rest).map(str::to_string).collect()
}

enum Json {
    Array(Vec<String>),
    NotStrings,
    No,
}

/// `parseJSON`: a JSON array of strings, or not JSON at all.
fn parse_json(rest: &str) -> Json {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Json::No;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Ok(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .map_or(Json::NotStrings, Json::Array),
        Err(_) => Json::No,
    }
}

/// `parseMaybeJSON` (CMD, ENTRYPOINT, RUN, SHELL): exec form, or the rest
/// as one argument.
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

/// `parseMaybeJSONToList` (VOLUME, ADD, COPY).
fn maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), ChangeError> {
    match parse_json(rest) {
        Json::Array(a) => Ok((a, true)),
        Json::NotStrings => Err(ChangeError::NotStringArray),
        Json::No => Ok((whitespace_list(rest), false)),
    }
}

/// `parseHealthConfig`: the type word, then CMD's arguments.
fn health_config(rest: &str) -> Result<(Vec<String>, bool), ChangeError> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|c| is_space_byte(*c)).unwrap_or(b.len());
    let next = b[sep..]
        .iter()
        .position(|c| !is_space_byte(*c))
        .map_or(b.len(), |p| sep + p);
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let (cmd, json) = maybe_json(&String::from_utf8_lossy(&b[next..]))?;
    let mut args = vec![typ];
    args.extend(cmd);
    Ok((args, json))
}

/// Whether a heredoc may follow (`RUN`, `ADD`, `COPY`, also as ONBUILD's
/// trigger), in shell form.
fn can_contain_heredoc(node: &Node) -> bool {
    let cmd = node.cmd.to_lowercase();
    let cmd = if cmd == "onbuild" {
        node.args
            .first()
            .map(|a| a.to_lowercase())
            .unwrap_or_default()
    } else {
        cmd
    };
    matches!(cmd.as_str(), "add" | "copy" | "run") && !node.json
}

/// `heredocsFromLine`: the heredoc words of a line, `(name, chomp)`.
fn heredocs_from_line(line: &str) -> Vec<(String, bool)> {
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let env = Env::default();
    let words = lex.process_words(line, &env).unwrap_or_default();
    let mut out = Vec::new();
    for w in words {
        let Some(m) = HEREDOC.captures(&w) else {
            continue;
        };
        let chomp = &m[2] == "-";
        let rest = &m[3];
        if rest.is_empty() {
            continue;
        }
        let mut plain = Lex::new('\\');
        plain.skip_unset_env = true;
        match plain.process_words(rest, &env) {
            Ok(names) if names.len() == 1 => {
                out.push((names[0].clone(), chomp));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Vec<Node> {
        parse(text).unwrap().nodes
    }

    #[test]
    fn continuations_comments_and_blank_lines() {
        let n = nodes("ENV A=1 \\\n# c\n\n    B=2\n  # comment\nLABEL x=y\n");
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].original, "ENV A=1     B=2");
        assert_eq!(n[0].args, ["A", "1", "=", "B", "2", "="]);
        // An escaped escape token does not continue the line.
        let n = nodes("CMD echo \\\\\nUSER x");
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].args, ["echo \\\\"]);
        assert_eq!(
            parse("# only\n\n").unwrap_err(),
            ChangeError::NoInstructions
        );
    }

    #[test]
    fn escape_directive() {
        let p = parse("# escape=`\nENV A=x`\ny B=c:\\dir").unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.nodes[0].args, ["A", "xy", "=", "B", "c:\\dir", "="]);
        // Only on the first lines.
        let p = parse("ENV A=1\n# escape=`").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(
            parse("# escape=x\nENV A=1").unwrap_err().to_string(),
            "invalid escape token 'x' does not match ` or \\"
        );
        assert_eq!(
            parse("# escape=`\n# escape=\\\nENV A=1")
                .unwrap_err()
                .to_string(),
            "only one escape parser directive can be used"
        );
        let p = parse("# syntax=docker/dockerfile:1\n#escape = `\nENV A=1").unwrap();
        assert_eq!(p.escape, '`');
    }

    #[test]
    fn flags_and_forms() {
        let n = nodes("HEALTHCHECK --interval=5s --timeout=\"1 s\" CMD [\"a\", \"b\"]");
        assert_eq!(n[0].flags, ["--interval=5s", "--timeout=1 s"]);
        assert_eq!(n[0].args, ["CMD", "a", "b"]);
        assert!(n[0].json);
        let n = nodes("ONBUILD RUN echo  hi");
        assert_eq!(n[0].args, ["RUN", "echo  hi"]);
        assert_eq!(
            parse("CMD [1, 2]").unwrap_err().to_string(),
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
        assert_eq!(
            parse("ONBUILD VOLUME [\"a\", 1]").unwrap_err().to_string(),
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
        assert_eq!(nodes("BOGUS x y")[0].args, [""]);
        assert_eq!(
            parse("ENV A").unwrap_err().to_string(),
            "ENV must have two arguments"
        );
    }

    #[test]
    fn heredocs_are_consumed() {
        let n = nodes("ONBUILD RUN <<EOF\necho hi\nEOF\nUSER x");
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0].heredocs,
            [("EOF".to_string(), "echo hi\n".to_string())]
        );
        assert_eq!(
            parse("ONBUILD RUN <<EOF\necho").unwrap_err().to_string(),
            "unterminated heredoc"
        );
    }

    #[test]
    fn long_lines_are_refused() {
        let long = format!("ENV A={}", "x".repeat(70_000));
        assert_eq!(
            parse(&format!("USER x\n{long}")).unwrap_err().to_string(),
            "dockerfile line greater than max allowed size of 65535"
        );
    }
}
