#!/usr/bin/env bash
# Builds libproc and its examples in build/ (tests off) and runs every
# example in turn. Exits non-zero if the build or any example fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DLIBPROC_BUILD_TESTS=OFF -DLIBPROC_BUILD_EXAMPLES=ON
cmake --build build -j"$jobs"

# examples/CMakeLists.txt lists the binaries in tutorial order.
list=build/examples/examples.txt
if [[ ! -s $list ]]; then
    echo "run-examples: $list is missing; were the examples built?" >&2
    exit 1
fi

failed=()
count=0
while IFS= read -r exe; do
    [[ -n $exe ]] || continue
    name=$(basename "$exe")
    count=$((count + 1))
    echo
    echo "=== example: $name ==="
    rc=0
    "$exe" </dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "--- $name FAILED (exit status $rc)"
        failed+=("$name")
    fi
done <"$list"

echo
if [[ ${#failed[@]} -ne 0 ]]; then
    echo "run-examples: ${#failed[@]} of $count examples failed: ${failed[*]}"
    exit 1
fi
echo "run-examples: all $count examples passed"
