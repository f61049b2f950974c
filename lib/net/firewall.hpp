// The egress firewall between a box's network device and passt: trusted host code in the shim,
// which the box cannot reconfigure (its routes, links, raw sockets and /etc/hosts change nothing
// here). It sees every frame in both directions.
//
// Box → passt (egress):
//   - ARP passes; other non-IP frames and frames that do not parse are dropped.
//   - The gateway (192.168.127.1) is passt's, and passt maps it to the host's loopback: the box
//     may reach it for DNS (port 53), DHCP and neighbour discovery only, and answer connections
//     that came in from it (published ports). Everything else to it is refused.
//   - A DNS query to the gateway for host.boxlite.internal is answered here (A 192.168.127.254).
//   - The host alias (192.168.127.254, host.boxlite.internal) is rewritten to the gateway, so it
//     reaches the host's loopback; replies are rewritten back. With an allow list it is reachable
//     only when the list names `host.boxlite.internal` (or `host.boxlite.internal:PORT`).
//   - With an allow list, any other destination must fall in one of its IP/CIDR rules (hostname
//     rules are parsed and kept; matching them needs DNS answer watching, not done yet).
//   - Refused TCP is answered with a RST, refused UDP and other protocols with an ICMP / ICMPv6
//     "administratively prohibited" unreachable, so programs in the box fail at once.
// passt → box (ingress): everything passes; a connection or datagram that comes in is recorded so
// that the box's replies to it pass. Recorded flows are bounded (oldest forgotten first).
#pragma once

#include "net/packet.hpp"

#include <boxlite/error.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace boxlite::net {

/// The box network's addresses (upstream's: 192.168.127.0/24, box .2, gateway and DNS .1,
/// host alias .254).
struct NetworkLayout {
    IpAddress gateway = IpAddress::v4(192, 168, 127, 1);
    IpAddress box = IpAddress::v4(192, 168, 127, 2);
    IpAddress host_alias = IpAddress::v4(192, 168, 127, 254);
    std::uint8_t prefix = 24;
};

inline constexpr std::string_view kHostAliasName = "host.boxlite.internal";

/// An address and a prefix length; an exact address is a /32 or /128.
struct Cidr {
    IpAddress network;
    std::uint8_t prefix = 0;

    [[nodiscard]] bool contains(const IpAddress& address) const noexcept;
};

/// A parsed allow_net list. Empty = unrestricted.
struct AllowList {
    std::vector<Cidr> networks;
    /// Host names and "*.suffix" patterns, lower-cased.
    std::vector<std::string> hostnames;
    bool host_alias_any_port = false;
    std::vector<std::uint16_t> host_alias_ports;
    bool restricted = false;

    /// Each pattern: an IPv4/IPv6 address, a CIDR (host bits must be zero), a host name,
    /// "*.host", or "host.boxlite.internal[:PORT]". A malformed one is a Config error that names it.
    [[nodiscard]] static BoxliteResult<AllowList> parse(const std::vector<std::string>& patterns);
    [[nodiscard]] bool allows_host_alias(std::uint16_t port) const noexcept;
};

/// Forward: on to passt. Drop: nothing. Reject: refused, `reply` (if any) answers the box.
/// Answer: the pump answered it itself (a DNS query for host.boxlite.internal), `reply` is the answer.
enum class Verdict : std::uint8_t { Forward, Drop, Reject, Answer };

struct FirewallStats {
    std::uint64_t forwarded = 0;
    std::uint64_t dropped = 0;
    std::uint64_t rejected = 0;
    std::uint64_t malformed = 0;
    std::uint64_t answered = 0;
};

class EgressFirewall {
public:
    static constexpr std::size_t kMaxFlows = 16384;

    explicit EgressFirewall(AllowList allow, NetworkLayout layout = {});

    /// A frame from the box. Forward: send `frame` on to passt (it may have been rewritten in
    /// place). Reject: send `reply` (a RST or an ICMP unreachable, when one fits the frame) back
    /// to the box. Drop: nothing.
    [[nodiscard]] Verdict egress(std::span<std::uint8_t> frame, std::vector<std::uint8_t>& reply);
    /// A frame from passt: Forward (possibly rewritten in place) or Drop.
    [[nodiscard]] Verdict ingress(std::span<std::uint8_t> frame);

    [[nodiscard]] const FirewallStats& stats() const noexcept { return stats_; }
    [[nodiscard]] const AllowList& allow_list() const noexcept { return allow_; }

private:
    struct Flow {
        std::uint8_t protocol = 0;
        IpAddress remote;
        std::uint16_t local_port = 0;
        std::uint16_t remote_port = 0;
        friend bool operator==(const Flow&, const Flow&) = default;
    };
    struct FlowHash {
        std::size_t operator()(const Flow& flow) const noexcept;
    };
    class FlowTable {
    public:
        void insert(const Flow& flow);
        [[nodiscard]] bool contains(const Flow& flow) const { return set_.contains(flow); }

    private:
        std::unordered_set<Flow, FlowHash> set_;
        std::deque<Flow> order_;
    };

    Verdict refuse(std::span<const std::uint8_t> frame, const PacketInfo& info, std::vector<std::uint8_t>& reply);
    [[nodiscard]] bool allowed_by_list(const IpAddress& destination) const noexcept;

    AllowList allow_;
    NetworkLayout layout_;
    FlowTable inbound_;  // flows passt opened towards the box (published ports)
    FlowTable alias_;    // the box's flows to the host alias, rewritten to the gateway
    FirewallStats stats_;
};

/// The answer to a refused packet: a TCP RST, or an ICMP/ICMPv6 "administratively prohibited"
/// unreachable quoting it. Empty when none is due (an RST, an ICMP error, a fragment).
[[nodiscard]] std::vector<std::uint8_t> make_rejection(std::span<const std::uint8_t> frame, const PacketInfo& info);

/// Rewrites the IPv4 source or destination address of a parsed frame in place, fixing the IP
/// header checksum and the TCP/UDP checksum (whose pseudo-header holds the address).
void rewrite_ipv4_address(std::span<std::uint8_t> frame, const PacketInfo& info, bool destination, const IpAddress& to);

}  // namespace boxlite::net
