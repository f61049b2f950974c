#pragma once

#include <string_view>

#define BOXLITE_VERSION_MAJOR 0
#define BOXLITE_VERSION_MINOR 1
#define BOXLITE_VERSION_PATCH 0
#define BOXLITE_VERSION_STRING "0.1.0"

namespace boxlite {

/// The library's version, "MAJOR.MINOR.PATCH".
[[nodiscard]] std::string_view version() noexcept;

}  // namespace boxlite
