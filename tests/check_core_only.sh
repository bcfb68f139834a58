#!/bin/sh
# check_core_only.sh BINARY... -- each BINARY (tests/test_core_only,
# tests/test_layers) was linked against libtasklet-core alone: it loads
# none of SQLite, msgpack-c, zlib or libsodium (ldd), and holds no symbol
# of theirs or of persist/ and migrate/ (nm).  Exit status 1 and one line
# per finding.
set -eu
[ $# -gt 0 ] || { echo "usage: check_core_only.sh BINARY..." >&2; exit 2; }
status=0

check() {
    libs=$(ldd "$1" | grep -E 'lib(sqlite3|msgpackc?|z|sodium)\.so' || true)
    if [ -n "$libs" ]; then
        echo "check_core_only: $1 loads a library core must not need:" >&2
        echo "$libs" >&2
        return 1
    fi
    syms=$(nm "$1" | awk '{ print $NF }' |
           grep -E '^(sqlite3_|msgpack_|deflate|inflate|crc32$|sodium_|crypto_|randombytes_|tl_store_|tl_snapshot_|tl_node_[a-z]|tl__store|tl__snapshot|tl__node|tl__pstate)' |
           grep -v '^tl_node_id$' || true)
    if [ -n "$syms" ]; then
        echo "check_core_only: $1 holds symbols from above core:" >&2
        echo "$syms" >&2
        return 1
    fi
    echo "check_core_only: $1 is core alone"
}

for bin in "$@"; do
    check "$bin" || status=1
done
exit "$status"
