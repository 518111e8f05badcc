#!/usr/bin/env bash
# Fuzzes commitd's parsers with cargo-fuzz (libFuzzer + AddressSanitizer):
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: changes reference body; see fuzz/README.md)
# for SECONDS (default 60) and prints, per target, the runs executed, the
# seconds fuzzed and the crashes found. Exits non-zero if any target
# crashed (the input is in fuzz/artifacts/<target>/). Installs cargo-fuzz
# if it is missing. Needs no nightly: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take cargo-fuzz's -Z flags. Builds go to fuzz/target; the
# corpus a run grows is kept in fuzz/target/corpus/<target> (the seeds in
# fuzz/corpus/<target> are only read).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-60}
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(changes reference body)

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$root/fuzz/target"
# A fuzz build is its own workspace: keep rustflags meant for the main one out.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  t0=$SECONDS
  cargo install --locked cargo-fuzz
  echo "== cargo-fuzz installed in $(( SECONDS - t0 ))s"
fi
echo "== $(cargo fuzz --version), $(rustc --version)"

echo "== building ${targets[*]}"
t0=$SECONDS
if [[ $# -eq 0 ]]; then
  cargo fuzz build --fuzz-dir "$root/fuzz"   # every target in one cargo run
else
  for t in "${targets[@]}"; do cargo fuzz build --fuzz-dir "$root/fuzz" "$t"; done
fi
echo "== built in $(( SECONDS - t0 ))s"
bin="$root/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

mkdir -p "$root/fuzz/target/logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  work="$root/fuzz/target/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  log="$root/fuzz/target/logs/$t.log"
  mkdir -p "$work" "$artifacts"
  before=$(find "$artifacts" -type f | sort)
  echo "== fuzzing $t for ${secs}s (log: ${log#"$root"/})"
  t0=$SECONDS
  set +e
  # The binary the build above made (as `cargo fuzz run` runs it, without
  # its rebuild: every target fuzzes the same build).
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0} "$bin/$t" \
    -artifact_prefix="$artifacts/" -max_total_time="$secs" -timeout=25 -max_len=4096 \
    -print_final_stats=1 -dict="$root/fuzz/dict/$t.dict" "$work" "$root/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  took=$(( SECONDS - t0 ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [[ -n $runs ]] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '^$' || true)
  crashes=$(grep -c . <<<"$new" || true)
  if [[ $rc -ne 0 || $crashes -gt 0 ]]; then
    failed=1
    echo "!! $t: exit $rc"
    grep -E "panicked at|^==[0-9]+==ERROR|SUMMARY:|Test unit written|ALARM: working on the last Unit" -A2 "$log" | head -30 || true
    [[ -n $new ]] && echo "$new" | sed 's/^/   input: /'
    [[ $crashes -gt 0 ]] || crashes="? (exit $rc, see log)"
  fi
  summary+=("$(printf '%-10s runs=%-10s seconds=%-5s crashes=%s' "$t" "${runs:-?}" "$took" "$crashes")")
done

echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
