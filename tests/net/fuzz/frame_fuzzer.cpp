// libFuzzer target: hostile frames from a box (and from passt) through the parser, the egress
// firewall in both directions, and passt's stream decoder. Every answer the firewall makes must
// itself parse and carry valid checksums; every forwarded frame must still parse.
#include "../frames.hpp"
#include "net/firewall.hpp"
#include "net/packet.hpp"
#include "net/stream_framing.hpp"

#include <cstdint>
#include <cstdlib>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace boxlite::net;
    if (size < 1) return 0;
    const std::uint8_t selector = data[0];
    std::vector<std::uint8_t> frame(data + 1, data + size);

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
