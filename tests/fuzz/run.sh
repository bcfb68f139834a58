#!/bin/bash
# run.sh DIR SECONDS -- builds the fuzzer into DIR (build.sh), copies the
# seed corpus to DIR/corpus and fuzzes for SECONDS.  Fails (exit 1) on any
# crash, leak, UB, timeout or out-of-memory; the input is then in
# DIR/artifacts/ (reproduce: DIR/fuzz_snapshot DIR/artifacts/crash-...).
# FUZZ_FLAGS (appended to libFuzzer's flags) may add e.g. -jobs=2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: run.sh DIR SECONDS}
secs=${2:?usage: run.sh DIR SECONDS}
"$here/build.sh" "$dir"
rm -rf "$dir/corpus" "$dir/artifacts"
mkdir -p "$dir/corpus" "$dir/artifacts"
cp "$here"/corpus/* "$dir/corpus/"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
# shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
"$dir/fuzz_snapshot" "$dir/corpus" -dict="$here/snapshot.dict" \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -max_len=65536 \
    -artifact_prefix="$dir/artifacts/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
    2>&1 | tee "$dir/fuzz.log" || status=$?
if [ "$status" -ne 0 ] || [ -n "$(ls -A "$dir/artifacts")" ]; then
    echo "run.sh: the fuzzer failed (status $status); inputs in $dir/artifacts/:" >&2
    ls -l "$dir/artifacts" >&2
    exit 1
fi
echo "run.sh: no crash in $secs s"
