#include "net/firewall.hpp"

#include <boxlite/detail/validate.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace boxlite::net {
namespace {

void store16(std::uint8_t* at, std::uint16_t value) noexcept {
    at[0] = static_cast<std::uint8_t>(value >> 8);
    at[1] = static_cast<std::uint8_t>(value);
}
void store32(std::uint8_t* at, std::uint32_t value) noexcept {
    store16(at, static_cast<std::uint16_t>(value >> 16));
    store16(at + 2, static_cast<std::uint16_t>(value));
}

// RFC 1624's incremental update of a checksum field for one changed 16-bit word.
std::uint16_t checksum_replace(std::uint16_t checksum, std::uint16_t old_word, std::uint16_t new_word) noexcept {
    std::uint32_t sum = static_cast<std::uint16_t>(~checksum);
    sum += static_cast<std::uint16_t>(~old_word);
    sum += new_word;
    while ((sum >> 16) != 0) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum);
}

std::uint16_t load16(const std::uint8_t* at) noexcept { return static_cast<std::uint16_t>((at[0] << 8) | at[1]); }

// The pseudo-header part of a TCP/UDP/ICMPv6 checksum.
std::uint32_t pseudo_header_sum(const IpAddress& source, const IpAddress& destination, std::uint8_t protocol,
                                std::size_t length) noexcept {
    std::uint32_t sum = checksum_add(std::span(source.bytes.data(), source.size()));
    sum = checksum_add(std::span(destination.bytes.data(), destination.size()), sum);
    sum += protocol;
    sum += static_cast<std::uint32_t>(length >> 16);
    sum += static_cast<std::uint32_t>(length & 0xffff);
    return sum;
}

bool is_ipv4_loopback_or_unspecified(const IpAddress& address) noexcept {
    return !address.v6 && (address.bytes[0] == 127 || address.bytes[0] == 0);
}
bool is_ipv4_multicast_or_broadcast(const IpAddress& address) noexcept {
    return !address.v6 && (address.bytes[0] >= 224);
}
bool is_ipv6_link_local(const IpAddress& address) noexcept {
    return address.v6 && address.bytes[0] == 0xfe && (address.bytes[1] & 0xc0) == 0x80;
}
bool is_ipv6_multicast(const IpAddress& address) noexcept { return address.v6 && address.bytes[0] == 0xff; }
bool is_ipv6_loopback_or_unspecified(const IpAddress& address) noexcept {
    if (!address.v6) return false;
    for (std::size_t i = 0; i < 15; ++i) {
        if (address.bytes[i] != 0) return false;
    }
    return address.bytes[15] <= 1;
}

// Ethernet header of a reply: the addresses swapped.
void put_reply_ethernet(std::uint8_t* out, std::span<const std::uint8_t> frame, std::uint16_t ether_type) {
    std::memcpy(out, frame.data() + 6, 6);
    std::memcpy(out + 6, frame.data(), 6);
    store16(out + 12, ether_type);
}

// IP header of a reply from `info.destination` to `info.source` carrying `payload` bytes.
std::size_t put_reply_ip(std::uint8_t* out, const PacketInfo& info, std::uint8_t protocol, std::size_t payload) {
    if (!info.source.v6) {
        out[0] = 0x45;
        store16(out + 2, static_cast<std::uint16_t>(20 + payload));
        store16(out + 6, 0x4000);  // don't fragment
        out[8] = 64;
        out[9] = protocol;
        std::memcpy(out + 12, info.destination.bytes.data(), 4);
        std::memcpy(out + 16, info.source.bytes.data(), 4);
        store16(out + 10, checksum_fold(checksum_add(std::span<const std::uint8_t>(out, 20))));
        return 20;
    }
    out[0] = 0x60;
    store16(out + 4, static_cast<std::uint16_t>(payload));
    out[6] = protocol;
    out[7] = 64;
    std::memcpy(out + 8, info.destination.bytes.data(), 16);
    std::memcpy(out + 24, info.source.bytes.data(), 16);
    return 40;
}

