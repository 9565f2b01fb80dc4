#!/usr/bin/env bash
# examples/authenticated_echo (C) and examples/authenticated_echo.py (CPython's
# multiprocessing.connection) talk to each other, in both roles, with the
# right key and with a wrong one (refused on both sides).
#   check_python_pair.sh <authenticated_echo binary> [python3]
set -euo pipefail
c_echo=$1
python=${2:-python3}
py_echo=$(dirname "${BASH_SOURCE[0]}")/authenticated_echo.py
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# Starts a listener in the background (its output in $work/<name>.out); sets
# pid and addr (from its "ready ADDRESS" line).
start_listener() { # <name> <command...>
    local name=$1 i
    shift
    # Made before the job starts: the job's own redirection may come after
    # the first look at the file below.
    : >"$work/$name.out"
    "$@" >"$work/$name.out" 2>&1 &
    pid=$!
    for i in $(seq 1 1200); do # up to a minute: Python starts slowly on a loaded machine
        addr=$(sed -n 's/^ready //p' "$work/$name.out")
        [[ -n $addr ]] && return 0
        sleep 0.05 # polling a file for a line: nothing to wait on but the file
    done
    echo "check_python_pair: $name did not start" >&2
    cat "$work/$name.out" >&2
    return 1
}

expect() { # <file> <text>
    if ! grep -qF "$2" "$1"; then
        echo "check_python_pair: '$2' missing from $1:" >&2
        cat "$1" >&2
        exit 1
    fi
}

echo "--- C listener, Python client"
start_listener c-listener "$c_echo" listen tcp:127.0.0.1:0 shared-key
"$python" "$py_echo" connect "$addr" shared-key "from python" >"$work/py-client.out"
wait "$pid"
expect "$work/py-client.out" 'client: sent "from python", got "FROM PYTHON"'
expect "$work/c-listener.out" 'listener: got "bye"'

echo "--- Python listener, C client"
start_listener py-listener "$python" "$py_echo" listen "unix:@libproc-pair-$$" shared-key
"$c_echo" connect "$addr" shared-key "from c" >"$work/c-client.out"
wait "$pid"
expect "$work/c-client.out" 'client: sent "from c", got "FROM C"'
expect "$work/py-listener.out" 'listener: got "bye"'

echo "--- wrong keys: refused on both sides"
start_listener c-listener2 "$c_echo" listen tcp:127.0.0.1:0 shared-key
rc=0
"$python" "$py_echo" connect "$addr" wrong-key hi >"$work/py-client2.out" || rc=$?
[[ $rc -eq 1 ]] || { echo "check_python_pair: the Python client was not refused" >&2; exit 1; }
wait "$pid" && { echo "check_python_pair: the C listener accepted a wrong key" >&2; exit 1; }
expect "$work/c-listener2.out" 'a client was turned away: Permission denied'
start_listener py-listener2 "$python" "$py_echo" listen "unix:@libproc-pair2-$$" shared-key
rc=0
"$c_echo" connect "$addr" wrong-key hi >"$work/c-client2.out" || rc=$?
[[ $rc -eq 1 ]] || { echo "check_python_pair: the C client was not refused" >&2; exit 1; }
wait "$pid" && { echo "check_python_pair: the Python listener accepted a wrong key" >&2; exit 1; }
expect "$work/c-client2.out" 'refused: Permission denied'
expect "$work/py-listener2.out" 'refused: digest received was wrong'
echo "check_python_pair: all four pairings behaved"
