#!/usr/bin/env bash
# The benchmark: commitd side by side with containerd's own diff service
# and `docker commit` (Debian's docker.io engine, started privately), on the
# same change sets, in one run. Writes bench/results.md and bench/results.svg.
#   bash scripts/bench.sh            # 5 runs per cell (3 for the 1 GiB set)
#   BENCH_REPS=3 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench
[[ $(id -u) == 0 ]] || { echo "bench: needs root" >&2; exit 1; }
cargo build --release --locked -q -p commitd-e2e --bins
exec target/release/commitd-bench bench
