// The box network's building blocks over hand-made frames: the parser's bounds checks, passt's
// stream framing, allow_net parsing and the egress firewall's verdicts and answers.
#include "client_hello.hpp"
#include "frames.hpp"
#include "net/firewall.hpp"
#include "net/server_name.hpp"
#include "net/packet.hpp"
#include "net/stream_framing.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include <string>
#include <vector>

namespace boxlite::net {
namespace {

using test::checksums_valid;
using test::get16;
using test::ip_frame;

const IpAddress kBox = IpAddress::v4(192, 168, 127, 2);
const IpAddress kGateway = IpAddress::v4(192, 168, 127, 1);
const IpAddress kAlias = IpAddress::v4(192, 168, 127, 254);
const IpAddress kServer = IpAddress::v4(198, 51, 100, 7);
const IpAddress kOther = IpAddress::v4(203, 0, 113, 9);

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

EgressFirewall firewall_for(std::vector<std::string> patterns) {
    auto list = AllowList::parse(patterns);
    EXPECT_TRUE(list) << list.error().message();
    return EgressFirewall(list ? *list : AllowList{});
}

TEST(NetPacket, ParsesIpv4TcpAndUdp) {
    auto frame = ip_frame(kBox, kServer, kProtoTcp, 40000, 80, kTcpSyn, 5);
    auto info = parse_frame(frame);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->destination, kServer);
    EXPECT_EQ(info->source, kBox);
    EXPECT_TRUE(info->has_ports);
    EXPECT_EQ(info->source_port, 40000);
    EXPECT_EQ(info->destination_port, 80);
    EXPECT_EQ(info->tcp_flags, kTcpSyn);
    EXPECT_EQ(info->tcp_payload, 5U);
    EXPECT_TRUE(checksums_valid(frame));

    auto udp = parse_frame(ip_frame(kBox, kServer, kProtoUdp, 5353, 53));
    ASSERT_TRUE(udp);
    EXPECT_EQ(udp->protocol, kProtoUdp);
    EXPECT_EQ(udp->destination_port, 53);
}

TEST(NetPacket, RefusesEveryTruncationOfAValidFrame) {
    for (const auto& whole : {ip_frame(kBox, kServer, kProtoTcp, 1, 2), ip_frame(kBox, kServer, kProtoUdp, 1, 2),
                              ip_frame(ip("fd00::2"), ip("2001:db8::1"), kProtoTcp, 1, 2)}) {
        for (std::size_t size = 0; size < whole.size(); ++size) {
            const char* why = nullptr;
            EXPECT_FALSE(parse_frame(std::span(whole.data(), size), &why)) << "size " << size;
            EXPECT_NE(why, nullptr);
        }
    }
}

TEST(NetPacket, RejectsLyingLengthFields) {
    auto frame = ip_frame(kBox, kServer, kProtoTcp, 1, 2);
    auto bad_ihl = frame;
    bad_ihl[14] = 0x4f;  // 60-byte header in a 40-byte packet
    EXPECT_FALSE(parse_frame(bad_ihl));
    auto short_ihl = frame;
    short_ihl[14] = 0x44;
    EXPECT_FALSE(parse_frame(short_ihl));
    auto long_total = frame;
    test::put16(long_total, 16, 1500);
    EXPECT_FALSE(parse_frame(long_total));
    auto tcp_offset = frame;
    tcp_offset[14 + 20 + 12] = 0xf0;  // 60-byte TCP header in 20 bytes
    EXPECT_FALSE(parse_frame(tcp_offset));
    auto v6 = ip_frame(ip("fd00::2"), ip("2001:db8::1"), kProtoUdp, 1, 2);
    test::put16(v6, 18, 4000);
    EXPECT_FALSE(parse_frame(v6));
}

TEST(NetPacket, WalksIpv6ExtensionHeadersAndFragments) {
    auto frame = ip_frame(ip("fd00::2"), ip("2001:db8::1"), kProtoUdp, 1000, 53);
    // Insert a hop-by-hop header (8 bytes) before the UDP header.
    std::vector<std::uint8_t> with_hop(frame.begin(), frame.begin() + 54);
    with_hop.insert(with_hop.end(), {kProtoUdp, 0, 0, 0, 0, 0, 0, 0});
    with_hop.insert(with_hop.end(), frame.begin() + 54, frame.end());
    with_hop[14 + 6] = 0;
    test::put16(with_hop, 18, static_cast<std::uint16_t>(get16(frame, 18) + 8));
    auto info = parse_frame(with_hop);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->protocol, kProtoUdp);
    EXPECT_EQ(info->destination_port, 53);

    // A later fragment: no transport header, marked as such.
    std::vector<std::uint8_t> later(frame.begin(), frame.begin() + 54);
    later.insert(later.end(), {kProtoUdp, 0, 0x01, 0x00, 0, 0, 0, 1});  // offset 32
    later.insert(later.end(), 16, 0);
    later[14 + 6] = 44;
    test::put16(later, 18, 24);
    info = parse_frame(later);
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->fragment);
    EXPECT_FALSE(info->first_fragment);
    EXPECT_FALSE(info->has_ports);

    // A chain of extension headers longer than the parser walks.
    std::vector<std::uint8_t> chain(frame.begin(), frame.begin() + 54);
    for (int i = 0; i < 12; ++i) chain.insert(chain.end(), {60, 0, 0, 0, 0, 0, 0, 0});
    chain.insert(chain.end(), 8, 0);
    chain[14 + 6] = 60;
    test::put16(chain, 18, static_cast<std::uint16_t>(12 * 8 + 8));
    EXPECT_FALSE(parse_frame(chain));
}