std::vector<std::uint8_t> make_tcp_reset(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    if ((info.tcp_flags & kTcpRst) != 0) return {};
    const std::size_t ip_header = info.source.v6 ? 40 : 20;
    std::vector<std::uint8_t> out(kEthernetHeaderSize + ip_header + 20, 0);
    put_reply_ethernet(out.data(), frame, info.source.v6 ? kEtherTypeIpv6 : kEtherTypeIpv4);
    put_reply_ip(out.data() + kEthernetHeaderSize, info, kProtoTcp, 20);
    std::uint8_t* tcp = out.data() + kEthernetHeaderSize + ip_header;
    store16(tcp, info.destination_port);
    store16(tcp + 2, info.source_port);
    if ((info.tcp_flags & kTcpAck) != 0) {
        store32(tcp + 4, info.tcp_ack);
        tcp[13] = kTcpRst;
    } else {
        const std::uint32_t length = static_cast<std::uint32_t>(info.tcp_payload) +
                                     ((info.tcp_flags & kTcpSyn) != 0 ? 1U : 0U) +
                                     ((info.tcp_flags & kTcpFin) != 0 ? 1U : 0U);
        store32(tcp + 8, info.tcp_seq + length);
        tcp[13] = kTcpRst | kTcpAck;
    }
    tcp[12] = 5 << 4;
    const std::uint32_t sum = pseudo_header_sum(info.destination, info.source, kProtoTcp, 20);
    store16(tcp + 16, checksum_fold(checksum_add(std::span<const std::uint8_t>(tcp, 20), sum)));
    return out;
}

std::vector<std::uint8_t> make_unreachable(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    if (info.has_icmp_type) {
        // Never an error about an error: only queries (echo and the like) get one.
        const bool error = info.source.v6 ? info.icmp_type < 128
                                          : !(info.icmp_type == 8 || info.icmp_type == 13 || info.icmp_type == 15 ||
                                              info.icmp_type == 17);
        if (error) return {};
    }
    const std::size_t ip_header = info.source.v6 ? 40 : 20;
    // As much of the refused packet as the minimum MTU of its family allows (RFC 1812, 4443).
    const std::size_t limit = info.source.v6 ? 1280 : 576;
    const std::size_t quote = std::min(info.l3_length, limit - ip_header - 8);
    std::vector<std::uint8_t> out(kEthernetHeaderSize + ip_header + 8 + quote, 0);
    const std::uint8_t protocol = info.source.v6 ? kProtoIcmpv6 : kProtoIcmp;
    put_reply_ethernet(out.data(), frame, info.source.v6 ? kEtherTypeIpv6 : kEtherTypeIpv4);
    put_reply_ip(out.data() + kEthernetHeaderSize, info, protocol, 8 + quote);
    std::uint8_t* icmp = out.data() + kEthernetHeaderSize + ip_header;
    icmp[0] = info.source.v6 ? 1 : 3;   // destination unreachable
    icmp[1] = info.source.v6 ? 1 : 13;  // administratively prohibited
    std::memcpy(icmp + 8, frame.data() + info.l3_offset, quote);
    std::uint32_t sum = info.source.v6 ? pseudo_header_sum(info.destination, info.source, protocol, 8 + quote) : 0;
    sum = checksum_add(std::span<const std::uint8_t>(icmp, 8 + quote), sum);
    store16(icmp + 2, checksum_fold(sum));
    return out;
}

