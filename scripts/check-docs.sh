#!/usr/bin/env bash
# Builds the reference (LIBPROC_BUILD_DOCS=ON: Doxygen man pages and HTML) in
# build-docs and checks it:
#   - the build itself fails on any Doxygen warning, an undocumented public
#     symbol first of all; a copy of the headers with one undocumented
#     function added must make Doxygen fail (so the gate is real);
#   - every public function (PROC_API in include/libproc/*.h) has a page;
#   - cmake --install puts them under share/man/man3, and `man 3 proc_start`
#     finds the page there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh doxygen:doxygen man:man-db

dir=build-docs
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DLIBPROC_BUILD_DOCS=ON -DLIBPROC_BUILD_TESTS=OFF \
    -DLIBPROC_BUILD_EXAMPLES=OFF -DLIBPROC_BUILD_BENCH=OFF -DLIBPROC_WERROR=ON
cmake --build "$dir" -j"$jobs"

man3=$dir/docs/man/man3
fail=0
names=$(sed -n 's/^PROC_API[^(]*[ *]\(proc_[a-z0-9_]*\)(.*/\1/p' include/libproc/*.h | sort -u)
count=0
for name in $names; do
    count=$((count + 1))
    if [[ ! -s $man3/$name.3 ]]; then
        echo "check-docs: no man page for the public function $name" >&2
        fail=1
    fi
done
echo "check-docs: $count public functions, each with a man page"
[[ $count -gt 50 ]] || { echo "check-docs: too few public functions found ($count)" >&2; fail=1; }

# The gate: one undocumented function in a copy of the headers must fail.
gate=$dir/docs-gate
rm -rf "$gate"
mkdir -p "$gate/include/libproc"
cp include/libproc/*.h "$dir"/include/libproc/version.h "$gate/include/libproc/"
sed -i 's|^#ifdef __cplusplus$|PROC_API int proc_undocumented_probe(int x);\n&|;' \
    "$gate/include/libproc/proc.h"
grep -q proc_undocumented_probe "$gate/include/libproc/proc.h"
sed -e "s|^INPUT .*|INPUT = $gate/include/libproc|" \
    -e "s|^OUTPUT_DIRECTORY .*|OUTPUT_DIRECTORY = $gate/out|" \
    -e "s|^STRIP_FROM_PATH .*|STRIP_FROM_PATH = $gate/include|" \
    "$dir/docs/Doxyfile" >"$gate/Doxyfile"
if doxygen "$gate/Doxyfile" >"$gate/log" 2>&1; then
    echo "check-docs: Doxygen accepted an undocumented public function" >&2
    fail=1
elif ! grep -q "proc_undocumented_probe" "$gate/log"; then
    echo "check-docs: Doxygen failed, but not on the undocumented function:" >&2
    cat "$gate/log" >&2
    fail=1
else
    echo "check-docs: an undocumented public function fails the docs build: $(grep -m1 proc_undocumented_probe "$gate/log")"
fi

prefix=$PWD/$dir/prefix
rm -rf "$prefix"
cmake --install "$dir" --prefix "$prefix" >/dev/null
for page in proc_start proc_pool_map proc_queue_put proc_t libproc_proc.h PROC_WAIT_FOREVER; do
    [[ -s $prefix/share/man/man3/$page.3 ]] ||
        { echo "check-docs: $page.3 not installed" >&2; fail=1; }
done
if ls "$prefix/share/man/man3" | grep -qv -e '^proc_' -e '^PROC_' -e '^libproc_'; then
    echo "check-docs: pages outside libproc's names installed:" >&2
    ls "$prefix/share/man/man3" | grep -v -e '^proc_' -e '^PROC_' -e '^libproc_' >&2
    fail=1
fi
if ! man --version >/dev/null 2>&1; then
    echo "check-docs: no working man here; the installed files were checked"
else
    for page in proc_start libproc_pool.h; do
        if ! MANPATH=$prefix/share/man man -P cat 3 "$page" 2>/dev/null | grep -q "proc_start\|proc_pool_new"; then
            echo "check-docs: man 3 $page does not show the page" >&2
            fail=1
        fi
    done
fi
echo "check-docs: $(ls "$prefix/share/man/man3" | wc -l) man pages installed; HTML in $dir/docs/html"
exit $fail