TEST(NetStreamFraming, DecodesFramesSplitAnywhere) {
    std::vector<std::uint8_t> stream;
    const auto first = ip_frame(kBox, kServer, kProtoTcp, 1, 2);
    const auto second = ip_frame(kBox, kServer, kProtoUdp, 3, 4, 0, 100);
    append_stream_frame(stream, first);
    append_stream_frame(stream, second);
    ASSERT_EQ(stream.size(), first.size() + second.size() + 8);
    EXPECT_EQ(get16(stream, 2), first.size());
    for (std::size_t split = 0; split <= stream.size(); ++split) {
        StreamDecoder decoder;
        std::vector<std::vector<std::uint8_t>> frames;
        auto drain = [&] {
            std::span<const std::uint8_t> frame;
            while (decoder.next(frame) == StreamDecoder::Status::Frame) frames.emplace_back(frame.begin(), frame.end());
        };
        decoder.feed(std::span(stream.data(), split));
        drain();
        decoder.feed(std::span(stream.data() + split, stream.size() - split));
        drain();
        ASSERT_EQ(frames.size(), 2U) << "split at " << split;
        EXPECT_EQ(frames[0], first);
        EXPECT_EQ(frames[1], second);
        EXPECT_EQ(decoder.buffered(), 0U);
    }
}

TEST(NetStreamFraming, ALengthOutOfRangeEndsTheStream) {
    for (std::uint32_t length : {0U, 13U, static_cast<std::uint32_t>(kMaxStreamFrame + 1), 0xffffffffU}) {
        StreamDecoder decoder;
        const std::uint8_t prefix[4] = {static_cast<std::uint8_t>(length >> 24),
                                        static_cast<std::uint8_t>(length >> 16), static_cast<std::uint8_t>(length >> 8),
                                        static_cast<std::uint8_t>(length)};
        decoder.feed(prefix);
        std::span<const std::uint8_t> frame;
        EXPECT_EQ(decoder.next(frame), StreamDecoder::Status::Invalid) << length;
        decoder.feed(prefix);
        EXPECT_EQ(decoder.next(frame), StreamDecoder::Status::Invalid);
    }
}

TEST(NetAllowList, ParsesEveryForm) {
    auto list = AllowList::parse({"198.51.100.7", "10.0.0.0/8", "2001:db8::/32", "fd00::1", "api.example.com",
                                  "*.Example.org", "host.boxlite.internal:8080"});
    ASSERT_TRUE(list) << list.error().message();
    EXPECT_TRUE(list->restricted);
    EXPECT_EQ(list->networks.size(), 4U);
    EXPECT_EQ(list->hostnames, (std::vector<std::string>{"api.example.com", "*.example.org"}));
    EXPECT_TRUE(list->allows_host_alias(8080));
    EXPECT_FALSE(list->allows_host_alias(8081));
    EXPECT_TRUE(list->networks[1].contains(ip("10.200.3.4")));
    EXPECT_FALSE(list->networks[1].contains(ip("11.0.0.1")));
    EXPECT_TRUE(list->networks[2].contains(ip("2001:db8:ffff::1")));
    EXPECT_FALSE(list->networks[2].contains(ip("2001:db9::1")));
    EXPECT_FALSE(list->networks[0].contains(ip("::ffff:198.51.100.7")));  // families never mix
    auto empty = AllowList::parse({});
    ASSERT_TRUE(empty);
    EXPECT_FALSE(empty->restricted);
}

TEST(NetAllowList, MalformedPatternsAreConfigErrorsNamingThem) {
    for (const char* bad : {"", "10.0.0.0/33", "10.0.0.1/8", "fd00::/129", "10.0.0.0/", "10.0.0.0/x", "a..b",
                            "*.*.example.com", "exa mple.com", "host.boxlite.internal:0", "host.boxlite.internal:70000",
                            "host.boxlite.internal:", "1.2.3.4:80", "-a.com"}) {
        auto list = AllowList::parse({bad});
        ASSERT_FALSE(list) << bad;
        EXPECT_EQ(list.error().kind(), ErrorKind::Config) << bad;
        if (*bad != '\0') {
            EXPECT_NE(list.error().message().find(bad), std::string::npos) << list.error().message();
        }
    }
    auto hinted = AllowList::parse({"10.1.0.0/8"});
    ASSERT_FALSE(hinted);
    EXPECT_NE(hinted.error().message().find("10.0.0.0/8"), std::string::npos) << hinted.error().message();
}

