// The frame pump between a datagram "device" and a stream "passt" (socketpairs): frames cross
// with the length prefix added and removed, refused frames are answered to the box, and a broken
// length prefix from passt ends the pump with an error.
#include "frames.hpp"
#include "net/pump.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace boxlite::net {
namespace {

using test::ip_frame;

struct Pair {
    int a = -1;
    int b = -1;
    Pair(int type) { EXPECT_EQ(::socketpair(AF_UNIX, type, 0, &a), 0); }
    ~Pair() {
        if (a >= 0) ::close(a);
        if (b >= 0) ::close(b);
    }
};

const IpAddress kBox = IpAddress::v4(192, 168, 127, 2);
const IpAddress kGateway = IpAddress::v4(192, 168, 127, 1);

std::vector<std::uint8_t> read_exact(int fd, std::size_t size) {
    std::vector<std::uint8_t> out(size);
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, out.data() + got, size - got);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    return out;
}

TEST(NetPump, CarriesFramesBothWaysThroughTheFirewall) {
    Pair device(SOCK_DGRAM);
    Pair passt(SOCK_STREAM);
    Pair stop(SOCK_STREAM);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall);
    BoxliteResult<void> result;
    std::thread thread([&] { result = pump.run(stop.b); });

    // Box → passt: the frame arrives with its length prefix.
    const auto out = ip_frame(kBox, IpAddress::v4(198, 51, 100, 7), kProtoTcp, 40000, 80, kTcpSyn, 10);
    ASSERT_EQ(::write(device.a, out.data(), out.size()), static_cast<ssize_t>(out.size()));
    auto prefix = read_exact(passt.a, 4);
    ASSERT_EQ(prefix.size(), 4U);
    EXPECT_EQ(test::get16(prefix, 2), out.size());
    EXPECT_EQ(read_exact(passt.a, out.size()), out);

    // Refused: the box gets a RST, passt nothing.
    const auto refused = ip_frame(kBox, kGateway, kProtoTcp, 40001, 22, kTcpSyn);
    ASSERT_EQ(::write(device.a, refused.data(), refused.size()), static_cast<ssize_t>(refused.size()));
    std::vector<std::uint8_t> answer(2048);
    const ssize_t n = ::read(device.a, answer.data(), answer.size());
    ASSERT_GT(n, 0);
    answer.resize(static_cast<std::size_t>(n));
    auto info = parse_frame(answer);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->tcp_flags & kTcpRst, kTcpRst);

    // passt → box, split over two writes.
    const auto in = ip_frame(IpAddress::v4(198, 51, 100, 7), kBox, kProtoUdp, 53, 40000, 0, 300);
    std::vector<std::uint8_t> stream;
    append_stream_frame(stream, in);
    ASSERT_EQ(::write(passt.a, stream.data(), 7), 7);
    ASSERT_EQ(::write(passt.a, stream.data() + 7, stream.size() - 7), static_cast<ssize_t>(stream.size() - 7));
    std::vector<std::uint8_t> received(70000);
    const ssize_t m = ::read(device.a, received.data(), received.size());
    ASSERT_EQ(m, static_cast<ssize_t>(in.size()));
    received.resize(static_cast<std::size_t>(m));
    EXPECT_EQ(received, in);

    ASSERT_EQ(::write(stop.a, "x", 1), 1);
    thread.join();
    EXPECT_TRUE(result) << result.error().message();
    EXPECT_EQ(pump.stats().frames_to_passt, 1U);
    EXPECT_EQ(pump.stats().rejections_sent, 1U);
    EXPECT_EQ(pump.stats().frames_to_box, 2U);
}

