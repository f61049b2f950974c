# Packaging: `cmake --install` puts the headers, libboxlite.so (+ soname links), the helpers in
# <libexecdir>/boxlite/ (boxlite-shim, boxlite-shim-kvm, boxlite-agent), the CLI, the CMake
# package (boxlite::boxlite via find_package(boxlite)) and boxlite.pc under the prefix. Nothing in
# it depends on the prefix it was configured with: the library finds its helpers relative to
# itself, installed programs find the library through an $ORIGIN-relative RUNPATH, and
# boxlite.pc finds the prefix relative to itself. tests/packaging installs under a temporary
# prefix and runs a box from there.
include(CMakePackageConfigHelpers)

set(BOXLITE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/boxlite)

install(TARGETS boxlite EXPORT boxliteTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The C API (lib/c_api): boxlite::c, component `c` of the CMake package, and boxlite-c.pc. It finds
# libboxlite beside itself ($ORIGIN), so a C program needs only -lboxlite_c.
if(TARGET boxlite_c)
  set_target_properties(boxlite_c PROPERTIES INSTALL_RPATH "$ORIGIN")
  install(TARGETS boxlite_c EXPORT boxliteTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()

# The installed `boxlite` CLI links the core statically (boxlite_static): it loads no BoxLite
# library, so it needs no RPATH, and finds its helpers from its own place (helper_binary.hpp).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/boxlite DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
install(EXPORT boxliteTargets NAMESPACE boxlite:: DESTINATION ${BOXLITE_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/boxliteConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/boxliteConfig.cmake
                              INSTALL_DESTINATION ${BOXLITE_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API, so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/boxliteConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/boxliteConfig.cmake ${PROJECT_BINARY_DIR}/boxliteConfigVersion.cmake
        DESTINATION ${BOXLITE_INSTALL_CMAKEDIR})

# Neither the CMake package nor boxlite.pc declares libcurl or libarchive: lib/image dlopen()s
# them on first use (lib/image/dynamic_libs.hpp), so they are run-time dependencies of programs
# that use images (Debian: libcurl4 + libarchive13, or libcurl4t64 + libarchive13t64 on trixie).

# pkg-config: the prefix is found relative to the .pc file, so an installed tree can be moved
# (and `cmake --install --prefix` anywhere works).
file(RELATIVE_PATH BOXLITE_PC_RELATIVE_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" BOXLITE_PC_RELATIVE_PREFIX "${BOXLITE_PC_RELATIVE_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/boxlite.pc.in ${PROJECT_BINARY_DIR}/boxlite.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/boxlite.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET boxlite_c)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/boxlite-c.pc.in ${PROJECT_BINARY_DIR}/boxlite-c.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/boxlite-c.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