TEST(NetFirewall, UnrestrictedForwardsButKeepsTheGatewayForDns) {
    auto firewall = firewall_for({});
    std::vector<std::uint8_t> reply;
    auto out = ip_frame(kBox, kOther, kProtoTcp, 40000, 443);
    EXPECT_EQ(firewall.egress(out, reply), Verdict::Forward);
    auto dns = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53);
    EXPECT_EQ(firewall.egress(dns, reply), Verdict::Forward);
    auto dns_tcp = ip_frame(kBox, kGateway, kProtoTcp, 40001, 53);
    EXPECT_EQ(firewall.egress(dns_tcp, reply), Verdict::Forward);

    // The gateway is the host's loopback to passt: anything but DNS is refused with a RST.
    auto ssh = ip_frame(kBox, kGateway, kProtoTcp, 40002, 22, kTcpSyn);
    EXPECT_EQ(firewall.egress(ssh, reply), Verdict::Reject);
    ASSERT_FALSE(reply.empty());
    auto rst = parse_frame(reply);
    ASSERT_TRUE(rst);
    EXPECT_EQ(rst->source, kGateway);
    EXPECT_EQ(rst->destination, kBox);
    EXPECT_EQ(rst->source_port, 22);
    EXPECT_EQ(rst->destination_port, 40002);
    EXPECT_EQ(rst->tcp_flags, kTcpRst | kTcpAck);
    EXPECT_EQ(rst->tcp_ack, 0x11000000U + 1);  // the SYN counts one
    EXPECT_TRUE(checksums_valid(reply));
    EXPECT_TRUE(std::equal(reply.begin(), reply.begin() + 6, test::kBoxMac));

    for (const auto& loopback : {IpAddress::v4(127, 0, 0, 1), ip("::1")}) {
        const auto source = loopback.v6 ? ip("fd00::2") : kBox;
        auto frame = ip_frame(source, loopback, kProtoTcp, 1, 80);
        EXPECT_EQ(firewall.egress(frame, reply), Verdict::Reject) << loopback.to_string();
    }
    // A link-local IPv6 destination is passt's IPv6 gateway, the host's loopback too.
    auto link_local = ip_frame(ip("fe80::2"), ip("fe80::1"), kProtoTcp, 1, 8080);
    EXPECT_EQ(firewall.egress(link_local, reply), Verdict::Reject);
    auto ndp = ip_frame(ip("fe80::2"), ip("fe80::1"), kProtoIcmpv6, 135 << 8, 0);
    EXPECT_EQ(firewall.egress(ndp, reply), Verdict::Forward);
}

TEST(NetFirewall, TheHostAliasIsRewrittenToTheGatewayAndBack) {
    auto firewall = firewall_for({});
    std::vector<std::uint8_t> reply;
    auto out = ip_frame(kBox, kAlias, kProtoTcp, 40000, 8080, kTcpSyn, 3);
    ASSERT_EQ(firewall.egress(out, reply), Verdict::Forward);
    auto info = parse_frame(out);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->destination, kGateway);
    EXPECT_TRUE(checksums_valid(out));

    auto back = ip_frame(kGateway, kBox, kProtoTcp, 8080, 40000, kTcpSyn | kTcpAck, 7);
    ASSERT_EQ(firewall.ingress(back), Verdict::Forward);
    info = parse_frame(back);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->source, kAlias);
    EXPECT_TRUE(checksums_valid(back));

    auto udp = ip_frame(kBox, kAlias, kProtoUdp, 5000, 9999, 0, 11);
    ASSERT_EQ(firewall.egress(udp, reply), Verdict::Forward);
    EXPECT_TRUE(checksums_valid(udp));
    // DNS answers from the gateway itself are left alone.
    auto answer = ip_frame(kGateway, kBox, kProtoUdp, 53, 41000, 0, 30);
    ASSERT_EQ(firewall.ingress(answer), Verdict::Forward);
    EXPECT_EQ(parse_frame(answer)->source, kGateway);
}

// The namespace shim splices a host alias port once the host has accepted a connection of the
// box's on it: the firewall names the port at passt's SYN-ACK on such a flow, and at nothing else.
TEST(NetFirewall, NamesTheHostAliasPortsTheHostAcceptedAConnectionOn) {
    auto firewall = firewall_for({});
    std::vector<std::uint16_t> named;
    firewall.on_host_alias_accepted([&](std::uint16_t port) { named.push_back(port); });
    std::vector<std::uint8_t> reply;
    auto syn = ip_frame(kBox, kAlias, kProtoTcp, 40000, 8080, kTcpSyn, 3);
    ASSERT_EQ(firewall.egress(syn, reply), Verdict::Forward);
    EXPECT_TRUE(named.empty()) << "named at the box's SYN, before the host answered";
    auto refused = ip_frame(kGateway, kBox, kProtoTcp, 8080, 40000, kTcpRst | kTcpAck, 0);
    ASSERT_EQ(firewall.ingress(refused), Verdict::Forward);
    EXPECT_TRUE(named.empty()) << "a refused connection named its port";
    auto accepted = ip_frame(kGateway, kBox, kProtoTcp, 8080, 40000, kTcpSyn | kTcpAck, 7);
    ASSERT_EQ(firewall.ingress(accepted), Verdict::Forward);
    EXPECT_EQ(named, std::vector<std::uint16_t>{8080});
    auto data = ip_frame(kGateway, kBox, kProtoTcp, 8080, 40000, kTcpAck, 7);
    ASSERT_EQ(firewall.ingress(data), Verdict::Forward);
    // A SYN-ACK from the gateway on a flow the box did not open to the alias (a DNS-over-TCP
    // answer, say) names nothing; neither does UDP.
    auto other = ip_frame(kGateway, kBox, kProtoTcp, 53, 40001, kTcpSyn | kTcpAck, 7);
    (void)firewall.ingress(other);
    auto udp_out = ip_frame(kBox, kAlias, kProtoUdp, 5000, 9999, 0, 11);
    ASSERT_EQ(firewall.egress(udp_out, reply), Verdict::Forward);
    auto udp_back = ip_frame(kGateway, kBox, kProtoUdp, 9999, 5000, 0, 11);
    ASSERT_EQ(firewall.ingress(udp_back), Verdict::Forward);
    EXPECT_EQ(named, std::vector<std::uint16_t>{8080});
}

