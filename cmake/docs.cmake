# The reference from the public headers' doc comments (LIBPROC_BUILD_DOCS=ON):
# man pages, one per public function, type and macro (`man 3 proc_start`) and
# one per header (`man 3 libproc_proc.h`), and an HTML reference. Doxygen fails on any warning,
# so an undocumented public symbol breaks the build.
find_package(Doxygen 1.9 REQUIRED)

set(LIBPROC_DOCS_DIR ${PROJECT_BINARY_DIR}/docs)
set(LIBPROC_DOCS_INPUT
  "${PROJECT_SOURCE_DIR}/include/libproc ${PROJECT_BINARY_DIR}/include/libproc")
set(LIBPROC_DOCS_STRIP "${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include")
configure_file(${PROJECT_SOURCE_DIR}/docs/Doxyfile.in ${LIBPROC_DOCS_DIR}/Doxyfile @ONLY)

file(GLOB LIBPROC_PUBLIC_HEADERS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/libproc/*.h)
add_custom_command(OUTPUT ${LIBPROC_DOCS_DIR}/stamp
  COMMAND ${CMAKE_COMMAND} -E remove_directory ${LIBPROC_DOCS_DIR}/man
  COMMAND ${CMAKE_COMMAND} -E remove_directory ${LIBPROC_DOCS_DIR}/html
  COMMAND Doxygen::doxygen ${LIBPROC_DOCS_DIR}/Doxyfile
  COMMAND ${CMAKE_COMMAND} -DMAN3=${LIBPROC_DOCS_DIR}/man/man3
    -P ${PROJECT_SOURCE_DIR}/cmake/docs_man_names.cmake
  COMMAND ${CMAKE_COMMAND} -E touch ${LIBPROC_DOCS_DIR}/stamp
  DEPENDS ${LIBPROC_PUBLIC_HEADERS} ${PROJECT_BINARY_DIR}/include/libproc/version.h
    ${LIBPROC_DOCS_DIR}/Doxyfile
  COMMENT "Generating the man pages and HTML reference (Doxygen)"
  VERBATIM)
add_custom_target(libproc_docs ALL DEPENDS ${LIBPROC_DOCS_DIR}/stamp)

if(LIBPROC_INSTALL)
  install(DIRECTORY ${LIBPROC_DOCS_DIR}/man/man3 DESTINATION ${CMAKE_INSTALL_MANDIR}
    COMPONENT Development)
  install(DIRECTORY ${LIBPROC_DOCS_DIR}/html DESTINATION ${CMAKE_INSTALL_DOCDIR}
    COMPONENT Html)
endif()
