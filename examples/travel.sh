#!/usr/bin/env bash
# travel.sh -- runs examples/travel.c: three node processes on 127.0.0.1
# (n1, n2, n3, adding 10, 20 and 30), then home, which sends a tasklet
# through them and back.  Each node listens on a free port and dials the
# nodes started before it, so every pair of processes has one link.
#
# Usage: examples/travel.sh [PATH/TO/travel]   (default build/examples/travel)
# Exits 0 when the tasklet came home with the expected route and total,
# and every node exited cleanly.  TRAVEL_VERBOSE=1 shows the nodes' logs.
set -euo pipefail

bin=${1:-build/examples/travel}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The cluster's secret: fresh random bytes in a file only we may read (the
# nodes get its name, never the secret itself, on their command lines).
(umask 077 && head -c 32 /dev/urandom | base64 > "$work/secret")
export TRAVEL_SECRET_FILE="$work/secret"

# The address node $1 printed ("n1 listening on tcp://127.0.0.1:PORT").
address_of() {
    for _ in $(seq 100); do
        addr=$(sed -n "s/^$1 listening on //p" "$work/$1.out" 2>/dev/null)
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        sleep 0.05
    done
    echo "travel.sh: node $1 did not start:" >&2
    cat "$work/$1.out" >&2
    return 1
}

peers=()
weight=10
for id in n1 n2 n3; do
    "$bin" node "$id" "$weight" "${peers[@]}" >"$work/$id.out" 2>&1 &
    pids+=($!)
    peers+=("$id=$(address_of "$id")")
    weight=$((weight + 10))
done

route=$("$bin" home "${peers[@]}")
echo "$route"

# The nodes exit by themselves once home has gone; any failure shows here.
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "travel.sh: node n$((i + 1)) failed:" >&2
        cat "$work/n$((i + 1)).out" >&2
        exit 1
    fi
done
pids=()

[ "$route" = "home -> n1 -> n2 -> n3 -> home, total 60" ] || {
    echo "travel.sh: unexpected route" >&2
    exit 1
}
