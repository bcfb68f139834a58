#!/usr/bin/env bash
# pg-workers.sh BUILDDIR [FLOWS STEPS] -- steps/s of 1, 2 and 4 worker
# processes on one private PostgreSQL server (tests/pg/with-postgres.sh),
# with synchronous_commit on and off, and the time from a worker's kill -9
# to its workflow's next step on another worker (five times).  A step is
# one checkpoint (fenced by the epoch, the step's row in the same
# transaction).  BUILDDIR needs tests/pg-torture and tests/pg-worker (a
# release build with tests: meson setup build-rel --buildtype=release).
set -euo pipefail
build=${1:?usage: pg-workers.sh BUILDDIR [FLOWS STEPS]}
flows=${2:-100}
steps=${3:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
torture=$(cd "$build" && pwd)/tests/pg-torture
worker=$(cd "$build" && pwd)/tests/pg-worker
for sync in on off; do
    for w in 1 2 4; do
        printf 'synchronous_commit=%s workers=%d: ' "$sync" "$w"
        TL_PG_OPTS="-c synchronous_commit=$sync" "$here/tests/pg/with-postgres.sh" \
            "$torture" "$worker" --workers "$w" --flows "$flows" --steps "$steps" --kills 0 |
            grep '^figures' | sed 's/^figures: //'
    done
done
for i in 1 2 3 4 5; do
    "$here/tests/pg/with-postgres.sh" "$torture" "$worker" --failover --steps 60 |
        grep '^figures' | sed 's/^figures: //'
done
