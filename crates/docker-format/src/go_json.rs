//! JSON as Go's `encoding/json` reads a request body, for Docker's error
//! texts: the syntax check of `json.Decoder` (its scanner's messages, e.g.
//! `invalid character 'x' looking for beginning of value`), and a cursor to
//! walk a checked value while decoding it into Go-typed fields (whose type
//! errors read `json: cannot unmarshal number into Go struct field …`).

/// Why `json.Decoder.Decode` could not read a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// Nothing but whitespace (`io.EOF`).
    Eof,
    /// The input ends inside the value (`io.ErrUnexpectedEOF`).
    UnexpectedEof,
    /// Go's `*json.SyntaxError` text.
    Syntax(String),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Eof => f.write_str("EOF"),
            ScanError::UnexpectedEof => f.write_str("unexpected EOF"),
            ScanError::Syntax(s) => f.write_str(s),
        }
    }
}

pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Go's `quoteChar`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        c => {
            let q = crate::go::quote(&char::from(c).to_string());
            format!("'{}'", &q[1..q.len() - 1])
        }
    }
}

fn syntax(c: u8, context: &str) -> ScanError {
    ScanError::Syntax(format!("invalid character {} {context}", quote_char(c)))
}

const MAX_DEPTH: usize = 10_000;

/// Scans the first JSON value of `b` as Go's decoder does; returns where
/// it starts and ends.
pub(crate) fn scan_value(b: &[u8]) -> Result<(usize, usize), ScanError> {
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    if i == b.len() {
        return Err(ScanError::Eof);
    }
    let start = i;
    // Open containers: true for an object.
    let mut stack: Vec<bool> = Vec::new();
    loop {
        // A value begins at i.
        let Some(&c) = b.get(i) else {
            return Err(ScanError::UnexpectedEof);
        };
        match c {
            c if is_space(c) => {
                i += 1;
                continue;
            }
            b'{' | b'[' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(syntax(c, "exceeded max depth"));
                }
                let object = c == b'{';
                i += 1;
                i = skip_space(b, i);
                let Some(&n) = b.get(i) else {
                    return Err(ScanError::UnexpectedEof);
                };
                if object {
                    if n == b'}' {
                        i += 1;
                    } else if n == b'"' {
                        stack.push(true);
                        i = scan_string(b, i)?;
                        i = expect_colon(b, i)?;
                        continue;
                    } else {
                        return Err(syntax(n, "looking for beginning of object key string"));
                    }
                } else if n == b']' {
                    i += 1;
                } else {
                    stack.push(false);
                    continue;
                }
            }
            b'"' => i = scan_string(b, i)?,
            b'-' | b'0'..=b'9' => i = scan_number(b, i)?,
            b't' => i = scan_literal(b, i, "true")?,
            b'f' => i = scan_literal(b, i, "false")?,
            b'n' => i = scan_literal(b, i, "null")?,
            c => return Err(syntax(c, "looking for beginning of value")),
        }
        // A value ended at i: what follows it.
        loop {
            let Some(&object) = stack.last() else {
                return Ok((start, i));
            };
            i = skip_space(b, i);
            let Some(&n) = b.get(i) else {
                return Err(ScanError::UnexpectedEof);
            };
            match (object, n) {
                (_, b',') => {
                    i += 1;
                    if object {
                        i = skip_space(b, i);
                        let Some(&k) = b.get(i) else {
                            return Err(ScanError::UnexpectedEof);
                        };
                        if k != b'"' {
                            return Err(syntax(k, "looking for beginning of object key string"));
                        }
                        i = scan_string(b, i)?;
                        i = expect_colon(b, i)?;
                    }
                    break;
                }
                (true, b'}') | (false, b']') => {
                    stack.pop();
                    i += 1;
                }
                (true, n) => return Err(syntax(n, "after object key:value pair")),
                (false, n) => return Err(syntax(n, "after array element")),
            }
        }
    }
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    i
}

fn expect_colon(b: &[u8], i: usize) -> Result<usize, ScanError> {
    let i = skip_space(b, i);
    match b.get(i) {
        None => Err(ScanError::UnexpectedEof),
        Some(b':') => Ok(i + 1),
        Some(&c) => Err(syntax(c, "after object key")),
    }
}

