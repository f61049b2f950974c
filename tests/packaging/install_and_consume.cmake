# ctest driver: install the build tree into a fresh prefix, then build and run a consumer project
# against it — once through find_package(boxlite), once through pkg-config — and check that an
# incompatible version request is refused. Each consumer, and the installed CLI, also runs a box on the namespace engine
# (as root; it says "run skipped" otherwise), with no BOXLITE_* variable set: the installed
# library must find its own helpers under the prefix.
# The C API too: the C examples (EXAMPLES_DIR) are built by a C project through
# find_package(boxlite COMPONENTS c), and with `cc -std=c11 -Wall -Wextra -Werror` through
# pkg-config boxlite-c; each runs and checks its own output ("<name>: ok", or a "precondition:"
# skip where the namespace engine cannot run).
#   cmake -DBUILD_DIR=… -DSOURCE_DIR=… -DWORK_DIR=… -DGENERATOR=… -DCXX=… -DCC=… -DEXAMPLES_DIR=…
#         -DSANITIZE=… -P …
function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
# The consumer's home lies deeper than a Unix socket address can hold (108 bytes): a CI checkout
# can be anywhere, and every box socket must still work (base/unix_address.hpp).
set(deep_home ${WORK_DIR}/home/a-folder-name-long-enough-that-no-socket-path-under-it-fits-in-sun_path-as-it-is)
file(MAKE_DIRECTORY ${deep_home} ${WORK_DIR}/rootfs)
set(prefix ${WORK_DIR}/prefix)

run("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(file include/boxlite/boxlite.hpp include/boxlite/runtime.hpp include/boxlite/c/boxlite.h
             libexec/boxlite/boxlite-shim libexec/boxlite/boxlite-agent libexec/boxlite/boxlite-serve)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "install did not produce ${file}")
  endif()
