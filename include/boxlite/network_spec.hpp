// NetworkSpec: whether the box has outbound networking, and which destinations it may reach.
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>

#include <fmt/ranges.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite {

enum class NetworkMode : std::uint8_t { Enabled, Disabled };

struct NetworkSpec {
    NetworkMode mode = NetworkMode::Enabled;
    /// Empty = no restriction. Each entry: "host", "*.host", an IPv4/IPv6 address, or a CIDR.
    std::vector<std::string> allow_net;

    friend bool operator==(const NetworkSpec&, const NetworkSpec&) = default;
};

constexpr std::string_view to_string(NetworkMode mode) noexcept {
    return mode == NetworkMode::Enabled ? "enabled" : "disabled";
}

/// One allow_net entry: "host", "*.host", an IPv4/IPv6 address, a CIDR, or
/// "host.boxlite.internal[:PORT]" (the host's loopback, reachable only when listed).
[[nodiscard]] inline BoxliteResult<void> validate_allow_net_pattern(std::string_view pattern) {
    if (pattern.empty() || detail::has_nul(pattern)) {
        return fail(ErrorKind::Config, "allow_net entry must not be empty (allowed: host, *.host, IP, CIDR)");
    }
    if (detail::is_ip(pattern)) return {};
    if (detail::is_cidr(pattern)) {
        // "10.1.0.0/8" is a typo or a misunderstanding more often than not: said, not guessed at.
        const auto cleared = detail::cidr_with_host_bits_cleared(pattern);
        if (cleared == pattern) return {};
        return fail(ErrorKind::Config, "allow_net entry '{}' has bits set after its prefix (did you mean {}?)", pattern,
                    cleared);
    }
    // The host's loopback through host.boxlite.internal, on one port only.
    if (constexpr std::string_view alias = "host.boxlite.internal:"; pattern.starts_with(alias)) {
        const auto digits = pattern.substr(alias.size());
        unsigned port = 0;
        for (char c : digits)
            port = (c >= '0' && c <= '9' && port <= 65535) ? port * 10 + static_cast<unsigned>(c - '0') : 65536;
        if (!digits.empty() && port >= 1 && port <= 65535) return {};
        return fail(ErrorKind::Config, "allow_net entry '{}': the port after host.boxlite.internal must be 1-65535",
                    pattern);
    }
    std::string_view host = pattern;
    if (host.starts_with("*.")) host.remove_prefix(2);
    if (detail::is_hostname(host) && host.find('*') == std::string_view::npos) return {};
    return fail(ErrorKind::Config, "allow_net entry '{}' is not a host, *.host, IP address or CIDR", pattern);
}

/// allow_net only makes sense with networking on: a restriction on a disabled network is a
/// caller's mistake worth reporting rather than ignoring.
[[nodiscard]] inline BoxliteResult<void> validate(const NetworkSpec& spec) {
    if (spec.mode == NetworkMode::Disabled && !spec.allow_net.empty()) {
        return fail(ErrorKind::Config,
                    "allow_net is set but network mode is disabled (enable the network or drop allow_net)");
    }
    for (const auto& pattern : spec.allow_net) {
        if (auto ok = validate_allow_net_pattern(pattern); !ok) return ok;
    }
    return {};
}

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::NetworkMode> : fmt::formatter<std::string_view> {
    auto format(boxlite::NetworkMode mode, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(boxlite::to_string(mode), ctx);
    }
};

/// "enabled", "enabled (allow: a.com, 10.0.0.0/8)" or "disabled".
template <>
struct fmt::formatter<boxlite::NetworkSpec> : fmt::formatter<std::string_view> {
    auto format(const boxlite::NetworkSpec& n, format_context& ctx) const {
        std::string out(boxlite::to_string(n.mode));
        if (!n.allow_net.empty()) out += fmt::format(" (allow: {})", fmt::join(n.allow_net, ", "));
        return fmt::formatter<std::string_view>::format(out, ctx);
    }
};
