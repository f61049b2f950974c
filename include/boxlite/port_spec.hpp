// PortSpec: a host port forwarded to a port inside the box.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace boxlite {

enum class PortProtocol : std::uint8_t { Tcp, Udp };

struct PortSpec {
    /// nullopt or 0: the runtime assigns a free port and reports it in BoxInfo.
    std::optional<std::uint16_t> host_port;
    std::uint16_t guest_port = 0;
    PortProtocol protocol = PortProtocol::Tcp;
    std::string host_ip = "0.0.0.0";

    friend bool operator==(const PortSpec&, const PortSpec&) = default;
};

}  // namespace boxlite
