// virtio-vsock over in-process guest memory, with the host side on real Unix sockets
// speaking Firecracker's hybrid protocol.
#include "virtqueue_driver.hpp"

#include <gtest/gtest.h>

#include "devices/virtio/vsock/device.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace boxlite::devices::virtio {
namespace {

using testing::VirtQueueDriver;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uint64_t kGuestCid = 3;
constexpr std::uint64_t kRxBuffers = 0x80000;
constexpr std::uint32_t kRxBufferSize = 4096;
constexpr std::uint64_t kTxBuffer = 0x60000;

class ThreadSafeInterrupt final : public Interrupt {
public:
    void signal_used_queue(std::uint16_t) override { ++count; }
    void signal_config_change() override {}
    std::atomic<int> count{0};
};

int connect_unix(const fs::path& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

int listen_unix(const fs::path& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd, 4) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

std::string read_with_timeout(int fd, std::size_t want, std::chrono::milliseconds timeout = 2000ms) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        char buffer[256];
        const ssize_t n = ::read(fd, buffer, std::min(sizeof(buffer), want - out.size()));
        if (n <= 0) break;
        out.append(buffer, static_cast<std::size_t>(n));
    }
    return out;
}

struct VsockFixture : ::testing::Test {
    fs::path dir = fs::temp_directory_path() / ("boxlite-vsock-" + std::to_string(::getpid()) + "-" +
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::path uds;
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, 2ULL << 20));
    std::shared_ptr<VsockDevice> device;
    VirtQueue queues[3] = {VirtQueue(256), VirtQueue(256), VirtQueue(256)};
    std::unique_ptr<VirtQueueDriver> rx, tx;
    ThreadSafeInterrupt interrupt;
    std::uint16_t rx_posted = 0;
    VsockTimeouts timeouts;

    void SetUp() override {
        fs::create_directories(dir);
        uds = dir / "vsock.sock";
        auto created = VsockDevice::create(kGuestCid, uds, timeouts);
        ASSERT_TRUE(created) << created.error().to_string();
        device = *created;
        rx = std::make_unique<VirtQueueDriver>(memory, 0x10000, 64);
        tx = std::make_unique<VirtQueueDriver>(memory, 0x20000, 64);
        VirtQueueDriver event(memory, 0x30000, 8);
        rx->configure(queues[0], kFeatureVersion1 | kFeatureRingEventIdx);
        tx->configure(queues[1], kFeatureVersion1 | kFeatureRingEventIdx);
        event.configure(queues[2]);
        ASSERT_TRUE(device->activate({&memory, queues, &interrupt, kFeatureVersion1 | kFeatureRingEventIdx}));
        post_rx(16);
    }
    void TearDown() override {
        device.reset();
        fs::remove_all(dir);
    }

    void post_rx(int count) {
        for (int i = 0; i < count; ++i) {
            const std::uint64_t address = kRxBuffers + (rx_posted % 64) * kRxBufferSize;
            rx->add_chain({{address, kRxBufferSize, true}});
            ++rx_posted;
        }
        device->queue_notify(0);
    }

    /// The next packet the device put in the rx ring (waits up to `wait`).
    std::optional<std::pair<VsockHeader, std::string>> next_rx(std::chrono::milliseconds wait = 2000ms) {
        const auto deadline = std::chrono::steady_clock::now() + wait;
        while (std::chrono::steady_clock::now() < deadline) {
            if (pending_.empty())
                for (auto u : rx->take_used()) pending_.push_back(u);
            if (!pending_.empty()) {
                auto used = pending_.front();
                pending_.erase(pending_.begin());
                // add_chain gave each chain one descriptor, index == head; its address is ours.
                auto desc = memory.read_obj<Descriptor>(rx->desc_table() + 16ULL * used.id);
                VsockHeader h{};
                memory.read_bytes(desc->address, std::as_writable_bytes(std::span(&h, 1)));
                std::string payload(h.len, '\0');
                memory.read_bytes(desc->address + sizeof(h), std::as_writable_bytes(std::span(payload)));
                post_rx(1);
                return std::make_pair(h, payload);
            }
            std::this_thread::sleep_for(1ms);
        }
        return std::nullopt;
    }

    void send_tx(VsockOp op, std::uint32_t src_port, std::uint32_t dst_port, std::string_view payload = {},
                 std::uint32_t buf_alloc = 65536, std::uint32_t fwd_cnt = 0, std::uint64_t src_cid = kGuestCid,
                 std::uint16_t type = kVsockTypeStream, std::uint32_t flags = 0) {
        VsockHeader h{};
        h.src_cid = src_cid;
        h.dst_cid = kVsockHostCid;
        h.src_port = src_port;
        h.dst_port = dst_port;
        h.len = static_cast<std::uint32_t>(payload.size());
        h.type = type;
        h.op = static_cast<std::uint16_t>(op);
        h.flags = flags;
        h.buf_alloc = buf_alloc;
        h.fwd_cnt = fwd_cnt;
        memory.write_obj(kTxBuffer, h);
        memory.write_bytes(kTxBuffer + sizeof(h), std::as_bytes(std::span(payload.data(), payload.size())));
        tx->add_chain({{kTxBuffer, static_cast<std::uint32_t>(sizeof(h) + payload.size()), false}});
        device->queue_notify(1);
    }

    std::vector<testing::UsedElement> pending_;
};

