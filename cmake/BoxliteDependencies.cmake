# System dependencies, all from Debian (scripts/setup installs them).
#
# The public ones are listed once here; boxliteConfig.cmake (cmake/boxliteConfig.cmake.in) is
# generated from the same lists, so an installed BoxLite finds exactly what it was built with.
# To add a public dependency, append it to one of the two lists and to BOXLITE_PUBLIC_DEPENDENCIES.

# find_package() arguments, one dependency per entry.
set(BOXLITE_CMAKE_PACKAGES
  "Threads"
  "fmt"
  "tl-expected"
  "nlohmann_json 3.10"
  "ZLIB")
# "<PREFIX> <pkg-config module>": imported as PkgConfig::<PREFIX>.
set(BOXLITE_PKG_CONFIG_MODULES
  "SQLITE3 sqlite3"
  "LIBSECCOMP libseccomp"
  "LIBXXHASH libxxhash")
# Needed to build only (headers): BoxLite dlopen()s these at run time, when an image operation
# first needs them (lib/image/dynamic_libs.hpp), so neither it nor its consumers link them.
set(BOXLITE_DLOPEN_PKG_CONFIG_MODULES
  "LIBCURL libcurl"
  "LIBARCHIVE libarchive")
# The same for libcrypto (SHA-256, lib/image/digest.hpp), found with CMake's module; `serve`'s TLS
# links it (lib/server).
find_package(OpenSSL REQUIRED COMPONENTS Crypto SSL)

find_package(PkgConfig REQUIRED)
foreach(entry ${BOXLITE_CMAKE_PACKAGES})
  separate_arguments(args UNIX_COMMAND "${entry}")
  find_package(${args} REQUIRED)
endforeach()
foreach(entry ${BOXLITE_PKG_CONFIG_MODULES} ${BOXLITE_DLOPEN_PKG_CONFIG_MODULES})
  separate_arguments(args UNIX_COMMAND "${entry}")
  list(GET args 0 prefix)
  list(GET args 1 module)
  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET ${module})
endforeach()

# What a consumer of boxlite::boxlite links transitively.
set(BOXLITE_PUBLIC_DEPENDENCIES
  fmt::fmt tl::expected nlohmann_json::nlohmann_json Threads::Threads
  ZLIB::ZLIB ${CMAKE_DL_LIBS}
  PkgConfig::SQLITE3 PkgConfig::LIBSECCOMP PkgConfig::LIBXXHASH)
