#!/bin/sh
# build.sh OUTDIR -- builds the fuzzers with clang into OUTDIR:
#   fuzz_snapshot   libFuzzer + ASan + UBSan (UB aborts), with the
#                   structure-aware mutator (-DFZ_CUSTOM_MUTATOR)
#   fuzz_frames     libFuzzer + ASan + UBSan: a node's frame decoder
#   make_seeds, make_frame_seeds   the seed generators, ASan + UBSan
# The library's sources are compiled into each binary, instrumented.
# CC (default clang) and EXTRA_CFLAGS (appended) may be set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
CC=${CC:-clang}
msgpack=$(pkg-config --libs msgpack-c 2>/dev/null || pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc)
common="-std=c11 -g -O1 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Wno-missing-field-initializers -I$root/include"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# the library without its PostgreSQL backend (store_pg*.c, built only with
# libpq and TL_HAVE_PG): the fuzzers reach no store
libsrc=$(ls "$root"/src/*.c "$root"/persist/*.c "$root"/migrate/*.c | grep -v '/store_pg[^/]*\.c$')
libs="$msgpack -lz -lsqlite3 -lsodium -lpthread"

# shellcheck disable=SC2086  # word splitting of the flag lists is intended
$CC $common $san -fsanitize=fuzzer -DFZ_CUSTOM_MUTATOR ${EXTRA_CFLAGS:-} \
    "$here/fuzz_snapshot.c" $libsrc $libs -o "$out/fuzz_snapshot"
# shellcheck disable=SC2086
$CC $common $san ${EXTRA_CFLAGS:-} "$here/make_seeds.c" $libsrc $libs -o "$out/make_seeds"
# shellcheck disable=SC2086
$CC $common $san -fsanitize=fuzzer ${EXTRA_CFLAGS:-} \
    "$here/fuzz_frames.c" $libsrc $libs -o "$out/fuzz_frames"
# shellcheck disable=SC2086
$CC $common $san ${EXTRA_CFLAGS:-} "$here/make_frame_seeds.c" $libsrc $libs \
    -o "$out/make_frame_seeds"
echo "built $out/fuzz_snapshot, $out/fuzz_frames, $out/make_seeds and $out/make_frame_seeds"
