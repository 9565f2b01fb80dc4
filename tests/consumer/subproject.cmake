# Builds tests/consumer/subproject (a host project with libproc inside it,
# through add_subdirectory or FetchContent), runs its consumers, and checks
# that the host's ctest lists the host's two tests and none of libproc's.
# Run by ctest as:
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... -DC_COMPILER=... -DHOW=subdirectory|fetchcontent
#         -P tests/consumer/subproject.cmake
# The host builds without sanitizers whatever libproc's own build uses.
cmake_minimum_required(VERSION 3.16)

foreach(var SOURCE_DIR WORK_DIR C_COMPILER HOW)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "subproject.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")

include("${CMAKE_CURRENT_LIST_DIR}/steps.cmake")

set(how_args -DLIBPROC_HOW=${HOW})
if(HOW STREQUAL "subdirectory")
  list(APPEND how_args "-DLIBPROC_DIR=${SOURCE_DIR}")
else()
  list(APPEND how_args "-DFETCHCONTENT_SOURCE_DIR_LIBPROC=${SOURCE_DIR}")
endif()
# The host builds with -Werror on its own code; libproc passes on its flags.
run_step("configuring the ${HOW} host" out "${CMAKE_COMMAND}"
  -S "${SOURCE_DIR}/tests/consumer/subproject" -B "${WORK_DIR}"
  "-DCMAKE_C_COMPILER=${C_COMPILER}" -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror" ${how_args})
run_step("building the ${HOW} host" out "${CMAKE_COMMAND}" --build "${WORK_DIR}")

execute_process(COMMAND ctest -N WORKING_DIRECTORY "${WORK_DIR}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE listed)
if(NOT rc EQUAL 0 OR NOT listed MATCHES "Total Tests: 2\n")
  message(FATAL_ERROR "the ${HOW} host's ctest should list its own 2 tests only:\n${listed}")
endif()
run_step("running the ${HOW} host's tests" out ctest --output-on-failure
  WORKING_DIRECTORY "${WORK_DIR}")
message(STATUS "subproject (${HOW}): consumers built and ran; ctest lists only the host's tests")
