# Run after Doxygen (cmake -DMAN3=<dir> -P cmake/docs_man_names.cmake): gives
# the header pages names of libproc's own (proc.h.3 -> libproc_proc.h.3, so
# that no package's version.h.3 collides with ours), points the link pages
# (".so man3/proc.h.3") at the new names, and drops the link pages Doxygen
# writes for struct fields (workers.3, ...), which are not libproc's names.
file(GLOB pages "${MAN3}/*.3")
foreach(page ${pages})
  get_filename_component(name "${page}" NAME)
  if(NOT name MATCHES "^(proc_|PROC_)" AND NOT name MATCHES "\\.h\\.3$")
    file(REMOVE "${page}")
    continue()
  endif()
  file(READ "${page}" text)
  string(REGEX REPLACE "(\\.so man3/)([a-z_]+\\.h\\.3)" "\\1libproc_\\2" new "${text}")
  if(name MATCHES "\\.h\\.3$")
    file(REMOVE "${page}")
    file(WRITE "${MAN3}/libproc_${name}" "${new}")
  elseif(NOT new STREQUAL text)
    file(WRITE "${page}" "${new}")
  endif()
endforeach()
