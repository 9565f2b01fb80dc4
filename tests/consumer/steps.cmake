# Helpers for the consumer scripts (run.cmake, subproject.cmake), included
# in cmake -P mode.

# Runs a command; on failure stops with its output. OUT_VAR receives stdout.
function(run_step what out_var)
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "${what} failed (${rc}):\n  ${cmd}\n--- stdout:\n${out}\n--- stderr:\n${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# Runs a built consumer and checks it prints OK.
function(run_consumer what)
  run_step("running ${what}" out ${ARGN})
  if(NOT out MATCHES "^OK")
    message(FATAL_ERROR "${what} did not print OK:\n${out}")
  endif()
  string(STRIP "${out}" out)
  message(STATUS "${what}: ${out}")
endfunction()
