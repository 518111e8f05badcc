#!/usr/bin/env bash
# Installs what commitd's build, demo and tests need and the machine lacks.
# Debian packages only; nothing is installed that is already there.
#   scripts/deps.sh            build + run (containerd, runc, protoc, libisal-dev (ISA-L,
#                              gzip), busybox-static)
#   scripts/deps.sh --test     also what the tests drive (skopeo, umoci, registry, python,
#                              Docker Engine 20.10 as the oracle of the differential tests)
#   scripts/deps.sh --bench    what the benchmark needs (Docker Engine, zstd, pigz)
set -euo pipefail

want=(containerd runc protobuf-compiler libisal-dev busybox-static ca-certificates)
if [[ "${1:-}" == "--test" ]]; then
  want+=(skopeo umoci docker-registry python3-venv jq apache2-utils openssl docker.io curl xfsprogs e2fsprogs)
fi
if [[ "${1:-}" == "--bench" ]]; then
  want+=(docker.io zstd pigz python3-venv xfsprogs)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust) is required" >&2; exit 1; }
# The test command checks style and lints.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null || { echo "deps: rustfmt and clippy are required" >&2; exit 1; }
  rustup component add rustfmt clippy
fi