// The answer to a DNS query for host.boxlite.internal sent to the gateway: the pump answers it
// itself (A: the host alias; any other type: no records), so the name resolves whatever resolver
// passt forwards to, and in boxes whose libc reads no /etc/hosts. Empty when the frame is not
// such a query.
std::vector<std::uint8_t> answer_host_alias_query(std::span<const std::uint8_t> frame, const PacketInfo& info,
                                                  const IpAddress& host_alias) {
    if (info.source.v6 || info.fragment || info.protocol != kProtoUdp || info.destination_port != 53) return {};
    const std::size_t udp = info.l4_offset;
    const std::size_t end = info.l3_offset + info.l3_length;
    const std::size_t udp_length = load16(frame.data() + udp + 4);
    if (udp_length < 8 + 12 || udp + udp_length > end) return {};
    const std::size_t dns = udp + 8;
    const std::size_t dns_end = udp + udp_length;
    const std::uint16_t flags = load16(frame.data() + dns + 2);
    if ((flags & 0xf800) != 0 || load16(frame.data() + dns + 4) != 1) return {};  // a standard query, one question
    std::string name;
    std::size_t at = dns + 12;
    for (;;) {
        if (at >= dns_end) return {};
        const std::size_t label = frame[at];
        if (label == 0) break;
        if ((label & 0xc0) != 0 || at + 1 + label > dns_end || name.size() + label + 1 > 255) return {};
        if (!name.empty()) name += '.';
        for (std::size_t i = 0; i < label; ++i) {
            name += static_cast<char>(std::tolower(static_cast<unsigned char>(frame[at + 1 + i])));
        }
        at += 1 + label;
    }
    ++at;  // the root label
    if (at + 4 > dns_end || name != kHostAliasName) return {};
    const std::uint16_t type = load16(frame.data() + at);
    const std::uint16_t klass = load16(frame.data() + at + 2);
    if (klass != 1) return {};
    const std::size_t question = at + 4 - (dns + 12);
    if (question > 512) return {};  // (it cannot be: a name is at most 255 bytes)
    const bool a_record = type == 1;
    const std::size_t dns_length = 12 + question + (a_record ? 16 : 0);
    std::vector<std::uint8_t> out(kEthernetHeaderSize + 20 + 8 + dns_length, 0);
    put_reply_ethernet(out.data(), frame, kEtherTypeIpv4);
    put_reply_ip(out.data() + kEthernetHeaderSize, info, kProtoUdp, 8 + dns_length);
    std::uint8_t* reply_udp = out.data() + kEthernetHeaderSize + 20;
    store16(reply_udp, info.destination_port);
    store16(reply_udp + 2, info.source_port);
    store16(reply_udp + 4, static_cast<std::uint16_t>(8 + dns_length));
    std::uint8_t* reply_dns = reply_udp + 8;
    std::memcpy(reply_dns, frame.data() + dns, 2);                                  // id
    store16(reply_dns + 2, static_cast<std::uint16_t>(0x8480 | (flags & 0x0100)));  // QR AA RA, RD copied
    store16(reply_dns + 4, 1);
    store16(reply_dns + 6, a_record ? 1 : 0);
    std::memcpy(reply_dns + 12, frame.data() + dns + 12, question);
    if (a_record) {
        std::uint8_t* answer = reply_dns + 12 + question;
        store16(answer, 0xc00c);  // the name of the question
        store16(answer + 2, 1);
        store16(answer + 4, 1);
        store32(answer + 6, 60);
        store16(answer + 10, 4);
        std::memcpy(answer + 12, host_alias.bytes.data(), 4);
    }
    const std::uint32_t sum = pseudo_header_sum(info.destination, info.source, kProtoUdp, 8 + dns_length);
    std::uint16_t checksum = checksum_fold(checksum_add(std::span<const std::uint8_t>(reply_udp, 8 + dns_length), sum));
    store16(reply_udp + 6, checksum == 0 ? 0xffff : checksum);
    return out;
}

std::string lower(std::string_view text) {
    std::string out(text);
    std::ranges::transform(out, out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

}  // namespace

bool Cidr::contains(const IpAddress& address) const noexcept {
    if (address.v6 != network.v6) return false;
    const std::size_t whole = prefix / 8;
    for (std::size_t i = 0; i < whole; ++i) {
        if (address.bytes[i] != network.bytes[i]) return false;
    }
    const unsigned rest = prefix % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (address.bytes[whole] & mask) == (network.bytes[whole] & mask);
}

BoxliteResult<AllowList> AllowList::parse(const std::vector<std::string>& patterns) {
    AllowList list;
    list.restricted = !patterns.empty();
    for (const auto& original : patterns) {
        const std::string pattern = lower(original);
        if (pattern.empty() || pattern.find('\0') != std::string::npos) {
            return fail(ErrorKind::Config, "allow_net entry must not be empty (allowed: host, *.host, IP, CIDR)");
        }
        if (pattern == kHostAliasName) {
            list.host_alias_any_port = true;
            continue;
        }
        if (pattern.starts_with(kHostAliasName) && pattern[kHostAliasName.size()] == ':') {
            const std::string_view digits = std::string_view(pattern).substr(kHostAliasName.size() + 1);
            unsigned port = 0;
            const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
            if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || port == 0 ||
                port > 65535) {
                return fail(ErrorKind::Config, "allow_net entry '{}': the port after {} must be 1-65535", original,
                            kHostAliasName);
            }
            list.host_alias_ports.push_back(static_cast<std::uint16_t>(port));
            continue;
        }
        if (auto address = IpAddress::parse(pattern)) {
            list.networks.push_back(Cidr{*address, static_cast<std::uint8_t>(address->v6 ? 128 : 32)});
            continue;
        }
        if (const auto slash = pattern.find('/'); slash != std::string::npos) {
            auto address = IpAddress::parse(std::string_view(pattern).substr(0, slash));
            const std::string_view digits = std::string_view(pattern).substr(slash + 1);
            unsigned bits = 0;
            const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
            if (!address || digits.empty() || digits.size() > 3 || ec != std::errc() ||
                end != digits.data() + digits.size() || bits > (address->v6 ? 128U : 32U)) {
                return fail(ErrorKind::Config,
                            "allow_net entry '{}' is not a valid CIDR (an IPv4 address with /0-/32, or an IPv6 "
                            "address with /0-/128)",
                            original);
            }
            Cidr cidr{*address, static_cast<std::uint8_t>(bits)};
            Cidr masked = cidr;
            for (std::size_t i = 0; i < 16; ++i) {
                const std::size_t first_bit = i * 8;
                if (first_bit >= bits) {
                    masked.network.bytes[i] = 0;
                } else if (bits - first_bit < 8) {
                    masked.network.bytes[i] &= static_cast<std::uint8_t>(0xff << (8 - (bits - first_bit)));
                }
            }
            if (masked.network != cidr.network) {
                return fail(ErrorKind::Config,
                            "allow_net entry '{}' has bits set after its /{} prefix (did you mean {}/{}?)", original,
                            bits, masked.network.to_string(), bits);
            }
            list.networks.push_back(cidr);
            continue;
        }
        std::string_view host = pattern;
        if (host.starts_with("*.")) host.remove_prefix(2);
        if (detail::is_hostname(host) && host.find('*') == std::string_view::npos) {
            list.hostnames.push_back(pattern);
            continue;
        }
        return fail(ErrorKind::Config, "allow_net entry '{}' is not a host, *.host, IP address, CIDR or {}[:PORT]",
                    original, kHostAliasName);
    }
    return list;
}

