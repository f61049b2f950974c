// PortSpec: a host port forwarded to a port inside the box.
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

constexpr std::string_view to_string(PortProtocol protocol) noexcept {
    return protocol == PortProtocol::Tcp ? "tcp" : "udp";
}

[[nodiscard]] inline BoxliteResult<void> validate(const PortSpec& spec) {
    if (spec.guest_port == 0) {
        return fail(ErrorKind::Config, "guest port must be between 1 and 65535, got 0");
    }
    if (!detail::is_ip(spec.host_ip)) {
        return fail(ErrorKind::Config, "port {} host_ip '{}' is not an IPv4 or IPv6 address", spec.guest_port,
                    spec.host_ip);
    }
    return {};
}

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::PortProtocol> : fmt::formatter<std::string_view> {
    auto format(boxlite::PortProtocol protocol, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(boxlite::to_string(protocol), ctx);
    }
};

/// docker's notation: "0.0.0.0:8080:80/tcp", with "auto" for an assigned host port.
template <>
struct fmt::formatter<boxlite::PortSpec> : fmt::formatter<std::string_view> {
    auto format(const boxlite::PortSpec& p, format_context& ctx) const {
        const std::string host = p.host_port && *p.host_port != 0 ? std::to_string(*p.host_port) : "auto";
        const bool v6 = p.host_ip.find(':') != std::string::npos;
        return fmt::formatter<std::string_view>::format(fmt::format("{}{}{}:{}:{}/{}", v6 ? "[" : "", p.host_ip,
                                                                    v6 ? "]" : "", host, p.guest_port,
                                                                    boxlite::to_string(p.protocol)),
                                                        ctx);
    }
};
