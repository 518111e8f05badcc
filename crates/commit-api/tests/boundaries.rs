#![allow(clippy::unwrap_used)]
//! The crate boundaries ARCHITECTURE.md states, held by the manifests the
//! compiler builds from: a crate cannot name what it does not depend on.

use std::path::Path;

/// The names under a manifest's `[dependencies]` table.
fn dependencies(crate_dir: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join(crate_dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("");
            names.push(name.trim().to_string());
        }
    }
    assert!(!names.is_empty(), "no [dependencies] in {path:?}");
    names
}

fn refuses(crate_dir: &str, forbidden: &[&str], why: &str) {
    let deps = dependencies(crate_dir);
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect();
    assert!(found.is_empty(), "{crate_dir} depends on {found:?}: {why}");
}

#[test]
fn commit_api_names_no_containerd_type() {
    // The engine re-exports neither (see its lib.rs), so commit-api cannot
    // reach containerd's gRPC types at all.
    refuses(
        "crates/commit-api",
        &[
            "containerd-client",
            "tonic",
            "prost",
            "prost-types",
            "oci-client",
        ],
        "only commit-engine speaks containerd's gRPC and registries",
    );
    let engine = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../commit-engine/src/lib.rs"),
    )
    .unwrap();
    for reexport in ["pub use containerd_client", "pub use tonic"] {
        assert!(
            !engine.contains(reexport),
            "commit-engine re-exports gRPC: {reexport}"
        );
    }
}

#[test]
fn docker_format_is_pure() {
    refuses(
        "crates/docker-format",
        &[
            "tokio",
            "futures",
            "tonic",
            "containerd-client",
            "axum",
            "hyper",
            "hyper-util",
            "http",
            "oci-client",
            "commit-engine",
            "commit-api",
        ],
        "docker-format does no I/O and knows no runtime, gRPC or HTTP",
    );
}

#[test]
fn the_engine_knows_no_http_api() {
    refuses(
        "crates/commit-engine",
        &["axum", "tower-http", "commit-api", "http-body-util"],
        "commit-engine knows nothing of Docker's HTTP API",
    );
}

#[test]
fn fuzzing_builds_only_the_formats() {
    let deps = dependencies("fuzz");
    let mut deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    deps.sort_unstable();
    assert_eq!(deps, ["docker-format", "libfuzzer-sys", "serde_json"]);
}

/// The top-level bullet of ARCHITECTURE.md's codemap that starts with
/// `` - `head` ``, up to the next one (or the next heading).
fn codemap_section<'a>(map: &'a str, head: &str) -> &'a str {
    let start = map
        .find(&format!("\n- `{head}`"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md's codemap has no bullet for `{head}`"));
    let rest = &map[start + 1..];
    let end = [rest.find("\n- `"), rest.find("\n## ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every `.rs` file under `dir`, but binaries' (`bin/`).
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of every source file under `src` (a crate's `src`) that name
/// one of `words`, as `path:line: text`.
fn naming(src: &str, words: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    sources(&root.join(src), &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if words.iter().any(|w| line.contains(w)) {
                out.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn commit_api_source_names_no_grpc_or_registry_type() {
    // The manifests already keep these crates out; this holds the source
    // to it too, so a path through a re-export or a copied type name shows.
    let found = naming(
        "crates/commit-api/src",
        &["containerd_client", "tonic", "prost", "oci_client"],
    );
    assert!(
        found.is_empty(),
        "commit-api is HTTP only, but names containerd's gRPC or a registry client:\n{}",
        found.join("\n")
    );
}

#[test]
fn commit_api_reads_no_runtime_label() {
    // What containerd, nerdctl and the CRI plugin mean by their labels and
    // annotations the engine reads into its container view (restart
    // policy, networks, pod sandbox, name); commit-api only presents it.
    let found = naming(
        "crates/commit-api/src",
        &[
            "\"containerd.io/",
            "\"nerdctl/",
            "\"io.kubernetes.",
            "\"io.cri-containerd.",
        ],
    );
    assert!(
        found.is_empty(),
        "commit-api reads a runtime's label or annotation by name:\n{}",
        found.join("\n")
    );
}

#[test]
fn commit_api_answers_docker_json_from_views() {
    // Docker's JSON is written by `views/`' `Serialize` structs; a `json!`
    // value is for unit tests only (after a file's `#[cfg(test)]`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    sources(&root.join("crates/commit-api/src"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.contains("json!") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "commit-api builds Docker JSON with json! instead of a views/ struct:\n{}",
        found.join("\n")
    );
}

#[test]
fn docker_format_source_does_no_io() {
    let found = naming(
        "crates/docker-format/src",
        &[
            "std::fs",
            "File::open",
            "File::create",
            "TcpStream",
            "UnixStream",
            "std::process",
            "tokio",
            "async fn",
        ],
    );
    assert!(
        found.is_empty(),
        "docker-format is pure, but does I/O:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_codemap_names_every_module() {
    // Each crate's modules are named in its own bullet: a file `x.rs` as
    // `x`, `x.rs` or a path ending in it; a folder module (`x/mod.rs`) as
    // `x/`. Crate roots (`lib.rs`, `main.rs`) are the bullet itself.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for (head, src) in [
        ("crates/docker-format", "crates/docker-format/src"),
        ("crates/commit-engine", "crates/commit-engine/src"),
        ("crates/commit-api", "crates/commit-api/src"),
        ("crates/commitd", "crates/commitd/src"),
        ("crates/testkit", "crates/testkit/src"),
        ("tests/", "tests/src"),
    ] {
        let section = codemap_section(&map, head);
        let mut files = Vec::new();
        sources(&root.join(src), &mut files);
        for file in files {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let name = match stem.as_str() {
                "lib" | "main" => continue,
                "mod" => {
                    let dir = file.parent().unwrap().file_name().unwrap();
                    format!("{}/", dir.to_string_lossy())
                }
                _ => stem,
            };
            let named = [
                format!("`{name}`"),
                format!("`{name}.rs`"),
                format!("/{name}`"),
                format!("/{name}.rs`"),
                format!("`{name}/`"),
            ]
            .iter()
            .any(|form| section.contains(form.as_str()))
                || (name.ends_with('/') && section.contains(&format!("/{name}`")));
            if !named {
                missing.push(format!("{head}: {name} ({})", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules the codemap in ARCHITECTURE.md does not name:\n{}",
        missing.join("\n")
    );
}
