# Installs the built libproc into a scratch prefix and builds a consumer program
# against the installed copy, the ways users link it:
#   (a) pkg-config: shared (run with LD_LIBRARY_PATH, and built with an rpath)
#       and static (--static, libproc.a)
#   (b) find_package(libproc CONFIG REQUIRED) + target libproc::proc
# Run by ctest as:
#   cmake -DSOURCE_DIR=... -DBUILD_DIR=... -DWORK_DIR=... -DC_COMPILER=... [-DSANITIZE=...]
#         -P tests/consumer/run.cmake
# With -DPREFIX=<dir> instead of -DBUILD_DIR, nothing is installed: the
# consumers are built against the tree already in <dir> (the unpacked .debs).
cmake_minimum_required(VERSION 3.16)

if(DEFINED PREFIX AND NOT PREFIX STREQUAL "")
  set(BUILD_DIR "")
else()
  set(PREFIX "")
endif()
set(required SOURCE_DIR WORK_DIR C_COMPILER)
if(PREFIX STREQUAL "")
  list(APPEND required BUILD_DIR)
endif()
foreach(var ${required})
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED SANITIZE)
  set(SANITIZE "")
endif()

if(PREFIX STREQUAL "")
  set(prefix "${WORK_DIR}/prefix")
else()
  set(prefix "${PREFIX}")
endif()
set(consumer_src "${SOURCE_DIR}/tests/consumer/consumer.c")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include("${CMAKE_CURRENT_LIST_DIR}/steps.cmake")

set(san_flags "")
if(NOT SANITIZE STREQUAL "")
  set(san_flags "-fsanitize=${SANITIZE}" -fno-omit-frame-pointer)
endif()
set(warn_flags -std=c11 -Wall -Wextra -Wpedantic -Werror)

# ---------------------------------------------------------------- install
if(PREFIX STREQUAL "")
  run_step("cmake --install" out "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
endif()

file(GLOB_RECURSE pc_files "${prefix}/*/libproc.pc")
list(LENGTH pc_files n_pc)
if(NOT n_pc EQUAL 1)
  message(FATAL_ERROR "expected one libproc.pc under ${prefix}, found: '${pc_files}'")
endif()
get_filename_component(pc_dir "${pc_files}" DIRECTORY)
get_filename_component(lib_dir "${pc_dir}" DIRECTORY)
foreach(f "${lib_dir}/libproc.a" "${prefix}/include/libproc/proc.h"
    "${prefix}/include/libproc/version.h")
  if(NOT EXISTS "${f}")
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
file(GLOB shared_libs "${lib_dir}/libproc.so*")
if(NOT shared_libs)
  message(FATAL_ERROR "no libproc.so installed in ${lib_dir}")
endif()

# ---------------------------------------------------------- (a) pkg-config
find_program(PKG_CONFIG_EXE NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG_EXE)
  message(FATAL_ERROR "pkg-config not found")
endif()
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
unset(ENV{PKG_CONFIG_LIBDIR})

run_step("pkg-config --cflags --libs libproc" pc_out
  "${PKG_CONFIG_EXE}" --cflags --libs libproc)
string(STRIP "${pc_out}" pc_out)
# The .pc must describe where the library was installed, not the configure-time
# CMAKE_INSTALL_PREFIX (cmake --install --prefix relocates the package).
foreach(var libdir includedir)
  run_step("pkg-config --variable=${var} libproc" pc_${var}
    "${PKG_CONFIG_EXE}" --variable=${var} libproc)
  string(STRIP "${pc_${var}}" pc_${var})
  get_filename_component(pc_${var} "${pc_${var}}" REALPATH)
endforeach()
get_filename_component(real_lib_dir "${lib_dir}" REALPATH)
get_filename_component(real_inc_dir "${prefix}/include" REALPATH)
if(NOT pc_libdir STREQUAL real_lib_dir OR NOT pc_includedir STREQUAL real_inc_dir)
  message(FATAL_ERROR "libproc.pc does not point into the install prefix ${prefix}: "
    "libdir '${pc_libdir}', includedir '${pc_includedir}'. The .pc file must be "
    "relocatable (prefix=\${pcfiledir}/<relative path>).")
endif()
separate_arguments(pc_flags UNIX_COMMAND "${pc_out}")

run_step("compiling the consumer (pkg-config, shared)" out
  "${C_COMPILER}" ${warn_flags} ${san_flags} "${consumer_src}" ${pc_flags}
  -o "${WORK_DIR}/consumer_pc_shared")
run_consumer("consumer_pc_shared"
  "${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${lib_dir}" "${WORK_DIR}/consumer_pc_shared")

# What README's Linking section shows for a prefix outside the loader's
# paths: an rpath, so the program starts without LD_LIBRARY_PATH.
run_step("compiling the consumer (pkg-config, shared, rpath)" out
  "${C_COMPILER}" ${warn_flags} ${san_flags} "${consumer_src}" ${pc_flags}
  "-Wl,-rpath,${pc_libdir}" -o "${WORK_DIR}/consumer_pc_rpath")
run_consumer("consumer_pc_rpath" "${WORK_DIR}/consumer_pc_rpath")

run_step("pkg-config --static --cflags --libs libproc" pcs_out
  "${PKG_CONFIG_EXE}" --static --cflags --libs libproc)
string(STRIP "${pcs_out}" pcs_out)
separate_arguments(pcs_flags UNIX_COMMAND "${pcs_out}")
list(FIND pcs_flags "-lproc" lproc_at)
if(lproc_at EQUAL -1)
  message(FATAL_ERROR "pkg-config --static --libs libproc has no -lproc: '${pcs_out}'")
endif()
list(REMOVE_AT pcs_flags ${lproc_at})
list(INSERT pcs_flags ${lproc_at} "-l:libproc.a") # the archive, not the .so beside it
run_step("compiling the consumer (pkg-config --static, libproc.a)" out
  "${C_COMPILER}" ${warn_flags} ${san_flags} "${consumer_src}" ${pcs_flags}
  -o "${WORK_DIR}/consumer_pc_static")
find_program(READELF_EXE NAMES readelf)
if(READELF_EXE)
  run_step("readelf" dyn "${READELF_EXE}" -d "${WORK_DIR}/consumer_pc_static")
  if(dyn MATCHES "libproc\\.so")
    message(FATAL_ERROR "consumer_pc_static still needs libproc.so:\n${dyn}")
  endif()
  run_step("readelf" dyn "${READELF_EXE}" -d "${WORK_DIR}/consumer_pc_shared")
  if(NOT dyn MATCHES "libproc\\.so")
    message(FATAL_ERROR "consumer_pc_shared does not link libproc.so:\n${dyn}")
  endif()
endif()
# no LD_LIBRARY_PATH: the static consumer must not need the installed .so
run_consumer("consumer_pc_static" "${WORK_DIR}/consumer_pc_static")

# --------------------------------------------------- (b) find_package(libproc)
set(cm_build "${WORK_DIR}/cmake-consumer")
run_step("configuring the find_package consumer" out
  "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/consumer" -B "${cm_build}"
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_C_COMPILER=${C_COMPILER}"
  "-DCONSUMER_SANITIZE=${SANITIZE}" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
run_step("building the find_package consumer" out
  "${CMAKE_COMMAND}" --build "${cm_build}")
run_consumer("consumer (find_package, libproc::proc)"
  "${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${lib_dir}" "${cm_build}/consumer")
if(EXISTS "${cm_build}/consumer_static")
  run_consumer("consumer_static (find_package, libproc::proc_static)" "${cm_build}/consumer_static")
endif()

message(STATUS "install_consumer: all consumers built and ran")
