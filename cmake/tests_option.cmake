# Decides LIBPROC_TESTS_ENABLED from LIBPROC_BUILD_TESTS (AUTO, ON or OFF).
# The test suite needs cmocka (found with pkg-config): when the tests were
# asked for (ON) and it is missing, configure stops with what to do; when they
# are on only by default (AUTO, top-level project), configure says so and
# builds everything else.
string(TOUPPER "${LIBPROC_BUILD_TESTS}" _libproc_tests)
if(_libproc_tests STREQUAL "AUTO")
  set(_libproc_tests_wanted ${LIBPROC_TOP_LEVEL})
  set(_libproc_tests_required OFF)
elseif(LIBPROC_BUILD_TESTS)
  set(_libproc_tests_wanted ON)
  set(_libproc_tests_required ON)
else()
  set(_libproc_tests_wanted OFF)
endif()

set(LIBPROC_TESTS_ENABLED OFF)
if(_libproc_tests_wanted)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(CMOCKA QUIET IMPORTED_TARGET cmocka)
  endif()
  if(CMOCKA_FOUND)
    set(LIBPROC_TESTS_ENABLED ON)
  elseif(_libproc_tests_required)
    message(FATAL_ERROR
      "libproc: LIBPROC_BUILD_TESTS=ON but cmocka was not found (the tests need "
      "it, through pkg-config). Install it (Debian/Ubuntu: apt-get install "
      "libcmocka-dev pkg-config; Fedora: dnf install libcmocka-devel pkgconf) or "
      "configure with -DLIBPROC_BUILD_TESTS=OFF to build without the tests.")
  else()
    message(STATUS
      "libproc: cmocka not found (pkg-config module cmocka): building without "
      "the tests. Install libcmocka-dev to build them, or pass "
      "-DLIBPROC_BUILD_TESTS=ON to make this an error.")
  endif()
endif()
