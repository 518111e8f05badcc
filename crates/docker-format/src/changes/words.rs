//! Stage three: words, as buildkit's shell lexer (`shell.Lex`) makes them:
//! quotes removed, escapes resolved, `$VAR`, `${VAR}` and the `${VAR:-x}`,
//! `${VAR+x}`, `${VAR?msg}`, `${VAR#pat}`, `${VAR%pat}`, `${VAR/pat/rep}`
//! forms expanded against an environment; `process_words` also splits on
//! unquoted whitespace (EXPOSE), with the lexer's own quirks kept (a
//! `${…}` inside a word restarts the word being split, as in Docker).

use std::collections::HashMap;

use crate::go;

/// What the lexer refuses, in buildkit's words (without the
/// `failed to process "…": ` that [`ProcessError`] adds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    SingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    DoubleQuote,
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    Modifier(String),
    #[error("invalid pattern ({pattern}) in substitution: {why}")]
    Pattern { pattern: String, why: String },
    /// `${NAME?message}` of an unset (or, with `:`, empty) variable.
    #[error("{name}: {message}")]
    Unset { name: String, message: String },
}

/// A word the lexer refused: buildkit's `failed to process "word": why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {inner}", go::quote(.word))]
pub struct ProcessError {
    pub word: String,
    pub inner: WordError,
}

/// The variables words are expanded against: `K=V` entries, the last
/// definition of a name winning (buildkit's `EnvsFromSlice`).
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_slice(env: &[String]) -> Self {
        let mut m = HashMap::new();
        for e in env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            m.insert(k.to_string(), v.to_string());
        }
        Env(m)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// buildkit's `ProcessWord` with the default escape token.
pub fn process_word(word: &str, env: &[String]) -> Result<String, ProcessError> {
    Lex::new('\\').process_word(word, &Env::from_slice(env))
}

/// buildkit's `ProcessWords` with the default escape token.
pub fn process_words(word: &str, env: &[String]) -> Result<Vec<String>, ProcessError> {
    Lex::new('\\').process_words(word, &Env::from_slice(env))
}

/// buildkit's `shell.Lex`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lex {
    escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape tokens in the result.
    pub raw_escapes: bool,
    /// Leave unset variables as written (`$X`, `${X}`).
    pub skip_unset_env: bool,
}

impl Lex {
    pub(crate) fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
        }
    }

    pub(crate) fn process_word(&self, word: &str, env: &Env) -> Result<String, ProcessError> {
        self.process(word, env).map(|(w, _)| w)
    }

    pub(crate) fn process_words(&self, word: &str, env: &Env) -> Result<Vec<String>, ProcessError> {
        self.process(word, env).map(|(_, w)| w)
    }

    fn process(&self, word: &str, env: &Env) -> Result<(String, Vec<String>), ProcessError> {
        let mut sw = ShellWord {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            buffer: String::new(),
        };
        sw.stop_on(None, self.raw_escapes)
            .map_err(|inner| ProcessError {
                word: word.to_string(),
                inner,
            })
    }
}

struct ShellWord<'a> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    env: &'a Env,
    raw_escapes: bool,
    /// The word being split, shared by nested `${…}` (buildkit's
    /// `shellWord.wordsBuffer`: a nested expansion resets it).
    buffer: String,
}

