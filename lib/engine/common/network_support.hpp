// The box network as the engines see it (docs/networking.md): the checks every engine with a
// network device makes at create and start, the host ports of `-p` picked or checked once, and
// the passt form of a bound port.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/error.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace boxlite::engine {

/// Config errors for network options that cannot work together or are malformed: ports with the
/// network disabled, and an allow_net entry the firewall's own parser (lib/net) refuses.
[[nodiscard]] BoxliteResult<void> check_network_options(const BoxConfig& box);

/// The box's published ports with their host ports checked (or picked, for 0 or none) now: two
/// boxes on one host port get a clear Config error here, rather than a passt that could not bind
/// it. A picked port is free when checked; another program could still take it before passt
/// binds it.
[[nodiscard]] BoxliteResult<std::vector<PortSpec>> publish_ports(const BoxConfig& box);

/// A published port as passt's -t/-u takes it: "[ADDR/]HOSTPORT:BOXPORT" (no address for any).
[[nodiscard]] std::string passt_port_spec(const PortSpec& bound);

}  // namespace boxlite::engine