TEST(NetFirewall, AnAllowListLimitsDestinationsAndTheHostAlias) {
    auto firewall = firewall_for({"198.51.100.7", "203.0.113.0/28"});
    std::vector<std::uint8_t> reply;
    const IpAddress kOutsider = IpAddress::v4(192, 0, 2, 9);
    auto exact = ip_frame(kBox, kServer, kProtoTcp, 1, 80);
    EXPECT_EQ(firewall.egress(exact, reply), Verdict::Forward);
    auto in_cidr = ip_frame(kBox, IpAddress::v4(203, 0, 113, 15), kProtoTcp, 1, 80);
    EXPECT_EQ(firewall.egress(in_cidr, reply), Verdict::Forward);
    auto outside = ip_frame(kBox, IpAddress::v4(203, 0, 113, 16), kProtoTcp, 1, 80, kTcpAck, 10);
    EXPECT_EQ(firewall.egress(outside, reply), Verdict::Reject);
    auto rst = parse_frame(reply);
    ASSERT_TRUE(rst);
    EXPECT_EQ(rst->tcp_flags, kTcpRst);  // answering an ACK: RST with its ack as sequence number
    EXPECT_TRUE(checksums_valid(reply));

    // UDP: an ICMP "administratively prohibited" unreachable quoting the datagram.
    auto udp = ip_frame(kBox, kOutsider, kProtoUdp, 5000, 9999, 0, 20);
    EXPECT_EQ(firewall.egress(udp, reply), Verdict::Reject);
    auto icmp = parse_frame(reply);
    ASSERT_TRUE(icmp);
    EXPECT_EQ(icmp->protocol, kProtoIcmp);
    EXPECT_EQ(icmp->icmp_type, 3);
    EXPECT_EQ(reply[14 + 20 + 1], 13);
    EXPECT_EQ(icmp->source, kOutsider);
    EXPECT_TRUE(checksums_valid(reply));
    EXPECT_TRUE(std::equal(udp.begin() + 14, udp.end(), reply.begin() + 14 + 28));

    // An ICMP error is never answered with another.
    auto error = ip_frame(kBox, kOutsider, kProtoIcmp, 3 << 8, 0);
    EXPECT_EQ(firewall.egress(error, reply), Verdict::Reject);
    EXPECT_TRUE(reply.empty());

    // The host alias is not listed, so it is refused; DNS at the gateway still answers (a name
    // the list does not hold: NXDOMAIN, from the pump).
    auto alias = ip_frame(kBox, kAlias, kProtoTcp, 1, 8080);
    EXPECT_EQ(firewall.egress(alias, reply), Verdict::Reject);
    auto dns = ip_frame(kBox, kGateway, kProtoUdp, 1, 53, 0, 0, test::dns_query("example.com", 1));
    EXPECT_EQ(firewall.egress(dns, reply), Verdict::Answer);

    auto with_alias = firewall_for({"host.boxlite.internal:8080"});
    auto listed = ip_frame(kBox, kAlias, kProtoTcp, 1, 8080);
    EXPECT_EQ(with_alias.egress(listed, reply), Verdict::Forward);
    auto other_port = ip_frame(kBox, kAlias, kProtoTcp, 1, 8081);
    EXPECT_EQ(with_alias.egress(other_port, reply), Verdict::Reject);
}

TEST(NetFirewall, Ipv6RulesAndIcmpv6Unreachable) {
    auto firewall = firewall_for({"2001:db8:1::/48"});
    std::vector<std::uint8_t> reply;
    auto allowed = ip_frame(ip("fd00::2"), ip("2001:db8:1::5"), kProtoTcp, 1, 443);
    EXPECT_EQ(firewall.egress(allowed, reply), Verdict::Forward);
    auto refused = ip_frame(ip("fd00::2"), ip("2001:db8:2::5"), kProtoUdp, 1, 443, 0, 40);
    EXPECT_EQ(firewall.egress(refused, reply), Verdict::Reject);
    auto icmp = parse_frame(reply);
    ASSERT_TRUE(icmp);
    EXPECT_EQ(icmp->protocol, kProtoIcmpv6);
    EXPECT_EQ(icmp->icmp_type, 1);
    EXPECT_TRUE(checksums_valid(reply));
    auto tcp = ip_frame(ip("fd00::2"), ip("2001:db8:2::5"), kProtoTcp, 1, 443);
    EXPECT_EQ(firewall.egress(tcp, reply), Verdict::Reject);
    EXPECT_TRUE(checksums_valid(reply));
    EXPECT_EQ(parse_frame(reply)->tcp_flags, kTcpRst | kTcpAck);
}

