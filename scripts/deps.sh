#!/usr/bin/env bash
# Installs what building and testing libproc needs on Debian/Ubuntu:
# cmake, gcc, clang, make, pkg-config, cmocka, OpenSSL's libcrypto (the
# connection handshake's HMACs) and python3 (the interop tests' peer). The sanitizer runtimes come
# with the compilers (gcc's libasan/libubsan/libtsan, clang's compiler-rt).
# As root it installs missing packages with apt-get; otherwise it prints the
# command to run and exits 1. Does nothing when everything is present.
set -euo pipefail

missing=()

# command -> Debian package that provides it; extra "command:package" pairs
# may be given as arguments (run-tests.sh and the check scripts ask for
# clang-tidy, cppcheck, valgrind, doxygen, man-db and dpkg-dev only for the
# configurations that use them).
for pair in cmake:cmake gcc:gcc clang:clang make:make pkg-config:pkg-config python3:python3 "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

# libraries: the Debian package if dpkg is there, else the pkg-config module
have_lib() { # <debian package> <pkg-config module>
    if command -v dpkg-query >/dev/null 2>&1; then
        [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
    else
        pkg-config --exists "$2" 2>/dev/null
    fi
}
have_lib libcmocka-dev cmocka || missing+=(libcmocka-dev)
have_lib libssl-dev libcrypto || missing+=(libssl-dev)

# clang's sanitizer runtimes (compiler-rt) are only a Recommends of clang on
# Debian: a clang installed without them cannot link -fsanitize programs.
if command -v clang >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    probe=$(mktemp -d)
    echo 'int main(void) { return 0; }' >"$probe/p.c"
    if ! clang -fsanitize=address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
        missing+=(libclang-rt-dev)
    fi
    rm -rf "$probe"
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

echo "deps.sh: missing build dependencies: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: no apt-get here; install the equivalents of: ${missing[*]}" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: not running as root; install them with:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