TEST_F(VsockFixture, ConfigReportsTheGuestCid) {
    std::uint64_t cid = 0;
    device->read_config(0, std::as_writable_bytes(std::span(&cid, 1)));
    EXPECT_EQ(cid, kGuestCid);
    EXPECT_TRUE(fs::exists(uds));
}

TEST_F(VsockFixture, HostInitiatedConnectionFollowsTheHybridHandshake) {
    int host = connect_unix(uds);
    ASSERT_GE(host, 0);
    ASSERT_EQ(::write(host, "CONNECT 2695\n", 13), 13);
    auto request = next_rx();
    ASSERT_TRUE(request) << "the guest never saw a REQUEST";
    EXPECT_EQ(request->first.op, static_cast<std::uint16_t>(VsockOp::Request));
    EXPECT_EQ(request->first.dst_port, 2695u);
    EXPECT_EQ(request->first.dst_cid, kGuestCid);
    EXPECT_EQ(request->first.src_cid, kVsockHostCid);
    const std::uint32_t host_port = request->first.src_port;

    send_tx(VsockOp::Response, 2695, host_port);
    EXPECT_EQ(read_with_timeout(host, fmt::format("OK {}\n", host_port).size()), fmt::format("OK {}\n", host_port));

    ASSERT_EQ(::write(host, "ping", 4), 4);
    auto data = next_rx();
    ASSERT_TRUE(data);
    EXPECT_EQ(data->first.op, static_cast<std::uint16_t>(VsockOp::Rw));
    EXPECT_EQ(data->second, "ping");

    send_tx(VsockOp::Rw, 2695, host_port, "pong");
    EXPECT_EQ(read_with_timeout(host, 4), "pong");

    ::close(host);
    auto shutdown = next_rx();
    ASSERT_TRUE(shutdown);
    EXPECT_EQ(shutdown->first.op, static_cast<std::uint16_t>(VsockOp::Shutdown));
    EXPECT_EQ(shutdown->first.flags, 3u);
    send_tx(VsockOp::Rst, 2695, host_port);
    EXPECT_EQ(device->stream_count(), 0u);
}

TEST_F(VsockFixture, GuestInitiatedConnectionsGoToUdsUnderscorePort) {
    int listener = listen_unix(dir / "vsock.sock_5000");
    ASSERT_GE(listener, 0);
    send_tx(VsockOp::Request, 777, 5000);
    auto response = next_rx();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->first.op, static_cast<std::uint16_t>(VsockOp::Response));
    EXPECT_EQ(response->first.dst_port, 777u);
    int accepted = ::accept(listener, nullptr, nullptr);
    ASSERT_GE(accepted, 0);
    send_tx(VsockOp::Rw, 777, 5000, "hello host");
    EXPECT_EQ(read_with_timeout(accepted, 10), "hello host");
    ASSERT_EQ(::write(accepted, "hi guest", 8), 8);
    auto data = next_rx();
    ASSERT_TRUE(data);
    EXPECT_EQ(data->second, "hi guest");
    ::close(accepted);
    ::close(listener);
    auto shutdown = next_rx();
    ASSERT_TRUE(shutdown);
    EXPECT_EQ(shutdown->first.op, static_cast<std::uint16_t>(VsockOp::Shutdown)) << "the host end closed";
    send_tx(VsockOp::Rst, 777, 5000);

    send_tx(VsockOp::Request, 778, 5001);  // nobody listens on 5001
    auto rst = next_rx();
    ASSERT_TRUE(rst);
    EXPECT_EQ(rst->first.op, static_cast<std::uint16_t>(VsockOp::Rst));
}

