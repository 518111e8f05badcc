#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd with `systemd-analyze verify`;
# anything it reports (errors, and warnings such as unknown keys or invalid
# values, which it prints but does not fail on) fails. Installs Debian's
# systemd package when systemd-analyze is missing (the check never skips).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd: installing systemd for systemd-analyze" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

# verify insists that ExecStart's binary exists: point the units at a stub
# (same file names, so unit names and references stay as they are).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$work/commitd"
chmod 0755 "$work/commitd"

status=0
shopt -s nullglob
units=(deploy/systemd/*.service deploy/systemd/*.socket)
((${#units[@]})) || { echo "systemd: no units in deploy/systemd" >&2; exit 1; }
for unit in "${units[@]}"; do
  sed "s|/usr/local/bin/commitd|$work/commitd|g" "$unit" >"$work/$(basename "$unit")"
done
for unit in "${units[@]}"; do
  copy=$work/$(basename "$unit")
  if ! out=$(systemd-analyze verify --man=no "$copy" 2>&1) || [[ -n $out ]]; then
    echo "systemd: $unit:" >&2
    printf '%s\n' "${out//$work\//deploy/systemd/}" >&2
    status=1
  else
    echo "systemd: $unit verified"
  fi
done
exit "$status"
