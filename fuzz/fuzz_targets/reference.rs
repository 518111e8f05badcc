//! Image references as the routes read them: `parse_normalized_named`
//! (image routes, push), `repo_tag_reference` (`/commit` and
//! `/images/{name}/tag` `repo`+`tag`), `images::lookup` (what a user typed
//! in an image position) and `familiar_name`.
//!
//! Input: UTF-8 `repo`, optionally followed by a newline and `tag`.

#![no_main]

use docker_format::reference::{
    ImageRef, Named, familiar_name, parse_normalized_named, repo_tag_reference, valid_tag,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (repo, tag) = text.split_once('\n').unwrap_or((text, ""));

    let parsed = parse_normalized_named(repo);
    if let Ok(n) = &parsed {
        check_named(repo, n);
    }
    let _ = familiar_name(repo);

    match repo_tag_reference(repo, tag) {
        Ok(None) => assert!(repo.is_empty()),
        Ok(Some(n)) => {
            assert!(
                parsed.is_ok(),
                "repo_tag_reference accepts what parse refuses: {repo:?}"
            );
            assert!(n.digest.is_none(), "a commit target has no digest");
            let t = n.tag.as_deref().expect("a commit target always has a tag");
            assert!(valid_tag(t), "invalid tag {t:?}");
            if !tag.is_empty() {
                assert_eq!(t, tag);
            }
            assert_eq!(
                parse_normalized_named(&n.full()).as_ref(),
                Ok(&n),
                "re-parse of {:?}",
                n.full()
            );
        }
        Err(_) => assert!(!repo.is_empty()),
    }

    match ImageRef::parse(repo) {
        Ok(ImageRef::Name { name: full, .. }) => {
            let n = parse_normalized_named(&full)
                .unwrap_or_else(|e| panic!("lookup name {full:?}: {e}"));
            assert!(
                n.tag.is_some() || n.digest.is_some(),
                "lookup name without tag or digest: {full:?}"
            );
            assert_eq!(n.full(), full);
        }
        Ok(ImageRef::Id(id)) => {
            let hex = id.strip_prefix("sha256:").expect("an ID is sha256:…");
            assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "ID {id:?}"
            );
        }
        Ok(ImageRef::IdPrefix(p)) => assert!(p.starts_with("sha256:"), "prefix {p:?}"),
        Err(_) => {}
    }
});

fn check_named(input: &str, n: &Named) {
    assert!(
        !n.domain.is_empty() && !n.path.is_empty(),
        "{input:?} → {n:?}"
    );
    assert_eq!(
        n.path,
        n.path.to_lowercase(),
        "upper-case path from {input:?}: {n:?}"
    );
    // The normalized name reads back as itself.
    let full = n.full();
    assert_eq!(
        parse_normalized_named(&full).as_ref(),
        Ok(n),
        "re-parse of {full:?} (from {input:?})"
    );
    assert_eq!(familiar_name(&full), n.familiar());
    // So does the familiar one, except where Docker's own familiar form is
    // ambiguous: a Docker Hub path whose first component reads as a
    // registry (`docker.io/foo.com/x` → `foo.com/x`), or an official image
    // named by 64 hex digits (`docker.io/library/<64 hex>` → `<64 hex>`,
    // refused as an ID-looking name).
    let first = n.path.split('/').next().unwrap_or("");
    let hub_ambiguous =
        n.domain == "docker.io" && (first.contains(['.', ':']) || first == "localhost");
    let familiar = n.familiar();
    let hex_name = familiar.len() == 64
        && familiar
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hub_ambiguous && !hex_name {
        assert_eq!(
            parse_normalized_named(&familiar).as_ref(),
            Ok(n),
            "re-parse of familiar {familiar:?} (from {input:?})"
        );
    }
}
