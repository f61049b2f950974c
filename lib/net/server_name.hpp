// The server name in the first bytes a client sends on a TCP connection: the SNI host_name of a
// TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), or the Host header (and an absolute-form or
// CONNECT request target) of an HTTP/1.x request (RFC 9112 §3.2). The egress firewall checks
// these names against allow_net's host-name rules (firewall.hpp).
//
// The bytes come from the box and are hostile: every length is checked against the bytes at hand
// and against kMaxServerNameScan; nothing is allocated beyond the names found and, for a
// ClientHello split over several TLS records, one copy of its handshake bytes (bounded the same).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace boxlite::net {

/// The first client bytes of a connection the firewall reads (and keeps a copy of), at most,
/// waiting for a ClientHello or the header block of an HTTP request to be complete.
inline constexpr std::size_t kMaxServerNameScan = 16 * 1024;

enum class ServerNameScan : std::uint8_t {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Neither TLS nor HTTP/1.x, or one that names no server (no SNI, no Host, an IP literal).
    NoName,
    /// `names` holds the lower-cased names (without port or trailing dot) the bytes carry.
    Names,
    /// TLS or HTTP/1.x that breaks its own framing, a name that is not a host name, two names
    /// where the protocol allows one, or a ClientHello larger than kMaxServerNameScan.
    Malformed,
};

struct ServerNames {
    ServerNameScan scan = ServerNameScan::NeedMore;
    std::vector<std::string> names;
};

/// Scans `stream`, the client's bytes from the connection's first one on.
[[nodiscard]] ServerNames find_server_names(std::span<const std::uint8_t> stream);

}  // namespace boxlite::net