bool AllowList::allows_host_alias(std::uint16_t port) const noexcept {
    if (!restricted || host_alias_any_port) return true;
    return std::ranges::find(host_alias_ports, port) != host_alias_ports.end();
}

std::size_t EgressFirewall::FlowHash::operator()(const Flow& flow) const noexcept {
    std::size_t hash = flow.protocol;
    for (auto byte : flow.remote.bytes) hash = hash * 131 + byte;
    hash = hash * 65599 + flow.local_port;
    hash = hash * 65599 + flow.remote_port;
    return hash;
}

void EgressFirewall::FlowTable::insert(const Flow& flow) {
    if (!set_.insert(flow).second) return;
    order_.push_back(flow);
    if (order_.size() > kMaxFlows) {
        set_.erase(order_.front());
        order_.pop_front();
    }
}

EgressFirewall::EgressFirewall(AllowList allow, NetworkLayout layout) : allow_(std::move(allow)), layout_(layout) {}

bool EgressFirewall::allowed_by_list(const IpAddress& destination) const noexcept {
    if (!allow_.restricted) return true;
    return std::ranges::any_of(allow_.networks, [&](const Cidr& cidr) { return cidr.contains(destination); });
}

Verdict EgressFirewall::refuse(std::span<const std::uint8_t> frame, const PacketInfo& info,
                               std::vector<std::uint8_t>& reply) {
    ++stats_.rejected;
    // A later fragment carries no transport header to answer; the first one was answered.
    if (info.fragment && !info.first_fragment) return Verdict::Drop;
    if (info.protocol == kProtoTcp && info.has_ports) {
        reply = make_tcp_reset(frame, info);
    } else {
        reply = make_unreachable(frame, info);
    }
    return Verdict::Reject;
}

std::vector<std::uint8_t> make_rejection(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    if (info.fragment && !info.first_fragment) return {};
    if (info.protocol == kProtoTcp && info.has_ports) return make_tcp_reset(frame, info);
    return make_unreachable(frame, info);
}

void rewrite_ipv4_address(std::span<std::uint8_t> frame, const PacketInfo& info, bool destination,
                          const IpAddress& to) {
    std::uint8_t* ip = frame.data() + info.l3_offset;
    std::uint8_t* field = ip + (destination ? 16 : 12);
    const std::uint16_t old_high = load16(field);
    const std::uint16_t old_low = load16(field + 2);
    std::memcpy(field, to.bytes.data(), 4);
    const std::uint16_t new_high = load16(field);
    const std::uint16_t new_low = load16(field + 2);
    auto fix = [&](std::uint8_t* checksum_at, bool udp) {
        std::uint16_t checksum = load16(checksum_at);
        if (udp && checksum == 0) return;  // UDP over IPv4 without a checksum
        checksum = checksum_replace(checksum, old_high, new_high);
        checksum = checksum_replace(checksum, old_low, new_low);
        if (udp && checksum == 0) checksum = 0xffff;
        store16(checksum_at, checksum);
    };
    fix(ip + 10, false);
    if (info.l4_offset == 0 || !info.has_ports) return;
    std::uint8_t* l4 = frame.data() + info.l4_offset;
    if (info.protocol == kProtoTcp) fix(l4 + 16, false);
    if (info.protocol == kProtoUdp) fix(l4 + 6, true);
}

