// NetworkSpec: whether the box has outbound networking, and which destinations it may reach.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace boxlite {

enum class NetworkMode : std::uint8_t { Enabled, Disabled };

struct NetworkSpec {
    NetworkMode mode = NetworkMode::Enabled;
    /// Empty = no restriction. Each entry: "host", "*.host", an IPv4/IPv6 address, or a CIDR.
    std::vector<std::string> allow_net;

    friend bool operator==(const NetworkSpec&, const NetworkSpec&) = default;
};

}  // namespace boxlite