endforeach()
file(GLOB_RECURSE c_library ${prefix}/*/libboxlite_c.so.0)
if(NOT c_library)
  message(FATAL_ERROR "install did not produce libboxlite_c.so.0")
endif()

# Runs a C example and checks that it says "<name>: ok" (or skipped for a missing precondition).
function(run_c_example what name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(rc EQUAL 77 AND out MATCHES "precondition: ")
    message(STATUS "${what}: ${name} skipped: ${out}")
  elseif(NOT rc EQUAL 0 OR NOT out MATCHES "${name}: ok")
    message(FATAL_ERROR "${what}: ${name} failed (${rc}):\n${out}")
  else()
    message(STATUS "${what}: ${name}: ok")
  endif()
endfunction()

set(flags "")
set(launcher "")
find_program(ccache_program ccache)
if(ccache_program)
  set(launcher ${ccache_program})
endif()
if(SANITIZE)
  set(flags "-fsanitize=${SANITIZE}")
endif()

# 1. find_package(boxlite)
run("configure consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/consumer -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX} "-DCMAKE_CXX_COMPILER_LAUNCHER=${launcher}" -DCMAKE_PREFIX_PATH=${prefix} "-DCMAKE_CXX_FLAGS=${flags}"
    "-DCMAKE_EXE_LINKER_FLAGS=${flags}")
run("build consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
set(clean_env ${CMAKE_COMMAND} -E env --unset=BOXLITE_SHIM --unset=BOXLITE_AGENT --unset=BOXLITE_SHIM_KVM
    --unset=BOXLITE_HOME --unset=BOXLITE_ENGINE)
run("run consumer" ${clean_env} ${WORK_DIR}/build/consumer ${deep_home} ${WORK_DIR}/rootfs run)
message(STATUS "${last_output}")
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "consumer did not report success:\n${last_output}")
endif()
set(consumer_ran_a_box TRUE)
if(last_output MATCHES "run skipped")
  set(consumer_ran_a_box FALSE)
endif()

# The installed CLI (the core linked in, no RPATH) runs a box in the consumer's rootfs, finding
# its helpers under the prefix: `boxlite run` with nothing set but the home.
function(run_installed_cli what cli)
  if(NOT consumer_ran_a_box)
    message(STATUS "${what}: skipped (the namespace engine needs root)")
    return()
  endif()
  file(REMOVE_RECURSE ${WORK_DIR}/cli-home)
  run("${what}" ${clean_env} BOXLITE_HOME=${WORK_DIR}/cli-home ${cli} --engine namespace run --rm
      --rootfs ${WORK_DIR}/rootfs/busybox echo installed cli ok)
  if(NOT last_output MATCHES "installed cli ok")
    message(FATAL_ERROR "${what} did not print its command's output:\n${last_output}")
  endif()
  message(STATUS "${what}: ok")
endfunction()
run_installed_cli("installed boxlite run" ${prefix}/bin/boxlite)
# `boxlite serve` execs boxlite-serve from <prefix>/libexec/boxlite: a bad grace period in the
# environment is refused by the server's own code, so its message proves the exec found it.
execute_process(COMMAND ${clean_env} BOXLITE_HOME=${WORK_DIR}/cli-home BOXLITE_SHUTDOWN_GRACE=soon
                ${prefix}/bin/boxlite serve --port 0 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0 OR NOT out MATCHES "BOXLITE_SHUTDOWN_GRACE='soon'")
  message(FATAL_ERROR "installed boxlite serve did not reach boxlite-serve (${rc}):\n${out}")
endif()
message(STATUS "installed boxlite serve: reaches libexec/boxlite/boxlite-serve")

# 1b. find_package(boxlite COMPONENTS c): the C examples, from a C-only project.
run("configure C consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/consumer_c -B ${WORK_DIR}/build-c -G ${GENERATOR}
    -DCMAKE_C_COMPILER=${CC} "-DCMAKE_C_COMPILER_LAUNCHER=${launcher}" -DCMAKE_PREFIX_PATH=${prefix}
    -DEXAMPLES_DIR=${EXAMPLES_DIR} "-DCMAKE_C_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}")
run("build C consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build-c)
foreach(name quickstart streaming nonblocking)
  run_c_example("find_package(boxlite COMPONENTS c)" ${name} ${clean_env} ${WORK_DIR}/build-c/${name})
endforeach()
# A component that does not exist is refused.
file(WRITE ${WORK_DIR}/badcomponent/CMakeLists.txt
     "cmake_minimum_required(VERSION 3.22)\nproject(v LANGUAGES C)\nfind_package(boxlite REQUIRED COMPONENTS fortran)\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/badcomponent -B ${WORK_DIR}/badcomponent/build
                -DCMAKE_PREFIX_PATH=${prefix} RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(boxlite COMPONENTS fortran) succeeded")
endif()

# 2. pkg-config
file(GLOB_RECURSE pc_files ${prefix}/*/boxlite.pc)
list(GET pc_files 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
run("pkg-config" pkg-config --cflags --libs boxlite)
string(STRIP "${last_output}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run("pkg-config libdir" pkg-config --variable=libdir boxlite)
string(STRIP "${last_output}" pc_libdir)
get_filename_component(pc_libdir ${pc_libdir} ABSOLUTE)  # pkg-config gives <pcfiledir>/../../lib
run("build consumer with pkg-config" ${launcher} ${CXX} ${flags} ${SOURCE_DIR}/consumer/main.cpp -o ${WORK_DIR}/consumer-pc
    ${pc_flags} -Wl,-rpath,${pc_libdir})
# 2b. pkg-config boxlite-c: the C examples built as a C user would, with warnings as errors.
run("pkg-config boxlite-c" pkg-config --cflags --libs boxlite-c)
string(STRIP "${last_output}" pc_c_flags)
separate_arguments(pc_c_flags UNIX_COMMAND "${pc_c_flags}")
foreach(name quickstart streaming nonblocking)
  run("build ${name}.c with pkg-config boxlite-c" ${launcher} ${CC} -std=c11 -Wall -Wextra -Werror ${flags}
      ${EXAMPLES_DIR}/${name}.c -o ${WORK_DIR}/c-${name} ${pc_c_flags} -Wl,-rpath,${pc_libdir})
endforeach()
file(REMOVE_RECURSE ${WORK_DIR}/home ${WORK_DIR}/rootfs)
file(MAKE_DIRECTORY ${WORK_DIR}/home ${WORK_DIR}/rootfs)
# Relocated: the tree moves after installation, and the library still finds its helpers beside
# itself (the consumer finds the library through LD_LIBRARY_PATH; its RUNPATH names the old place).
file(RENAME ${prefix} ${WORK_DIR}/moved)
file(RELATIVE_PATH pc_libdir_in_prefix ${prefix} ${pc_libdir})
run("run pkg-config consumer from the moved prefix" ${clean_env} LD_LIBRARY_PATH=${WORK_DIR}/moved/${pc_libdir_in_prefix}
    ${WORK_DIR}/consumer-pc ${WORK_DIR}/home ${WORK_DIR}/rootfs run)
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "pkg-config consumer did not report success:\n${last_output}")
endif()
run_installed_cli("boxlite run from the moved prefix" ${WORK_DIR}/moved/bin/boxlite)
# The C examples from the moved prefix: libboxlite_c finds libboxlite beside itself ($ORIGIN),
# and libboxlite its helpers.
foreach(name quickstart streaming nonblocking)
  run_c_example("pkg-config boxlite-c, moved prefix" ${name} ${clean_env}
                LD_LIBRARY_PATH=${WORK_DIR}/moved/${pc_libdir_in_prefix} ${WORK_DIR}/c-${name})
endforeach()

# 3. The version file refuses an incompatible request.
file(WRITE ${WORK_DIR}/badversion/CMakeLists.txt
     "cmake_minimum_required(VERSION 3.22)\nproject(v LANGUAGES CXX)\nfind_package(boxlite 9.0 REQUIRED)\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/badversion -B ${WORK_DIR}/badversion/build
                -DCMAKE_PREFIX_PATH=${WORK_DIR}/moved RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(boxlite 9.0) succeeded against ${WORK_DIR}/moved")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "installed package (C++ and C API) consumed through find_package and pkg-config, and run after a move")