TEST_F(VsockFixture, HostDataWaitsForGuestCredit) {
    int listener = listen_unix(dir / "vsock.sock_6000");
    ASSERT_GE(listener, 0);
    send_tx(VsockOp::Request, 900, 6000, {}, /*buf_alloc=*/8);  // the guest can take 8 bytes
    ASSERT_TRUE(next_rx());                                     // RESPONSE
    int accepted = ::accept(listener, nullptr, nullptr);
    ASSERT_GE(accepted, 0);
    ASSERT_EQ(::write(accepted, "0123456789abcdef", 16), 16);
    auto first = next_rx();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->second, "01234567") << "only the advertised credit";
    std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(rx->take_used().empty()) << "nothing more until the guest frees buffer space";
    send_tx(VsockOp::CreditUpdate, 900, 6000, {}, 8, /*fwd_cnt=*/8);
    auto second = next_rx();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->second, "89abcdef");
    ::close(accepted);
    ::close(listener);
}

TEST_F(VsockFixture, HostileHeadersAreDroppedOrReset) {
    send_tx(VsockOp::Rw, 1, 2, "data for no stream");
    auto rst = next_rx();
    ASSERT_TRUE(rst);
    EXPECT_EQ(rst->first.op, static_cast<std::uint16_t>(VsockOp::Rst));

    send_tx(VsockOp::Request, 1, 2, {}, 0, 0, /*src_cid=*/99);         // spoofed source cid
    send_tx(VsockOp::Request, 1, 2, {}, 0, 0, kGuestCid, /*type=*/2);  // SEQPACKET: not supported
    auto rst2 = next_rx();
    ASSERT_TRUE(rst2);
    EXPECT_EQ(rst2->first.op, static_cast<std::uint16_t>(VsockOp::Rst));
    EXPECT_GE(device->stats().bad_packets, 1u);

    // A header claiming more payload than the chain carries.
    VsockHeader h{};
    h.src_cid = kGuestCid;
    h.dst_cid = kVsockHostCid;
    h.len = 1u << 30;
    h.type = kVsockTypeStream;
    h.op = static_cast<std::uint16_t>(VsockOp::Rw);
    memory.write_obj(kTxBuffer, h);
    tx->add_chain({{kTxBuffer, sizeof(h), false}});
    device->queue_notify(1);
    EXPECT_GE(device->stats().bad_packets, 2u);

    // Overrunning our advertised credit resets the stream.
    int listener = listen_unix(dir / "vsock.sock_7000");
    send_tx(VsockOp::Request, 50, 7000);
    ASSERT_TRUE(next_rx());
    int accepted = ::accept(listener, nullptr, nullptr);
    // The host never reads: its socket buffer fills, then our 256 KiB, then the guest is over.
    std::string big(VsockDevice::kMaxPacketPayload, 'z');
    for (int i = 0; i < 48; ++i) send_tx(VsockOp::Rw, 50, 7000, big);
    bool saw_reset = false;
    for (int i = 0; i < 128 && !saw_reset; ++i) {
        auto p = next_rx();
        if (!p) break;
        saw_reset = p->first.op == static_cast<std::uint16_t>(VsockOp::Rst) && p->first.dst_port == 50;
    }
    EXPECT_TRUE(saw_reset);
    ::close(accepted);
    ::close(listener);

    // A malformed CONNECT line closes the host socket without a REQUEST.
    int host = connect_unix(uds);
    ASSERT_EQ(::write(host, "CONNECT banana\n", 15), 15);
    EXPECT_EQ(read_with_timeout(host, 1, 500ms), "");
    ::close(host);
}

// ---- timeouts ---------------------------------------------------------------------------------

/// Short timeouts so a test sees them fire; the tests wait for the outcome, never time it.
struct VsockTimeoutFixture : VsockFixture {
    VsockTimeoutFixture() { timeouts = {100ms, 100ms, 100ms}; }

    /// Waits (bounded) until the device holds `count` streams.
    bool streams_drop_to(std::size_t count) {
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (device->stream_count() == count) return true;
            std::this_thread::sleep_for(5ms);
        }
        return false;
    }
    /// True once `fd` reads end-of-file (the device hung up), within a bound.
    static bool sees_eof(int fd) {
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char c;
            const ssize_t n = ::read(fd, &c, 1);
            if (n == 0) return true;
            if (n < 0) return errno == ECONNRESET;
        }
        return false;
    }
};

