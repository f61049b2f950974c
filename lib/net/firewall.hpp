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
//   - With an allow list, any other destination must fall in one of its IP/CIDR rules, or be an
//     address that an allowed host name (`api.example.com`, `*.example.com`) resolved to in a DNS
//     answer the pump watched, for the answer's TTL (at least kMinResolvedTtl); connections made
//     meanwhile live on. A TCP connection to such an address (any port) has its first client
//     bytes read: when they are a TLS ClientHello with an SNI, or an HTTP/1.x request with a Host
//     header (or an absolute-form / CONNECT target), every name they carry must be allowed too, or
//     the segment that completes them is answered by a reset both ways (server_name.hpp;
//     docs/networking.md). A UDP DNS query for a name the list does not hold is answered NXDOMAIN by
//     the pump; DNS over TCP is refused (its answers are not watched).
//   - Refused TCP is answered with a RST, refused UDP and other protocols with an ICMP / ICMPv6
//     "administratively prohibited" unreachable, so programs in the box fail at once.
// passt → box (ingress): everything passes; a connection or datagram that comes in is recorded so
// that the box's replies to it pass, and the pump completes the handshake of a connection passt
// opened (this passt does not send its last ACK until the host side sends data). Recorded flows are bounded (oldest forgotten first).
#pragma once

#include "net/packet.hpp"

#include <boxlite/error.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
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
    /// Whether the box may reach the host alias on any port at all.
    [[nodiscard]] bool allows_any_host_alias_port() const noexcept {
        return !restricted || host_alias_any_port || !host_alias_ports.empty();
    }
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
    /// Addresses learnt from DNS answers for allowed names.
    std::uint64_t resolved = 0;
    /// Connections to such addresses whose first bytes were checked, and those reset for a name
    /// (TLS SNI, HTTP Host) not allowed, a malformed ClientHello / request, or no verdict within
    /// kMaxServerNameScan bytes.
    std::uint64_t names_checked = 0;
    std::uint64_t names_refused = 0;
};

class EgressFirewall {
public:
    static constexpr std::size_t kMaxFlows = 16384;
    /// Addresses learnt from DNS answers, at most (expired ones, then the oldest, forgotten first).
    static constexpr std::size_t kMaxResolved = 4096;
    /// Records read from one DNS answer, at most.
    static constexpr std::uint16_t kMaxDnsAnswers = 64;
    /// A learnt address stays reachable this long at least, whatever the answer's TTL (seconds).
    static constexpr std::uint32_t kMinResolvedTtl = 10;
    /// Connections whose first client bytes are being read (server_name.hpp), at most; a new one
    /// beyond ends the oldest check and its connection. Each holds at most kMaxServerNameScan bytes.
    static constexpr std::size_t kMaxNameChecks = 128;
    using Clock = std::function<std::chrono::steady_clock::time_point()>;

    /// `clock`: steady_clock::now when empty (the tests pass their own).
    explicit EgressFirewall(AllowList allow, NetworkLayout layout = {}, Clock clock = {});

    /// A frame from the box. Forward: send `frame` on to passt (it may have been rewritten in
    /// place), and `reply`, when not empty, to the box (the ACK that completes a handshake passt
    /// opened, which this passt leaves out). Reject: send `reply` (a RST or an ICMP unreachable, when one fits the frame) back
    /// to the box. Drop: nothing.
    [[nodiscard]] Verdict egress(std::span<std::uint8_t> frame, std::vector<std::uint8_t>& reply);
    /// A frame from passt: Forward (possibly rewritten in place) or Drop.
    [[nodiscard]] Verdict ingress(std::span<std::uint8_t> frame);

    /// A frame for passt that the last egress() call made besides its verdict (the RST that
    /// closes passt's side of a connection reset for its server name); the pump sends it on and
    /// clears it.
    [[nodiscard]] std::vector<std::uint8_t>& to_passt() noexcept { return to_passt_; }

    [[nodiscard]] const FirewallStats& stats() const noexcept { return stats_; }
    [[nodiscard]] const AllowList& allow_list() const noexcept { return allow_; }

    /// Called by ingress() with the port of each TCP connection to the host alias that the host
    /// accepted (passt's SYN-ACK from the gateway, on a flow the box opened to the alias): the
    /// host has a server there, and this box may reach it (its SYN passed egress()). The namespace
    /// shim splices such ports from then on (docs/networking.md, "The host alias, spliced").
    void on_host_alias_accepted(std::function<void(std::uint16_t)> callback) {
        host_alias_accepted_ = std::move(callback);
    }

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
        void erase(const Flow& flow) { set_.erase(flow); }  // its place in order_ goes stale

    private:
        std::unordered_set<Flow, FlowHash> set_;
        std::deque<Flow> order_;
    };

    struct AddressHash {
        std::size_t operator()(const IpAddress& address) const noexcept;
    };

    Verdict refuse(std::span<const std::uint8_t> frame, const PacketInfo& info, std::vector<std::uint8_t>& reply);
    [[nodiscard]] bool allowed_by_list(const IpAddress& destination) const noexcept;
    [[nodiscard]] bool resolved_allows(const IpAddress& destination);
    void watch_dns_answer(std::span<const std::uint8_t> frame, const PacketInfo& info);
    // A connection to a resolved address whose first client bytes are being read.
    struct NameCheck {
        std::uint32_t first_seq = 0;  // the sequence number of the first payload byte
        std::uint64_t opened = 0;     // the order checks began in (the oldest goes when full)
        std::vector<std::uint8_t> bytes;
    };
    Verdict check_server_name(NameCheck& check, const Flow& flow, std::span<std::uint8_t> frame, const PacketInfo& info,
                              std::vector<std::uint8_t>& reply);

    AllowList allow_;
    NetworkLayout layout_;
    FlowTable inbound_;         // flows passt opened towards the box (published ports)
    FlowTable alias_;           // the box's flows to the host alias, rewritten to the gateway
    FlowTable resolved_flows_;  // the box's flows to addresses allowed names resolved to
    // passt's SYNs towards the box not yet answered: the flow (as the box's answer sees it) and
    // passt's window scale.
    std::unordered_map<Flow, std::uint8_t, FlowHash> handshakes_;
    std::unordered_map<IpAddress, std::chrono::steady_clock::time_point, AddressHash> resolved_;
    std::unordered_map<Flow, NameCheck, FlowHash> name_checks_;
    std::uint64_t name_checks_opened_ = 0;
    std::vector<std::uint8_t> to_passt_;
    std::function<void(std::uint16_t)> host_alias_accepted_;
    Clock clock_;
    FirewallStats stats_;
};

/// The answer to a refused packet: a TCP RST, or an ICMP/ICMPv6 "administratively prohibited"
/// unreachable quoting it. Empty when none is due (an RST, an ICMP error, a fragment).
[[nodiscard]] std::vector<std::uint8_t> make_rejection(std::span<const std::uint8_t> frame, const PacketInfo& info);

/// Rewrites the IPv4 source or destination address of a parsed frame in place, fixing the IP
/// header checksum and the TCP/UDP checksum (whose pseudo-header holds the address).
void rewrite_ipv4_address(std::span<std::uint8_t> frame, const PacketInfo& info, bool destination, const IpAddress& to);

}  // namespace boxlite::net
