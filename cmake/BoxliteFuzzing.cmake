# boxlite_add_fuzzer(): a libFuzzer target and the ctest that runs it for a bounded time.
#
# The main build may use g++, which has no libFuzzer, so a fuzzer is compiled by clang++ outside
# the CMake targets: one custom command per source (with the compiler launcher, e.g. ccache, and a
# depfile, so header edits rebuild it), one to link. When clang++ or its fuzzer runtime is
# missing, no fuzzer is built and no test is added, and configure says so: skipped, not faked.
#
#   boxlite_add_fuzzer(NAME <target> TEST <ctest name> SOURCES <file>...
#     [INCLUDES <dir>...] [DEFINITIONS <macro[=value]>...] [LIBS <link argument>...]
#     [DEPENDS <file or target>...] [LABELS <label>...] [SECONDS <n>] [TIMEOUT <n>]
#     [RUNNER <script>] [ARGS <argument>...] [ENVIRONMENT <VAR=value>...])
#
# NAME is the build target (built by default) and the binary's name, in fuzz/ of the binary dir.
# LIBS are link arguments as the compiler takes them (-lfmt, -pthread). DEPENDS are extra inputs
# of every compile; headers need not be listed. The test runs for SECONDS (default 20) under a
# ctest TIMEOUT (default 120):
#   - with RUNNER:    bash <RUNNER> <fuzzer> <work dir> <SECONDS> [ARGS...]
#                     (the runner prepares seeds; it fails when the fuzzer was not built)
#   - without RUNNER: <fuzzer> -max_total_time=<SECONDS> [ARGS...]
# Exit code 77 counts as skipped (scripts/test then wants a "precondition: ..." reason). Relative
# paths are taken from the calling folder.

# The fuzzers are compiled with their own flags (below), whatever the build's BOXLITE_SANITIZE,
# so a second build tree (scripts/test's ASan one) would build and run the very same binaries
# again; it turns them off with -DBOXLITE_BUILD_FUZZERS=OFF.
option(BOXLITE_BUILD_FUZZERS "Build the libFuzzer targets (with clang++) and their bounded ctest runs" ON)

