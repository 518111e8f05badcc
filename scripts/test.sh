#!/usr/bin/env bash
# Runs every test: unit tests, the engine against a private containerd with
# real runc containers, and the daemon end to end with the real Docker CLI,
# docker-py and bollard. Needs root (containerd, overlay mounts). Each test
# binary starts its own containerd under a temp dir (see crates/testkit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
[[ $(id -u) == 0 ]] || { echo "test: needs root (containerd, runc, overlay mounts)" >&2; exit 1; }

# docker-py and schemathesis, in a venv of their own, at the pinned versions
# (tests/python/requirements.txt); re-made when the pins change.
venv=target/pyenv
pins=tests/python/requirements.txt
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$pins" "$venv/pins.txt" \
  || ! $venv/bin/python -c 'import docker, pytest, schemathesis' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$pins"
  cp "$pins" "$venv/pins.txt"
fi
export COMMITD_TEST_PYTHON=$PWD/$venv/bin/python
export COMMITD_TEST_SCHEMATHESIS=$PWD/$venv/bin/schemathesis
export SCHEMATHESIS_TELEMETRY=false

# Packaging: the Dockerfile and the systemd unit.
bash tests/lint/hadolint.sh
bash tests/lint/systemd.sh
bash tests/lint/kubernetes.sh

# Style and lints hold before anything runs: rustfmt, and clippy with every
# warning an error (the workspace's [workspace.lints] included), for the
# workspace and for the fuzz crate (its own workspace).
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --locked -- -D warnings

cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "$@"

# Fuzz the parsers briefly (cargo-fuzz; builds once into fuzz/target).
bash scripts/fuzz.sh "${COMMITD_FUZZ_SECONDS:-30}"