// A tap with IFF_VNET_HDR: each datagram is a 10-byte virtio_net_hdr and the frame.
TEST(NetPump, VnetHeaderFramingHandsTcpToTheBoxAsPartialChecksums) {
    Pair device(SOCK_DGRAM);
    Pair passt(SOCK_STREAM);
    Pair stop(SOCK_STREAM);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall, BoxFraming::VnetHeader);
    BoxliteResult<void> result;
    std::thread thread([&] { result = pump.run(stop.b); });
    auto receive = [&](std::vector<std::uint8_t>& header) {
        std::vector<std::uint8_t> datagram(70000);
        const ssize_t n = ::read(device.a, datagram.data(), datagram.size());
        EXPECT_GE(n, 10);
        datagram.resize(static_cast<std::size_t>(std::max<ssize_t>(n, 10)));
        header.assign(datagram.begin(), datagram.begin() + 10);
        return std::vector<std::uint8_t>(datagram.begin() + 10, datagram.end());
    };
    auto host16 = [](const std::vector<std::uint8_t>& bytes, std::size_t at) {
        std::uint16_t value = 0;
        std::memcpy(&value, bytes.data() + at, 2);
        return value;
    };

    // passt -> box, TCP: NEEDS_CSUM from the TCP header (14 + 20) at its checksum (16), the field
    // holding the pseudo-header's sum; completing it gives passt's checksum back.
    const auto tcp = ip_frame(IpAddress::v4(198, 51, 100, 7), kBox, kProtoTcp, 80, 40000, kTcpAck, 1000);
    std::vector<std::uint8_t> stream;
    append_stream_frame(stream, tcp);
    // passt -> box, UDP: no flags, the frame as it came.
    const auto udp = ip_frame(IpAddress::v4(198, 51, 100, 7), kBox, kProtoUdp, 53, 40000, 0, 300);
    append_stream_frame(stream, udp);
    ASSERT_EQ(::write(passt.a, stream.data(), stream.size()), static_cast<ssize_t>(stream.size()));
    std::vector<std::uint8_t> header;
    auto received = receive(header);
    ASSERT_EQ(received.size(), tcp.size());
    EXPECT_EQ(header[0], 1);  // VIRTIO_NET_HDR_F_NEEDS_CSUM
    EXPECT_EQ(header[1], 0);  // no GSO
    EXPECT_EQ(host16(header, 6), 34);
    EXPECT_EQ(host16(header, 8), 16);
    auto completed = received;
    test::put16(completed, 34 + 16, checksum_fold(checksum_add(std::span<const std::uint8_t>(completed).subspan(34))));
    EXPECT_EQ(completed, tcp);
    received = receive(header);
    EXPECT_EQ(received, udp);
    EXPECT_EQ(header, std::vector<std::uint8_t>(10, 0));

    // box -> passt: the header is taken off; a frame claiming an offload never reaches passt.
    std::vector<std::uint8_t> offloaded(10, 0);
    offloaded[1] = 1;  // VIRTIO_NET_HDR_GSO_TCPV4
    const auto out = ip_frame(kBox, IpAddress::v4(198, 51, 100, 7), kProtoTcp, 40000, 80, kTcpSyn, 10);
    offloaded.insert(offloaded.end(), out.begin(), out.end());
    ASSERT_EQ(::write(device.a, offloaded.data(), offloaded.size()), static_cast<ssize_t>(offloaded.size()));
    std::vector<std::uint8_t> plain(10, 0);
    plain.insert(plain.end(), out.begin(), out.end());
    ASSERT_EQ(::write(device.a, plain.data(), plain.size()), static_cast<ssize_t>(plain.size()));
    auto prefix = read_exact(passt.a, 4);
    ASSERT_EQ(prefix.size(), 4U);
    EXPECT_EQ(test::get16(prefix, 2), out.size());
    EXPECT_EQ(read_exact(passt.a, out.size()), out);

    ASSERT_EQ(::write(stop.a, "x", 1), 1);
    thread.join();
    EXPECT_TRUE(result) << result.error().message();
    EXPECT_EQ(pump.stats().frames_to_passt, 1U);
    EXPECT_EQ(pump.stats().frames_to_box, 2U);
}

// A stream of many frames in one write, cut anywhere by the socket: every frame arrives whole.
TEST(NetPump, CarriesABurstOfFramesCutAnywhere) {
    Pair device(SOCK_DGRAM);
    Pair passt(SOCK_STREAM);
    Pair stop(SOCK_STREAM);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall);
    BoxliteResult<void> result;
    std::thread thread([&] { result = pump.run(stop.b); });
    std::vector<std::vector<std::uint8_t>> frames;
    std::vector<std::uint8_t> stream;
    // Fewer frames than a datagram socket queues (10), so none is dropped for a slow reader.
    for (std::size_t i = 0; i < 8; ++i) {
        frames.push_back(ip_frame(IpAddress::v4(198, 51, 100, 7), kBox, kProtoUdp, 53, 40000, 0, 2999 * (i + 1)));
        append_stream_frame(stream, frames.back());
    }
    std::thread writer([&] {
        for (std::size_t at = 0; at < stream.size();) {
            const std::size_t piece = std::min<std::size_t>(stream.size() - at, 7777);
            const ssize_t n = ::write(passt.a, stream.data() + at, piece);
            if (n <= 0) break;
            at += static_cast<std::size_t>(n);
        }
    });
    for (const auto& frame : frames) {
        std::vector<std::uint8_t> received(70000);
        const ssize_t n = ::read(device.a, received.data(), received.size());
        ASSERT_GT(n, 0);
        received.resize(static_cast<std::size_t>(n));
        EXPECT_EQ(received, frame);
    }
    writer.join();
    ASSERT_EQ(::write(stop.a, "x", 1), 1);
    thread.join();
    EXPECT_TRUE(result) << result.error().message();
    EXPECT_EQ(pump.stats().frames_to_box, frames.size());
}