/// A string starting at `i` (the quote); returns the index after it.
fn scan_string(b: &[u8], mut i: usize) -> Result<usize, ScanError> {
    i += 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(ScanError::UnexpectedEof);
        };
        match c {
            b'"' => return Ok(i + 1),
            b'\\' => {
                i += 1;
                let Some(&e) = b.get(i) else {
                    return Err(ScanError::UnexpectedEof);
                };
                match e {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => i += 1,
                    b'u' => {
                        i += 1;
                        for _ in 0..4 {
                            let Some(&h) = b.get(i) else {
                                return Err(ScanError::UnexpectedEof);
                            };
                            if !h.is_ascii_hexdigit() {
                                return Err(syntax(h, "in \\u hexadecimal character escape"));
                            }
                            i += 1;
                        }
                    }
                    e => return Err(syntax(e, "in string escape code")),
                }
            }
            c if c < 0x20 => return Err(syntax(c, "in string literal")),
            _ => i += 1,
        }
    }
}

/// A number starting at `i`; returns the index after it.
fn scan_number(b: &[u8], mut i: usize) -> Result<usize, ScanError> {
    let at = |i: usize| b.get(i).copied();
    if at(i) == Some(b'-') {
        i += 1;
        match at(i) {
            None => return Err(ScanError::UnexpectedEof),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(syntax(c, "in numeric literal")),
        }
    }
    if at(i) == Some(b'0') {
        i += 1;
    } else {
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if at(i) == Some(b'.') {
        i += 1;
        match at(i) {
            None => return Err(ScanError::UnexpectedEof),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(syntax(c, "after decimal point in numeric literal")),
        }
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(at(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match at(i) {
            None => return Err(ScanError::UnexpectedEof),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(syntax(c, "in exponent of numeric literal")),
        }
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    Ok(i)
}

fn scan_literal(b: &[u8], i: usize, word: &str) -> Result<usize, ScanError> {
    for (k, w) in word.bytes().enumerate().skip(1) {
        match b.get(i + k) {
            None => return Err(ScanError::UnexpectedEof),
            Some(&c) if c == w => {}
            Some(&c) => {
                return Err(syntax(
                    c,
                    &format!("in literal {word} (expecting {})", quote_char(w)),
                ));
            }
        }
    }
    Ok(i + word.len())
}

/// The kind of a JSON value, as Go's type errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    pub(crate) fn go_name(self) -> &'static str {
        match self {
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Bool => "bool",
            Kind::Null => "null",
        }
    }
}

/// A cursor over JSON that [`scan_value`] accepted.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        let mut c = Cursor { b, pos: 0 };
        c.ws();
        c
    }

    fn ws(&mut self) {
        self.pos = skip_space(self.b, self.pos);
    }

    pub(crate) fn kind(&self) -> Kind {
        match self.b.get(self.pos) {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// Skips the value at the cursor.
    pub(crate) fn skip(&mut self) {
        let mut depth = 0usize;
        loop {
            self.ws();
            match self.b.get(self.pos) {
                None => return,
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                }
                Some(b',' | b':') => self.pos += 1,
                Some(b'"') => {
                    self.pos = scan_string(self.b, self.pos).unwrap_or(self.b.len());
                }
                Some(_) => {
                    while self.pos < self.b.len()
                        && !matches!(self.b[self.pos], b',' | b'}' | b']' | b':')
                        && !is_space(self.b[self.pos])
                    {
                        self.pos += 1;
                    }
                }
            }
            if depth == 0 {
                self.ws();
                return;
            }
        }
    }

    /// The text of a number or literal at the cursor, consumed.
    pub(crate) fn literal(&mut self) -> &'a str {
        let start = self.pos;
        while self.pos < self.b.len()
            && !matches!(self.b[self.pos], b',' | b'}' | b']')
            && !is_space(self.b[self.pos])
        {
            self.pos += 1;
        }
        let s = std::str::from_utf8(&self.b[start..self.pos]).unwrap_or("");
        self.ws();
        s
    }

    /// The string at the cursor, unescaped (invalid UTF-8 and lone
    /// surrogates become U+FFFD, as in Go), consumed.
    pub(crate) fn string(&mut self) -> String {
        let end = scan_string(self.b, self.pos).unwrap_or(self.b.len());
        let raw = self
            .b
            .get(self.pos + 1..end.saturating_sub(1))
            .unwrap_or_default();
        self.pos = end;
        self.ws();
        let mut out: Vec<u8> = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != b'\\' {
                out.push(raw[i]);
                i += 1;
                continue;
            }
            let e = raw.get(i + 1).copied().unwrap_or(b'\\');
            i += 2;
            let ch = match e {
                b'b' => '\x08',
                b'f' => '\x0c',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hex = |at: usize| {
                        raw.get(at..at + 4)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                    };
                    let Some(u) = hex(i) else { break };
                    i += 4;
                    if (0xd800..0xdc00).contains(&u)
                        && raw.get(i) == Some(&b'\\')
                        && raw.get(i + 1) == Some(&b'u')
                    {
                        if let Some(lo) = hex(i + 2).filter(|l| (0xdc00..0xe000).contains(l)) {
                            i += 6;
                            char::from_u32(0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00))
                                .unwrap_or('\u{fffd}')
                        } else {
                            '\u{fffd}'
                        }
                    } else {
                        char::from_u32(u).unwrap_or('\u{fffd}')
                    }
                }
                other => char::from(other),
            };
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Enters the object at the cursor.
    pub(crate) fn begin_object(&mut self) {
        self.pos += 1;
        self.ws();
    }

    /// The next key of the object being read (the cursor then at its
    /// value), or `None` at its end (consumed).
    pub(crate) fn next_key(&mut self) -> Option<String> {
        self.ws();
        match self.b.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                self.ws();
            }
            Some(b'}') | None => {
                self.pos += 1;
                self.ws();
                return None;
            }
            _ => {}
        }
        let key = self.string();
        self.pos += 1; // ':'
        self.ws();
        Some(key)
    }

    /// Enters the array at the cursor.
    pub(crate) fn begin_array(&mut self) {
        self.pos += 1;
        self.ws();
    }

    /// Whether the array being read has another element (the cursor then
    /// at it); at its end the `]` is consumed.
    pub(crate) fn next_element(&mut self) -> bool {
        self.ws();
        match self.b.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                self.ws();
                true
            }
            Some(b']') | None => {
                self.pos += 1;
                self.ws();
                false
            }
            _ => true,
        }
    }
}

