//! Go's ways of printing values in messages: `strconv.Quote` (`%q`, `%#v` of
//! a string) and `strconv.ParseInt`'s errors. Docker's texts embed them.

/// Go's `strconv.Quote`: double quotes, `\"` and `\\` escaped, printable
/// characters kept, the rest as `\a`, `\n`, `\x1b`, `\u00a0`, `\U0001f000`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`, closely: letters, marks, numbers, punctuation,
/// symbols and the ASCII space; not controls, other spaces, format
/// characters, private use or noncharacters.
pub(crate) fn is_print(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f
        | 0xd800..=0xdfff | 0xe000..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff
        | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0xf0000.. )
        && (u & 0xfffe) != 0xfffe
}

/// Why Go's `strconv.ParseInt(s, 10, bits)` refused `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntError {
    Syntax,
    Range,
}

/// Go's `strconv.ParseInt(s, 10, bits)`: an optional sign, decimal digits.
pub(crate) fn parse_int(s: &str, bits: u32) -> Result<i64, IntError> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IntError::Syntax);
    }
    let max: i128 = (1i128 << (bits - 1)) - 1;
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n * 10 + i128::from(b - b'0');
        if n > max + 1 {
            return Err(IntError::Range);
        }
    }
    let n = if neg { -n } else { n };
    if n > max || n < -max - 1 {
        return Err(IntError::Range);
    }
    Ok(n as i64)
}

/// The text of Go's `*strconv.NumError` for `ParseInt`.
pub(crate) fn parse_int_error(s: &str, e: IntError) -> String {
    let why = match e {
        IntError::Syntax => "invalid syntax",
        IntError::Range => "value out of range",
    };
    format!("strconv.ParseInt: parsing {}: {why}", quote(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(quote("\x1b[0m"), r#""\x1b[0m""#);
        assert_eq!(quote("ü ä"), "\"ü ä\"");
        assert_eq!(quote("\u{a0}"), r#""\u00a0""#);
        assert_eq!(quote("${"), r#""${""#);
    }

    #[test]
    fn ints_as_go() {
        assert_eq!(parse_int("+5", 32), Ok(5));
        assert_eq!(parse_int("-2147483648", 32), Ok(-2_147_483_648));
        assert_eq!(parse_int("2147483648", 32), Err(IntError::Range));
        assert_eq!(parse_int("1_0", 32), Err(IntError::Syntax));
        assert_eq!(parse_int("", 32), Err(IntError::Syntax));
        assert_eq!(
            parse_int_error("x", IntError::Syntax),
            r#"strconv.ParseInt: parsing "x": invalid syntax"#
        );
    }
}
