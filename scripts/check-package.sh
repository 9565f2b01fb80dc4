#!/usr/bin/env bash
# Builds the Debian packages (cpack -G DEB) in build-package and checks them:
# the runtime package holds the SONAME'd library only; the -dev package the
# headers, the libproc.so link, libproc.a, libproc.pc, the CMake package and
# the man pages. Both are unpacked into build-package/root, and the consumer
# program is built against that tree through pkg-config (shared, rpath,
# static) and find_package (tests/consumer/run.cmake -DPREFIX=...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh doxygen:doxygen dpkg-shlibdeps:dpkg-dev dpkg-deb:dpkg

dir=build-package
jobs=$(nproc 2>/dev/null || echo 2)
rm -rf "$dir/root" "$dir/consumer" "$dir"/*.deb
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DLIBPROC_BUILD_DOCS=ON -DLIBPROC_BUILD_TESTS=OFF -DLIBPROC_BUILD_EXAMPLES=OFF \
    -DLIBPROC_BUILD_BENCH=OFF -DLIBPROC_WERROR=ON
cmake --build "$dir" -j"$jobs"
(cd "$dir" && cpack -G DEB)

fail=0
shopt -s nullglob
runtime=("$dir"/libproc1_*.deb)
dev=("$dir"/libproc-dev_*.deb)
if [[ ${#runtime[@]} -ne 1 || ${#dev[@]} -ne 1 ]]; then
    echo "check-package: expected one libproc1 and one libproc-dev package in $dir" >&2
    ls "$dir"/*.deb >&2 || true
    exit 1
fi

# contents <package> <what must be there (regex)...> -- <what must not (regex)...>
contents() {
    local deb=$1 listing must=1 re
    shift
    listing=$(dpkg-deb -c "$deb" | awk '{print $6 ($7 ? " " $7 " " $8 : "")}')
    echo
    echo "--- $(basename "$deb"): $(dpkg-deb -f "$deb" Package Version Depends | tr '\n' ' ')"
    echo "$listing" | grep -v '/$' | sed 's/^/    /'
    for re in "$@"; do
        if [[ $re == -- ]]; then
            must=0
            continue
        fi
        if [[ $must -eq 1 ]] && ! grep -qE "$re" <<<"$listing"; then
            echo "check-package: $(basename "$deb") lacks $re" >&2
            fail=1
        elif [[ $must -eq 0 ]] && grep -qE "$re" <<<"$listing"; then
            echo "check-package: $(basename "$deb") should not hold $re" >&2
            fail=1
        fi
    done
}
contents "${runtime[0]}" '/usr/lib/.*libproc\.so\.1 -> libproc\.so\.[0-9]+\.[0-9]+\.[0-9]+$' \
    '/usr/lib/.*libproc\.so\.[0-9]+\.[0-9]+\.[0-9]+$' \
    'copyright|LICENSE' -- '\.h$' '\.a$' 'libproc\.so ->' '\.pc$' 'man3'
contents "${dev[0]}" '/usr/include/libproc/proc\.h$' '/usr/include/libproc/version\.h$' \
    '/usr/lib/.*libproc\.so -> libproc\.so\.1$' '/usr/lib/.*libproc\.a$' '/usr/lib/.*pkgconfig/libproc\.pc$' \
    '/usr/lib/.*cmake/libproc/libprocConfig\.cmake$' '/usr/share/man/man3/proc_start\.3$' \
    '/usr/share/man/man3/libproc_proc\.h\.3$' -- 'libproc\.so\.[0-9]+\.[0-9]+\.[0-9]+$'
dpkg-deb -f "${dev[0]}" Depends | grep -q "libproc1 (= " ||
    { echo "check-package: libproc-dev does not depend on libproc1 (=)" >&2; fail=1; }
dpkg-deb -f "${dev[0]}" Depends | grep -q "libssl-dev" ||
    { echo "check-package: libproc-dev does not depend on libssl-dev (libproc.a needs libcrypto)" >&2; fail=1; }
dpkg-deb -f "${runtime[0]}" Depends | grep -q "libssl3" ||
    { echo "check-package: libproc1 does not depend on libssl3 (libcrypto)" >&2; fail=1; }
objdump -p "$dir"/libproc.so.*.*.* | grep -q 'SONAME *libproc\.so\.1$' ||
    { echo "check-package: the shared library's SONAME is not libproc.so.1" >&2; fail=1; }

root=$PWD/$dir/root
mkdir -p "$root"
dpkg-deb -x "${runtime[0]}" "$root"
dpkg-deb -x "${dev[0]}" "$root"
echo
cmake -DSOURCE_DIR="$PWD" -DPREFIX="$root/usr" -DWORK_DIR="$PWD/$dir/consumer" \
    -DC_COMPILER=gcc -P tests/consumer/run.cmake || fail=1
[[ $fail -eq 0 ]] && echo "check-package: both packages built, checked and used"
exit $fail
