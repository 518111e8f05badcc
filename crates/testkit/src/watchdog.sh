# commitd-testkit watchdog for one private containerd; $1 is its directory
# (this file is copied there and run as `/bin/sh DIR/watchdog.sh DIR`).
#
# Started by the test process with its stdin on a pipe whose only writer is the
# test process. It waits for EOF on that pipe: the test process dropped its
# `Containerd` or exited in any way, SIGKILL included. Then it stops everything
# that was started against the directory and removes it. It runs in its own
# process group, so a Ctrl-C on the test does not stop it half-way.
#
# Processes are picked precisely: containerd by the pid file the test process
# writes (checked against its command line), runc containers by the bundle
# directories under our state dir, shims and stray `ctr` calls by a command line
# naming a path inside our directory.
dir=$1
# Refuse anything but a testkit directory: the patterns below must stay narrow.
case $dir in
/*/commitd-ctd-*) ;;
*) echo "commitd-testkit watchdog: refusing directory '$dir'" >&2; exit 2 ;;
esac
trap '' INT HUP PIPE
cat >/dev/null

tasks=$dir/state/io.containerd.runtime.v2.task

gone() { # PID: no such process, or only a zombie left for its parent to reap
    [ -r "/proc/$1/stat" ] || return 0
    read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 0
    [ "$st" = Z ] || [ "$st" = X ]
}
wait_gone() { # PID TENTHS_OF_A_SECOND
    n=0
    while ! gone "$1" && [ "$n" -lt "$2" ]; do sleep 0.1; n=$((n + 1)); done
    gone "$1"
}

# 1. containerd: SIGTERM, SIGKILL after 10 s.
pid=$(cat "$dir/containerd.pid" 2>/dev/null)
if [ -n "$pid" ] && ! gone "$pid" && grep -qaF -- "$dir/config.toml" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    wait_gone "$pid" 100 || { kill -KILL "$pid" 2>/dev/null; wait_gone "$pid" 50; }
fi

# 2. Containers still there: the runc v2 shim's default runc root is /run/containerd/runc/NS.
for b in "$tasks"/*/*; do
    [ -d "$b" ] || continue
    id=${b##*/}
    ns=${b%/*}
    ns=${ns##*/}
    runc --root "/run/containerd/runc/$ns" delete --force "$id" >/dev/null 2>&1
done

# 3. Shims and anything else started against this directory (grep reads the pattern
#    from stdin so that its own command line does not match it).
pids=
for f in $(printf '%s\n' "$dir/" | grep -laF -f - /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/cmdline}
    [ "$p" = "$$" ] && continue
    kill -KILL "$p" 2>/dev/null && pids="$pids $p"
done
for p in $pids; do wait_gone "$p" 50; done
for b in "$tasks"/*/*; do
    a=$(cat "$b/address" 2>/dev/null)
    a=${a#unix://}
    case $a in /run/containerd/s/*) rm -f "$a" ;; esac
done

# 4. Mounts under the directory (the containers' rootfs), deepest first.
awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done

# 5. Per-namespace leftovers outside the directory, only when empty: runc's state
#    dir and the cgroup parent `ctr` puts containers in (/NS/ID, v1 or v2). `default` is
#    left alone: other containerds use it too.
for n in "$tasks"/*; do
    ns=${n##*/}
    case $ns in '*' | default) continue ;; esac
    rmdir "/run/containerd/runc/$ns" /sys/fs/cgroup/*/"$ns" "/sys/fs/cgroup/$ns" 2>/dev/null
done

rm -rf "$dir"
