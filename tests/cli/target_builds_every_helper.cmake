# cli.target_builds_every_helper: `ninja -t commands boxlite_cli` (every command that building
# the target runs, its dependencies' included) must build each of HELPER_FILES (comma-separated
# binary names). Arguments: NINJA, BUILD_DIR, HELPER_FILES.
execute_process(COMMAND ${NINJA} -C ${BUILD_DIR} -t commands boxlite_cli
                OUTPUT_VARIABLE commands ERROR_VARIABLE errors RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "ninja -t commands boxlite_cli failed (${status}): ${errors}")
endif()
string(REPLACE "," ";" helpers "${HELPER_FILES}")
list(LENGTH helpers count)
if(count EQUAL 0)
  message(FATAL_ERROR "no helper binaries to look for (HELPER_FILES is empty)")
endif()
set(missing "")
foreach(helper ${helpers})
  # The link command names its output: "-o bin/<helper>" (or "-o <dir>/bin/<helper>").
  string(REGEX MATCH "-o [^ ]*bin/${helper}( |\n|$)" found "${commands}")
  if(NOT found)
    list(APPEND missing ${helper})
  endif()
endforeach()
if(missing)
  list(JOIN missing ", " missing)
  message(FATAL_ERROR "building the boxlite_cli target alone does not build ${missing}: add it to "
                      "BOXLITE_HELPERS (top-level CMakeLists.txt), which cli/CMakeLists.txt makes the CLI depend on")
endif()
message(STATUS "boxlite_cli builds every helper: ${HELPER_FILES}")
