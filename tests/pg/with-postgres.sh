#!/usr/bin/env bash
# with-postgres.sh COMMAND... -- runs COMMAND against a private PostgreSQL
# server: a new cluster in a temporary directory, started on 127.0.0.1 on
# a free port, with COMMAND's environment holding its URL in TL_PG_URL
# (postgresql://tl@127.0.0.1:PORT/tl, trust authentication, loopback
# only).  The server is stopped and the directory removed when COMMAND
# ends, however it ends; the exit status is COMMAND's.
#
# PostgreSQL refuses to run as root: as root, the server runs as the user
# TL_PG_USER (default: postgres when Debian's package made it, else tlpg,
# created here as a system user); otherwise as the caller.  TL_PG_OPTS adds
# server settings (e.g. "-c synchronous_commit=off").  Needs Debian's
# postgresql package (initdb and pg_ctl under /usr/lib/postgresql/N/bin).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }

bindir=${TL_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "with-postgres.sh: no PostgreSQL server found (apt-get install postgresql)" >&2
    exit 2
fi

as=()
if [ "$(id -u)" = 0 ]; then
    user=${TL_PG_USER:-}
    if [ -z "$user" ]; then
        if id postgres >/dev/null 2>&1; then user=postgres; else user=tlpg; fi
    fi
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    as=(runuser -u "$user" --)
fi

dir=$(mktemp -d /tmp/tl-pg.XXXXXX)
chmod 755 "$dir"
[ ${#as[@]} -eq 0 ] || chown "$user" "$dir"
stop() {
    "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${as[@]}" "$bindir/initdb" -D "$dir/data" -U tl -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 2; }

# A free port: one nothing answers on; pg_ctl fails if another process
# takes it meanwhile, and then we try another.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}
started=
for _ in 1 2 3 4 5; do
    port=$(free_port)
    # shellcheck disable=SC2086  # TL_PG_OPTS is a list of server options
    if "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 ${TL_PG_OPTS:-}" \
        start >/dev/null; then
        started=1
        break
    fi
done
if [ -z "$started" ]; then
    echo "with-postgres.sh: the server did not start:" >&2
    tail -20 "$dir/server.log" >&2 || true
    exit 2
fi
"$bindir/psql" -q -X -h 127.0.0.1 -p "$port" -U tl -d postgres -c 'CREATE DATABASE tl' >/dev/null

export TL_PG_URL="postgresql://tl@127.0.0.1:$port/tl"
export TL_PG_LOG="$dir/server.log"
set +e
"$@"
status=$?
set -e
exit "$status"