TEST_F(VsockTimeoutFixture, GuestThatNeverAnswersARequestGetsRstAndTheHostEof) {
    int host = connect_unix(uds);
    ASSERT_GE(host, 0);
    ASSERT_EQ(::write(host, "CONNECT 2695\n", 13), 13);
    auto request = next_rx();
    ASSERT_TRUE(request);
    ASSERT_EQ(request->first.op, static_cast<std::uint16_t>(VsockOp::Request));
    // The guest stays silent.
    auto rst = next_rx(5000ms);
    ASSERT_TRUE(rst) << "no RST after the connect timeout";
    EXPECT_EQ(rst->first.op, static_cast<std::uint16_t>(VsockOp::Rst));
    EXPECT_EQ(rst->first.dst_port, 2695u);
    EXPECT_EQ(rst->first.src_port, request->first.src_port);
    EXPECT_TRUE(sees_eof(host)) << "the host program hears EOF instead of OK";
    EXPECT_TRUE(streams_drop_to(0));
    EXPECT_EQ(device->stats().timeouts, 1u);
    // A late RESPONSE finds no stream and is answered with RST.
    send_tx(VsockOp::Response, 2695, request->first.src_port);
    auto late = next_rx();
    ASSERT_TRUE(late);
    EXPECT_EQ(late->first.op, static_cast<std::uint16_t>(VsockOp::Rst));
    ::close(host);
}

TEST_F(VsockTimeoutFixture, GuestThatNeverSendsRstAfterShutdownLosesTheStream) {
    int listener = listen_unix(dir / "vsock.sock_5000");
    ASSERT_GE(listener, 0);
    send_tx(VsockOp::Request, 777, 5000);
    auto response = next_rx();
    ASSERT_TRUE(response);
    ASSERT_EQ(response->first.op, static_cast<std::uint16_t>(VsockOp::Response));
    int accepted = ::accept(listener, nullptr, nullptr);
    ASSERT_GE(accepted, 0);
    EXPECT_EQ(device->stream_count(), 1u);
    ::close(accepted);  // the host end goes away
    auto shutdown = next_rx();
    ASSERT_TRUE(shutdown);
    EXPECT_EQ(shutdown->first.op, static_cast<std::uint16_t>(VsockOp::Shutdown));
    // The guest never sends RST.
    auto rst = next_rx(5000ms);
    ASSERT_TRUE(rst) << "no RST after the shutdown timeout";
    EXPECT_EQ(rst->first.op, static_cast<std::uint16_t>(VsockOp::Rst));
    EXPECT_EQ(rst->first.dst_port, 777u);
    EXPECT_TRUE(streams_drop_to(0));
    EXPECT_EQ(device->stats().timeouts, 1u);
    ::close(listener);
}

TEST_F(VsockTimeoutFixture, HostThatNeverSendsItsConnectLineIsHungUpOn) {
    int host = connect_unix(uds);
    ASSERT_GE(host, 0);
    ASSERT_EQ(::write(host, "CONN", 4), 4);  // and nothing more
    EXPECT_TRUE(sees_eof(host));
    EXPECT_TRUE(streams_drop_to(0));
    EXPECT_FALSE(next_rx(200ms)) << "the guest never heard of it";
    ::close(host);
}

TEST_F(VsockTimeoutFixture, EstablishedStreamsHaveNoDeadline) {
    int host = connect_unix(uds);
    ASSERT_EQ(::write(host, "CONNECT 2695\n", 13), 13);
    auto request = next_rx();
    ASSERT_TRUE(request);
    send_tx(VsockOp::Response, 2695, request->first.src_port);
    const std::uint32_t host_port = request->first.src_port;
    const std::string ok = fmt::format("OK {}\n", host_port);
    EXPECT_EQ(read_with_timeout(host, ok.size()), ok);
    std::this_thread::sleep_for(400ms);  // several timeouts' worth
    EXPECT_EQ(device->stream_count(), 1u);
    ASSERT_EQ(::write(host, "still here", 10), 10);
    auto data = next_rx();
    ASSERT_TRUE(data);
    EXPECT_EQ(data->second, "still here");
    EXPECT_EQ(device->stats().timeouts, 0u);
    ::close(host);
}

}  // namespace
}  // namespace boxlite::devices::virtio