TEST(NetFirewall, RepliesToPublishedPortsPassAnAllowList) {
    auto firewall = firewall_for({"198.51.100.7"});
    std::vector<std::uint8_t> reply;
    // passt opens a connection to the box's published port 8000 (from the host's loopback: the gateway).
    auto syn = ip_frame(kGateway, kBox, kProtoTcp, 45000, 8000, kTcpSyn);
    ASSERT_EQ(firewall.ingress(syn), Verdict::Forward);
    auto syn_ack = ip_frame(kBox, kGateway, kProtoTcp, 8000, 45000, kTcpSyn | kTcpAck);
    test::put16(syn_ack, 14 + 20 + 8, 0x1234);  // ack number 0x12340000 (passt's ISN + 1)
    test::put16(syn_ack, 14 + 20 + 16, 0);
    test::put16(syn_ack, 14 + 20 + 16,
                checksum_fold(checksum_add(std::span<const std::uint8_t>(syn_ack.data() + 34, 20),
                                           checksum_add(std::span<const std::uint8_t>(syn_ack.data() + 26, 8)) +
                                               kProtoTcp + 20)));
    ASSERT_TRUE(checksums_valid(syn_ack));
    EXPECT_EQ(firewall.egress(syn_ack, reply), Verdict::Forward);
    // With it, the handshake's last ACK, which this passt leaves out, made by the pump.
    ASSERT_FALSE(reply.empty());
    ASSERT_TRUE(checksums_valid(reply));
    auto ack = parse_frame(reply);
    ASSERT_TRUE(ack);
    EXPECT_EQ(ack->source, kGateway);
    EXPECT_EQ(ack->destination, kBox);
    EXPECT_EQ(ack->source_port, 45000);
    EXPECT_EQ(ack->destination_port, 8000);
    EXPECT_EQ(ack->tcp_flags, kTcpAck);
    EXPECT_EQ(ack->tcp_seq, 0x12340000U);
    EXPECT_EQ(ack->tcp_ack, 0x11000001U);
    EXPECT_EQ(get16(reply, 14 + 20 + 14), 65535);  // passt's SYN had no window scale
    // Once only: a retransmitted SYN-ACK goes on alone.
    EXPECT_EQ(firewall.egress(syn_ack, reply), Verdict::Forward);
    EXPECT_TRUE(reply.empty());
    // The same from an address outside the list.
    auto remote_syn = ip_frame(kOther, kBox, kProtoTcp, 45001, 8000, kTcpSyn);
    ASSERT_EQ(firewall.ingress(remote_syn), Verdict::Forward);
    auto remote_reply = ip_frame(kBox, kOther, kProtoTcp, 8000, 45001, kTcpSyn | kTcpAck);
    EXPECT_EQ(firewall.egress(remote_reply, reply), Verdict::Forward);
    // But a SYN-ACK coming in opens nothing.
    auto stray = ip_frame(kOther, kBox, kProtoTcp, 45002, 8001, kTcpSyn | kTcpAck);
    ASSERT_EQ(firewall.ingress(stray), Verdict::Forward);
    auto answer = ip_frame(kBox, kOther, kProtoTcp, 8001, 45002, kTcpAck);
    EXPECT_EQ(firewall.egress(answer, reply), Verdict::Reject);
}

TEST(NetFirewall, DropsWhatDoesNotParseAndNonIpFrames) {
    auto firewall = firewall_for({});
    std::vector<std::uint8_t> reply;
    std::vector<std::uint8_t> runt(10, 0);
    EXPECT_EQ(firewall.egress(runt, reply), Verdict::Drop);
    auto frame = ip_frame(kBox, kOther, kProtoTcp, 1, 2);
    frame[14] = 0x4f;
    EXPECT_EQ(firewall.egress(frame, reply), Verdict::Drop);
    std::vector<std::uint8_t> vlan(60, 0);
    vlan[12] = 0x81;
    EXPECT_EQ(firewall.egress(vlan, reply), Verdict::Drop);
    std::vector<std::uint8_t> arp(42, 0);
    arp[12] = 0x08;
    arp[13] = 0x06;
    EXPECT_EQ(firewall.egress(arp, reply), Verdict::Forward);
    EXPECT_EQ(firewall.stats().malformed, 2U);
}

TEST(NetFirewall, AnswersDnsForTheHostAliasItself) {
    auto firewall = firewall_for({"198.51.100.7"});
    std::vector<std::uint8_t> reply;
    const auto query = test::dns_query("Host.BoxLite.Internal", 1);
    auto frame = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, query);
    ASSERT_EQ(firewall.egress(frame, reply), Verdict::Answer);
    ASSERT_TRUE(checksums_valid(reply));
    auto info = parse_frame(reply);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->source, kGateway);
    EXPECT_EQ(info->destination_port, 40000);
    const std::size_t dns = 14 + 20 + 8;
    EXPECT_EQ(get16(reply, dns), 0x1234);
    EXPECT_EQ(get16(reply, dns + 6), 1);  // one answer
    ASSERT_EQ(reply.size(), dns + query.size() + 16);
    EXPECT_TRUE(std::equal(reply.end() - 4, reply.end(), kAlias.bytes.begin()));

    const auto aaaa = test::dns_query("host.boxlite.internal", 28);
    auto v6 = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, aaaa);
    ASSERT_EQ(firewall.egress(v6, reply), Verdict::Answer);
    EXPECT_EQ(get16(reply, dns + 6), 0);  // no records, but the name exists
    // Other names: with an allow list that does not hold them, NXDOMAIN from the pump; without
    // one, on to passt's DNS forwarder.
    auto other = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, test::dns_query("example.com", 1));
    ASSERT_EQ(firewall.egress(other, reply), Verdict::Answer);
    ASSERT_TRUE(checksums_valid(reply));
    EXPECT_EQ(get16(reply, dns + 2) & 0xf, 3);  // NXDOMAIN
    EXPECT_EQ(get16(reply, dns + 6), 0);
    auto open = firewall_for({});
    EXPECT_EQ(open.egress(other, reply), Verdict::Forward);
    // A cut or compressed question: forwarded untouched without an allow list (passt's resolver
    // deals with it), refused with one (the pump lets through only what it can read).
    auto cut = query;
    cut.resize(20);
    auto cut_frame = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, cut);
    EXPECT_EQ(open.egress(cut_frame, reply), Verdict::Forward);
    EXPECT_EQ(firewall.egress(cut_frame, reply), Verdict::Reject);
    // DNS over TCP: its answers are not watched, so refused with an allow list.
    auto tcp = ip_frame(kBox, kGateway, kProtoTcp, 40001, 53);
    EXPECT_EQ(firewall.egress(tcp, reply), Verdict::Reject);
    EXPECT_EQ(open.egress(tcp, reply), Verdict::Forward);
}

