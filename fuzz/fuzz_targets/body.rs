//! The `/commit` request body: `body::decode_body` (Docker's `ReadJSON` of
//! a `container.Config`), its conversion to the image's run config, and
//! the merge into a parent config (`merge::merge`, `merge::commit_config`)
//! with optional `changes`.
//!
//! Input: the body bytes, optionally followed by a 0xFF byte (never in
//! UTF-8, so never in a JSON body) and newline-separated `changes`.

#![no_main]

#[path = "common.rs"]
mod common;

use docker_format::body::{BodyError, decode_body};
use docker_format::changes::Changes;
use docker_format::image::RunConfig;
use docker_format::merge::{commit_config, merge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (body, changes) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let changes = Changes::new(
        changes
            .and_then(|c| std::str::from_utf8(c).ok())
            .filter(|c| !c.is_empty())
            .map(|c| c.split('\n').take(256).map(str::to_string).collect())
            .unwrap_or_default(),
    );

    let config = match decode_body(body) {
        Ok(None) => return,
        Ok(Some(c)) => c,
        Err(e) => {
            // Docker's texts.
            let text = e.to_string();
            match e {
                BodyError::InvalidJson(_) => {
                    assert!(text.starts_with("invalid JSON: "), "{text:?}")
                }
                BodyError::TrailingContent => assert_eq!(text, "unexpected content after JSON"),
            }
            return;
        }
    };
    let user: RunConfig = config.into();
    assert!(
        user.extra.is_empty(),
        "a body adds no unmodelled image fields"
    );
    common::assert_json_round_trip(&user);

    // The run config, written as a body, decodes to itself.
    let json = serde_json::to_vec(&user).expect("serializes");
    match decode_body(&json) {
        Ok(None) => assert_eq!(
            user,
            RunConfig::default(),
            "{}",
            String::from_utf8_lossy(&json)
        ),
        Ok(Some(c)) => assert_eq!(
            RunConfig::from(c),
            user,
            "{}",
            String::from_utf8_lossy(&json)
        ),
        Err(e) => panic!("own JSON refused: {e}: {}", String::from_utf8_lossy(&json)),
    }

    // With nothing of its own, a commit takes the parent's merged fields.
    let from_empty = merge(RunConfig::default(), &user);
    assert_eq!(
        from_empty,
        RunConfig {
            on_build: None,
            shell: None,
            args_escaped: None,
            extra: Default::default(),
            ..user.clone()
        }
    );

    for parent in common::parents() {
        let merged = merge(user.clone(), &parent);
        assert_eq!(
            commit_config(Some(&parent), Some(user.clone()), &Changes::default()).as_ref(),
            Ok(&merged)
        );
        check_merge(&user, &parent, &merged);
        common::assert_json_round_trip(&merged);
        if !changes.is_empty()
            && let Ok(c) = commit_config(Some(&parent), Some(user.clone()), &changes)
        {
            common::assert_json_round_trip(&c);
        }
    }
});

/// moby's `merge`: what the body set is kept, the parent fills the rest.
fn check_merge(user: &RunConfig, parent: &RunConfig, merged: &RunConfig) {
    for (mine, out) in [
        (&user.user, &merged.user),
        (&user.working_dir, &merged.working_dir),
        (&user.stop_signal, &merged.stop_signal),
    ] {
        if !mine.as_deref().unwrap_or("").is_empty() {
            assert_eq!(mine, out);
        }
    }
    // Env: the body's entries first, in order, then the parent's other keys.
    let out_env = merged.env.clone().unwrap_or_default();
    let my_env = user.env.clone().unwrap_or_default();
    assert!(
        out_env.starts_with(&my_env),
        "{my_env:?} not a prefix of {out_env:?}"
    );
    for e in parent.env.iter().flatten() {
        let k = common::env_key(e);
        assert!(
            out_env.iter().any(|o| common::env_key(o) == k),
            "parent env {k:?} lost"
        );
    }
    // Labels: the body's win, the parent's are all there.
    let out_labels = merged.labels.clone().unwrap_or_default();
    for (k, v) in user.labels.iter().flatten() {
        assert_eq!(out_labels.get(k), Some(v));
    }
    for k in parent.labels.iter().flat_map(|l| l.keys()) {
        assert!(out_labels.contains_key(k), "parent label {k:?} lost");
    }
    // Ports and volumes: union.
    for (mine, theirs, out) in [
        (
            &user.exposed_ports,
            &parent.exposed_ports,
            &merged.exposed_ports,
        ),
        (&user.volumes, &parent.volumes, &merged.volumes),
    ] {
        for k in mine.iter().chain(theirs).flat_map(|m| m.keys()) {
            assert!(
                out.as_ref().is_some_and(|o| o.contains_key(k)),
                "{k:?} lost in merge"
            );
        }
    }
    // A body entrypoint keeps the body's cmd.
    if user.entrypoint.as_ref().is_some_and(|e| !e.is_empty()) {
        assert_eq!(
            (&merged.entrypoint, &merged.cmd),
            (&user.entrypoint, &user.cmd)
        );
    }
}
