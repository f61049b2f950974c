# ctest driver for a must-not-compile case:
#   cmake -DCOMPILER=... -DSOURCE=... -DINCLUDES=a;b -P check_no_compile.cmake
# The source states the diagnostic it expects on a line "// EXPECT: <CMake regex>"; compilers
# word diagnostics differently, so the regex gives GCC's and clang's as alternatives: (gcc)|(clang).
# 1. With -DBOXLITE_MNC_CONTROL the source must compile (the test itself is sound).
# 2. Without it the source must fail, and the diagnostic must match EXPECT (it names the
#    concept that rejected the policy, so users see why).
file(STRINGS ${SOURCE} expect_lines REGEX "^// EXPECT: ")
if(NOT expect_lines)
  message(FATAL_ERROR "${SOURCE} has no '// EXPECT: <regex>' line")
endif()
list(GET expect_lines 0 EXPECT)
string(REGEX REPLACE "^// EXPECT: " "" EXPECT "${EXPECT}")

set(flags -std=c++20 -fsyntax-only)
foreach(dir ${INCLUDES})
  list(APPEND flags "-I${dir}")
endforeach()

execute_process(COMMAND ${COMPILER} ${flags} -DBOXLITE_MNC_CONTROL ${SOURCE}
                RESULT_VARIABLE control_rc OUTPUT_VARIABLE control_out ERROR_VARIABLE control_out)
if(NOT control_rc EQUAL 0)
  message(FATAL_ERROR "control build of ${SOURCE} failed, so the test proves nothing:\n${control_out}")
endif()

execute_process(COMMAND ${COMPILER} ${flags} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but the policy it uses must be rejected")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE} failed to compile, but the diagnostic does not match '${EXPECT}':\n${out}")
endif()
message(STATUS "rejected as expected (diagnostic matches '${EXPECT}')")
