// Small syntax checks shared by the option validators: host names, IP addresses, CIDRs,
// environment names. Everything here is pure (no filesystem, no network). The address parsers
// are compiled in the library (lib/core/host.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace boxlite::detail {

/// A dotted-quad IPv4 address (inet_pton's syntax).
[[nodiscard]] bool is_ipv4(std::string_view text);

/// An IPv6 address in any of inet_pton's forms.
[[nodiscard]] bool is_ipv6(std::string_view text);

[[nodiscard]] inline bool is_ip(std::string_view text) { return is_ipv4(text) || is_ipv6(text); }

/// RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], 1..63 characters each, not starting
/// or ending with '-', 253 characters in all. A trailing dot is not accepted (patterns are
/// compared textually).
[[nodiscard]] inline bool is_hostname(std::string_view text) {
    if (text.empty() || text.size() > 253) return false;
    std::size_t label = 0;
    char previous = '.';
    for (char c : text) {
        if (c == '.') {
            if (label == 0 || previous == '-') return false;
            label = 0;
        } else {
            const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
            if (!alnum && c != '-') return false;
            if (c == '-' && label == 0) return false;
            if (++label > 63) return false;
        }
        previous = c;
    }
    return label != 0 && previous != '-';
}

/// "10.0.0.0/8" or "fd00::/8": an address and a prefix length within its family's width.
[[nodiscard]] inline bool is_cidr(std::string_view text) {
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) return false;
    const auto address = text.substr(0, slash);
    const auto prefix = text.substr(slash + 1);
    if (prefix.empty() || prefix.size() > 3) return false;
    unsigned bits = 0;
    for (char c : prefix) {
        if (c < '0' || c > '9') return false;
        bits = bits * 10 + static_cast<unsigned>(c - '0');
    }
    if (is_ipv4(address)) return bits <= 32;
    if (is_ipv6(address)) return bits <= 128;
    return false;
}

/// A valid CIDR with every bit after its prefix cleared ("10.1.0.0/8" -> "10.0.0.0/8"), or the
/// text itself when no such bit is set; compiled in lib/core/host.cpp.
[[nodiscard]] std::string cidr_with_host_bits_cleared(std::string_view cidr);

/// POSIX-portable environment variable name: [A-Za-z_][A-Za-z0-9_]*.
[[nodiscard]] inline bool is_env_name(std::string_view text) {
    if (text.empty()) return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
    }
    return true;
}

[[nodiscard]] inline bool has_nul(std::string_view text) { return text.find('\0') != std::string_view::npos; }

}  // namespace boxlite::detail
