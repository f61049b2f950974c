// Parsing of Ethernet frames that a box sends or receives, for the egress firewall.
//
// Everything a box sends is hostile: every length and offset is checked against the frame before
// it is used, and a frame that does not parse is dropped by the caller, never "fixed up". The
// parser reads IPv4 (with options and fragments), IPv6 (walking a bounded number of extension
// headers), and the TCP/UDP ports and ICMP type behind them. It allocates nothing.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace boxlite::net {

inline constexpr std::size_t kEthernetHeaderSize = 14;
inline constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr std::uint16_t kEtherTypeArp = 0x0806;
inline constexpr std::uint16_t kEtherTypeIpv6 = 0x86dd;

inline constexpr std::uint8_t kProtoIcmp = 1;
inline constexpr std::uint8_t kProtoTcp = 6;
inline constexpr std::uint8_t kProtoUdp = 17;
inline constexpr std::uint8_t kProtoIcmpv6 = 58;

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpSyn = 0x02;
inline constexpr std::uint8_t kTcpRst = 0x04;
inline constexpr std::uint8_t kTcpAck = 0x10;

/// An IPv4 or IPv6 address; an IPv4 address uses the first 4 bytes.
struct IpAddress {
    bool v6 = false;
    std::array<std::uint8_t, 16> bytes{};

    [[nodiscard]] static IpAddress v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) noexcept {
        IpAddress address;
        address.bytes[0] = a;
        address.bytes[1] = b;
        address.bytes[2] = c;
        address.bytes[3] = d;
        return address;
    }
    /// inet_pton's syntax, either family; nullopt when it is neither.
    [[nodiscard]] static std::optional<IpAddress> parse(std::string_view text);
    [[nodiscard]] std::size_t size() const noexcept { return v6 ? 16 : 4; }
    [[nodiscard]] std::string to_string() const;

    friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

/// What the firewall needs to know about one frame. Offsets are into the frame.
struct PacketInfo {
    std::uint16_t ether_type = 0;
    /// IPv4 or IPv6 only from here on.
    IpAddress source;
    IpAddress destination;
    std::size_t l3_offset = 0;
    /// Where the transport header starts (0 when the packet is a non-first fragment).
    std::size_t l4_offset = 0;
    /// Bytes of the IP packet the frame holds, from l3_offset (the IP header's total length).
    std::size_t l3_length = 0;
    std::uint8_t protocol = 0;
    /// Any part of a fragmented datagram; `first_fragment` when it carries the transport header.
    bool fragment = false;
    bool first_fragment = false;
    /// TCP and UDP: ports (and TCP's flags, sequence numbers and payload length) were read.
    bool has_ports = false;
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
    std::uint8_t tcp_flags = 0;
    std::uint32_t tcp_seq = 0;
    std::uint32_t tcp_ack = 0;
    std::size_t tcp_payload = 0;
    /// ICMP / ICMPv6: the message type was read.
    bool has_icmp_type = false;
    std::uint8_t icmp_type = 0;

    [[nodiscard]] bool is_ip() const noexcept { return ether_type == kEtherTypeIpv4 || ether_type == kEtherTypeIpv6; }
    /// Fills source and destination from the IPv6 header at `at` (bounds already checked).
    void v6_addresses_from(std::span<const std::uint8_t> frame, std::size_t at) noexcept;
};

/// Parses one Ethernet frame. Non-IP frames (ARP and others) parse with only `ether_type` set.
/// Returns nullopt, with `*why` set to a static reason, when the frame is malformed.
[[nodiscard]] std::optional<PacketInfo> parse_frame(std::span<const std::uint8_t> frame, const char** why = nullptr);

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum` (not yet folded).
[[nodiscard]] std::uint32_t checksum_add(std::span<const std::uint8_t> data, std::uint32_t sum = 0) noexcept;
[[nodiscard]] std::uint16_t checksum_fold(std::uint32_t sum) noexcept;

}  // namespace boxlite::net