/// Go's `Decoder.More` after a value ending at `end`: more input that is
/// not `]` or `}`.
pub(crate) fn more(b: &[u8], end: usize) -> bool {
    let i = skip_space(b, end);
    b.get(i).is_some_and(|c| *c != b']' && *c != b'}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        scan_value(s.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_in_gos_words() {
        assert_eq!(
            err("{nope"),
            "invalid character 'n' looking for beginning of object key string"
        );
        assert_eq!(
            err("x"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(err("{\"a\" 1}"), "invalid character '1' after object key");
        assert_eq!(
            err("{\"a\":1 \"b\"}"),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err("tru "),
            "invalid character ' ' in literal true (expecting 'e')"
        );
        assert_eq!(err("\"a\nb\""), "invalid character '\\n' in string literal");
        assert_eq!(err("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            err("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
        assert_eq!(err("{"), "unexpected EOF");
        assert_eq!(err("  "), "EOF");
        assert_eq!(
            err("{\"a\":}"),
            "invalid character '}' looking for beginning of value"
        );
    }

    #[test]
    fn values_end_where_go_stops() {
        assert_eq!(scan_value(b" {\"a\":[1,{}]} x").unwrap(), (1, 13));
        assert_eq!(scan_value(b"5x").unwrap(), (0, 1));
        assert!(more(b"{} {}", 2));
        assert!(!more(b"{}]", 2));
    }

    #[test]
    fn cursor_walks_objects() {
        let b = br#"{"a": [1, "x\u00e9\ud83d\ude00"], "b": {"c": null}, "d": 1.5e3}"#;
        let mut c = Cursor::new(b);
        c.begin_object();
        assert_eq!(c.next_key().as_deref(), Some("a"));
        c.begin_array();
        assert!(c.next_element());
        assert_eq!(c.literal(), "1");
        assert!(c.next_element());
        assert_eq!(c.string(), "xé😀");
        assert!(!c.next_element());
        assert_eq!(c.next_key().as_deref(), Some("b"));
        c.skip();
        assert_eq!(c.next_key().as_deref(), Some("d"));
        assert_eq!(c.literal(), "1.5e3");
        assert_eq!(c.next_key(), None);
    }
}
