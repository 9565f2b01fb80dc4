#!/usr/bin/env bash
# Compiles the library, tests, examples and benchmark with every compiler and
# build type, warnings as errors (LIBPROC_WERROR=ON), and prints a table of
# the results. Compiling only: the test runs are run-tests.sh's other
# configurations. Build directories: build-matrix/<compiler>-<build type>.
# ccache is used when it is installed.
#   LIBPROC_MATRIX_COMPILERS="gcc clang" (default)
#   LIBPROC_MATRIX_TYPES="Debug Release RelWithDebInfo MinSizeRel" (default)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

compilers=${LIBPROC_MATRIX_COMPILERS:-gcc clang}
types=${LIBPROC_MATRIX_TYPES:-Debug Release RelWithDebInfo MinSizeRel}
jobs=$(nproc 2>/dev/null || echo 2)
launcher=()
if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

results=()
failed=0
for cc in $compilers; do
    for type in $types; do
        dir=build-matrix/$cc-$type
        log=build-matrix/$cc-$type.log
        mkdir -p build-matrix
        start=$SECONDS
        if cmake -S . -B "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE="$type" \
            -DLIBPROC_WERROR=ON -DLIBPROC_BUILD_TESTS=ON -DLIBPROC_BUILD_EXAMPLES=ON \
            -DLIBPROC_BUILD_BENCH=ON "${launcher[@]}" >"$log" 2>&1 &&
            cmake --build "$dir" -j"$jobs" >>"$log" 2>&1; then
            result=clean
        else
            result=FAILED
            failed=1
            echo "--- build-matrix: $cc $type failed; the errors:"
            grep -E 'error|Error' "$log" | head -40 || true
        fi
        results+=("$(printf '| %-6s | %-14s | %-6s | %4ds |' "$cc" "$type" "$result" $((SECONDS - start)))")
    done
done

echo
echo "| compiler | build type | result | time |"
echo "|----------|------------|--------|------|"
printf '%s\n' "${results[@]}"
exit $failed