/// buildkit's `wordsStruct`, its buffer being [`ShellWord::buffer`].
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn get(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
        self.words
    }
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// `processStopOn`: up to `stop` (consumed) or the end.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), WordError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), WordError> {
        let mut result = String::new();
        self.buffer.clear();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                let w = words.get(&mut self.buffer);
                return Ok((result, w));
            }
            match ch {
                '$' => {
                    let tmp = self.dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&mut self.buffer, &tmp);
                }
                '<' => {
                    let tmp = self.possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buffer, &tmp);
                }
                '\'' => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buffer, &tmp);
                }
                '"' => {
                    let tmp = self.double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buffer, &tmp);
                }
                _ => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(&mut self.buffer, ch);
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(&mut self.buffer, escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(&mut self.buffer, ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(WordError::Unterminated(stop));
        }
        let w = words.get(&mut self.buffer);
        Ok((result, w))
    }

    fn single_quote(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(WordError::SingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(WordError::DoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.next();
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).map(str::to_string)
    }

    /// At a `$`: the expansion.
    fn dollar(&mut self) -> Result<String, WordError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(WordError::MissingBrace),
            Some('{' | '}' | ':') => return Err(WordError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let mut ch = self.next();
        // Go's string(rune(-1)) for the end of input.
        let show = |c: Option<char>| c.unwrap_or('\u{fffd}').to_string();
        let mut chs = show(ch);
        let mut null_is_unset = false;
        if ch == Some(':') {
            null_is_unset = true;
            ch = self.next();
            chs.push_str(&show(ch));
        }
        match ch {
            Some('}') if !null_is_unset => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some('/') if !null_is_unset => self.replace(&name),
            _ if null_is_unset || matches!(ch, Some('+' | '-' | '?' | '#' | '%')) => {
                let raw = matches!(ch, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(WordError::Modifier(chs));
                }
                let word = match self.stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => return Err(WordError::MissingBrace),
                    Err(e) => return Err(e),
                };
                let value = self.lookup(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let empty = value.as_deref() == Some("");
                let value = value.unwrap_or_default();
                match ch {
                    Some('-') => Ok(if !set || (null_is_unset && empty) {
                        word
                    } else {
                        value
                    }),
                    Some('+') => Ok(if !set || (null_is_unset && empty) {
                        String::new()
                    } else {
                        word
                    }),
                    Some('?') => {
                        if !set {
                            let message = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(WordError::Unset { name, message });
                        }
                        if null_is_unset && empty {
                            let message = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(WordError::Unset { name, message });
                        }
                        Ok(value)
                    }
                    Some(c @ ('%' | '#')) => {
                        let (greedy, pattern) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        if c == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(WordError::Modifier(chs)),
                }
            }
            _ => Err(WordError::Modifier(chs)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Result<String, WordError> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => return Err(WordError::MissingSlash),
            Err(e) => return Err(e),
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err(WordError::MissingBrace),
            Err(e) => return Err(e),
        };
        let value = self.lookup(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let re = shell_pattern(&pattern, true, false).map_err(|why| WordError::Pattern {
            pattern: pattern.clone(),
            why,
        })?;
        Ok(if all {
            re.replace_all(&value, replacement.as_str()).into_owned()
        } else {
            match re.find(&value) {
                Some(m) => format!("{}{replacement}{}", &value[..m.start()], &value[m.end()..]),
                None => value,
            }
        })
    }

    /// A variable name: digits, one special parameter, or letters, digits
    /// and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            out.push(c);
            self.next();
        }
        out
    }
}

/// Go's `unicode.IsDigit` (decimal digits).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// Go's `unicode.IsLetter`.
fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

/// buildkit's `convertShellPatternToRegex`: `?` one character, `*` any
/// run (greedy or not), `\` escaping `*`, `?` and `\`.
fn shell_pattern(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, String> {
    let mut out = String::new();
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                out.push('\\');
                let next = chars.next();
                match next {
                    Some(c @ ('*' | '?' | '\\')) => out.push(c),
                    other => {
                        return Err(format!(
                            "invalid escape '\\{}'",
                            other.unwrap_or('\u{fffd}')
                        ));
                    }
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            c => out.push(c),
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, WordError> {
    let re = shell_pattern(pattern, greedy, true).map_err(|why| WordError::Pattern {
        pattern: pattern.to_string(),
        why,
    })?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${x%pat}`: the pattern and the value reversed, then `trim_prefix`.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, WordError> {
    let reversed_pattern = reverse_pattern(pattern);
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed_pattern, &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern, keeping `\x` escapes in order.
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().saturating_sub(1);
    let mut i = 0;
    while i < p.len() {
        let o = last - i;
        if p[i] == '\\' && i != last {
            out[o - 1] = p[i];
            out[o] = p[i + 1];
            i += 2;
        } else {
            out[o] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<String> {
        ["P=80 443", "HOME=/root", "EMPTY=", "F=file.tar.gz", "U"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn word(w: &str) -> Result<String, String> {
        process_word(w, &env()).map_err(|e| e.to_string())
    }

    #[test]
    fn quotes_escapes_and_variables() {
        assert_eq!(word(r#"a\ b"#).unwrap(), "a b");
        assert_eq!(
            word(r#"'$HOME' "$HOME" \$HOME"#).unwrap(),
            "$HOME /root $HOME"
        );
        assert_eq!(word(r#""a\"b\x""#).unwrap(), r#"a"b\x"#);
        assert_eq!(word("${HOME}x$HOME/y").unwrap(), "/rootx/root/y");
        assert_eq!(word("$1 $@ $ x").unwrap(), "  $ x");
        assert_eq!(word("${U-d} ${U:-d} ${NOPE-d}").unwrap(), " d d");
        assert_eq!(
            word("${HOME:+set} ${EMPTY+set} ${EMPTY:+set}").unwrap(),
            "set set "
        );
        assert_eq!(
            word("${F%.*} ${F%%.*} ${F#*.} ${F##*.}").unwrap(),
            "file.tar file tar.gz gz"
        );
        assert_eq!(
            word("${F/a/A} ${F//a/A}").unwrap(),
            "file.tAr.gz file.tAr.gz"
        );
    }

    #[test]
    fn errors_in_buildkits_words() {
        assert_eq!(
            word("${").unwrap_err(),
            "failed to process \"${\": syntax error: missing '}'"
        );
        assert_eq!(
            word("${A").unwrap_err(),
            "failed to process \"${A\": unsupported modifier (\u{fffd}) in substitution"
        );
        assert_eq!(
            word("${:}").unwrap_err(),
            "failed to process \"${:}\": syntax error: bad substitution"
        );
        assert_eq!(
            word("${A:-x").unwrap_err(),
            "failed to process \"${A:-x\": syntax error: missing '}'"
        );
        assert_eq!(
            word("${A!}").unwrap_err(),
            "failed to process \"${A!}\": unsupported modifier (!) in substitution"
        );
        assert_eq!(
            word("${A:#x}").unwrap_err(),
            "failed to process \"${A:#x}\": unsupported modifier (:#) in substitution"
        );
        assert_eq!(
            word("${NOPE?}").unwrap_err(),
            "failed to process \"${NOPE?}\": NOPE: is not allowed to be unset"
        );
        assert_eq!(
            word("${EMPTY:?must}").unwrap_err(),
            "failed to process \"${EMPTY:?must}\": EMPTY: must"
        );
        assert_eq!(
            word("'x").unwrap_err(),
            "failed to process \"'x\": unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            word("${F/a").unwrap_err(),
            "failed to process \"${F/a\": syntax error: missing '/' in ${}"
        );
    }

    #[test]
    fn words_split_after_expansion() {
        let env = env();
        assert_eq!(process_words("$P", &env).unwrap(), ["80", "443"]);
        assert_eq!(process_words("\"$P\"", &env).unwrap(), ["80 443"]);
        assert_eq!(process_words(" a  b ", &env).unwrap(), ["a", "b"]);
        // buildkit's nested expansion restarts the word being split.
        assert_eq!(process_words("ab${NOPE:-c}d", &env).unwrap(), ["cd"]);
    }

    #[test]
    fn another_escape_token() {
        let lex = Lex::new('`');
        let env = Env::from_slice(&env());
        assert_eq!(
            lex.process_word(r"c:\dir `$HOME", &env).unwrap(),
            r"c:\dir $HOME"
        );
    }
}
