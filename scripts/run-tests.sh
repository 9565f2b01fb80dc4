#!/usr/bin/env bash
# Builds libproc with its tests and examples and runs everything, in eleven
# configurations (unit tests, the stress and fault suite of label "stress",
# examples, install and subproject checks, static analysis, memcheck, every
# compiler and build type, the reference and the packages):
#   default    build-test      gcc; everything through ctest
#   asan       build-asan      clang, AddressSanitizer + UndefinedBehaviorSanitizer
#   asan-gcc   build-asan-gcc  gcc, the same sanitizers
#   tsan       build-tsan      gcc, ThreadSanitizer
#   tsan-clang build-tsan-clang clang, ThreadSanitizer
#   lint       build-lint      clang-tidy (.clang-tidy) and cppcheck on src/
#   valgrind   build-valgrind  gcc; the unit tests (test_proc_*, test_spawn_*,
#                              test_reaper_*, test_lifecycle_*, test_stdio)
#                              and test_stress_forkfail under valgrind
#                              --error-exitcode=1 --leak-check=full
#   matrix     build-matrix/   {gcc, clang} x {Debug, Release, RelWithDebInfo,
#                              MinSizeRel}, compiled only (scripts/build-matrix.sh)
#   docs       build-docs      man pages + HTML with Doxygen, undocumented
#                              symbols fail (scripts/check-docs.sh)
#   package    build-package   cpack -G DEB, contents checked, consumer built
#                              against the unpacked packages (scripts/check-package.sh)
#   load       build-test      the default build's unit and stress tests again
#                              (but test_stress_load*, a load of its own),
#                              while 2 x nproc busy loops keep every CPU
#                              oversubscribed (a timing assumption fails here)
# Every build here turns warnings into errors (LIBPROC_WERROR=ON).
# LIBPROC_CONFIGS picks which ones run (all of the above by default), e.g.
# LIBPROC_CONFIGS=default for a quick check.
# LIBPROC_REPEAT=<n> runs each unit and stress program (but test_stress_load*)
# of the test configurations (default, asan, asan-gcc, tsan, tsan-clang, load)
# n times in a row, stopping a program at its first failure, and leaves their
# other tests out: the flakiness check, e.g.
# LIBPROC_REPEAT=20 LIBPROC_CONFIGS="default tsan" scripts/run-tests.sh.
# A single stress run: ctest -L stress in a build directory;
# LIBPROC_STRESS_SEED=<n> picks the seed of the randomized model test.
# Every configuration runs even if an earlier one failed; the script prints a
# summary line per configuration and exits 1 if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh

configs=${LIBPROC_CONFIGS:-default asan asan-gcc tsan tsan-clang lint valgrind matrix docs package load}
jobs=$(nproc 2>/dev/null || echo 2)

# The unit and stress programs but test_stress_load*, which load the machine
# themselves (a thousand children at once): what load and LIBPROC_REPEAT run.
unit_and_stress=(-L 'unit|stress' -E '^test_stress_load')
repeat=() # ctest arguments of LIBPROC_REPEAT, for the configurations that run tests
if [[ -n ${LIBPROC_REPEAT:-} ]]; then
    if ! [[ $LIBPROC_REPEAT =~ ^[1-9][0-9]*$ ]]; then
        echo "run-tests: LIBPROC_REPEAT must be a positive number, not '$LIBPROC_REPEAT'" >&2
        exit 2
    fi
    repeat=(--repeat "until-fail:$LIBPROC_REPEAT")
fi

# Some kernels place mappings where ThreadSanitizer does not expect them
# (vm.mmap_rnd_bits > 28 with gcc 12's TSan: "FATAL: ThreadSanitizer:
# unexpected memory mapping"). Probe with a trivial TSan program; if it does
# not start reliably, run the tests with ASLR off (setarch -R), which is
# inherited by every test process.
tsan_launcher=()
probe_tsan() { # <build dir> <compiler>
    local dir=$1/tsan-probe cc=$2 out
    mkdir -p "$dir"
    cat >"$dir/probe.c" <<'PROBE'
#include <pthread.h>
static void *run(void *arg) { return arg; }
int main(void)
{
    pthread_t t;
    if (pthread_create(&t, 0, run, 0) != 0)
        return 1;
    return pthread_join(t, 0);
}
PROBE
    "$cc" -fsanitize=thread -pthread "$dir/probe.c" -o "$dir/probe" || return 1
    local i ok=1
    for i in 1 2 3 4 5 6 7 8 9 10; do
        if ! out=$("$dir/probe" 2>&1); then
            ok=0
            break
        fi
    done
    if [[ $ok -eq 1 ]]; then
        tsan_launcher=()
        return 0
    fi
    echo "run-tests: a trivial TSan program fails here: ${out%%$'\n'*}"
    local arch
    arch=$(uname -m)
    for i in 1 2 3 4 5; do
        if ! setarch "$arch" -R "$dir/probe" >/dev/null 2>&1; then
            echo "run-tests: TSan does not start even with ASLR disabled" >&2
            return 1
        fi
    done
    echo "run-tests: running the TSan tests with ASLR disabled (setarch $arch -R)"
    tsan_launcher=(setarch "$arch" -R)
}

