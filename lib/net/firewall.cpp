#include "net/firewall.hpp"

#include "net/server_name.hpp"

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

// A RST in the box's name, as `info` (a segment from the box) travels: it closes passt's side of
// the connection at `seq`, the next sequence number passt expects from the box.
std::vector<std::uint8_t> make_reset_from_box(std::span<const std::uint8_t> frame, const PacketInfo& info,
                                              std::uint32_t seq) {
    const std::size_t ip_header = info.source.v6 ? 40 : 20;
    std::vector<std::uint8_t> out(kEthernetHeaderSize + ip_header + 20, 0);
    std::memcpy(out.data(), frame.data(), 12);
    store16(out.data() + 12, info.source.v6 ? kEtherTypeIpv6 : kEtherTypeIpv4);
    PacketInfo reversed = info;
    std::swap(reversed.source, reversed.destination);
    put_reply_ip(out.data() + kEthernetHeaderSize, reversed, kProtoTcp, 20);
    std::uint8_t* tcp = out.data() + kEthernetHeaderSize + ip_header;
    store16(tcp, info.source_port);
    store16(tcp + 2, info.destination_port);
    store32(tcp + 4, seq);
    tcp[12] = 5 << 4;
    tcp[13] = kTcpRst;
    const std::uint32_t sum = pseudo_header_sum(info.source, info.destination, kProtoTcp, 20);
    store16(tcp + 16, checksum_fold(checksum_add(std::span<const std::uint8_t>(tcp, 20), sum)));
    return out;
}

// The ACK that completes a handshake passt opened towards the box (a published port), answering
// the box's SYN-ACK `info` on passt's behalf: seq = the SYN-ACK's ack, ack = its seq + 1, the
// window 65535 bytes at passt's window scale.
std::vector<std::uint8_t> make_handshake_ack(std::span<const std::uint8_t> frame, const PacketInfo& info,
                                             std::uint8_t window_scale) {
    const std::size_t ip_header = info.source.v6 ? 40 : 20;
    std::vector<std::uint8_t> out(kEthernetHeaderSize + ip_header + 20, 0);
    put_reply_ethernet(out.data(), frame, info.source.v6 ? kEtherTypeIpv6 : kEtherTypeIpv4);
    put_reply_ip(out.data() + kEthernetHeaderSize, info, kProtoTcp, 20);
    std::uint8_t* tcp = out.data() + kEthernetHeaderSize + ip_header;
    store16(tcp, info.destination_port);
    store16(tcp + 2, info.source_port);
    store32(tcp + 4, info.tcp_ack);
    store32(tcp + 8, info.tcp_seq + 1);
    tcp[12] = 5 << 4;
    tcp[13] = kTcpAck;
    store16(tcp + 14, static_cast<std::uint16_t>(std::max(1U, 65535U >> std::min<unsigned>(window_scale, 14))));
    const std::uint32_t sum = pseudo_header_sum(info.destination, info.source, kProtoTcp, 20);
    store16(tcp + 16, checksum_fold(checksum_add(std::span<const std::uint8_t>(tcp, 20), sum)));
    return out;
}

