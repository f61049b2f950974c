// EngineHandle: what a running box leaves behind so that any process can find it again.
//
// It is persisted in BoxState. `pid_start_time` (field 22 of /proc/<pid>/stat) guards
// against pid reuse: a handle whose pid now belongs to another process is dead.
#pragma once

#include <boxlite/port_spec.hpp>

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite {

struct EngineHandle {
    /// The box's `boxlite-shim` process (VMM, or the namespace init's parent).
    std::int32_t pid = 0;
    /// Start time of `pid` in clock ticks since boot; 0 when unknown.
    std::uint64_t pid_start_time = 0;
    /// Where the guest agent listens, in the Transport's syntax, e.g. "unix:/home/.boxlite/boxes/<id>/agent.sock"
    /// or "vsock-uds:/home/.boxlite/boxes/<id>/vsock.sock:2695".
    std::string endpoint;
    /// The box's published ports as bound while it runs: each host port set, a picked one
    /// included (BoxOptions::ports holds them as asked). Empty on engines without a network.
    std::vector<PortSpec> ports;

    friend bool operator==(const EngineHandle&, const EngineHandle&) = default;
};

}  // namespace boxlite

/// "pid 1234 at unix:/…/agent.sock".
template <>
struct fmt::formatter<boxlite::EngineHandle> : fmt::formatter<std::string_view> {
    auto format(const boxlite::EngineHandle& h, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("pid {} at {}", h.pid, h.endpoint), ctx);
    }
};
