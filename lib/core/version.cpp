#include <boxlite/version.hpp>

namespace boxlite {

std::string_view version() noexcept { return BOXLITE_VERSION_STRING; }

}  // namespace boxlite
