#!/bin/bash
# run.sh DIR SECONDS -- builds the fuzzers into DIR (build.sh) and runs both,
# splitting SECONDS between them: fuzz_snapshot (the snapshot decoder, seeds
# corpus/ copied to DIR/corpus) for half, fuzz_frames (a node's frame
# decoder, seeds corpus-frames/ copied to DIR/corpus-frames) for the rest.
# Fails (exit 1) on any crash, leak, UB, timeout or out-of-memory of either;
# the inputs are then in DIR/artifacts/ and DIR/artifacts-frames/
# (reproduce: DIR/fuzz_snapshot DIR/artifacts/crash-..., DIR/fuzz_frames
# DIR/artifacts-frames/crash-...).  FUZZ_FLAGS (appended to libFuzzer's
# flags) may add e.g. -jobs=2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: run.sh DIR SECONDS}
secs=${2:?usage: run.sh DIR SECONDS}
snap_secs=$(( (secs + 1) / 2 ))
frame_secs=$(( secs - snap_secs > 0 ? secs - snap_secs : 1 ))
"$here/build.sh" "$dir"
rm -rf "$dir/corpus" "$dir/artifacts" "$dir/corpus-frames" "$dir/artifacts-frames"
mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/corpus-frames" "$dir/artifacts-frames"
cp "$here"/corpus/* "$dir/corpus/"
cp "$here"/corpus-frames/* "$dir/corpus-frames/"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0

# fuzz NAME DICT SECONDS CORPUS ARTIFACTS LOG: one fuzzer; sets failed=1 if
# it failed or left an input behind.
fuzz() {
    local status=0
    # shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
    "$dir/$1" "$4" -dict="$here/$2" \
        -max_total_time="$3" -rss_limit_mb=2048 -timeout=20 -max_len=65536 \
        -artifact_prefix="$5/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
        2>&1 | tee "$6" || status=$?
    # the figures CI reports: executions per second and coverage reached
    local cov execs rate
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$6" | tail -1)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$6" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$6" | grep -o '[0-9]*$' | tail -1)
    echo "run.sh: $1: ${execs:-?} executions in $3 s, ${rate:-?} per second, ${cov:-no coverage line}"
    if [ "$status" -ne 0 ] || [ -n "$(ls -A "$5")" ]; then
        echo "run.sh: $1 failed (status $status); inputs in $5/:" >&2
        ls -l "$5" >&2
        failed=1
    fi
}

fuzz fuzz_snapshot snapshot.dict "$snap_secs" "$dir/corpus" "$dir/artifacts" "$dir/fuzz.log"
fuzz fuzz_frames frames.dict "$frame_secs" "$dir/corpus-frames" "$dir/artifacts-frames" \
    "$dir/fuzz-frames.log"
if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "run.sh: no crash in $secs s ($snap_secs s snapshots, $frame_secs s frames)"
