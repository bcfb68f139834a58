#!/usr/bin/env bash
# pg-workers.sh BUILDDIR [FLOWS STEPS GROUP] -- steps/s of 1, 2 and 4 worker
# processes on one private PostgreSQL server (tests/pg/with-postgres.sh),
# with synchronous_commit on and off, and the time from a worker's kill -9
# to its workflows' next step on another worker (five times).  The workload
# is the many-worker test's without its kills (tests/pg/torture.c): FLOWS
# workflows of STEPS steps (default 10,000 x 10) in group stores of GROUP
# workflows (default 50), each checkpoint fenced by the epoch, the steps'
# rows in its transaction; two ways of checkpointing:
#   round: a checkpoint per round of a group (GROUP steps in one commit);
#   step:  a checkpoint per step (one commit per step, as DBOS does), on
#          FLOWS/10 workflows (a tenth of the steps: it is slower).
# BUILDDIR needs tests/pg-torture and tests/pg-worker (a release build with
# tests: meson setup build-rel --buildtype=release -Dbench=false).
set -euo pipefail
build=${1:?usage: pg-workers.sh BUILDDIR [FLOWS STEPS GROUP]}
flows=${2:-10000}
steps=${3:-10}
group=${4:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
torture=$(cd "$build" && pwd)/tests/pg-torture
worker=$(cd "$build" && pwd)/tests/pg-worker
for sync in on off; do
    for mode in round step; do
        if [ "$mode" = round ]; then n=$flows b=0; else n=$((flows / 10)) b=1; fi
        for w in 1 2 4; do
            printf 'synchronous_commit=%s %s workers=%d: ' "$sync" "$mode" "$w"
            TL_PG_OPTS="-c synchronous_commit=$sync" "$here/tests/pg/with-postgres.sh" \
                "$torture" "$worker" --workers "$w" --flows "$n" --steps "$steps" \
                --group "$group" --batch "$b" --kills 0 |
                grep '^figures' | sed 's/^figures: //'
        done
    done
done
for i in 1 2 3 4 5; do
    "$here/tests/pg/with-postgres.sh" "$torture" "$worker" --failover --steps 60 \
        --group "$group" | grep '^figures' | sed 's/^figures: //'
done
