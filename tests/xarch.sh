#!/bin/sh
# xarch.sh WRITER FINISHER [EXPECTED]: WRITER's "xarch write" makes a store
# mid-run, FINISHER's "xarch finish" resumes it; prints the result and, if
# EXPECTED is given, fails unless the result is that line.  The meson test
# 'xarch' runs one build's xarch as both; .ci/run crosses x86-64 and i386.
set -eu
writer=$1 finisher=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$writer" write "$dir/store.db"
got=$("$finisher" finish "$dir/store.db")
echo "$got"
if [ $# -ge 3 ] && [ "$got" != "$3" ]; then
    echo "xarch: expected: $3" >&2
    exit 1
fi
