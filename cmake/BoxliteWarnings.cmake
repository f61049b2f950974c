# boxlite_warnings: the warning set every BoxLite target compiles with (link it PRIVATE).
add_library(boxlite_warnings INTERFACE)
target_compile_options(boxlite_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough -Wformat=2
  $<$<BOOL:${BOXLITE_WERROR}>:-Werror>)
install(TARGETS boxlite_warnings EXPORT boxliteTargets)