/// The resolver's answer to `query` (from test::dns_query): `addresses` as A/AAAA records of
/// `ttl` seconds, the first one's owner a compression pointer, the rest spelt out.
std::vector<std::uint8_t> dns_answer_frame(std::vector<std::uint8_t> query, const std::vector<IpAddress>& addresses,
                                           std::uint32_t ttl, std::uint16_t rcode = 0) {
    const std::size_t question_end = query.size();
    query[2] = 0x81;
    query[3] = static_cast<std::uint8_t>(0x80 | rcode);
    test::put16(query, 6, static_cast<std::uint16_t>(addresses.size()));
    bool first = true;
    for (const auto& address : addresses) {
        if (first) {
            query.insert(query.end(), {0xc0, 0x0c});
        } else {
            query.insert(query.end(), query.begin() + 12,
                         query.begin() + static_cast<std::ptrdiff_t>(question_end - 4));
        }
        first = false;
        const std::uint16_t type = address.v6 ? 28 : 1;
        query.insert(query.end(), {static_cast<std::uint8_t>(type >> 8), static_cast<std::uint8_t>(type), 0, 1,
                                   static_cast<std::uint8_t>(ttl >> 24), static_cast<std::uint8_t>(ttl >> 16),
                                   static_cast<std::uint8_t>(ttl >> 8), static_cast<std::uint8_t>(ttl), 0,
                                   static_cast<std::uint8_t>(address.size())});
        query.insert(query.end(), address.bytes.begin(),
                     address.bytes.begin() + static_cast<std::ptrdiff_t>(address.size()));
    }
    return ip_frame(kGateway, kBox, kProtoUdp, 53, 40000, 0, 0, query);
}

/// A TCP segment from the box to `destination`:443 from port `port`, sequence number `seq`.
std::vector<std::uint8_t> segment(const IpAddress& destination, std::uint16_t port, std::uint8_t flags,
                                  std::uint32_t seq, std::span<const std::uint8_t> data = {}) {
    auto frame = ip_frame(kBox, destination, kProtoTcp, port, 443, flags, 0, data);
    const std::size_t tcp = 14 + 20;
    test::put16(frame, tcp + 4, static_cast<std::uint16_t>(seq >> 16));
    test::put16(frame, tcp + 6, static_cast<std::uint16_t>(seq));
    test::put16(frame, tcp + 16, 0);
    std::uint32_t sum = checksum_add(std::span(kBox.bytes.data(), 4));
    sum = checksum_add(std::span(destination.bytes.data(), 4), sum);
    sum += kProtoTcp + static_cast<std::uint32_t>(frame.size() - tcp);
    test::put16(frame, tcp + 16, checksum_fold(checksum_add(std::span(frame).subspan(tcp), sum)));
    return frame;
}

TEST(NetFirewall, HostNameRulesFollowTheDnsAnswersForTheirTtl) {
    auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    auto list = AllowList::parse({"api.example.test", "*.cdn.example.test"});
    ASSERT_TRUE(list);
    EgressFirewall firewall(*list, {}, [&] { return now; });
    std::vector<std::uint8_t> reply;
    const IpAddress api = IpAddress::v4(198, 51, 100, 10);
    const IpAddress edge = IpAddress::v4(203, 0, 113, 20);
    const IpAddress api6 = *IpAddress::parse("2001:db8::10");

    // Before any answer: the addresses are refused.
    auto syn = ip_frame(kBox, api, kProtoTcp, 40000, 443);
    EXPECT_EQ(firewall.egress(syn, reply), Verdict::Reject);

    // The allowed names' queries go to passt; a name not listed (the apex of a wildcard
    // included) is NXDOMAIN at once.
    const auto api_query = test::dns_query("API.example.test", 1);
    auto api_query_frame = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, api_query);
    EXPECT_EQ(firewall.egress(api_query_frame, reply), Verdict::Forward);
    auto deep = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, test::dns_query("a.b.cdn.example.test", 1));
    EXPECT_EQ(firewall.egress(deep, reply), Verdict::Forward);
    for (const char* name : {"cdn.example.test", "example.test", "xapi.example.test", "api.example.test.evil"}) {
        auto refused = ip_frame(kBox, kGateway, kProtoUdp, 40000, 53, 0, 0, test::dns_query(name, 1));
        EXPECT_EQ(firewall.egress(refused, reply), Verdict::Answer) << name;
        EXPECT_EQ(get16(reply, 14 + 20 + 8 + 2) & 0xf, 3) << name;
    }

    // The answer (A and AAAA, TTL 300) makes those addresses reachable.
    auto answer = dns_answer_frame(api_query, {api, api6}, 300);
    EXPECT_EQ(firewall.ingress(answer), Verdict::Forward);
    EXPECT_EQ(firewall.stats().resolved, 2U);
    EXPECT_EQ(firewall.egress(syn, reply), Verdict::Forward);
    auto syn6 = ip_frame(IpAddress{*IpAddress::parse("fd00::2")}, api6, kProtoTcp, 40000, 443);
    EXPECT_EQ(firewall.egress(syn6, reply), Verdict::Forward);
    // An answer to a name not allowed teaches nothing (it cannot come from the box: ingress is
    // passt's side).
    auto other = dns_answer_frame(test::dns_query("evil.test", 1), {edge}, 300);
    EXPECT_EQ(firewall.ingress(other), Verdict::Forward);
    auto to_edge = ip_frame(kBox, edge, kProtoTcp, 40001, 443);
    EXPECT_EQ(firewall.egress(to_edge, reply), Verdict::Reject);
    // An error answer teaches nothing either.
    auto failed = dns_answer_frame(test::dns_query("x.cdn.example.test", 1), {edge}, 300, 2);
    EXPECT_EQ(firewall.ingress(failed), Verdict::Forward);
    EXPECT_EQ(firewall.egress(to_edge, reply), Verdict::Reject);

    // After the TTL, new connections are refused; the one made before lives on.
    now += std::chrono::seconds(301);
    const std::vector<std::uint8_t> ten(10, 'a');
    auto data = segment(api, 40000, kTcpAck, 0x11000001, ten);
    EXPECT_EQ(firewall.egress(data, reply), Verdict::Forward);
    auto new_syn = ip_frame(kBox, api, kProtoTcp, 40002, 443);
    EXPECT_EQ(firewall.egress(new_syn, reply), Verdict::Reject);

    // A TTL of 0 still leaves kMinResolvedTtl seconds for the connection that asked.
    auto zero = dns_answer_frame(test::dns_query("x.cdn.example.test", 1), {edge}, 0);
    EXPECT_EQ(firewall.ingress(zero), Verdict::Forward);
    EXPECT_EQ(firewall.egress(to_edge, reply), Verdict::Forward);
    now += std::chrono::seconds(EgressFirewall::kMinResolvedTtl);
    auto late = ip_frame(kBox, edge, kProtoTcp, 40003, 443);
    EXPECT_EQ(firewall.egress(late, reply), Verdict::Reject);

    // A truncated answer is read no further than it goes.
    auto cut = dns_answer_frame(test::dns_query("y.cdn.example.test", 1), {IpAddress::v4(203, 0, 113, 99)}, 300);
    const std::size_t udp_length = get16(cut, 14 + 20 + 4) - 3;
    test::put16(cut, 14 + 20 + 4, static_cast<std::uint16_t>(udp_length));
    EXPECT_EQ(firewall.ingress(cut), Verdict::Forward);
    auto to_cut = ip_frame(kBox, IpAddress::v4(203, 0, 113, 99), kProtoTcp, 40004, 443);
    EXPECT_EQ(firewall.egress(to_cut, reply), Verdict::Reject);
}

