# System dependencies, all from Debian (scripts/setup installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(tl-expected REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(LIBARCHIVE REQUIRED IMPORTED_TARGET libarchive)
pkg_check_modules(LIBSECCOMP REQUIRED IMPORTED_TARGET libseccomp)
pkg_check_modules(LIBXXHASH REQUIRED IMPORTED_TARGET libxxhash)

# What a consumer of boxlite::boxlite links transitively (mirrored in boxliteConfig.cmake.in).
set(BOXLITE_PUBLIC_DEPENDENCIES
  fmt::fmt tl::expected nlohmann_json::nlohmann_json Threads::Threads
  OpenSSL::Crypto ZLIB::ZLIB
  PkgConfig::SQLITE3 PkgConfig::LIBCURL PkgConfig::LIBARCHIVE PkgConfig::LIBSECCOMP PkgConfig::LIBXXHASH)
