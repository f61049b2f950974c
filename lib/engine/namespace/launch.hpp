// What the namespace engine hands boxlite-shim (lib/shim/namespace_mode.cpp): its command line,
// built from the box's config and launch request. The descriptor options (--ready-fd,
// --watchdog-fd) are added by engine/common/shim_spawn.hpp.
#pragma once

#include <boxlite/engine/namespace_engine.hpp>

#include <string>
#include <vector>

namespace boxlite::engine::ns {

/// The shim's arguments after argv[0] for `launch` (which must carry a config), its agent
/// listening on `socket`.
[[nodiscard]] std::vector<std::string> shim_arguments(const NamespaceEngineOptions& options, const EngineLaunch& launch,
                                                      const std::string& socket);

}  // namespace boxlite::engine::ns
