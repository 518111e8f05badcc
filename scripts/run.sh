#!/usr/bin/env bash
# Runs commitd on its embedded default configuration, ready to try:
#  - installs containerd, runc, protoc and busybox-static when missing;
#  - uses the system containerd if one answers on /run/containerd/containerd.sock,
#    else starts a private one under .state/containerd (stopped on exit);
#  - imports a small busybox image and starts a demo container named "demo";
#  - serves the Docker API on /run/commitd/commitd.sock and prints how to try it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh

echo "run: building (release)…" >&2
cargo build --release --locked -q -p commitd -p commitd-testkit
bin=$root/target/release

sock=/run/containerd/containerd.sock
ns=default
private_pid=
if ! ctr -a "$sock" version >/dev/null 2>&1; then
  state=$root/.state/containerd
  sock=$state/containerd.sock
  mkdir -p "$state"
  cat >"$state/config.toml" <<TOML
version = 2
root = "$state/root"
state = "$state/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
TOML
  if ! ctr -a "$sock" version >/dev/null 2>&1; then
    echo "run: starting a private containerd under $state" >&2
    containerd --config "$state/config.toml" >"$state/containerd.log" 2>&1 &
    private_pid=$!
    for _ in $(seq 100); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr -a "$sock" version >/dev/null || { tail "$state/containerd.log"; exit 1; }
  fi
fi
c() { ctr -a "$sock" -n "$ns" "$@"; }

image=docker.io/library/commitd-demo:latest
if ! c images ls -q | grep -qx "$image"; then
  tmp=$(mktemp -d)
  "$bin/commitd-mkimage" "$tmp/demo.tar" --name "$image"
  c images import "$tmp/demo.tar" >/dev/null
  rm -rf "$tmp"
fi
if ! c containers info demo >/dev/null 2>&1; then
  c run -d --label nerdctl/name=demo "$image" demo sh -c 'date > /started; while true; do date >> /clock; sleep 5; done' >/dev/null
fi

cleanup() {
  if [[ -n "$private_pid" ]]; then
    c tasks kill -s KILL demo >/dev/null 2>&1 || true
    sleep 0.3
    c tasks delete demo >/dev/null 2>&1 || true
    c containers delete demo >/dev/null 2>&1 || true
    kill "$private_pid" 2>/dev/null || true
    wait "$private_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

api=/run/commitd/commitd.sock
cat <<MSG

commitd is serving the Docker API on unix://$api (containerd: $sock, namespace: $ns).
A container named "demo" is running. Try, in another shell:

  docker -H unix://$api commit -a you -m "first snapshot" -c 'ENV SNAPSHOT=1' demo demo:snap
  ctr -a $sock images ls
  ctr -a $sock run --rm docker.io/library/demo:snap try sh -c 'cat /started; tail -1 /clock; echo \$SNAPSHOT'
  curl -s --unix-socket $api -X POST 'http://d/commit?container=demo&repo=demo&tag=curl'

Stop with Ctrl-C.
MSG
"$bin/commitd" --containerd "$sock" --namespace "$ns" --socket "$api"
