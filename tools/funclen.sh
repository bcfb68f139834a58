#!/bin/sh
# funclen.sh [-n MIN] [-a] [FILE...] -- the length of every C function
# definition, longest first: "LINES FILE:LINE NAME".  LINES counts from the
# first line of the signature to the closing brace, both included (the
# comment above is not counted).  Only functions of MIN lines
# or more are listed (default 61: "none over 60 lines"); -a lists all.
# Default files: the libraries' (src/ persist/ migrate/ workflow/ *.c).
# Relies on the project's layout: a definition's braces stand alone at
# column 0 ("{" and "}"), its signature starts at column 0.
# Exit status 0 whatever is found: a report, not a check.
set -eu
min=61
while [ $# -gt 0 ]; do
    case $1 in
    -n) min=$(( $2 + 1 )); shift 2 ;;
    -a) min=0; shift ;;
    --) shift; break ;;
    -*) echo "usage: funclen.sh [-n MIN] [-a] [FILE...]" >&2; exit 2 ;;
    *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    cd "$(dirname "$0")/.."
    set -- src/*.c persist/*.c migrate/*.c
    [ -d workflow ] && set -- "$@" workflow/*.c
fi
awk -v min="$min" '
    FNR == 1 { sig = ""; start = 0; inbody = 0 }
    # a one-line definition
    !inbody && /^[A-Za-z_][A-Za-z0-9_ \t*]*\(.*\)[ \t]*\{.*\}[ \t]*$/ && !/^typedef/ {
        name = $0
        sub(/\(.*/, "", name)
        sub(/.*[ \t*]/, "", name)
        if (1 >= min)
            printf "%5d %s:%d %s\n", 1, FILENAME, FNR, name
        sig = ""; next
    }
    # a signature: column 0, an identifier, a parenthesis, no semicolon
    !inbody && /^[A-Za-z_][A-Za-z0-9_ \t*]*\(/ && !/;[ \t]*$/ && !/^(typedef|return|else|if|for|while|switch|do)[ \t(]/ {
        sig = $0; sigline = FNR; next
    }
    !inbody && sig != "" && /^\{$/ { inbody = 1; start = FNR; next }
    !inbody && sig != "" && /;[ \t]*$/ && !/^[ \t]/ { sig = "" }
    inbody && /^\}/ {
        n = FNR - sigline + 1
        name = sig
        sub(/\(.*/, "", name)
        sub(/.*[ \t*]/, "", name)
        if (n >= min)
            printf "%5d %s:%d %s\n", n, FILENAME, sigline, name
        inbody = 0; sig = ""
    }
' "$@" | sort -rn
