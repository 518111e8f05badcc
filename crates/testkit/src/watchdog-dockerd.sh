# commitd-testkit watchdog for one private dockerd; $1 is its directory (this file is
# copied there and run as `/bin/sh DIR/watchdog-dockerd.sh DIR`). Same contract as
# watchdog.sh: on EOF of stdin (the test process let go of it or died), stop what was
# started against the directory and remove it.
#
# dockerd (Debian's docker.io 20.10) runs its own containerd with state and socket
# under the exec root, and runc with its root at EXEC/runtime-runc; so after dockerd
# itself every process and container of this engine names a path in the directory.
dir=$1
case $dir in
/*/commitd-dockerd-*) ;;
*) echo "commitd-testkit dockerd watchdog: refusing directory '$dir'" >&2; exit 2 ;;
esac
trap '' INT HUP PIPE
cat >/dev/null

gone() {
    [ -r "/proc/$1/stat" ] || return 0
    read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 0
    [ "$st" = Z ] || [ "$st" = X ]
}
wait_gone() {
    n=0
    while ! gone "$1" && [ "$n" -lt "$2" ]; do sleep 0.1; n=$((n + 1)); done
    gone "$1"
}

# 1. The containers first (SIGKILL through runc): a test's containers hold nothing
#    worth a graceful stop, and dockerd would give each 10 s. Then dockerd: SIGTERM
#    (it cleans up its containers and stops its containerd), SIGKILL after 20 s.
for s in "$dir"/exec/runtime-runc/*/*/state.json; do
    [ -f "$s" ] || continue
    c=${s%/state.json}
    runc --root "${c%/*}" kill --all "${c##*/}" KILL >/dev/null 2>&1
done
pid=$(cat "$dir/dockerd.pid" 2>/dev/null)
if [ -n "$pid" ] && ! gone "$pid" && grep -qaF -- "$dir/" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    wait_gone "$pid" 200 || { kill -KILL "$pid" 2>/dev/null; wait_gone "$pid" 50; }
fi

# 2. Containers still there.
for s in "$dir"/exec/runtime-runc/*/*/state.json; do
    [ -f "$s" ] || continue
    c=${s%/state.json}
    root=${c%/*}
    runc --root "$root" delete --force "${c##*/}" >/dev/null 2>&1
done

# 3. Anything else started against this directory (containerd, shims).
pids=
for f in $(printf '%s\n' "$dir/" | grep -laF -f - /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/cmdline}
    [ "$p" = "$$" ] && continue
    kill -KILL "$p" 2>/dev/null && pids="$pids $p"
done
for p in $pids; do wait_gone "$p" 50; done

# 4. Mounts under the directory, deepest first.
awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done

rm -rf "$dir"
