//! Docker's `filters` query parameter: a JSON object of filter name to
//! values, in either of the two forms Docker accepts
//! (`{"label":["a=b"]}` or the older `{"label":{"a=b":true}}`).

use std::collections::BTreeMap;

use crate::error::ApiError;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the parameter (empty: no filters), accepting only `allowed` names.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut out = BTreeMap::new();
        for (name, values) in obj {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{name}'")));
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
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid filter: values of '{name}' must be strings"
                ))
            })?;
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
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            [] => Ok(None),
            [v] if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            [v] if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            other => Err(ApiError::bad_request(format!(
                "invalid filter '{name}={}'",
                other.join(",")
            ))),
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
                .message,
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
}
