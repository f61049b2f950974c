#include "net/packet.hpp"

#include <arpa/inet.h>

#include <string>

namespace boxlite::net {
namespace {

std::uint16_t load16(std::span<const std::uint8_t> data, std::size_t at) noexcept {
    return static_cast<std::uint16_t>((data[at] << 8) | data[at + 1]);
}
std::uint32_t load32(std::span<const std::uint8_t> data, std::size_t at) noexcept {
    return (static_cast<std::uint32_t>(data[at]) << 24) | (static_cast<std::uint32_t>(data[at + 1]) << 16) |
           (static_cast<std::uint32_t>(data[at + 2]) << 8) | data[at + 3];
}

std::optional<PacketInfo> failed(const char** why, const char* reason) {
    if (why != nullptr) *why = reason;
    return std::nullopt;
}

// The transport header at `at` (end = end of the IP packet): ports, TCP flags, ICMP type. A
// transport header cut short is malformed: a first fragment or a whole packet must carry it.
bool parse_transport(std::span<const std::uint8_t> frame, std::size_t at, std::size_t end, PacketInfo& info,
                     const char** why) {
    info.l4_offset = at;
    const std::size_t available = end - at;
    switch (info.protocol) {
        case kProtoTcp: {
            if (available < 20) return failed(why, "TCP header cut short"), false;
            const std::size_t header = static_cast<std::size_t>(frame[at + 12] >> 4) * 4;
            if (header < 20 || header > available) return failed(why, "TCP data offset out of bounds"), false;
            info.has_ports = true;
            info.source_port = load16(frame, at);
            info.destination_port = load16(frame, at + 2);
            info.tcp_seq = load32(frame, at + 4);
            info.tcp_ack = load32(frame, at + 8);
            info.tcp_flags = frame[at + 13];
            // A fragment's payload length is unknown here; only whole packets are answered with RST.
            info.tcp_payload = available - header;
            return true;
        }
        case kProtoUdp:
            if (available < 8) return failed(why, "UDP header cut short"), false;
            info.has_ports = true;
            info.source_port = load16(frame, at);
            info.destination_port = load16(frame, at + 2);
            return true;
        case kProtoIcmp:
        case kProtoIcmpv6:
            if (available < 4) return failed(why, "ICMP header cut short"), false;
            info.has_icmp_type = true;
            info.icmp_type = frame[at];
            return true;
        default: return true;
    }
}

std::optional<PacketInfo> parse_ipv4(std::span<const std::uint8_t> frame, PacketInfo info, const char** why) {
    const std::size_t at = kEthernetHeaderSize;
    if (frame.size() < at + 20) return failed(why, "IPv4 header cut short");
    if ((frame[at] >> 4) != 4) return failed(why, "IPv4 version field is not 4");
    const std::size_t header = static_cast<std::size_t>(frame[at] & 0x0f) * 4;
    const std::size_t total = load16(frame, at + 2);
    if (header < 20 || total < header || at + total > frame.size()) {
        return failed(why, "IPv4 header or total length out of bounds");
    }
    info.l3_offset = at;
    info.l3_length = total;
    info.protocol = frame[at + 9];
    for (std::size_t i = 0; i < 4; ++i) {
        info.source.bytes[i] = frame[at + 12 + i];
        info.destination.bytes[i] = frame[at + 16 + i];
    }
    const std::uint16_t flags_offset = load16(frame, at + 6);
    const bool more_fragments = (flags_offset & 0x2000) != 0;
    const std::uint16_t offset = flags_offset & 0x1fff;
    info.fragment = more_fragments || offset != 0;
    info.first_fragment = info.fragment && offset == 0;
    if (offset != 0) return info;  // no transport header in a later fragment
    if (!parse_transport(frame, at + header, at + total, info, why)) return std::nullopt;
    return info;
}

std::optional<PacketInfo> parse_ipv6(std::span<const std::uint8_t> frame, PacketInfo info, const char** why) {
    const std::size_t at = kEthernetHeaderSize;
    if (frame.size() < at + 40) return failed(why, "IPv6 header cut short");
    if ((frame[at] >> 4) != 6) return failed(why, "IPv6 version field is not 6");
    const std::size_t total = 40 + static_cast<std::size_t>(load16(frame, at + 4));
    if (at + total > frame.size()) return failed(why, "IPv6 payload length out of bounds");
    info.v6_addresses_from(frame, at);
    info.l3_offset = at;
    info.l3_length = total;
    std::uint8_t next = frame[at + 6];
    std::size_t cursor = at + 40;
    const std::size_t end = at + total;
    // Extension headers: a bounded walk, so a chain of them cannot hide the transport header
    // from the firewall nor keep the parser busy.
    for (int hops = 0;; ++hops) {
        if (hops > 8) return failed(why, "IPv6 extension header chain too long");
        if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, destination options
            if (end - cursor < 8) return failed(why, "IPv6 extension header cut short");
            const std::size_t length = (static_cast<std::size_t>(frame[cursor + 1]) + 1) * 8;
            if (length > end - cursor) return failed(why, "IPv6 extension header length out of bounds");
            next = frame[cursor];
            cursor += length;
            continue;
        }
        if (next == 44) {  // fragment
            if (end - cursor < 8) return failed(why, "IPv6 fragment header cut short");
            const std::uint16_t offset_flags = load16(frame, cursor + 2);
            const std::uint16_t offset = offset_flags >> 3;
            info.fragment = true;
            info.first_fragment = offset == 0;
            next = frame[cursor];
            cursor += 8;
            if (offset != 0) {
                info.protocol = next;
                return info;
            }
            continue;
        }
        break;
    }
    info.protocol = next;
    if (!parse_transport(frame, cursor, end, info, why)) return std::nullopt;
    return info;
}

}  // namespace

void PacketInfo::v6_addresses_from(std::span<const std::uint8_t> frame, std::size_t at) noexcept {
    source.v6 = destination.v6 = true;
    for (std::size_t i = 0; i < 16; ++i) {
        source.bytes[i] = frame[at + 8 + i];
        destination.bytes[i] = frame[at + 24 + i];
    }
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    if (text.empty() || text.size() > 64) return std::nullopt;
    const std::string copy(text);
    IpAddress address;
    if (::inet_pton(AF_INET, copy.c_str(), address.bytes.data()) == 1) return address;
    address.v6 = true;
    if (::inet_pton(AF_INET6, copy.c_str(), address.bytes.data()) == 1) return address;
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), text, sizeof text);
    return text;
}

std::optional<PacketInfo> parse_frame(std::span<const std::uint8_t> frame, const char** why) {
    if (frame.size() < kEthernetHeaderSize) return failed(why, "frame shorter than an Ethernet header");
    PacketInfo info;
    info.ether_type = load16(frame, 12);
    if (info.ether_type == kEtherTypeIpv4) return parse_ipv4(frame, info, why);
    if (info.ether_type == kEtherTypeIpv6) return parse_ipv6(frame, info, why);
    return info;
}

std::uint32_t checksum_add(std::span<const std::uint8_t> data, std::uint32_t sum) noexcept {
    std::size_t i = 0;
    for (; i + 1 < data.size(); i += 2) sum += static_cast<std::uint32_t>((data[i] << 8) | data[i + 1]);
    if (i < data.size()) sum += static_cast<std::uint32_t>(data[i] << 8);
    return sum;
}

std::uint16_t checksum_fold(std::uint32_t sum) noexcept {
    while ((sum >> 16) != 0) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

}  // namespace boxlite::net
