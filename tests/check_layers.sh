#!/bin/sh
# check_layers.sh BUILDDIR -- the build enforces the layers
# (docs/ARCHITECTURE.md, "Layers"): every undefined symbol of each static
# library must be defined by the library itself or by the layers below it.
#   core     (src/libtasklet-core.a):        libc, libm
#   persist  (persist/libtasklet-persist.a): core + SQLite, msgpack-c, zlib,
#                                            libpq (when built with it)
#   node     (migrate/libtasklet-node.a):    core + persist + libsodium,
#                                            msgpack-c (its frames); no
#                                            SQLite (the store's interface)
#   workflow (workflow/libtasklet-workflow.a): core + persist, msgpack-c,
#                                            SQLite (for now); not the node
# persist must not reference the node at all (any symbol migrate/ defines).  The
# installed libtasklet.so must export tl_ names only.  CC (default cc; with
# its flags, such as -m32, so that libgcc's 64-bit division helpers of a
# 32-bit build are found) finds the system libraries.  Exit status 1 and one line per violation.
set -eu
build=${1:?usage: check_layers.sh BUILDDIR}
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

fail() { echo "check_layers: $*" >&2; status=1; }

# The symbols an archive or object defines (one a line, sorted).
defined() { nm -g --defined-only "$@" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u; }
# Those it needs and does not define itself.
needed() {
    defined "$1" > "$tmp/own"
    nm -u "$1" | awk '$1 == "U" { print $2 }' | sort -u | comm -23 - "$tmp/own"
}
# The dynamic symbols a system library defines, found as the compiler's
# linker would find it (a linker script such as libc.so is skipped for
# its real library, named with its soname).
syslib() {
    # shellcheck disable=SC2086  # CC may carry flags (gcc -m32)
    path=$($CC -print-file-name="$1")
    case $path in
        /*) [ -e "$path" ] || { fail "$1 not found"; return 0; } ;;
        *) fail "$1 not found by $CC"; return 0 ;;
    esac
    nm -D --defined-only "$path" | awk 'NF == 3 { sub(/@.*/, "", $3); print $3 }'
}
# What the compiler's runtime provides: libgcc and the sanitizers.
runtime() {
    # shellcheck disable=SC2086
    nm -g --defined-only "$($CC -print-libgcc-file-name)" 2>/dev/null |
        awk 'NF == 3 { print $3 }'
    printf '%s\n' _GLOBAL_OFFSET_TABLE_
}
is_runtime_name() { grep -E -v '^(__asan_|__ubsan_|__sanitizer_|__lsan_|__gcov_|__llvm_)'; }

# check LAYER ARCHIVE ALLOWED... : ALLOWED are archives of the layers
# below and system library names.
check() {
    layer=$1 archive=$2
    shift 2
    [ -f "$archive" ] || { fail "$layer: $archive is missing"; return 0; }
    : > "$tmp/allowed"
    for a in "$@"; do
        case $a in
            *.a) defined "$a" >> "$tmp/allowed" ;;
            *) syslib "$a" >> "$tmp/allowed" ;;
        esac
    done
    runtime >> "$tmp/allowed"
    sort -u -o "$tmp/allowed" "$tmp/allowed"
    needed "$archive" | comm -23 - "$tmp/allowed" | is_runtime_name > "$tmp/bad" || true
    while read -r sym; do
        fail "$layer ($archive) needs $sym, which no layer below it provides"
    done < "$tmp/bad"
}

core=$build/src/libtasklet-core.a
persist=$build/persist/libtasklet-persist.a
node=$build/migrate/libtasklet-node.a
workflow=$build/workflow/libtasklet-workflow.a
libc="libc.so.6 libm.so.6"

# shellcheck disable=SC2086  # the library lists are word lists
check core "$core" $libc
# libpq only where the build found it (the PostgreSQL store, optional)
pq=
case $($CC -print-file-name=libpq.so) in /*) pq=libpq.so ;; esac
# shellcheck disable=SC2086
check persist "$persist" "$core" $libc libsqlite3.so libmsgpackc.so libz.so $pq
# The node keeps its outbox and inbox through the store's participant
# interface: it issues no SQL, so SQLite is not on its list.
# shellcheck disable=SC2086
check node "$node" "$core" "$persist" $libc libsodium.so libmsgpackc.so

# Workflows sit on persist beside the node, never on it.  They still open
# their own SQLite connection (workflow/db.c): libsqlite3 leaves this list
# once they write only through the store interface.
if [ -f "$workflow" ]; then
    # shellcheck disable=SC2086
    check workflow "$workflow" "$core" "$persist" $libc libmsgpackc.so libsqlite3.so
fi

# Said plainly for the never-arrow that matters most: persist -> node.
defined "$node" > "$tmp/nodesyms"
needed "$persist" | comm -12 - "$tmp/nodesyms" > "$tmp/nodebad"
while read -r sym; do
    fail "persist references the node's $sym"
done < "$tmp/nodebad"

so=$build/libtasklet.so
if [ -f "$so" ]; then
    nm -D --defined-only "$so" | awk 'NF == 3 { print $3 }' |
        grep -E -v '^(tl_|tl__|_init$|_fini$|_edata$|_end$|__bss_start$|__odr_asan[.]tl_)' \
        > "$tmp/exports" || true # ASan's one-definition-rule markers of tl_ globals
    while read -r sym; do
        fail "libtasklet.so exports $sym (only tl_ names may be exported)"
    done < "$tmp/exports"
fi

[ "$status" = 0 ] && echo "check_layers: core, persist, node and workflow keep to their layers"
exit "$status"
