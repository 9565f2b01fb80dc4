# Configures libproc as a user without cmocka would (pkg-config made blind
# with PKG_CONFIG_LIBDIR to all but libcrypto, which libproc needs): by default configure succeeds, says the tests are
# off and builds no test; with -DLIBPROC_BUILD_TESTS=ON it stops with one
# message naming what to install and how to turn the tests off.
# Run by ctest as: cmake -DSOURCE_DIR=... -DWORK_DIR=... -DC_COMPILER=... -P no_cmocka.cmake
cmake_minimum_required(VERSION 3.16)

file(REMOVE_RECURSE "${WORK_DIR}")
# pkg-config sees libcrypto, which libproc itself needs, and nothing else.
execute_process(COMMAND pkg-config --variable=pcfiledir libcrypto
  OUTPUT_VARIABLE crypto_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT EXISTS "${crypto_dir}/libcrypto.pc")
  message(FATAL_ERROR "no libcrypto.pc through pkg-config: install libssl-dev")
endif()
file(COPY "${crypto_dir}/libcrypto.pc" DESTINATION "${WORK_DIR}/no-pkgconfig")
set(ENV{PKG_CONFIG_LIBDIR} "${WORK_DIR}/no-pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/auto"
  "-DCMAKE_C_COMPILER=${C_COMPILER}" -DLIBPROC_BUILD_BENCH=OFF
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configure without cmocka (tests AUTO) failed:\n${out}\n${err}")
endif()
if(NOT out MATCHES "cmocka not found[^\n]*building without the tests")
  message(FATAL_ERROR "configure without cmocka did not say the tests are off:\n${out}")
endif()
if(EXISTS "${WORK_DIR}/auto/tests")
  message(FATAL_ERROR "configure without cmocka still set up tests/")
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/on"
  "-DCMAKE_C_COMPILER=${C_COMPILER}" -DLIBPROC_BUILD_TESTS=ON -DLIBPROC_BUILD_BENCH=OFF
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "configure with -DLIBPROC_BUILD_TESTS=ON and no cmocka succeeded")
endif()
if(NOT err MATCHES "libcmocka-dev" OR NOT err MATCHES "LIBPROC_BUILD_TESTS=OFF")
  message(FATAL_ERROR "the error does not say what to install and how to turn tests off:\n${err}")
endif()
message(STATUS "no_cmocka: AUTO builds without tests and says so; ON stops with a clear message")