TEST(NetFirewall, FragmentsToTheGatewayOrAliasAreRefused) {
    auto firewall = firewall_for({});
    std::vector<std::uint8_t> reply;
    auto first = ip_frame(kBox, kGateway, kProtoUdp, 1, 53, 0, 16);
    test::put16(first, 14 + 6, 0x2000);  // more fragments
    test::put16(first, 14 + 10, 0);
    test::put16(first, 14 + 10, checksum_fold(checksum_add(std::span<const std::uint8_t>(first.data() + 14, 20))));
    EXPECT_EQ(firewall.egress(first, reply), Verdict::Reject);
    auto later = ip_frame(kBox, kAlias, kProtoUdp, 1, 53, 0, 16);
    test::put16(later, 14 + 6, 0x0004);  // offset 32
    EXPECT_EQ(firewall.egress(later, reply), Verdict::Drop);
}

}  // namespace
}  // namespace boxlite::net

namespace boxlite::net {
namespace {

struct NameCheckedFirewall {
    EgressFirewall firewall = firewall_for({"api.example.test", "198.51.100.99"});
    const IpAddress api = IpAddress::v4(198, 51, 100, 10);
    std::vector<std::uint8_t> reply;

    NameCheckedFirewall() {
        auto answer = dns_answer_frame(test::dns_query("api.example.test", 1), {api}, 300);
        EXPECT_EQ(firewall.ingress(answer), Verdict::Forward);
    }
    Verdict send(std::vector<std::uint8_t> frame) { return firewall.egress(frame, reply); }
};

std::span<const std::uint8_t> text(const char* data) {
    return {reinterpret_cast<const std::uint8_t*>(data), std::strlen(data)};
}

TEST(NetFirewall, AResolvedAddressCarriesOnlyAnAllowedSni) {
    NameCheckedFirewall f;
    // The allowed name: the ClientHello and all after it pass.
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpSyn, 1000)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, 1001)), Verdict::Forward);
    const auto good = test::client_hello("API.example.test");
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, 1001, good)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, 1001 + static_cast<std::uint32_t>(good.size()), text("x"))),
              Verdict::Forward);
    EXPECT_EQ(f.firewall.stats().names_refused, 0U);

    // Another name to the same address: a RST to the box and one to passt at the first byte.
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpSyn, 5000)), Verdict::Forward);
    const auto bad = test::client_hello("evil.test");
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 5001, bad)), Verdict::Reject);
    ASSERT_FALSE(f.reply.empty());
    EXPECT_TRUE(checksums_valid(f.reply));
    auto to_box = parse_frame(f.reply);
    ASSERT_TRUE(to_box);
    EXPECT_EQ(to_box->destination, kBox);
    EXPECT_NE(to_box->tcp_flags & kTcpRst, 0);
    const auto to_passt = f.firewall.to_passt();
    ASSERT_FALSE(to_passt.empty());
    EXPECT_TRUE(checksums_valid(to_passt));
    auto reset = parse_frame(to_passt);
    ASSERT_TRUE(reset);
    EXPECT_EQ(reset->source, kBox);
    EXPECT_EQ(reset->destination, f.api);
    EXPECT_EQ(reset->source_port, 40001);
    EXPECT_EQ(reset->tcp_seq, 5001U);
    EXPECT_EQ(reset->tcp_flags, kTcpRst);
    EXPECT_EQ(f.firewall.stats().names_refused, 1U);
    // The connection is gone: whatever the box sends on it is refused.
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 5001, bad)), Verdict::Reject);
    EXPECT_TRUE(f.firewall.to_passt().empty());

    // No SNI at all, or a protocol that names no server: passes (the address was allowed).
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpSyn, 7000)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpAck, 7001, test::client_hello(""))), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40003, kTcpSyn, 7000)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40003, kTcpAck, 7001, text("SSH-2.0-x\r\n"))), Verdict::Forward);

    // An address allowed by number is not checked.
    const IpAddress listed = IpAddress::v4(198, 51, 100, 99);
    EXPECT_EQ(f.send(segment(listed, 40004, kTcpSyn, 1)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(listed, 40004, kTcpAck, 2, bad)), Verdict::Forward);
    // A connection to a resolved address not seen opening is refused.
    EXPECT_EQ(f.send(segment(f.api, 40005, kTcpAck, 9000, good)), Verdict::Reject);
    // A SYN with data (TCP Fast Open) is dropped, so the box sends it again without.
    EXPECT_EQ(f.send(segment(f.api, 40006, kTcpSyn, 100, bad)), Verdict::Drop);
    EXPECT_EQ(f.send(segment(f.api, 40006, kTcpSyn, 100)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40006, kTcpSyn, 100, bad)), Verdict::Drop);
    EXPECT_EQ(f.send(segment(f.api, 40006, kTcpAck, 101, bad)), Verdict::Reject);
}

