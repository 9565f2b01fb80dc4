#!/usr/bin/env bash
# examples/parallel_wc against wc on a generated tree: the same lines (both
# sorted, as parallel_wc prints in the order files finish).
# Usage: check_parallel_wc.sh PATH/TO/parallel_wc
set -euo pipefail
exe=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/tree
mkdir -p "$tree/a/b/c" "$tree/with space" "$tree/empty_dir"
: >"$tree/empty"
printf 'no newline at the end' >"$tree/a/no_newline"
printf 'tabs\tand\vvertical\ftabs\r\nCR LF\n\n\n' >"$tree/a/b/whitespace"
printf 'ctl\001chars\002 \003 bytes\200\377 high\n' >"$tree/a/b/c/binary"
printf 'a file name with spaces\n' >"$tree/with space/name with space"
for i in $(seq 1 400); do
    d=$tree/a/b
    ((i % 3 == 0)) && d=$tree/a/b/c
    awk -v n="$i" 'BEGIN { for (l = 0; l < n % 37; l++) { s = ""; for (w = 0; w < (l * n) % 11; w++) s = s "w" w " "; print s } }' >"$d/f$i.txt"
done
awk 'BEGIN { for (l = 0; l < 60000; l++) print "a longer file, line " l }' >"$tree/big"
ln -s "$tree/big" "$tree/link_to_big" # not followed, as find -type f does not
"$exe" "$tree" | LC_ALL=C sort >"$tmp/ours"
find "$tree" -type f -print0 | LC_ALL=C xargs -0 wc | LC_ALL=C sort >"$tmp/wc"
if ! diff -u "$tmp/wc" "$tmp/ours"; then
    echo "check_parallel_wc: parallel_wc and wc disagree (above)" >&2
    exit 1
fi
echo "check_parallel_wc: $(($(wc -l <"$tmp/wc") - 1)) files, the same counts as wc"
