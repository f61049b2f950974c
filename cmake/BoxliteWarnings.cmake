# boxlite_warnings: the warning set every BoxLite target compiles with (link it PRIVATE).
# -Wnull-dereference is left out on purpose: GCC 12 at -O2/-O3 reports it inside inlined
# libstdc++ code (istreambuf_iterator, std::string::replace, vector growth) where no null exists,
# so under -Werror it fails correct code. clang-tidy and the sanitizer build cover real ones.
add_library(boxlite_warnings INTERFACE)
target_compile_options(boxlite_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough -Wformat=2
  $<$<BOOL:${BOXLITE_WERROR}>:-Werror>)
install(TARGETS boxlite_warnings EXPORT boxliteTargets)
