// libFuzzer target: hostile frames from a box (and from passt) through the parser, the egress
// firewall in both directions, and passt's stream decoder. Every answer the firewall makes must
// itself parse and carry valid checksums; every forwarded frame must still parse. With bit 2 of
// the selector the input is instead a client's first bytes on a TCP connection: through the
// server-name scanner, and cut into segments through a firewall whose allowed name resolved.
#include "../frames.hpp"
#include "net/firewall.hpp"
#include "net/packet.hpp"
#include "net/server_name.hpp"
#include "net/stream_framing.hpp"

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <span>
#include <vector>

namespace {

boxlite::net::EgressFirewall& firewall(std::uint8_t which) {
    using boxlite::net::AllowList;
    using boxlite::net::EgressFirewall;
    static EgressFirewall open(AllowList{});
    static EgressFirewall restricted(
        *AllowList::parse({"198.51.100.0/24", "2001:db8::/32", "host.boxlite.internal:80"}));
    return (which & 1) != 0 ? restricted : open;
}

// A firewall allowing "allowed.example.test", which has resolved to 198.51.100.7 for a day.
boxlite::net::EgressFirewall& name_checked() {
    using namespace boxlite::net;
    static EgressFirewall wall = [] {
        EgressFirewall made(*AllowList::parse({"allowed.example.test"}));
        auto answer = test::dns_query("allowed.example.test", 1);
        answer[2] = 0x81;
        answer[3] = 0x80;
        answer[7] = 1;
        answer.insert(answer.end(), {0xc0, 0x0c, 0, 1, 0, 1, 0, 1, 0x51, 0x80, 0, 4, 198, 51, 100, 7});
        auto frame = test::ip_frame(IpAddress::v4(192, 168, 127, 1), IpAddress::v4(192, 168, 127, 2), kProtoUdp, 53,
                                    40000, 0, 0, answer);
        (void)made.ingress(frame);
        return made;
    }();
    return wall;
}

void put32(std::vector<std::uint8_t>& frame, std::size_t at, std::uint32_t value) {
    boxlite::net::test::put16(frame, at, static_cast<std::uint16_t>(value >> 16));
    boxlite::net::test::put16(frame, at + 2, static_cast<std::uint16_t>(value));
}

// A TCP segment from the box to 198.51.100.7:443, checksums right.
std::vector<std::uint8_t> segment(std::uint16_t port, std::uint8_t flags, std::uint32_t seq,
                                  std::span<const std::uint8_t> data) {
    using namespace boxlite::net;
    const IpAddress box = IpAddress::v4(192, 168, 127, 2);
    const IpAddress server = IpAddress::v4(198, 51, 100, 7);
    auto frame = test::ip_frame(box, server, kProtoTcp, port, 443, flags, data.empty() ? 0 : data.size(), data);
    const std::size_t tcp = 14 + 20;
    put32(frame, tcp + 4, seq);
    test::put16(frame, tcp + 16, 0);
    std::uint32_t sum = checksum_add(std::span(box.bytes.data(), 4));
    sum = checksum_add(std::span(server.bytes.data(), 4), sum);
    sum += kProtoTcp + static_cast<std::uint32_t>(frame.size() - tcp);
    test::put16(frame, tcp + 16, checksum_fold(checksum_add(std::span<const std::uint8_t>(frame).subspan(tcp), sum)));
    return frame;
}

void fuzz_first_bytes(std::uint8_t selector, std::span<const std::uint8_t> stream) {
    using namespace boxlite::net;
    const auto found = find_server_names(stream);
    if (found.scan == ServerNameScan::Names && found.names.empty()) std::abort();
    static std::uint16_t port = 10000;
    port = static_cast<std::uint16_t>(port == 60000 ? 10000 : port + 1);
    auto& wall = name_checked();
    std::vector<std::uint8_t> reply;
    const std::uint32_t first = 0xfffffe00U + selector;  // the sequence numbers wrap now and then
    auto syn = segment(port, kTcpSyn, first - 1, {});
    if (wall.egress(syn, reply) != Verdict::Forward) std::abort();
    // Segments of 1 to 32 bytes times 64, the second one sent twice.
    const std::size_t piece = (static_cast<std::size_t>(selector >> 3) + 1) * 64;
    for (std::size_t at = 0, n = 0; at < stream.size(); ++n) {
        const std::size_t length = std::min(piece, stream.size() - at);
        auto frame = segment(port, kTcpAck, first + static_cast<std::uint32_t>(at), stream.subspan(at, length));
        const auto verdict = wall.egress(frame, reply);
        if (!reply.empty() && !test::checksums_valid(reply)) std::abort();
        if (!wall.to_passt().empty() && !test::checksums_valid(wall.to_passt())) std::abort();
        if (verdict == Verdict::Reject) return;
        if (n != 1) at += length;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace boxlite::net;
    if (size < 1) return 0;
    const std::uint8_t selector = data[0];
    std::vector<std::uint8_t> frame(data + 1, data + size);
    if ((selector & 4) != 0) {
        fuzz_first_bytes(selector, frame);
        return 0;
    }

    (void)parse_frame(frame);

    auto& wall = firewall(selector);
    std::vector<std::uint8_t> egress = frame;
    std::vector<std::uint8_t> reply;
    const auto verdict = wall.egress(egress, reply);
    if (verdict == Verdict::Forward && egress != frame && !parse_frame(egress)) std::abort();
    if (!reply.empty()) {  // a rejection, an answer, or the handshake ACK sent with a Forward
        if (!test::checksums_valid(reply)) std::abort();
    }
    std::vector<std::uint8_t> ingress = frame;
    if (wall.ingress(ingress) == Verdict::Forward && ingress != frame && !parse_frame(ingress)) std::abort();

    StreamDecoder decoder;
    const std::size_t split = selector % (frame.size() + 1);
    decoder.feed(std::span(frame.data(), split));
    std::span<const std::uint8_t> out;
    while (decoder.next(out) == StreamDecoder::Status::Frame) {
        if (out.size() < kMinStreamFrame || out.size() > kMaxStreamFrame) std::abort();
    }
    decoder.feed(std::span(frame.data() + split, frame.size() - split));
    while (decoder.next(out) == StreamDecoder::Status::Frame) {
        if (out.size() < kMinStreamFrame || out.size() > kMaxStreamFrame) std::abort();
    }
    return 0;
}
