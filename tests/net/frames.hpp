// Hand-made Ethernet frames for the network tests and the fuzzer's seeds.
#pragma once

#include "net/packet.hpp"

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace boxlite::net::test {

inline void put16(std::vector<std::uint8_t>& out, std::size_t at, std::uint16_t value) {
    out[at] = static_cast<std::uint8_t>(value >> 8);
    out[at + 1] = static_cast<std::uint8_t>(value);
}
inline std::uint16_t get16(std::span<const std::uint8_t> in, std::size_t at) {
    return static_cast<std::uint16_t>((in[at] << 8) | in[at + 1]);
}

inline constexpr std::uint8_t kBoxMac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
inline constexpr std::uint8_t kGatewayMac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd};

/// An IPv4 or IPv6 packet from `source` to `destination` with a TCP (flags given), UDP or other
/// transport header, checksums correct.
inline std::vector<std::uint8_t> ip_frame(const IpAddress& source, const IpAddress& destination, std::uint8_t protocol,
                                          std::uint16_t source_port, std::uint16_t destination_port,
                                          std::uint8_t tcp_flags = kTcpSyn, std::size_t payload = 0,
                                          std::span<const std::uint8_t> data = {}) {
    if (!data.empty()) payload = data.size();
    const bool v6 = source.v6;
    const std::size_t ip_header = v6 ? 40 : 20;
    const std::size_t l4_header = protocol == kProtoTcp ? 20 : 8;
    const std::size_t l4_length = l4_header + payload;
    std::vector<std::uint8_t> out(14 + ip_header + l4_length, 0);
    std::memcpy(out.data(), kGatewayMac, 6);
    std::memcpy(out.data() + 6, kBoxMac, 6);
    put16(out, 12, v6 ? kEtherTypeIpv6 : kEtherTypeIpv4);
    const std::size_t ip = 14;
    if (v6) {
        out[ip] = 0x60;
        put16(out, ip + 4, static_cast<std::uint16_t>(l4_length));
        out[ip + 6] = protocol;
        out[ip + 7] = 64;
        std::memcpy(out.data() + ip + 8, source.bytes.data(), 16);
        std::memcpy(out.data() + ip + 24, destination.bytes.data(), 16);
    } else {
        out[ip] = 0x45;
        put16(out, ip + 2, static_cast<std::uint16_t>(20 + l4_length));
        out[ip + 8] = 64;
        out[ip + 9] = protocol;
        std::memcpy(out.data() + ip + 12, source.bytes.data(), 4);
        std::memcpy(out.data() + ip + 16, destination.bytes.data(), 4);
        put16(out, ip + 10, checksum_fold(checksum_add(std::span<const std::uint8_t>(out.data() + ip, 20))));
    }
    const std::size_t l4 = ip + ip_header;
    put16(out, l4, source_port);
    put16(out, l4 + 2, destination_port);
    for (std::size_t i = 0; i < payload; ++i) {
        out[l4 + l4_header + i] = data.empty() ? static_cast<std::uint8_t>('a' + i % 26) : data[i];
    }
    std::size_t checksum_at = l4 + 6;
    if (protocol == kProtoTcp) {
        out[l4 + 4] = 0x11;  // sequence number 0x11000000
        out[l4 + 12] = 5 << 4;
        out[l4 + 13] = tcp_flags;
        checksum_at = l4 + 16;
    } else if (protocol == kProtoUdp) {
        put16(out, l4 + 4, static_cast<std::uint16_t>(l4_length));
    } else {
        checksum_at = l4 + 2;  // ICMP: type/code in the "port" bytes
    }
    std::uint32_t sum = 0;
    if (protocol != kProtoIcmp) {
        sum = checksum_add(std::span(source.bytes.data(), source.size()));
        sum = checksum_add(std::span(destination.bytes.data(), destination.size()), sum);
        sum += protocol;
        sum += static_cast<std::uint32_t>(l4_length);
    }
    const std::uint16_t checksum = checksum_fold(
        checksum_add(std::span<const std::uint8_t>(out.data() + l4, l4_length), sum));
    put16(out, checksum_at, checksum);
    return out;
}

/// A DNS query (id 0x1234, recursion desired) for `name` of `type`.
inline std::vector<std::uint8_t> dns_query(const std::string& name, std::uint16_t type) {
    std::vector<std::uint8_t> out = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    std::size_t start = 0;
    while (start <= name.size()) {
        auto dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        out.push_back(static_cast<std::uint8_t>(dot - start));
        out.insert(out.end(), name.begin() + static_cast<std::ptrdiff_t>(start),
                   name.begin() + static_cast<std::ptrdiff_t>(dot));
        start = dot + 1;
    }
    out.push_back(0);
    out.insert(out.end(), {static_cast<std::uint8_t>(type >> 8), static_cast<std::uint8_t>(type), 0, 1});
    return out;
}

/// True when the IP header checksum (IPv4) and the transport checksum of `frame` verify.
inline bool checksums_valid(std::span<const std::uint8_t> frame) {
    const auto info = parse_frame(frame);
    if (!info || !info->is_ip()) return false;
    const std::size_t ip = info->l3_offset;
    if (!info->source.v6 && checksum_fold(checksum_add(frame.subspan(ip, 20))) != 0) return false;
    if (info->l4_offset == 0) return true;
    const std::size_t l4_length = ip + info->l3_length - info->l4_offset;
    std::uint32_t sum = 0;
    if (info->protocol != kProtoIcmp) {
        sum = checksum_add(std::span(info->source.bytes.data(), info->source.size()));
        sum = checksum_add(std::span(info->destination.bytes.data(), info->destination.size()), sum);
        sum += info->protocol;
        sum += static_cast<std::uint32_t>(l4_length);
    }
    return checksum_fold(checksum_add(frame.subspan(info->l4_offset, l4_length), sum)) == 0;
}

}  // namespace boxlite::net::test