// Issue 19: Debian 12's passt reads its stream socket in batches and loses the framing when a
// read ends inside a frame, which stalled and reset the box's connections. The pump therefore
// writes whole frames only, each write one socket buffer: whatever passt reads (here with a
// buffer larger than the socket can hold, as passt's 8 MiB) ends at a frame's end, even while the
// socket is full and the pump's writes come back short.
TEST(NetPump, PasstNeverReadsAFrameCutWhileTheSocketIsFull) {
    Pair device(SOCK_SEQPACKET);
    Pair passt(SOCK_STREAM);
    Pair stop(SOCK_STREAM);
    const int small = 64 * 1024;  // the pump's end fills after a few frames
    ASSERT_EQ(::setsockopt(passt.b, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall);
    BoxliteResult<void> result;
    std::thread thread([&] { result = pump.run(stop.b); });
    // Sizes from a runt-sized UDP datagram to a whole MTU-32768 frame, mixed so that frames cross
    // every write and buffer boundary.
    std::vector<std::vector<std::uint8_t>> frames;
    const std::size_t payloads[] = {0, 1372, 32740, 7, 20000, 32740, 513, 32740, 32740, 65, 9000};
    for (std::size_t i = 0; i < 400; ++i) {
        auto frame = ip_frame(kBox, IpAddress::v4(198, 51, 100, 7), kProtoUdp, 40000, 9, 0,
                              payloads[i % std::size(payloads)]);
        frame.back() = static_cast<std::uint8_t>(i);
        frames.push_back(std::move(frame));
    }
    std::thread box([&] {
        for (const auto& frame : frames) {
            if (::write(device.a, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) return;
        }
    });
    std::vector<std::uint8_t> stream;
    std::vector<std::uint8_t> buffer(8 << 20);
    std::size_t reads_cut = 0;
    std::size_t total = 0;
    for (const auto& frame : frames) total += 4 + frame.size();
    while (stream.size() < total) {
        pollfd ready{passt.a, POLLIN, 0};
        ASSERT_EQ(::poll(&ready, 1, 60'000), 1) << "no frames for 60 s (a hang)";
        // Let the pump run into the full socket before reading, as a busy passt would.
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        const ssize_t n = ::recv(passt.a, buffer.data(), buffer.size(), MSG_DONTWAIT);
        ASSERT_GT(n, 0);
        stream.insert(stream.end(), buffer.begin(), buffer.begin() + n);
        std::size_t at = 0;
        while (stream.size() - at >= 4 && stream.size() - at - 4 >= stream_frame_length(stream.data() + at))
            at += 4 + stream_frame_length(stream.data() + at);
        if (at != stream.size()) ++reads_cut;
    }
    box.join();
    EXPECT_EQ(reads_cut, 0U) << "reads that ended inside a frame";
    std::size_t at = 0;
    for (const auto& frame : frames) {
        ASSERT_LE(at + 4 + frame.size(), stream.size());
        ASSERT_EQ(stream_frame_length(stream.data() + at), frame.size());
        ASSERT_TRUE(std::equal(frame.begin(), frame.end(), stream.begin() + static_cast<std::ptrdiff_t>(at + 4)));
        at += 4 + frame.size();
    }
    EXPECT_EQ(at, stream.size());
    ASSERT_EQ(::write(stop.a, "x", 1), 1);
    thread.join();
    EXPECT_TRUE(result) << result.error().message();
    EXPECT_EQ(pump.stats().frames_to_passt, frames.size());
}

TEST(NetPump, ABadLengthPrefixFromPasstEndsThePump) {
    Pair device(SOCK_DGRAM);
    Pair passt(SOCK_STREAM);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall);
    const std::uint8_t huge[4] = {0x7f, 0xff, 0xff, 0xff};
    ASSERT_EQ(::write(passt.a, huge, 4), 4);
    auto result = pump.run(-1);
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("frame length"), std::string::npos) << result.error().message();
}

TEST(NetPump, EndsWhenPasstCloses) {
    Pair device(SOCK_DGRAM);
    Pair passt(SOCK_STREAM);
    EgressFirewall firewall(AllowList{});
    FramePump pump(device.b, passt.b, firewall);
    ::close(passt.a);
    passt.a = -1;
    EXPECT_TRUE(pump.run(-1));
}

}  // namespace
}  // namespace boxlite::net
