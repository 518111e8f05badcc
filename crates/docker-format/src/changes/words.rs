//! Stage three: words. buildkit's `parseWords` splits an instruction's
//! arguments (quotes kept); its shell lexer (`ProcessWord`/`ProcessWords`)
//! removes quotes, resolves escapes and expands `$VAR` against the
//! config's `Env` where the builder expands.

/// A word the lexer refuses, with buildkit's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    SingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    DoubleQuote,
    #[error("bad substitution")]
    BadSubstitution,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("unsupported modifier ({0}) in substitution")]
    Modifier(char),
    /// `${NAME:?message}` of an unset variable.
    #[error("{name}: {message}")]
    Unset { name: String, message: String },
}

fn err<T>(e: WordError) -> Result<T, WordError> {
    Err(e)
}

/// buildkit's `parseWords`: whitespace-separated words, quotes kept (they
/// are removed by the word processing later).
pub(super) fn parse_words(rest: &str) -> Vec<String> {
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

/// buildkit's `shell.Lex.ProcessWord`: quotes removed, escapes resolved,
/// `$VAR`/`${VAR}` and `${VAR:-x}` `${VAR-x}` `${VAR:+x}` `${VAR+x}`
/// `${VAR:?msg}` `${VAR?msg}` expanded from `env`.
pub fn process_word(word: &str, env: &[String]) -> Result<String, WordError> {
    Ok(Lexer::new(word, env).run(false)?.concat())
}

/// `ProcessWords`: like [`process_word`], but unquoted whitespace (also
/// from expansions) separates words.
pub fn process_words(word: &str, env: &[String]) -> Result<Vec<String>, WordError> {
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

    fn run(&mut self, split: bool) -> Result<Vec<String>, WordError> {
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
                                return err(WordError::SingleQuote);
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
                                return err(WordError::DoubleQuote);
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
    fn dollar(&mut self) -> Result<String, WordError> {
        self.pos += 1;
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return err(WordError::BadSubstitution);
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
                            return err(WordError::MissingBrace);
                        };
                        if !matches!(op, '-' | '+' | '?') {
                            return err(WordError::Modifier(op));
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
                                    let message = if word.is_empty() {
                                        "is not allowed to be unset".to_string()
                                    } else {
                                        word
                                    };
                                    err(WordError::Unset { name, message })
                                }
                            }
                        }
                    }
                    Some(c) => err(WordError::Modifier(c)),
                    None => err(WordError::MissingBrace),
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
    fn until_brace(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return err(WordError::MissingBrace),
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

    #[test]
    fn words_split_after_expansion() {
        let env = vec!["P=80 443".to_string()];
        assert_eq!(process_words("$P", &env).unwrap(), ["80", "443"]);
        assert_eq!(process_words("\"$P\"", &env).unwrap(), ["80 443"]);
        assert_eq!(process_word("a\\ b", &env).unwrap(), "a b");
    }
}