Verdict EgressFirewall::egress(std::span<std::uint8_t> frame, std::vector<std::uint8_t>& reply) {
    reply.clear();
    const char* why = nullptr;
    const auto parsed = parse_frame(frame, &why);
    if (!parsed) {
        ++stats_.malformed;
        ++stats_.dropped;
        return Verdict::Drop;
    }
    const PacketInfo& info = *parsed;
    if (!info.is_ip()) {
        if (info.ether_type == kEtherTypeArp) {
            ++stats_.forwarded;
            return Verdict::Forward;
        }
        ++stats_.dropped;
        return Verdict::Drop;
    }
    const IpAddress& destination = info.destination;
    const bool tcp_or_udp = info.has_ports && (info.protocol == kProtoTcp || info.protocol == kProtoUdp);
    const Flow flow{info.protocol, destination, info.source_port, info.destination_port};
    const bool reply_to_inbound = tcp_or_udp && inbound_.contains(flow);
    auto forward = [&] {
        ++stats_.forwarded;
        return Verdict::Forward;
    };
    auto drop = [&] {
        ++stats_.dropped;
        return Verdict::Drop;
    };

    if (!destination.v6) {
        if (destination == layout_.host_alias) {
            if (!tcp_or_udp || info.fragment || !allow_.allows_host_alias(info.destination_port)) {
                return refuse(frame, info, reply);
            }
            alias_.insert(Flow{info.protocol, layout_.gateway, info.source_port, info.destination_port});
            rewrite_ipv4_address(frame, info, true, layout_.gateway);
            return forward();
        }
        if (destination == layout_.gateway) {
            // passt's gateway is the host's loopback: DNS, DHCP and replies to published ports only.
            if (reply_to_inbound) return forward();
            if (auto answer = answer_host_alias_query(frame, info, layout_.host_alias); !answer.empty()) {
                reply = std::move(answer);
                ++stats_.answered;
                return Verdict::Answer;
            }
            if (tcp_or_udp && !info.fragment && info.destination_port == 53) return forward();
            if (info.protocol == kProtoUdp && info.has_ports && info.destination_port == 67) return forward();
            return refuse(frame, info, reply);
        }
        if (is_ipv4_multicast_or_broadcast(destination)) {
            if (info.protocol == kProtoUdp && info.has_ports && info.destination_port == 67) return forward();
            return drop();
        }
        if (is_ipv4_loopback_or_unspecified(destination)) return refuse(frame, info, reply);
    } else {
        if (is_ipv6_multicast(destination)) {
            if (info.protocol == kProtoIcmpv6) return forward();  // neighbour and router discovery
            if (info.protocol == kProtoUdp && info.has_ports && info.destination_port == 547) return forward();
            return drop();
        }
        if (is_ipv6_link_local(destination)) {
            // passt's IPv6 gateway (link-local) maps to the host's loopback like the IPv4 one.
            if (info.protocol == kProtoIcmpv6 && info.has_icmp_type && info.icmp_type >= 133 && info.icmp_type <= 137) {
                return forward();
            }
            if (reply_to_inbound) return forward();
            if (tcp_or_udp && !info.fragment && (info.destination_port == 53 || info.destination_port == 547)) {
                return forward();
            }
            return refuse(frame, info, reply);
        }
        if (is_ipv6_loopback_or_unspecified(destination)) return refuse(frame, info, reply);
    }
    if (reply_to_inbound) return forward();
    if (!allowed_by_list(destination)) return refuse(frame, info, reply);
    return forward();
}

Verdict EgressFirewall::ingress(std::span<std::uint8_t> frame) {
    const auto parsed = parse_frame(frame);
    if (!parsed) {
        ++stats_.malformed;
        ++stats_.dropped;
        return Verdict::Drop;
    }
    const PacketInfo& info = *parsed;
    if (!info.is_ip() || !info.has_ports || (info.protocol != kProtoTcp && info.protocol != kProtoUdp)) {
        ++stats_.forwarded;
        return Verdict::Forward;
    }
    if (!info.source.v6 && info.source == layout_.gateway &&
        alias_.contains(Flow{info.protocol, layout_.gateway, info.destination_port, info.source_port})) {
        rewrite_ipv4_address(frame, info, false, layout_.host_alias);
        ++stats_.forwarded;
        return Verdict::Forward;
    }
    const bool opens = info.protocol == kProtoUdp || (info.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
    if (opens) inbound_.insert(Flow{info.protocol, info.source, info.destination_port, info.source_port});
    ++stats_.forwarded;
    return Verdict::Forward;
}

}  // namespace boxlite::net
