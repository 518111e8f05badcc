#!/usr/bin/env bash
# The benchmark: commitd side by side with containerd's own diff service
# and `docker commit` (Debian's docker.io engine, started privately), on the
# same change sets, in one run. Writes bench/results.md and bench/results.svg.
#   bash scripts/bench.sh                 # every row, ~27 min on 2 cores (see below)
#   BENCH_REPS=1 bash scripts/bench.sh    # at most 1 repetition per row
#   BENCH_SETS=200m,50k-in-500-dirs-by-container bash scripts/bench.sh   # only these rows
#   BENCH_LOG=commit_engine=debug bash scripts/bench.sh   # daemons' logs kept in /tmp/commitd-bench-logs
# Rows (repetitions): empty (7), 100x4k (7), 200m (3), 200m-by-container (3),
# 1g (2), 1g-by-container (1), 100x4k-on-100k-base (3), 4k-on-1m-base (1),
# 50k-in-500-dirs (3), 50k-in-500-dirs-by-container (2),
# 10g-5000-files-by-container (1), 200m-on-xfs (2), 1g-on-xfs (1),
# 200m-commit-push (3: commit + push to a local registry, beside docker's).
# `…-by-container`: written by the container's own process, committed at once,
# unsynced; `…-on-xfs`: a second containerd rooted on a loop-mounted XFS with
# reflink=1; the other rows' containerd and Docker's engine on a loop-mounted
# ext4 made for the run with mkfs.ext4's defaults (BENCH_FS=tmpdir: in $TMPDIR
# instead; this machine's root ext4 has no journal, where inode allocation
# scans past recently freed inodes and file-heavy rows varied 2-7x). Huge rows leave out the slowest peers and say so in the report;
# the report ends with each row's time. Needs ~40 GB free for the 10 GiB row
# (the container's 10 GiB, its copy and a 10 GiB uncompressed layer at once;
# 38 GB were in use at the peak of the last run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench
[[ $(id -u) == 0 ]] || { echo "bench: needs root" >&2; exit 1; }
cargo build --release --locked -q -p commitd-e2e --bins
exec target/release/commitd-bench bench
