// virtio-net over in-process guest memory; the host end is the real socket pair the frame pump
// reads and writes (lib/net/pump.hpp).
#include "virtqueue_driver.hpp"

#include <gtest/gtest.h>

#include "devices/virtio/net/device.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace boxlite::devices::virtio {
namespace {

using testing::VirtQueueDriver;
using namespace std::chrono_literals;

constexpr std::array<std::uint8_t, 6> kMac = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
constexpr std::uint64_t kRxBuffers = 0x80000;
constexpr std::uint64_t kTxBuffers = 0x100000;

class AtomicInterrupt final : public Interrupt {
public:
    void signal_used_queue(std::uint16_t queue) override { ++(queue == 0 ? rx : tx); }
    void signal_config_change() override {}
    std::atomic<int> rx{0}, tx{0};
};

/// `size` bytes addressed to the box's MAC (as much of it as fits: a runt frame gets a part).
std::vector<std::byte> ethernet_frame(std::size_t size, std::uint8_t fill) {
    std::vector<std::byte> frame(size, std::byte{fill});
    for (std::size_t i = 0; i < std::min<std::size_t>(6, size); ++i) frame[i] = std::byte{kMac[i]};
    return frame;
}

struct NetFixture : ::testing::Test {
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, 4ULL << 20));
    std::vector<VirtQueue> queues{VirtQueue(256), VirtQueue(256)};
    VirtQueueDriver rx{memory, 0x10000, 256};
    VirtQueueDriver tx{memory, 0x30000, 256};
    AtomicInterrupt interrupt;
    std::shared_ptr<NetDevice> device;
    base::OwnedFd host;

    void SetUp() override {
        auto made = NetDevice::create(kMac);
        ASSERT_TRUE(made) << made.error().to_string();
        device = *made;
        host = device->take_host_end();
        ASSERT_TRUE(host.valid());
        const std::uint64_t features = device->device_features();
        rx.configure(queues[0], features);
        tx.configure(queues[1], features);
        ActivateContext context;
        context.memory = &memory;
        context.queues = queues;
        context.interrupt = &interrupt;
        context.features = features;
        ASSERT_TRUE(device->activate(context));
    }
    void TearDown() override {
        if (device) device->reset();
    }

    // Posts rx buffer `i` of `size` bytes (writable) and tells the device.
    void post_rx(std::uint16_t i, std::uint32_t size) {
        rx.add_chain({{kRxBuffers + 0x10000ULL * i, size, true}});
        device->queue_notify(0);
    }
    // Sends one tx chain: the header and the frame in two descriptors.
    void send_tx(std::uint16_t i, const std::vector<std::byte>& frame, std::uint32_t header_bytes = 12) {
        const std::uint64_t at = kTxBuffers + 0x20000ULL * i;
        std::vector<std::byte> header(header_bytes, std::byte{0});
        memory.write_bytes(at, header);
        memory.write_bytes(at + 0x1000, frame);
        std::vector<testing::Segment> segments;
        if (header_bytes > 0) segments.push_back({at, header_bytes, false});
        if (!frame.empty()) segments.push_back({at + 0x1000, static_cast<std::uint32_t>(frame.size()), false});
        tx.add_chain(segments);
        device->queue_notify(1);
    }
    // Completions of `driver`, waiting (bounded) until at least `want` arrived.
    std::vector<testing::UsedElement> wait_used(VirtQueueDriver& driver, std::size_t want) {
        std::vector<testing::UsedElement> out;
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
            auto more = driver.take_used();
            out.insert(out.end(), more.begin(), more.end());
            if (out.size() < want) std::this_thread::sleep_for(1ms);
        }
        return out;
    }
    std::optional<std::vector<std::byte>> host_read() {
        pollfd p{host.get(), POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) return std::nullopt;
        std::vector<std::byte> frame(NetDevice::kMaxFrame + 1);
        const ssize_t n = ::recv(host.get(), frame.data(), frame.size(), 0);
        if (n < 0) return std::nullopt;
        frame.resize(static_cast<std::size_t>(n));
        return frame;
    }
};

