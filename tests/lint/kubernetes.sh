#!/usr/bin/env bash
# Validates deploy/kubernetes against Kubernetes' own schemas with PyPI's
# kubernetes-validate (installed into target/ when missing); fails on any
# error, warning or unknown field.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/tools/k8s-venv
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubernetes-validate>=1.30'
fi
files=(deploy/kubernetes/namespace.yaml deploy/kubernetes/configmap.yaml deploy/kubernetes/daemonset.yaml)
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30 "${files[@]}"
# The embedded config must be one commitd accepts.
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
python3 - "$cfg" <<'PY'
import sys, re
text = open("deploy/kubernetes/configmap.yaml").read()
body = text.split("commitd.toml: |\n", 1)[1]
open(sys.argv[1], "w").write("\n".join(l[4:] for l in body.splitlines()) + "\n")
PY
cargo run -q -p commitd -- --config "$cfg" --print-config >/dev/null
echo "kubernetes: deploy/kubernetes validated"
