#!/bin/sh
# check_core_only.sh BINARY -- BINARY (tests/test_core_only) was linked
# against libtasklet-core alone: it loads none of SQLite, msgpack-c, zlib
# or libsodium (ldd), and holds no symbol of theirs or of persist/ and
# migrate/ (nm).  Exit status 1 and one line per finding.
set -eu
bin=${1:?usage: check_core_only.sh BINARY}
status=0
libs=$(ldd "$bin" | grep -E 'lib(sqlite3|msgpackc?|z|sodium)\.so' || true)
if [ -n "$libs" ]; then
    echo "check_core_only: $bin loads a library core must not need:" >&2
    echo "$libs" >&2
    status=1
fi
syms=$(nm "$bin" | awk '{ print $NF }' |
       grep -E '^(sqlite3_|msgpack_|deflate|inflate|crc32$|sodium_|crypto_|randombytes_|tl_store_|tl_snapshot_|tl_node_[a-z]|tl__store|tl__snapshot|tl__node|tl__pstate)' |
       grep -v '^tl_node_id$' || true)
if [ -n "$syms" ]; then
    echo "check_core_only: $bin holds symbols from above core:" >&2
    echo "$syms" >&2
    status=1
fi
[ "$status" = 0 ] && echo "check_core_only: $bin is core alone"
exit "$status"
