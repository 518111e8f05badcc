//! What a commit leaves out of its layer (`exclude=`) and the times it
//! records (`timestamp=`): a [`Policy`] over the capture's walk, so the
//! snapshot and the layer agree (the local image is the pulled image).
//!
//! - **Excludes** are globs on container paths (`/tmp/**`,
//!   `/root/.cache/**`, `/var/log/*.log`): `*`, `?` and `[…]` match within
//!   one path component (Go's `path.Match`, as Docker's other filters);
//!   `**` matches any number of components — at the end, at least one, so
//!   `/tmp/**` leaves out what is in `/tmp` but not the directory. A
//!   matching entry is left out of the layer and the snapshot with
//!   everything below it; what the lower layers hold at that path stays.
//! - **Timestamps** (reproducible commits, as buildah's `--timestamp`):
//!   every time the layer records is clamped to the given second, and the
//!   config's and history's `created` are that second. The layer's tar is
//!   already deterministic (entries in byte order of their names, headers
//!   from the entries alone, whiteouts at the epoch), so the same change
//!   committed twice gives the same digests.

use std::collections::HashSet;
use std::sync::Mutex;

use rustix::fs::Stat;

use crate::walk::{Kind, Policy, Time};

/// One `exclude=` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
}

impl Pattern {
    /// Parses an absolute path pattern.
    pub fn parse(s: &str) -> Result<Pattern, crate::OptionError> {
        let invalid = |why| crate::OptionError::Exclude {
            pattern: s.to_string(),
            why,
        };
        let Some(rel) = s.strip_prefix('/') else {
            return Err(invalid("it must be an absolute path in the container"));
        };
        let parts: Vec<String> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        if parts.is_empty() {
            return Err(invalid("it would leave out the whole filesystem"));
        }
        if parts.iter().any(|p| p == "..") {
            return Err(invalid("\"..\" is not allowed"));
        }
        Ok(Pattern { parts })
    }

    /// Whether `path` (below the root, no leading `/`) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let path = String::from_utf8_lossy(path);
        let comps: Vec<&str> = path.split('/').collect();
        match_parts(&self.parts, &comps)
    }
}

fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            // At the end: one component or more; elsewhere: any number.
            let min = usize::from(rest.is_empty());
            (min..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((c, more)) => docker_format::filters::glob_match(p, c) && match_parts(rest, more),
            None => false,
        },
    }
}

/// The commit's choices as a walk policy.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    excludes: Vec<Pattern>,
    clamp: Option<Time>,
    /// Entries left out (each once, however often walked).
    excluded: Mutex<HashSet<Vec<u8>>>,
}

impl Filter {
    pub(crate) fn new(excludes: Vec<Pattern>, timestamp: Option<i64>) -> Filter {
        Filter {
            excludes,
            clamp: timestamp.map(|sec| Time { sec, nsec: 0 }),
            excluded: Mutex::default(),
        }
    }

    /// Whether it changes anything.
    pub(crate) fn is_noop(&self) -> bool {
        self.excludes.is_empty() && self.clamp.is_none()
    }

    /// The time every entry is clamped to.
    pub(crate) fn clamp(&self) -> Option<Time> {
        self.clamp
    }

    /// Whether an entry of a layer tar (its cleaned path) is left out: it
    /// or a directory above it matches. A whiteout (`.wh.NAME`) stands for
    /// NAME, an opaque marker for its directory, as the walk sees them.
    pub(crate) fn leaves_out(&self, tar_path: &[u8]) -> bool {
        let (dir, name) = match tar_path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&tar_path[..i], &tar_path[i + 1..]),
            None => (&b""[..], tar_path),
        };
        let path: Vec<u8> = if name == crate::walk::OPAQUE_MARKER {
            dir.to_vec()
        } else if let Some(real) = name.strip_prefix(crate::walk::WHITEOUT_PREFIX) {
            match dir.is_empty() {
                true => real.to_vec(),
                false => [dir, b"/", real].concat(),
            }
        } else {
            tar_path.to_vec()
        };
        let ends = path
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain([path.len()]);
        for end in ends {
            let prefix = &path[..end];
            if !prefix.is_empty() && self.excludes.iter().any(|p| p.matches(prefix)) {
                if let Ok(mut e) = self.excluded.lock() {
                    e.insert(prefix.to_vec());
                }
                return true;
            }
        }
        false
    }

    /// Entries left out so far (a directory counts once, with what is in it).
    pub(crate) fn excluded(&self) -> u64 {
        self.excluded.lock().map_or(0, |e| e.len() as u64)
    }
}

impl Policy for Filter {
    fn include(&self, path: &[u8], _kind: Kind, _stat: &Stat) -> bool {
        if self.excludes.iter().any(|p| p.matches(path)) {
            if let Ok(mut e) = self.excluded.lock() {
                e.insert(path.to_vec());
            }
            return false;
        }
        true
    }

    fn mtime(&self, _path: &[u8], _stat: &Stat, t: Time) -> Time {
        match self.clamp {
            Some(c) if t > c => c,
            _ => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Pattern::parse(p).unwrap().matches(path.as_bytes())
    }

    #[test]
    fn globs_on_container_paths() {
        assert!(m("/tmp/**", "tmp/a"));
        assert!(m("/tmp/**", "tmp/a/b/c"));
        assert!(!m("/tmp/**", "tmp"), "the directory itself stays");
        assert!(!m("/tmp/**", "tmpx/a"));
        assert!(m("/root/.cache/**", "root/.cache/pip"));
        assert!(m("/var/log/*.log", "var/log/a.log"));
        assert!(!m("/var/log/*.log", "var/log/x/a.log"));
        assert!(m("/**/*.pyc", "a.pyc"));
        assert!(m("/**/*.pyc", "usr/lib/x/a.pyc"));
        assert!(m("/data", "data"));
        assert!(!m("/data", "data/x"), "below: left out with its directory");
        assert!(m("/a/?/c", "a/b/c"));
        assert!(Pattern::parse("tmp/**").is_err());
        assert!(Pattern::parse("/").is_err());
        assert!(Pattern::parse("/a/../b").is_err());
    }

    #[test]
    fn times_are_clamped() {
        let f = Filter::new(vec![], Some(1000));
        let st = rustix::fs::stat("/").unwrap();
        let t = |sec, nsec| Time { sec, nsec };
        assert_eq!(f.mtime(b"x", &st, t(2000, 5)), t(1000, 0));
        assert_eq!(f.mtime(b"x", &st, t(999, 5)), t(999, 5));
    }

    #[test]
    fn tar_paths_left_out_as_the_walk_leaves_them_out() {
        let f = Filter::new(
            vec![
                Pattern::parse("/tmp/**").unwrap(),
                Pattern::parse("/data/*.log").unwrap(),
            ],
            None,
        );
        for p in [
            &b"tmp/a"[..],
            b"tmp/a/b/c",
            b"tmp/.wh.gone",
            b"data/x.log",
            b"data/.wh.y.log",
            b"tmp/d/.wh..wh..opq",
        ] {
            assert!(f.leaves_out(p), "{}", String::from_utf8_lossy(p));
        }
        for p in [
            &b"tmp"[..],
            b"data",
            b"data/x.txt",
            b".wh.tmp",
            b"tmp/.wh..wh..opq",
        ] {
            assert!(!f.leaves_out(p), "{}", String::from_utf8_lossy(p));
        }
        // tmp/a (once), tmp/gone, data/x.log, data/y.log, tmp/d
        assert_eq!(f.excluded(), 5);
    }
}
