# ctest driver: install the build tree into a fresh prefix, then build and run a consumer project
# against it — once through find_package(boxlite), once through pkg-config — and check that an
# incompatible version request is refused. Each consumer also runs a box on the namespace engine
# (as root; it says "run skipped" otherwise), with no BOXLITE_* variable set: the installed
# library must find its own helpers under the prefix.
#   cmake -DBUILD_DIR=… -DSOURCE_DIR=… -DWORK_DIR=… -DGENERATOR=… -DCXX=… -DSANITIZE=… -P …
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
foreach(file include/boxlite/boxlite.hpp include/boxlite/runtime.hpp libexec/boxlite/boxlite-shim
             libexec/boxlite/boxlite-agent)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "install did not produce ${file}")
  endif()
endforeach()

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

# 3. The version file refuses an incompatible request.
file(WRITE ${WORK_DIR}/badversion/CMakeLists.txt
     "cmake_minimum_required(VERSION 3.22)\nproject(v LANGUAGES CXX)\nfind_package(boxlite 9.0 REQUIRED)\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/badversion -B ${WORK_DIR}/badversion/build
                -DCMAKE_PREFIX_PATH=${WORK_DIR}/moved RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(boxlite 9.0) succeeded against ${WORK_DIR}/moved")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "installed package consumed through find_package and pkg-config, and run after a move")
