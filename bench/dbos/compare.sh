#!/usr/bin/env bash
# compare.sh BUILDDIR [ROUNDS] -- the same workload on libtasklet's
# PostgreSQL store and on DBOS Transact, alternated (ours, DBOS, ours,
# DBOS, ...), each run on a new private server (tests/pg/with-postgres.sh,
# synchronous_commit=on): workflows of 10 no-op steps, one process,
#   sequential: one commit per step, one after another (ours: one worker,
#               a checkpoint per step, 500 workflows; DBOS: 200 workflows
#               one after another);
#   concurrent: many workflows in flight (ours: one worker, 10,000
#               workflows in groups of 50, a checkpoint per round of a
#               group; DBOS: 500 workflows started at once).
# Needs Node.js and `npm install` in bench/dbos (npm's registry); BUILDDIR
# is a release build with tests (meson setup build-rel --buildtype=release
# -Dbench=false).  Not part of CI.
set -euo pipefail
build=$(cd "${1:?usage: compare.sh BUILDDIR [ROUNDS]}" && pwd)
rounds=${2:-2}
here=$(cd "$(dirname "$0")/../.." && pwd)
pg="$here/tests/pg/with-postgres.sh"
export TL_PG_OPTS="-c synchronous_commit=on"
[ -d "$here/bench/dbos/node_modules/@dbos-inc/dbos-sdk" ] ||
    { echo "compare.sh: run npm install in bench/dbos first" >&2; exit 2; }
for r in $(seq 1 "$rounds"); do
    printf 'round %d, libtasklet sequential: ' "$r"
    "$pg" "$build/tests/pg-torture" "$build/tests/pg-worker" --workers 1 --flows 500 \
        --batch 1 --kills 0 | grep '^figures' | sed 's/^figures: //'
    printf 'round %d, libtasklet concurrent: ' "$r"
    "$pg" "$build/tests/pg-torture" "$build/tests/pg-worker" --workers 1 --flows 10000 \
        --kills 0 | grep '^figures' | sed 's/^figures: //'
    printf 'round %d, ' "$r"
    "$pg" node --no-deprecation "$here/bench/dbos/bench.mjs" --workflows 200 --steps 10 --concurrency 500 \
        --rounds 1 | grep '^figures' | sed 's/^figures: //'
done
