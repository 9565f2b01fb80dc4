# Install rules and the Debian packages (included by the top-level
# CMakeLists.txt when LIBPROC_INSTALL is ON).
#
# Two components, which are also the two packages `cpack -G DEB` makes:
#   Runtime      libproc1:   the SONAME'd shared library and the license
#   Development  libproc-dev: headers, the libproc.so link, libproc.a,
#                libproc.pc, the CMake package and the man pages

install(TARGETS libproc_shared libproc_static EXPORT libprocTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Runtime
    NAMELINK_COMPONENT Development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Runtime)
install(DIRECTORY include/libproc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT Development)
install(FILES ${PROJECT_BINARY_DIR}/include/libproc/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/libproc COMPONENT Development)
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT Runtime)

# prefix is relative to the .pc file, so an installed tree can be moved.
file(RELATIVE_PATH LIBPROC_PC_TO_PREFIX
  ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" LIBPROC_PC_TO_PREFIX "${LIBPROC_PC_TO_PREFIX}")
configure_file(cmake/libproc.pc.in ${PROJECT_BINARY_DIR}/libproc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/libproc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT Development)

set(LIBPROC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/libproc)
install(EXPORT libprocTargets NAMESPACE libproc:: DESTINATION ${LIBPROC_CMAKE_DIR}
  COMPONENT Development)
configure_package_config_file(cmake/libprocConfig.cmake.in
  ${PROJECT_BINARY_DIR}/libprocConfig.cmake INSTALL_DESTINATION ${LIBPROC_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/libprocConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/libprocConfig.cmake
  ${PROJECT_BINARY_DIR}/libprocConfigVersion.cmake DESTINATION ${LIBPROC_CMAKE_DIR}
  COMPONENT Development)

# cpack -G DEB (in the build directory) writes libproc1_<ver>_<arch>.deb and
# libproc-dev_<ver>_<arch>.deb. Configure with -DCMAKE_INSTALL_PREFIX=/usr for
# packages whose files go where Debian's do (lib/<multiarch>).
set(CPACK_PACKAGE_NAME libproc)
set(CPACK_PACKAGE_VENDOR "libproc")
set(CPACK_PACKAGE_CONTACT "libproc maintainers <libproc@invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_COMPONENTS_ALL Runtime Development)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libproc${LIBPROC_SOVERSION})
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
  "${PROJECT_DESCRIPTION} - shared library\n Child processes as objects (start, join with timeout, terminate,\n exit codes) with a reaper that leaves no zombies, plus pipes,\n queues, locks and worker pools.")
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libproc-dev)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
# libssl-dev: libproc.a and libproc.pc need libcrypto to link statically.
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS
  "libproc${LIBPROC_SOVERSION} (= ${PROJECT_VERSION}), libssl-dev")
set(CPACK_COMPONENT_DEVELOPMENT_DESCRIPTION
  "${PROJECT_DESCRIPTION} - development files\n Headers, static library, pkg-config file, CMake package and man pages.")
include(CPack)
