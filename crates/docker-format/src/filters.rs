//! Docker's `filters` query parameter: a JSON object of filter name to
//! values, in either of the two forms Docker accepts
//! (`{"label":["a=b"]}` or the older `{"label":{"a=b":true}}`).

use std::collections::BTreeMap;

use crate::ports::PortError;

/// A filter Docker would refuse, with Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid filter: {0}")]
    Json(String),
    #[error("invalid filter: not a JSON object")]
    NotAnObject,
    #[error("invalid filter '{0}'")]
    Unknown(String),
    #[error("invalid filter: values of '{0}' must be strings")]
    NotStrings(String),
    #[error("invalid filter '{name}={value}'")]
    Value { name: String, value: String },
    #[error("invalid filter '{name}={value}': {reason}")]
    ValueBecause {
        name: String,
        value: String,
        reason: String,
    },
    #[error("invalid filter '{0}': only one value")]
    OnlyOne(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the parameter (empty: no filters), accepting only `allowed` names.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Self, FilterError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| FilterError::Json(e.to_string()))?;
        let obj = value.as_object().ok_or(FilterError::NotAnObject)?;
        let mut out = BTreeMap::new();
        for (name, values) in obj {
            if !allowed.contains(&name.as_str()) {
                return Err(FilterError::Unknown(name.clone()));
            }
            let list: Vec<String> = match values {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>(),
                serde_json::Value::Object(m) => Some(
                    m.iter()
                        .filter(|(_, on)| on.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect(),
                ),
                _ => None,
            }
            .ok_or_else(|| FilterError::NotStrings(name.clone()))?;
            out.insert(name.clone(), list);
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Docker's `filters.Args.MatchKVList`: every `key` or `key=value` of
    /// the filter matches `labels`.
    pub fn labels_match(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.get(name).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(f.as_str()),
        })
    }

    /// A boolean filter (`dangling=true`): `None` when absent.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, FilterError> {
        match self.get(name) {
            [] => Ok(None),
            [v] if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            [v] if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            other => Err(FilterError::Value {
                name: name.to_string(),
                value: other.join(","),
            }),
        }
    }
}

/// Go's `path.Match` for the shell patterns Docker's `reference` filter
/// uses: `*` (not across `/`), `?`, `[…]` classes and `\` escapes.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(&p[1..], &t[i..])),
            Some('?') => t.first().is_some_and(|&c| c != '/') && go(&p[1..], &t[1..]),
            Some('[') => {
                let Some(&c) = t.first() else { return false };
                let mut i = 1;
                let negate = p.get(1) == Some(&'^');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
                        if p[i] <= c && c <= p[i + 2] {
                            matched = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == c {
                            matched = true;
                        }
                        i += 1;
                    }
                }
                i < p.len() && matched != negate && go(&p[i + 1..], &t[1..])
            }
            Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&p[2..], &t[1..]),
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// A `name` filter value of `docker ps`: Go's regexp (RE2 syntax, which
/// the `regex` crate shares), matched unanchored against the name with and
/// without its leading `/`. A pattern that does not compile matches only
/// itself exactly, as in Docker (which ignores the match error).
#[derive(Debug, Clone)]
pub struct NamePattern {
    text: String,
    re: Option<regex::Regex>,
}

/// Compiled size a user's pattern may take (its program, not the names).
const NAME_PATTERN_LIMIT: usize = 1 << 20;

impl NamePattern {
    pub fn new(pattern: &str) -> Self {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(NAME_PATTERN_LIMIT)
            .build()
            .ok();
        Self {
            text: pattern.to_string(),
            re,
        }
    }

    /// Whether a container named `name` (without `/`) matches.
    pub fn matches(&self, name: &str) -> bool {
        let slashed = format!("/{name}");
        self.text == name
            || self.text == slashed
            || self
                .re
                .as_ref()
                .is_some_and(|re| re.is_match(&slashed) || re.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let a = Filters::parse(
            r#"{"label":["a=b","c"],"dangling":["true"]}"#,
            &["label", "dangling"],
        )
        .unwrap();
        let b = Filters::parse(
            r#"{"label":{"a=b":true,"c":true},"dangling":{"true":true}}"#,
            &["label", "dangling"],
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.bool("dangling").unwrap(), Some(true));
        let labels = BTreeMap::from([
            ("a".to_string(), "b".to_string()),
            ("c".to_string(), String::new()),
        ]);
        assert!(a.labels_match("label", &labels));
        assert!(!a.labels_match("label", &BTreeMap::new()));
    }

    #[test]
    fn bad_filters_are_400() {
        assert_eq!(
            Filters::parse(r#"{"nope":["x"]}"#, &["label"])
                .unwrap_err()
                .to_string(),
            "invalid filter 'nope'"
        );
        assert!(Filters::parse("{", &["label"]).is_err());
        assert!(Filters::parse(r#"{"label":[1]}"#, &["label"]).is_err());
        assert!(Filters::parse("", &[]).unwrap().get("x").is_empty());
    }

    #[test]
    fn globs_match_like_go() {
        assert!(glob_match("app*", "app:latest"));
        assert!(glob_match("acc/*", "acc/one"));
        assert!(!glob_match("*", "acc/one"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("busybox", "busybox"));
        assert!(!glob_match("busy", "busybox"));
    }

    #[test]
    fn names_match_like_go_regexps() {
        let m = |p: &str, name: &str| NamePattern::new(p).matches(name);
        assert!(m("web", "my-web-1"));
        assert!(m("^/web$", "web"));
        assert!(m("^web$", "web"));
        assert!(!m("^web$", "webs"));
        assert!(m("w.b", "wxb"));
        assert!(m("^a[0-9]+$", "a123"));
        assert!(!m("^a[^0-9]+$", "a123"));
        assert!(m("^(web|api)-\\d{1,2}$", "api-12"));
        assert!(!m("^(web|api)-\\d{1,2}$", "api-123"));
        assert!(m("colou?r", "color"));
        assert!(m("", "anything"));
        // Flags, as Go's regexp has them.
        assert!(m("(?i)web", "WEB"));
        // Not a regexp: only the text itself.
        assert!(!m("(", "x"));
        assert!(m("(", "("));
        // Linear time: no budget needed.
        let long = format!("{}b", "a".repeat(64));
        assert!(!m("^(a+)+$", &long));
    }
}
