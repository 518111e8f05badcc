//! `docker commit --change`: the Dockerfile-instruction parser and its
//! application to a parent config (`docker_format::changes::Changes::apply`,
//! and `merge::commit_config` as `/commit` calls it without a body), plus
//! the word expansion and Go duration parser it uses.
//!
//! Input: UTF-8 text; each line is one `changes` query value (the route
//! joins them with newlines, so this is the same text the parser sees).

#![no_main]

#[path = "common.rs"]
mod common;

use docker_format::changes::Changes;
use docker_format::changes::words::{process_word, process_words};
use docker_format::duration::parse_duration;
use docker_format::image::RunConfig;
use docker_format::merge::{commit_config, merge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let changes = Changes::new(text.split('\n').map(str::to_string).collect());
    // The route refuses more than `Limits::max_changes` (256).
    if changes.len() > 256 {
        return;
    }
    for parent in common::parents() {
        check_changes(&parent, &changes);
        check_words(text, parent.env.as_deref().unwrap_or_default());
    }
    check_duration(text);
});

fn check_changes(parent: &RunConfig, changes: &Changes) {
    let first = changes.apply(parent.clone());
    // `EXPOSE 1-65535` makes 65535 ports, as in Docker: fine once, but it
    // would eat the run if every check below redid it. Large results get
    // the cheap checks only.
    let large = first
        .as_ref()
        .is_ok_and(|c| c.exposed_ports.as_ref().is_some_and(|p| p.len() > 1024));
    if !large {
        // What `/commit` runs without a body: changes, then the merge.
        let committed = commit_config(Some(parent), None, changes);
        match (&first, &committed) {
            (Ok(c), Ok(m)) => {
                assert_eq!(m, &merge(c.clone(), parent));
                common::assert_json_round_trip(c);
                common::assert_json_round_trip(m);
            }
            (Err(e), Err(f)) => assert_eq!(e, f),
            (a, b) => panic!("Changes::apply {a:?} but commit_config {b:?}"),
        }
    }

    let Ok(c) = first else { return };
    // ENV writes `k=v`; the parents' entries all have a `=`.
    for e in c.env.iter().flatten() {
        assert!(e.contains('='), "env entry without '=': {e:?}");
    }
    // EXPOSE gives `port/proto`, port 0..=65535, tcp/udp/sctp.
    let parent_ports = parent.exposed_ports.clone().unwrap_or_default();
    for p in c.exposed_ports.iter().flat_map(|m| m.keys()) {
        if parent_ports.contains_key(p) {
            continue;
        }
        let (port, proto) = p
            .split_once('/')
            .unwrap_or_else(|| panic!("port without proto: {p:?}"));
        assert!(
            port.parse::<u16>().is_ok() && port == port.parse::<u16>().unwrap().to_string(),
            "bad port {p:?}"
        );
        assert!(matches!(proto, "tcp" | "udp" | "sctp"), "bad proto {p:?}");
    }
    // WORKDIR leaves a clean absolute path.
    if c.working_dir != parent.working_dir {
        let w = c
            .working_dir
            .as_deref()
            .expect("WORKDIR does not unset the working dir");
        assert!(w.starts_with('/'), "relative working dir {w:?}");
        assert!(
            w == "/" || !w.ends_with('/'),
            "working dir not clean: {w:?}"
        );
        assert!(
            !w[1..].split('/').any(|s| matches!(s, "" | "." | "..")) || w == "/",
            "working dir not clean: {w:?}"
        );
    }
    // STOPSIGNAL never sets an empty signal.
    if c.stop_signal != parent.stop_signal {
        assert!(!c.stop_signal.as_deref().unwrap_or("").is_empty());
    }
    // HEALTHCHECK: NONE, CMD or CMD-SHELL with a command; durations 0 or ≥ 1ms.
    if c.healthcheck != parent.healthcheck {
        let h = c.healthcheck.as_ref().expect("HEALTHCHECK does not unset");
        let test = h.test.as_deref().unwrap_or_default();
        match test.first().map(String::as_str) {
            Some("NONE") => assert_eq!(test.len(), 1),
            Some("CMD" | "CMD-SHELL") => assert!(test.len() >= 2, "no command: {test:?}"),
            other => panic!("bad healthcheck test kind {other:?}"),
        }
        for d in [h.interval, h.timeout, h.start_period, h.start_interval] {
            assert!(d == 0 || d >= 1_000_000, "healthcheck duration {d}");
        }
        assert!(h.retries >= 0);
    }
}

fn check_words(text: &str, env: &[String]) {
    let word = process_word(text, env);
    let words = process_words(text, env);
    // One lexer: splitting on whitespace never changes whether it fails.
    assert_eq!(word.is_ok(), words.is_ok(), "{word:?} vs {words:?}");
}

fn check_duration(text: &str) {
    let Ok(d) = parse_duration(text) else { return };
    // Exact below 2^53 (the parser sums in f64; see the fuzz README).
    if d.unsigned_abs() < 1 << 53 {
        assert_eq!(parse_duration(&format!("{d}ns")), Ok(d), "{text:?}");
    }
}