// The window scale option (RFC 7323) of a TCP SYN; 0 when it has none.
std::uint8_t syn_window_scale(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    if (info.l4_offset == 0 || info.l4_offset + 20 > frame.size()) return 0;
    const std::size_t header = static_cast<std::size_t>(frame[info.l4_offset + 12] >> 4) * 4;
    const std::size_t end = std::min(info.l4_offset + header, frame.size());
    for (std::size_t at = info.l4_offset + 20; at < end;) {
        const std::uint8_t kind = frame[at];
        if (kind == 0) break;
        if (kind == 1) {
            ++at;
            continue;
        }
        if (at + 1 >= end) break;
        const std::size_t length = frame[at + 1];
        if (length < 2 || at + length > end) break;
        if (kind == 3 && length == 3) return frame[at + 2];
        at += length;
    }
    return 0;
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

// The one question of a DNS message (RFC 1035 4.1): its name lower-cased, type, class, and
// where the message, its question and the message's end lie in the frame.
struct DnsQuestion {
    std::string name;
    std::uint16_t type = 0;
    std::uint16_t klass = 0;
    std::uint16_t flags = 0;
    std::size_t message = 0;  // offset of the DNS header
    std::size_t after_question = 0;
    std::size_t end = 0;  // end of the DNS message
};

// The DNS message a UDP datagram carries, read up to the end of its single question; nullopt when
// it is not one (every length checked against the datagram, no compression in a question).
std::optional<DnsQuestion> parse_dns_question(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    if (info.fragment || info.protocol != kProtoUdp || !info.has_ports || info.l4_offset == 0) return std::nullopt;
    const std::size_t udp = info.l4_offset;
    const std::size_t end = info.l3_offset + info.l3_length;
    if (udp + 8 > end || end > frame.size()) return std::nullopt;
    const std::size_t udp_length = load16(frame.data() + udp + 4);
    if (udp_length < 8 + 12 || udp + udp_length > end) return std::nullopt;
    DnsQuestion q;
    q.message = udp + 8;
    q.end = udp + udp_length;
    q.flags = load16(frame.data() + q.message + 2);
    if (load16(frame.data() + q.message + 4) != 1) return std::nullopt;  // one question
    std::size_t at = q.message + 12;
    for (;;) {
        if (at >= q.end) return std::nullopt;
        const std::size_t label = frame[at];
        if (label == 0) break;
        if ((label & 0xc0) != 0 || at + 1 + label > q.end || q.name.size() + label + 1 > 255) return std::nullopt;
        if (!q.name.empty()) q.name += '.';
        for (std::size_t i = 0; i < label; ++i) {
            q.name += static_cast<char>(std::tolower(static_cast<unsigned char>(frame[at + 1 + i])));
        }
        at += 1 + label;
    }
    ++at;  // the root label
    if (at + 4 > q.end) return std::nullopt;
    q.type = load16(frame.data() + at);
    q.klass = load16(frame.data() + at + 2);
    q.after_question = at + 4;
    return q;
}

// The pump's own answer to the box's query `q`: `rcode` (0 or 3, NXDOMAIN) and, for an A query
// answered 0, one A record `address` (TTL 60 s).
std::vector<std::uint8_t> make_dns_answer(std::span<const std::uint8_t> frame, const PacketInfo& info,
                                          const DnsQuestion& q, std::uint16_t rcode, const IpAddress* address) {
    const std::size_t question = q.after_question - (q.message + 12);
    if (question > 512) return {};  // (it cannot be: a name is at most 255 bytes)
    const bool a_record = address != nullptr && rcode == 0 && q.type == 1 && !address->v6;
    const std::size_t dns_length = 12 + question + (a_record ? 16 : 0);
    std::vector<std::uint8_t> out(kEthernetHeaderSize + 20 + 8 + dns_length, 0);
    put_reply_ethernet(out.data(), frame, kEtherTypeIpv4);
    put_reply_ip(out.data() + kEthernetHeaderSize, info, kProtoUdp, 8 + dns_length);
    std::uint8_t* reply_udp = out.data() + kEthernetHeaderSize + 20;
    store16(reply_udp, info.destination_port);
    store16(reply_udp + 2, info.source_port);
    store16(reply_udp + 4, static_cast<std::uint16_t>(8 + dns_length));
    std::uint8_t* reply_dns = reply_udp + 8;
    std::memcpy(reply_dns, frame.data() + q.message, 2);  // id
    // QR, AA, RA, the query's RD copied, the answer's code.
    store16(reply_dns + 2, static_cast<std::uint16_t>(0x8480 | (q.flags & 0x0100) | (rcode & 0xf)));
    store16(reply_dns + 4, 1);
    store16(reply_dns + 6, a_record ? 1 : 0);
    std::memcpy(reply_dns + 12, frame.data() + q.message + 12, question);
    if (a_record) {
        std::uint8_t* answer = reply_dns + 12 + question;
        store16(answer, 0xc00c);  // the name of the question
        store16(answer + 2, 1);
        store16(answer + 4, 1);
        store32(answer + 6, 60);
        store16(answer + 10, 4);
        std::memcpy(answer + 12, address->bytes.data(), 4);
    }
    const std::uint32_t sum = pseudo_header_sum(info.destination, info.source, kProtoUdp, 8 + dns_length);
    std::uint16_t checksum = checksum_fold(checksum_add(std::span<const std::uint8_t>(reply_udp, 8 + dns_length), sum));
    store16(reply_udp + 6, checksum == 0 ? 0xffff : checksum);
    return out;
}

// Whether `name` (lower-case, no trailing dot) is one of the list's host names: "a.b.c" exactly,
// "*.b.c" any name below b.c at any depth but not b.c itself (upstream's rule).
bool hostname_allowed(const std::vector<std::string>& rules, std::string_view name) {
    if (name.ends_with('.')) name.remove_suffix(1);
    for (const auto& rule : rules) {
        if (rule.starts_with("*.")) {
            const std::string_view suffix = std::string_view(rule).substr(1);  // ".b.c"
            if (name.size() > suffix.size() && name.ends_with(suffix)) return true;
        } else if (name == rule) {
            return true;
        }
    }
    return false;
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

EgressFirewall::EgressFirewall(AllowList allow, NetworkLayout layout, Clock clock)
    : allow_(std::move(allow)),
      layout_(layout),
      clock_(clock ? std::move(clock) : Clock(&std::chrono::steady_clock::now)) {}

std::size_t EgressFirewall::AddressHash::operator()(const IpAddress& address) const noexcept {
    std::size_t hash = address.v6 ? 1 : 0;
    for (auto byte : address.bytes) hash = hash * 131 + byte;
    return hash;
}

bool EgressFirewall::allowed_by_list(const IpAddress& destination) const noexcept {
    if (!allow_.restricted) return true;
    return std::ranges::any_of(allow_.networks, [&](const Cidr& cidr) { return cidr.contains(destination); });
}

bool EgressFirewall::resolved_allows(const IpAddress& destination) {
    const auto found = resolved_.find(destination);
    if (found == resolved_.end()) return false;
    if (clock_() < found->second) return true;
    resolved_.erase(found);
    return false;
}

void EgressFirewall::watch_dns_answer(std::span<const std::uint8_t> frame, const PacketInfo& info) {
    const auto q = parse_dns_question(frame, info);
    // A response (QR 1) with no error to a question for an allowed name.
    if (!q || (q->flags & 0x8000) == 0 || (q->flags & 0xf) != 0 || q->klass != 1) return;
    if (!hostname_allowed(allow_.hostnames, q->name)) return;
    const std::uint16_t answers = load16(frame.data() + q->message + 6);
    std::size_t at = q->after_question;
    const auto now = clock_();
    for (std::uint16_t i = 0; i < answers && i < kMaxDnsAnswers; ++i) {
        // The owner name: labels, ending in a root label or a compression pointer (not followed:
        // every record of an answer to an allowed question counts, CNAME targets included).
        for (;;) {
            if (at >= q->end) return;
            const std::size_t label = frame[at];
            if (label == 0) {
                ++at;
                break;
            }
            if ((label & 0xc0) == 0xc0) {
                at += 2;
                break;
            }
            if ((label & 0xc0) != 0) return;
            at += 1 + label;
        }
        if (at + 10 > q->end) return;
        const std::uint16_t type = load16(frame.data() + at);
        const std::uint16_t klass = load16(frame.data() + at + 2);
        const std::uint32_t ttl = (std::uint32_t{load16(frame.data() + at + 4)} << 16) | load16(frame.data() + at + 6);
        const std::size_t length = load16(frame.data() + at + 8);
        at += 10;
        if (at + length > q->end) return;
        const bool a = type == 1 && length == 4;
        const bool aaaa = type == 28 && length == 16;
        if (klass == 1 && (a || aaaa)) {
            IpAddress address;
            address.v6 = aaaa;
            std::memcpy(address.bytes.data(), frame.data() + at, length);
            // At least kMinResolvedTtl (a TTL of 0 still lets the connection that asked be made),
            // at most a day.
            const auto seconds = std::clamp<std::uint32_t>(ttl, kMinResolvedTtl, 86400);
            if (resolved_.size() >= kMaxResolved && !resolved_.contains(address)) {
                std::erase_if(resolved_, [&](const auto& entry) { return entry.second <= now; });
                if (resolved_.size() >= kMaxResolved) resolved_.erase(resolved_.begin());
            }
            auto& expiry = resolved_[address];
            expiry = std::max(expiry, now + std::chrono::seconds(seconds));
            ++stats_.resolved;
        }
        at += length;
    }
}

// Reads a connection's first client bytes, in order, until they tell the server name (or that
// there is none). Segments that leave them incomplete go on (holding them back would stall the
// box's TCP: Nagle keeps a short second write until the first is acknowledged); a segment past a
// gap is dropped (the box sends it again). The segment that completes the ClientHello or the
// request's header block decides: allowed, or no name, it goes on and the check ends; not
// allowed, malformed, or no answer within kMaxServerNameScan bytes, it is answered with a RST to
// the box and one to passt, and the flow is forgotten, so anything more on it is refused. The
// server never sees a whole ClientHello or request that names a server not allowed.
Verdict EgressFirewall::check_server_name(NameCheck& check, const Flow& flow, std::span<std::uint8_t> frame,
                                          const PacketInfo& info, std::vector<std::uint8_t>& reply) {
    auto pass = [&] {
        name_checks_.erase(flow);
        ++stats_.forwarded;
        return Verdict::Forward;
    };
    if ((info.tcp_flags & kTcpRst) != 0) return pass();
    if (info.fragment) {  // the first bytes in IP fragments: the rest would go unread
        name_checks_.erase(flow);
        resolved_flows_.erase(flow);
        return refuse(frame, info, reply);
    }
    if ((info.tcp_flags & kTcpSyn) != 0) {  // the SYN again: nothing to read yet
        if (info.tcp_payload != 0) {
            ++stats_.dropped;
            return Verdict::Drop;  // TCP Fast Open data, unread (see egress)
        }
        check.first_seq = info.tcp_seq + 1;
        check.bytes.clear();
        ++stats_.forwarded;
        return Verdict::Forward;
    }
    if (info.tcp_payload == 0) {
        if ((info.tcp_flags & kTcpFin) != 0 && check.bytes.empty()) return pass();  // closed having said nothing
        ++stats_.forwarded;
        return Verdict::Forward;  // an ACK
    }
    const std::uint32_t offset = info.tcp_seq - check.first_seq;  // modulo 2^32, as TCP counts
    const std::size_t held = check.bytes.size();
    if (offset > held) {
        ++stats_.dropped;
        return Verdict::Drop;  // past a gap: read in order when the box sends it again
    }
    if (offset + info.tcp_payload <= held) {
        ++stats_.forwarded;
        return Verdict::Forward;  // bytes already read and passed on, sent again
    }
    if (held < kMaxServerNameScan) {
        const std::size_t l4_header = static_cast<std::size_t>(frame[info.l4_offset + 12] >> 4) * 4;
        const std::size_t payload_at = info.l4_offset + l4_header;
        const std::size_t fresh = std::min(offset + info.tcp_payload - held, kMaxServerNameScan - held);
        const auto from = frame.begin() + static_cast<std::ptrdiff_t>(payload_at + (held - offset));
        check.bytes.insert(check.bytes.end(), from, from + static_cast<std::ptrdiff_t>(fresh));
    }
    const auto found = find_server_names(check.bytes);
    bool refused = found.scan == ServerNameScan::Malformed;
    if (found.scan == ServerNameScan::NeedMore) {
        if (check.bytes.size() < kMaxServerNameScan) {
            ++stats_.forwarded;
            return Verdict::Forward;  // incomplete: the server can do nothing with it yet
        }
        refused = true;
    }
    for (const auto& name : found.names) {
        if (!hostname_allowed(allow_.hostnames, name)) refused = true;
    }
    if (!refused) return pass();
    ++stats_.names_refused;
    ++stats_.rejected;
    reply = make_tcp_reset(frame, info);
    to_passt_ = make_reset_from_box(frame, info, info.tcp_seq);  // passt's next expected byte
    name_checks_.erase(flow);
    resolved_flows_.erase(flow);
    return Verdict::Reject;
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
    to_passt_.clear();
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
    // The box's answer to a connection passt opened (a published port). For its SYN-ACK: this
    // passt (Debian 12's, 2023-03) never sends the handshake's last ACK unless the host side has
    // data to send, so a server that speaks first waited forever; the pump sends that ACK itself
    // (a passt that sends its own only adds a duplicate ACK).
    auto forward_inbound = [&] {
        if (info.protocol == kProtoTcp && (info.tcp_flags & (kTcpSyn | kTcpAck)) == (kTcpSyn | kTcpAck)) {
            if (const auto scale = handshakes_.find(flow); scale != handshakes_.end()) {
                reply = make_handshake_ack(frame, info, scale->second);
                handshakes_.erase(scale);
            }
        }
        return forward();
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
            if (reply_to_inbound) return forward_inbound();
            if (info.protocol == kProtoUdp && info.destination_port == 53 && !info.fragment) {
                // A standard query (QR 0, opcode 0) for host.boxlite.internal is answered here; with
                // an allow list, so is one for a name the list does not hold (NXDOMAIN): only
                // allowed names resolve.
                const auto q = parse_dns_question(frame, info);
                if (q && (q->flags & 0xf800) == 0 && q->klass == 1) {
                    std::vector<std::uint8_t> answer;
                    if (q->name == kHostAliasName) {
                        answer = make_dns_answer(frame, info, *q, 0, &layout_.host_alias);
                    } else if (allow_.restricted && !hostname_allowed(allow_.hostnames, q->name)) {
                        answer = make_dns_answer(frame, info, *q, 3, nullptr);
                    }
                    if (!answer.empty()) {
                        reply = std::move(answer);
                        ++stats_.answered;
                        return Verdict::Answer;
                    }
                } else if (allow_.restricted) {
                    return refuse(frame, info, reply);  // nothing the pump cannot read gets through
                }
                return forward();
            }
            // DNS over TCP carries answers the pump does not read: with an allow list, refused (the
            // resolver keeps to UDP).
            if (info.protocol == kProtoTcp && info.destination_port == 53 && !info.fragment && !allow_.restricted)
                return forward();
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
            if (reply_to_inbound) return forward_inbound();
            if (tcp_or_udp && !info.fragment && (info.destination_port == 53 || info.destination_port == 547)) {
                return forward();
            }
            return refuse(frame, info, reply);
        }
        if (is_ipv6_loopback_or_unspecified(destination)) return refuse(frame, info, reply);
    }
    if (reply_to_inbound) return forward_inbound();
    if (allowed_by_list(destination)) return forward();
    // Addresses an allowed name resolved to, for its TTL; a connection made then lives on. A TCP
    // one is held at its first bytes until they show which server it asks for.
    const bool tcp = info.protocol == kProtoTcp && tcp_or_udp;
    if (tcp_or_udp && resolved_flows_.contains(flow)) {
        if (tcp && !name_checks_.empty()) {
            if (const auto check = name_checks_.find(flow); check != name_checks_.end()) {
                return check_server_name(check->second, flow, frame, info, reply);
            }
        }
        return forward();
    }
    if (!allow_.hostnames.empty() && resolved_allows(destination)) {
        if (tcp) {
            // Only a SYN opens one: a segment of a connection not seen opening (or one reset for
            // its name) is refused.
            if ((info.tcp_flags & (kTcpSyn | kTcpAck | kTcpRst)) != kTcpSyn || info.fragment) {
                return refuse(frame, info, reply);
            }
            // A SYN carrying data (TCP Fast Open) would hand the server its first bytes unread:
            // dropped, so the box's TCP sends its SYN again without data (RFC 7413 §4.2.2).
            if (info.tcp_payload != 0) {
                ++stats_.dropped;
                return Verdict::Drop;
            }
            if (name_checks_.size() >= kMaxNameChecks) {
                // The oldest check goes, and its connection with it (refused from now on): a
                // connection that never speaks (or was closed by the server) must not pin a slot.
                const auto oldest = std::ranges::min_element(name_checks_, {},
                                                             [](const auto& entry) { return entry.second.opened; });
                resolved_flows_.erase(oldest->first);
                name_checks_.erase(oldest);
            }
            name_checks_[flow] = NameCheck{info.tcp_seq + 1, ++name_checks_opened_, {}};
            ++stats_.names_checked;
        }
        if (tcp_or_udp) resolved_flows_.insert(flow);
        return forward();
    }
    return refuse(frame, info, reply);
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
    // DNS answers from the gateway: an allowed name's addresses become reachable.
    if (!allow_.hostnames.empty() && info.protocol == kProtoUdp && info.source_port == 53 &&
        info.source == layout_.gateway)
        watch_dns_answer(frame, info);
    if (!info.source.v6 && info.source == layout_.gateway &&
        alias_.contains(Flow{info.protocol, layout_.gateway, info.destination_port, info.source_port})) {
        rewrite_ipv4_address(frame, info, false, layout_.host_alias);
        if (host_alias_accepted_ && info.protocol == kProtoTcp &&
            (info.tcp_flags & (kTcpSyn | kTcpAck)) == (kTcpSyn | kTcpAck))
            host_alias_accepted_(info.source_port);
        ++stats_.forwarded;
        return Verdict::Forward;
    }
    const bool syn = info.protocol == kProtoTcp && (info.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
    if (syn || info.protocol == kProtoUdp) {
        const Flow flow{info.protocol, info.source, info.destination_port, info.source_port};
        inbound_.insert(flow);
        if (syn) {
            if (handshakes_.size() >= kMaxFlows) handshakes_.clear();
            handshakes_[flow] = syn_window_scale(frame, info);
        }
    }
    ++stats_.forwarded;
    return Verdict::Forward;
}

}  // namespace boxlite::net