# Static analysis of src/: clang-tidy with the repository's .clang-tidy, then
# cppcheck. cppcheck checks the configuration the build uses (Linux, glibc's
# posix_spawn_file_actions_addchdir_np); its std.cfg only: posix.cfg
# misreads anonymous mmap() (fd -1) as an error and a leak. Suppressed:
# missingIncludeSystem (system headers are not analysed), and
# knownConditionTrueFalse in src/queue.c, a false positive of cppcheck 2.10
# on the wrap-around of the ring buffer (n > min(n, len - off) can hold).
run_lint() {
    local dir=build-lint rc=0
    scripts/deps.sh clang-tidy:clang-tidy cppcheck:cppcheck || return 1
    echo
    echo "=== configuration lint: $dir, clang-tidy and cppcheck on src/ ==="
    cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DLIBPROC_WERROR=ON -DLIBPROC_BUILD_TESTS=OFF -DLIBPROC_BUILD_EXAMPLES=OFF -DLIBPROC_BUILD_BENCH=OFF ||
        return 1
    echo "--- clang-tidy"
    clang-tidy -p "$dir" --quiet src/*.c || rc=1
    echo "--- cppcheck"
    cppcheck --std=c11 --enable=warning,style,performance,portability --inline-suppr \
        --error-exitcode=1 --quiet -D_GNU_SOURCE -D__linux__ -DLIBPROC_HAVE_ADDCHDIR_NP=1 \
        -I include -I "$dir/include" --suppress=missingIncludeSystem \
        --suppress=knownConditionTrueFalse:src/queue.c src/ || rc=1
    return $rc
}

# The unit tests under valgrind's memcheck (valgrind 3.19 on Debian 12).
# - --trace-children=yes: some tests run a fresh copy of themselves, which
#   then runs under memcheck too (tu_self_exe() in tests/support/testutil.c execs the
#   real path there: valgrind does not translate /proc/self/exe in execve).
#   The system's programs that tests exec (sh, sleep, ...) run natively.
# - Leak errors count for definite leaks only, and only those are listed:
#   "possibly lost" is what every thread alive at exit leaves (its TLS).
# - Valgrind does not know pidfd_open(2), so libproc takes its paths for
#   kernels without pidfds here (sentinel pipes, SIGCHLD handler, waitpid).
# - Built without posix_spawn (LIBPROC_HAVE_ADDCHDIR_NP=OFF, the build for
#   glibc < 2.29): valgrind runs clone(CLONE_VM|CLONE_VFORK) as a plain fork,
#   so glibc's posix_spawn cannot hand an exec or chdir error back to the
#   parent (it writes it into memory the parent no longer shares) and reports
#   success with a child that exits 127. libproc's fork + exec path, which
#   reports those errors through a CLOEXEC pipe, works under valgrind and
#   takes every exec-mode start here; posix_spawn is covered by the other
#   configurations.
# - scripts/valgrind.supp: leak reports that are valgrind artefacts in fork
#   children of multithreaded tests, each explained there.
# - test_stress_forkfail runs here as ctest runs it (the fork and posix_spawn
#   interposer preloaded), with scripts/valgrind-forkfail.supp besides: its
#   case test_fork_during_first_setup is skipped under both ThreadSanitizer
#   runtimes, and this is the other configuration it must run in.
run_valgrind() {
    local dir=build-valgrind rc=0 t start
    local supp=$PWD/scripts/valgrind.supp
    local tests=(test_proc_object test_proc_family test_spawn_modes test_spawn_start
        test_spawn_options test_reaper_join test_reaper_sentinel test_reaper_host
        test_lifecycle_exit test_lifecycle_fork test_stdio test_stress_forkfail)
    scripts/deps.sh valgrind:valgrind || return 1
    echo
    echo "=== configuration valgrind: $dir, gcc, unit tests under memcheck ==="
    cmake -S . -B "$dir" -DCMAKE_C_COMPILER=gcc -DLIBPROC_WERROR=ON -DLIBPROC_BUILD_TESTS=ON \
        -DLIBPROC_BUILD_EXAMPLES=OFF -DLIBPROC_BUILD_BENCH=OFF \
        -DLIBPROC_HAVE_ADDCHDIR_NP=OFF || return 1
    cmake --build "$dir" -j"$jobs" --target "${tests[@]}" || return 1
    for t in "${tests[@]}"; do
        local preload=() supps=(--suppressions="$supp")
        if [[ $t == test_stress_forkfail ]]; then
            preload=(LD_PRELOAD="$PWD/$dir/tests/libstress_forkfail.so")
            supps+=(--suppressions="$PWD/scripts/valgrind-forkfail.supp")
        fi
        echo "--- valgrind $t"
        start=$SECONDS
        (cd "$dir" && env "${preload[@]}" valgrind -q --error-exitcode=1 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite \
            "${supps[@]}" --trace-children=yes \
            --trace-children-skip='/bin/*,/usr/bin/*,/sbin/*,/usr/sbin/*' "tests/$t") || rc=1
        echo "--- valgrind $t: $((SECONDS - start))s"
    done
    return $rc
}

# The unit and stress tests of the default build while busy loops
# (2 x nproc, at the tests' own priority) compete for every CPU: the tests
# must not lean on timing. The loops are plain shell, so nothing needs
# installing. They are killed when the tests end, and each also stops by
# itself once this script is gone (even if it was killed with SIGKILL).
load_pids=()
stop_load() {
    if [[ ${#load_pids[@]} -gt 0 ]]; then
        kill "${load_pids[@]}" 2>/dev/null || true
        wait "${load_pids[@]}" 2>/dev/null || true
    fi
    load_pids=()
}
run_load() {
    local dir=build-test hogs=$((2 * jobs)) i rc=0 me=$$
    echo
    echo "=== configuration load: $dir, unit and stress tests beside $hogs busy loops ==="
    cmake -S . -B "$dir" -DCMAKE_C_COMPILER=gcc -DLIBPROC_WERROR=ON -DLIBPROC_BUILD_TESTS=ON \
        -DLIBPROC_BUILD_EXAMPLES=ON || return 1
    cmake --build "$dir" -j"$jobs" || return 1
    trap stop_load EXIT
    for ((i = 0; i < hogs; i++)); do
        (while kill -0 "$me" 2>/dev/null; do
            for ((j = 0; j < 100000; j++)); do :; done
        done) &
        load_pids+=($!)
    done
    # (test_stress_load* beside the loops took 3 minutes.)
    (cd "$dir" && ctest --output-on-failure -j2 --no-tests=error "${unit_and_stress[@]}" \
        "${repeat[@]}") || rc=1
    stop_load
    trap - EXIT
    return $rc
}

run_config() { # <config name>
    local cfg=$1 dir cc
    case $cfg in
    lint)
        run_lint
        return
        ;;
    valgrind)
        run_valgrind
        return
        ;;
    matrix)
        echo
        echo "=== configuration matrix: build-matrix/, every compiler and build type ==="
        scripts/build-matrix.sh
        return
        ;;
    docs)
        echo
        echo "=== configuration docs: build-docs, Doxygen man pages and HTML ==="
        scripts/check-docs.sh
        return
        ;;
    package)
        echo
        echo "=== configuration package: build-package, cpack -G DEB ==="
        scripts/check-package.sh
        return
        ;;
    load)
        run_load
        return
        ;;
    esac
    local -a cmake_args=() run_env=() launcher=()
    local asan_env=(ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
    # die_after_fork=0: a libproc child that starts children of its own
    # starts a reaper thread, and TSan by default kills any process that
    # creates threads after a fork from a multithreaded parent.
    local tsan_env=(TSAN_OPTIONS=halt_on_error=1:die_after_fork=0)
    case $cfg in
    default)
        dir=build-test
        cc=gcc
        ;;
    asan | asan-gcc)
        dir=build-$cfg
        cc=clang
        [[ $cfg == asan-gcc ]] && cc=gcc
        cmake_args=(-DLIBPROC_SANITIZE=address,undefined)
        run_env=("${asan_env[@]}")
        ;;
    tsan | tsan-clang)
        dir=build-$cfg
        cc=gcc
        [[ $cfg == tsan-clang ]] && cc=clang
        cmake_args=(-DLIBPROC_SANITIZE=thread)
        run_env=("${tsan_env[@]}")
        probe_tsan "$dir" "$cc" || return 1
        launcher=("${tsan_launcher[@]}")
        ;;
    *)
        echo "run-tests: unknown configuration '$cfg' (known: default asan asan-gcc tsan" \
            "tsan-clang lint valgrind matrix docs package load)" >&2
        return 1
        ;;
    esac

    echo
    echo "=== configuration $cfg: $dir, $cc${cmake_args[*]:+ ${cmake_args[*]}} ==="
    cmake -S . -B "$dir" -DCMAKE_C_COMPILER="$cc" -DLIBPROC_WERROR=ON -DLIBPROC_BUILD_TESTS=ON \
        -DLIBPROC_BUILD_EXAMPLES=ON "${cmake_args[@]}" || return 1
    cmake --build "$dir" -j"$jobs" || return 1
    local only=()
    [[ ${#repeat[@]} -gt 0 ]] && only=("${unit_and_stress[@]}" "${repeat[@]}")
    (cd "$dir" && env "${run_env[@]}" "${launcher[@]}" ctest --output-on-failure -j2 \
        --no-tests=error "${only[@]}") || return 1
}

summary=()
failed=0
for cfg in $configs; do
    start=$SECONDS
    if run_config "$cfg"; then
        result=passed
    else
        result=FAILED
        failed=1
    fi
    summary+=("$(printf '%-10s %-7s (%ds)' "$cfg" "$result" $((SECONDS - start)))")
done

echo
echo "=== run-tests summary ==="
for line in "${summary[@]}"; do
    echo "  $line"
done
exit $failed