TEST(NetFirewall, AClientHelloSplitOverSegmentsIsDecidedByItsLastSegment) {
    NameCheckedFirewall f;
    const auto hello = test::client_hello("api.example.test", 2000);
    const std::size_t half = hello.size() / 2;
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpSyn, 0xfffffff0)), Verdict::Forward);  // sequence wraps
    const std::uint32_t first = 0xfffffff1;
    const std::span<const std::uint8_t> head(hello.data(), half);
    const std::span<const std::uint8_t> tail(hello.data() + half, hello.size() - half);
    // Past a gap: dropped (read in order when sent again).
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, first + static_cast<std::uint32_t>(half) + 5, text("zz"))),
              Verdict::Drop);
    // Incomplete: passes (the server can do nothing with half a ClientHello), and again.
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, first, head)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, first, head)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, first + static_cast<std::uint32_t>(half), tail)), Verdict::Forward);
    EXPECT_EQ(f.firewall.stats().names_refused, 0U);

    // The same split with a name not allowed: the last segment is reset, passt's side at its seq.
    const auto bad = test::client_hello("evil.test", 2000);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpSyn, 99)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 100, std::span(bad.data(), 100))), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 200, std::span(bad.data() + 100, bad.size() - 100))),
              Verdict::Reject);
    EXPECT_EQ(parse_frame(f.firewall.to_passt())->tcp_seq, 200U);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 100, std::span(bad.data(), 100))), Verdict::Reject);

    // Bytes that never complete within kMaxServerNameScan: reset.
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpSyn, 0)), Verdict::Forward);
    std::string request = "GET / HTTP/1.1\r\n";
    std::uint32_t seq = 1;
    Verdict last = Verdict::Forward;
    for (int i = 0; i < 40 && last == Verdict::Forward; ++i) {
        const std::string chunk = i == 0 ? request : "X-Filler: " + std::string(1000, 'a') + "\r\n";
        last = f.send(segment(f.api, 40002, kTcpAck, seq, text(chunk.c_str())));
        seq += static_cast<std::uint32_t>(chunk.size());
    }
    EXPECT_EQ(last, Verdict::Reject);
    EXPECT_GE(seq - 1, net::kMaxServerNameScan);
}

TEST(NetFirewall, AnHttpHostNotAllowedResetsTheConnection) {
    NameCheckedFirewall f;
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpSyn, 0)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40000, kTcpAck, 1, text("GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"))),
              Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpSyn, 0)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40001, kTcpAck, 1, text("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"))),
              Verdict::Reject);
    EXPECT_FALSE(f.firewall.to_passt().empty());
    // A closed connection that said nothing ends its check.
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpSyn, 0)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpAck | kTcpFin, 1)), Verdict::Forward);
    EXPECT_EQ(f.send(segment(f.api, 40002, kTcpAck, 2, text("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"))),
              Verdict::Forward);
}

TEST(NetFirewall, NameChecksAreBoundedTheOldestGoingFirst) {
    NameCheckedFirewall f;
    for (std::uint16_t i = 0; i <= EgressFirewall::kMaxNameChecks; ++i) {
        EXPECT_EQ(f.send(segment(f.api, static_cast<std::uint16_t>(30000 + i), kTcpSyn, 0)), Verdict::Forward);
    }
    // The first connection's check (and the connection) went to make room; the second's lives.
    EXPECT_EQ(f.send(segment(f.api, 30000, kTcpAck, 1, text("GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"))),
              Verdict::Reject);
    EXPECT_EQ(f.send(segment(f.api, 30001, kTcpAck, 1, text("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"))),
              Verdict::Reject);
    EXPECT_EQ(f.send(segment(f.api, 30002, kTcpAck, 1, text("GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"))),
              Verdict::Forward);
}

}  // namespace
}  // namespace boxlite::net