TEST_F(NetFixture, OffersMacAndStatusAndStatesTheMacInItsConfig) {
    const auto features = device->device_features();
    EXPECT_NE(features & kNetFeatureMac, 0u);
    EXPECT_NE(features & kNetFeatureStatus, 0u);
    EXPECT_NE(features & kFeatureVersion1, 0u);
    EXPECT_EQ(device->device_type(), DeviceType::Net);
    EXPECT_EQ(device->queue_max_sizes().size(), 2u);
    std::array<std::byte, 12> config{};
    device->read_config(0, config);
    for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(config[i], std::byte{kMac[i]});
    EXPECT_EQ(config[6], std::byte{1});  // link up
    EXPECT_EQ(config[8], std::byte{1});  // one queue pair
    // Reads past the end are zeros, never out of bounds.
    std::array<std::byte, 8> past{};
    past.fill(std::byte{0xff});
    device->read_config(1000, past);
    for (auto b : past) EXPECT_EQ(b, std::byte{0});
}

TEST_F(NetFixture, TxFrameReachesTheHostEndWithoutItsHeader) {
    const auto frame = ethernet_frame(98, 0xab);
    send_tx(0, frame);
    auto got = host_read();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, frame);
    auto used = wait_used(tx, 1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 0u);
    EXPECT_EQ(device->stats().frames_from_guest, 1u);
    EXPECT_GE(interrupt.tx.load(), 1);
}

TEST_F(NetFixture, RxFrameLandsInAPostedBufferBehindAHeaderOfOneBuffer) {
    post_rx(0, 2048);
    const auto frame = ethernet_frame(600, 0x5c);
    ASSERT_EQ(::send(host.get(), frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    auto used = wait_used(rx, 1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 12u + frame.size());
    NetHeader header = *memory.read_obj<NetHeader>(kRxBuffers);
    EXPECT_EQ(header.num_buffers, 1);
    EXPECT_EQ(header.flags, 0);
    std::vector<std::byte> data(frame.size());
    ASSERT_TRUE(memory.read_bytes(kRxBuffers + 12, data));
    EXPECT_EQ(data, frame);
}

TEST_F(NetFixture, FramesWaitForRxBuffersAndNoneIsLost) {
    for (int i = 0; i < 3; ++i) {
        const auto frame = ethernet_frame(100 + i, static_cast<std::uint8_t>(i));
        ASSERT_EQ(::send(host.get(), frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    }
    std::this_thread::sleep_for(20ms);  // the device has no buffer: nothing may complete
    EXPECT_TRUE(rx.take_used().empty());
    for (std::uint16_t i = 0; i < 3; ++i) post_rx(i, 2048);
    auto used = wait_used(rx, 3);
    ASSERT_EQ(used.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(used[i].length, 12u + 100u + i);
}

TEST_F(NetFixture, AFrameTooBigForTheChainIsDroppedAndTheChainKeptForTheNext) {
    post_rx(0, 12 + 200);
    const auto big = ethernet_frame(1500, 1);
    const auto small = ethernet_frame(150, 2);
    ASSERT_EQ(::send(host.get(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
    ASSERT_EQ(::send(host.get(), small.data(), small.size(), 0), static_cast<ssize_t>(small.size()));
    auto used = wait_used(rx, 1);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 12u + small.size());
    EXPECT_EQ(device->stats().rx_dropped, 1u);
}

TEST_F(NetFixture, HostileTxChainsAreCompletedEmptyAndNeverForwarded) {
    // Shorter than the header plus an Ethernet header.
    send_tx(0, ethernet_frame(4, 1));
    // Only writable buffers (nothing to read).
    tx.add_chain({{kTxBuffers + 0x40000, 64, true}});
    device->queue_notify(1);
    // Longer than the largest frame.
    tx.add_chain({{kTxBuffers + 0x60000, 12, false}, {0x200000, NetDevice::kMaxFrame + 1, false}});
    device->queue_notify(1);
    auto used = wait_used(tx, 3);
    ASSERT_EQ(used.size(), 3u);
    for (const auto& u : used) EXPECT_EQ(u.length, 0u);
    EXPECT_EQ(device->stats().bad_chains, 3u);
    EXPECT_EQ(device->stats().frames_from_guest, 0u);
    pollfd p{host.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0);  // nothing reached the host
    // A good frame after them still goes through.
    const auto frame = ethernet_frame(60, 9);
    send_tx(1, frame);
    auto got = host_read();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, frame);
}

TEST_F(NetFixture, AfterResetNothingIsDeliveredAndTheHostEndSeesTheDeviceGo) {
    device->reset();
    post_rx(0, 2048);  // ignored: not active
    const auto frame = ethernet_frame(60, 3);
    ASSERT_EQ(::send(host.get(), frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(rx.take_used().empty());
    device.reset();  // the device's end closes with it
    pollfd p{host.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    EXPECT_NE(p.revents & POLLHUP, 0);  // the pump's read then ends it (EOF, or a reset: a frame was unread)
}

}  // namespace
}  // namespace boxlite::devices::virtio