set(BOXLITE_FUZZ_FLAGS -std=c++20 -g -O1 -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

# Can clang++ link a libFuzzer binary with the sanitizers we use? Probed once for all folders and
# cached, again only when BOXLITE_CLANGXX changes. A clang without compiler-rt's fuzzer runtime
# fails here, not in the build.
find_program(BOXLITE_CLANGXX NAMES clang++ clang++-14)
if(NOT BOXLITE_CLANGXX)
  set(BOXLITE_LIBFUZZER_FOUND FALSE)
elseif(NOT BOXLITE_LIBFUZZER_PROBED_WITH STREQUAL BOXLITE_CLANGXX)
  set(probe_dir ${CMAKE_BINARY_DIR}/CMakeFiles/libfuzzer-probe)
  file(WRITE ${probe_dir}/probe.cpp
    "#include <cstddef>\n#include <cstdint>\n"
    "extern \"C\" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }\n")
  execute_process(COMMAND ${BOXLITE_CLANGXX} ${BOXLITE_FUZZ_FLAGS} probe.cpp -o probe
    WORKING_DIRECTORY ${probe_dir} RESULT_VARIABLE probe_result OUTPUT_QUIET ERROR_QUIET)
  if(probe_result EQUAL 0)
    set(found TRUE)
    message(STATUS "libFuzzer: ${BOXLITE_CLANGXX} builds fuzzers")
  else()
    set(found FALSE)
    message(STATUS "libFuzzer: ${BOXLITE_CLANGXX} cannot link -fsanitize=fuzzer,address,undefined")
  endif()
  set(BOXLITE_LIBFUZZER_FOUND ${found} CACHE INTERNAL "clang++ can build libFuzzer targets")
  set(BOXLITE_LIBFUZZER_PROBED_WITH ${BOXLITE_CLANGXX} CACHE INTERNAL "clang++ the probe used")
endif()

function(boxlite_add_fuzzer)
  cmake_parse_arguments(PARSE_ARGV 0 fz "" "NAME;TEST;SECONDS;TIMEOUT;RUNNER"
    "SOURCES;INCLUDES;DEFINITIONS;LIBS;DEPENDS;LABELS;ARGS;ENVIRONMENT")
  if(NOT fz_NAME OR NOT fz_TEST OR NOT fz_SOURCES)
    message(FATAL_ERROR "boxlite_add_fuzzer: NAME, TEST and SOURCES are required")
  endif()
  if(fz_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "boxlite_add_fuzzer(${fz_NAME}): unknown arguments ${fz_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT BOXLITE_BUILD_FUZZERS)
    return()
  endif()
  if(NOT BOXLITE_LIBFUZZER_FOUND)
    message(STATUS "${fz_TEST}: clang++ with libFuzzer not found; the test is skipped, not faked")
    return()
  endif()
  if(NOT fz_SECONDS)
    set(fz_SECONDS 20)
  endif()
  if(NOT fz_TIMEOUT)
    set(fz_TIMEOUT 120)
  endif()

  set(flags ${BOXLITE_FUZZ_FLAGS})
  foreach(dir ${fz_INCLUDES})
    get_filename_component(dir ${dir} ABSOLUTE)
    list(APPEND flags -I${dir})
  endforeach()
  foreach(definition ${fz_DEFINITIONS})
    list(APPEND flags -D${definition})
  endforeach()

  set(fuzzer ${CMAKE_CURRENT_BINARY_DIR}/fuzz/${fz_NAME})
  set(objects "")
  foreach(source ${fz_SOURCES})
    get_filename_component(source ${source} ABSOLUTE)
    file(RELATIVE_PATH object ${PROJECT_SOURCE_DIR} ${source})
    set(object ${fuzzer}.dir/${object}.o)
    get_filename_component(object_dir ${object} DIRECTORY)
    file(MAKE_DIRECTORY ${object_dir})
    add_custom_command(OUTPUT ${object}
      COMMAND ${CMAKE_CXX_COMPILER_LAUNCHER} ${BOXLITE_CLANGXX} ${flags}
        -MD -MF ${object}.d -c ${source} -o ${object}
      DEPENDS ${source} ${fz_DEPENDS}
      DEPFILE ${object}.d
      COMMENT "Building ${fz_NAME} (libFuzzer, clang++): ${source}"
      VERBATIM)
    list(APPEND objects ${object})
  endforeach()
  add_custom_command(OUTPUT ${fuzzer}
    COMMAND ${BOXLITE_CLANGXX} ${BOXLITE_FUZZ_FLAGS} ${objects} ${fz_LIBS} -o ${fuzzer}
    DEPENDS ${objects}
    COMMENT "Linking the libFuzzer target ${fz_NAME} with clang++"
    VERBATIM)
  add_custom_target(${fz_NAME} ALL DEPENDS ${fuzzer})

  if(fz_RUNNER)
    get_filename_component(runner ${fz_RUNNER} ABSOLUTE)
    set(command bash ${runner} ${fuzzer} ${fuzzer}-work ${fz_SECONDS})
  else()
    set(command ${fuzzer} -max_total_time=${fz_SECONDS})
  endif()
  add_test(NAME ${fz_TEST} COMMAND ${command} ${fz_ARGS})
  set_tests_properties(${fz_TEST} PROPERTIES TIMEOUT ${fz_TIMEOUT} SKIP_RETURN_CODE 77)
  if(fz_LABELS)
    set_tests_properties(${fz_TEST} PROPERTIES LABELS "${fz_LABELS}")
  endif()
  if(fz_ENVIRONMENT)
    set_tests_properties(${fz_TEST} PROPERTIES ENVIRONMENT "${fz_ENVIRONMENT}")
  endif()
endfunction()
