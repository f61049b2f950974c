// virtio-rng and virtio-console over in-process guest memory.
#include "virtqueue_driver.hpp"

#include <gtest/gtest.h>

#include "devices/virtio/console/device.hpp"
#include "devices/virtio/rng/device.hpp"

namespace boxlite::devices::virtio {
namespace {

using testing::CountingInterrupt;
using testing::VirtQueueDriver;

constexpr std::uint64_t kMemory = 1 << 20;

TEST(Rng, FillsWritableBuffersWithRandomBytes) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    RngDevice rng;
    VirtQueue queues[1] = {VirtQueue(256)};
    VirtQueueDriver driver(memory, 0x10000, 16);
    driver.configure(queues[0]);
    CountingInterrupt interrupt;
    ASSERT_TRUE(rng.activate({&memory, queues, &interrupt, kFeatureVersion1}));
    driver.add_chain({{0x40000, 64, true}, {0x41000, 64, true}});
    rng.queue_notify(0);
    auto used = driver.take_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 128u);
    std::array<std::uint8_t, 64> first{}, second{};
    memory.read_bytes(0x40000, std::as_writable_bytes(std::span(first)));
    memory.read_bytes(0x41000, std::as_writable_bytes(std::span(second)));
    EXPECT_NE(first, second) << "two 64-byte draws are not equal";
    EXPECT_NE(first, decltype(first){}) << "not all zero";
    EXPECT_EQ(interrupt.used_count(0), 1);
    EXPECT_EQ(rng.bytes_served(), 128u);
}

TEST(Rng, CapsOneRequestAndIgnoresReadableBuffers) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, 4ULL << 20));
    RngDevice rng;
    VirtQueue queues[1] = {VirtQueue(256)};
    VirtQueueDriver driver(memory, 0x10000, 16);
    driver.configure(queues[0]);
    ASSERT_TRUE(rng.activate({&memory, queues, nullptr, kFeatureVersion1}));
    driver.add_chain({{0x100000, 0x200000, true}});  // 2 MiB asked for
    driver.add_chain({{0x40000, 16, false}});        // nothing to fill
    rng.queue_notify(0);
    auto used = driver.take_used();
    ASSERT_EQ(used.size(), 2u);
    EXPECT_EQ(used[0].length, RngDevice::kMaxBytesPerRequest);
    EXPECT_EQ(used[1].length, 0u);
}

TEST(Console, TransmitGoesToTheSinkAndInputWaitsForBuffers) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    std::string output;
    ConsoleDevice console([&](std::span<const std::byte> bytes) {
        output.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    });
    VirtQueue queues[2] = {VirtQueue(256), VirtQueue(256)};
    VirtQueueDriver rx(memory, 0x10000, 16), tx(memory, 0x20000, 16);
    rx.configure(queues[0]);
    tx.configure(queues[1]);
    CountingInterrupt interrupt;
    console.enqueue_input(testing::bytes_of("typed early"));
    ASSERT_TRUE(console.activate({&memory, queues, &interrupt, kFeatureVersion1}));
    EXPECT_EQ(console.pending_input(), 11u) << "no receive buffers yet";

    memory.write_bytes(0x40000, testing::bytes_of("login: "));
    tx.add_chain({{0x40000, 7, false}});
    console.queue_notify(1);
    EXPECT_EQ(output, "login: ");
    EXPECT_EQ(tx.take_used().size(), 1u);

    rx.add_chain({{0x50000, 4, true}});
    rx.add_chain({{0x51000, 64, true}});
    console.queue_notify(0);
    auto used = rx.take_used();
    ASSERT_EQ(used.size(), 2u);
    EXPECT_EQ(used[0].length, 4u);
    EXPECT_EQ(used[1].length, 7u);
    std::array<char, 7> tail{};
    memory.read_bytes(0x51000, std::as_writable_bytes(std::span(tail)));
    EXPECT_EQ(std::string(tail.data(), 7), "d early");
    EXPECT_EQ(console.pending_input(), 0u);
    EXPECT_GE(interrupt.used_count(0), 1);

    std::uint16_t size[2] = {};
    console.read_config(0, std::as_writable_bytes(std::span(size)));
    EXPECT_EQ(size[0], 80);
    EXPECT_EQ(size[1], 25);
}

TEST(Console, PendingInputIsBounded) {
    ConsoleDevice console(nullptr);
    std::vector<std::byte> lots(ConsoleDevice::kMaxPendingInput * 2, std::byte{'x'});
    console.enqueue_input(lots);
    EXPECT_EQ(console.pending_input(), ConsoleDevice::kMaxPendingInput);
}

}  // namespace
}  // namespace boxlite::devices::virtio
