#!/bin/sh
# tests/compile_fail/run.sh INCLUDE_DIR CC [CC...]: compiles each snippet
# here with each compiler given (as the library's warnings, -Werror); a
# snippet whose first line says "expect: MESSAGE" must fail to compile
# with MESSAGE in the compiler's output, "expect: OK" must compile.
set -u
inc=$1; shift
dir=$(dirname "$0")
status=0
for cc in "$@"; do
    for src in "$dir"/*.c; do
        want=$(sed -n '1s/^\/\* expect: \(.*\) \*\/$/\1/p' "$src")
        case $want in OK*) want=OK ;; esac
        out=$($cc -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Werror -fsyntax-only \
              -I "$inc" "$src" 2>&1)
        rc=$?
        name="$cc $(basename "$src")"
        if [ "$want" = OK ]; then
            if [ $rc -ne 0 ]; then
                echo "FAIL $name: should compile"; echo "$out"; status=1
            else
                echo "ok   $name: compiles"
            fi
        elif [ $rc -eq 0 ]; then
            echo "FAIL $name: compiled, expected an error naming '$want'"; status=1
        elif printf '%s\n' "$out" | grep -qF -- "$want"; then
            echo "ok   $name: $(printf '%s\n' "$out" | grep -F -- "$want" | head -1)"
        else
            echo "FAIL $name: no '$want' in:"; echo "$out"; status=1
        fi
    done
done
exit $status
