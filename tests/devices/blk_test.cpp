// virtio-blk over in-process guest memory, through the virtio-mmio transport's registers.
#include "memory_backend.hpp"
#include "virtqueue_driver.hpp"

#include <gtest/gtest.h>

#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/mmio/transport.hpp"

namespace boxlite::devices::virtio {
namespace {

using devices::testing::MemoryBackend;
using testing::CountingInterrupt;
using testing::VirtQueueDriver;

constexpr std::uint64_t kMemory = 1 << 20;
constexpr std::uint64_t kRings = 0x10000;
constexpr std::uint64_t kHeader = 0x40000;
constexpr std::uint64_t kData = 0x50000;
constexpr std::uint64_t kStatus = 0x4f000;

struct BlkHeader {
    std::uint32_t type;
    std::uint32_t reserved;
    std::uint64_t sector;
};

struct BlkFixture : ::testing::Test {
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    std::shared_ptr<MemoryBackend> backend = std::make_shared<MemoryBackend>(1 << 20);
    std::shared_ptr<BlockDevice> device = std::make_shared<BlockDevice>(backend, "boxlite-disk-0");
    VirtQueue queues[1] = {VirtQueue(256)};
    VirtQueueDriver driver{memory, kRings, 64};
    CountingInterrupt interrupt;

    void SetUp() override {
        driver.configure(queues[0], kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc);
        ASSERT_TRUE(device->activate({&memory, queues, &interrupt, device->device_features()}));
    }

    std::uint8_t submit(std::uint32_t type, std::uint64_t sector, std::uint32_t data_length, bool data_writable,
                        std::uint32_t* used_length = nullptr) {
        memory.write_obj(kHeader, BlkHeader{type, 0, sector});
        memory.write_obj<std::uint8_t>(kStatus, 0xee);
        std::vector<testing::Segment> segments{{kHeader, 16, false}};
        if (data_length) segments.push_back({kData, data_length, data_writable});
        segments.push_back({kStatus, 1, true});
        driver.add_chain(segments);
        device->queue_notify(0);
        auto used = driver.take_used();
        EXPECT_EQ(used.size(), 1u);
        if (used_length && !used.empty()) *used_length = used[0].length;
        return memory.read_obj<std::uint8_t>(kStatus).value_or(0xff);
    }
};

TEST_F(BlkFixture, WriteThenReadRoundTrips) {
    std::vector<std::byte> pattern(4096);
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 7 + 3);
    memory.write_bytes(kData, pattern);
    EXPECT_EQ(submit(1, 8, 4096, false), 0) << "OUT";
    EXPECT_EQ(std::memcmp(backend->data().data() + 8 * 512, pattern.data(), 4096), 0);
    std::vector<std::byte> zero(4096);
    memory.write_bytes(kData, zero);
    std::uint32_t used_length = 0;
    EXPECT_EQ(submit(0, 8, 4096, true, &used_length), 0) << "IN";
    EXPECT_EQ(used_length, 4097u) << "data plus status byte";
    std::vector<std::byte> back(4096);
    memory.read_bytes(kData, back);
    EXPECT_EQ(back, pattern);
    EXPECT_GE(interrupt.used_count(0), 1);
}

TEST_F(BlkFixture, ConfigReportsCapacityAndFeatures) {
    std::uint64_t capacity = 0;
    device->read_config(0, std::as_writable_bytes(std::span(&capacity, 1)));
    EXPECT_EQ(capacity, (1u << 20) / 512);
    EXPECT_TRUE(device->device_features() & kFeatureVersion1);
    EXPECT_TRUE(device->device_features() & (1ULL << 9)) << "FLUSH";
    std::array<std::byte, 4> past_end{};
    past_end.fill(std::byte{1});
    device->read_config(4096, past_end);
    EXPECT_EQ(past_end[0], std::byte{0});
}

TEST_F(BlkFixture, OutOfRangeAndMisalignedRequestsFail) {
    EXPECT_EQ(submit(0, 2048, 512, true), 1) << "one sector past the end";
    EXPECT_EQ(submit(0, ~0ULL - 1, 1024, true), 1) << "sector + count overflows";
    EXPECT_EQ(submit(0, 0, 100, true), 1) << "not a multiple of 512";
    EXPECT_EQ(submit(99, 0, 0, false), 2) << "unknown type: UNSUPP";
}

TEST_F(BlkFixture, FlushGetIdDiscardAndWriteZeroes) {
    EXPECT_EQ(submit(4, 0, 0, false), 0);
    EXPECT_EQ(backend->flushes, 1);
    std::uint32_t used = 0;
    EXPECT_EQ(submit(8, 0, 20, true, &used), 0);
    EXPECT_EQ(used, 21u);
    std::array<char, 20> id{};
    memory.read_bytes(kData, std::as_writable_bytes(std::span(id)));
    EXPECT_EQ(std::string(id.data(), 14), "boxlite-disk-0");

    std::memset(backend->data().data(), 0xab, 4096);
    struct Segment {
        std::uint64_t sector;
        std::uint32_t sectors, flags;
    } seg{2, 2, 0};
    memory.write_obj(kData, seg);
    EXPECT_EQ(submit(11, 0, 16, false), 0) << "discard";
    EXPECT_EQ(backend->data()[2 * 512], 0);
    EXPECT_EQ(backend->data()[1 * 512], 0xab);
    seg = {0, 1, 0};
    memory.write_obj(kData, seg);
    EXPECT_EQ(submit(13, 0, 16, false), 0) << "write zeroes";
    EXPECT_EQ(backend->data()[0], 0);
    seg = {2047, 2, 0};
    memory.write_obj(kData, seg);
    EXPECT_EQ(submit(13, 0, 16, false), 1) << "segment past the end";
    seg = {0, 1, 2};
    memory.write_obj(kData, seg);
    EXPECT_EQ(submit(11, 0, 16, false), 2) << "unknown discard flags";
}

TEST(Blk, ReadOnlyDiskRefusesWrites) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    auto backend = std::make_shared<MemoryBackend>(1 << 20);
    BlockDevice device(backend, "ro", /*read_only=*/true);
    EXPECT_TRUE(device.device_features() & (1ULL << 5));
    VirtQueue queues[1] = {VirtQueue(256)};
    VirtQueueDriver driver(memory, kRings, 16);
    driver.configure(queues[0]);
    CountingInterrupt interrupt;
    ASSERT_TRUE(device.activate({&memory, queues, &interrupt, kFeatureVersion1}));
    memory.write_obj(kHeader, BlkHeader{1, 0, 0});
    memory.write_obj<std::uint8_t>(kStatus, 0xee);
    driver.add_chain({{kHeader, 16, false}, {kData, 512, false}, {kStatus, 1, true}});
    device.queue_notify(0);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(kStatus).value_or(0), 1);
    EXPECT_EQ(device.stats().writes, 0u);
}

TEST_F(BlkFixture, HostileChainsDoNotReachTheBackend) {
    // No writable byte at all: nothing to answer in; completed with length 0.
    memory.write_obj(kHeader, BlkHeader{0, 0, 0});
    driver.add_chain({{kHeader, 16, false}});
    device->queue_notify(0);
    auto used = driver.take_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 0u);
    // A header shorter than 16 bytes.
    driver.add_chain({{kHeader, 4, false}, {kStatus, 1, true}});
    device->queue_notify(0);
    ASSERT_EQ(driver.take_used().size(), 1u);
    EXPECT_EQ(memory.read_obj<std::uint8_t>(kStatus).value_or(0), 1);
    // A looping chain.
    driver.write_descriptor(60, {kHeader, 16, kDescNext, 61});
    driver.write_descriptor(61, {kStatus, 1, kDescNext | kDescWrite, 60});
    driver.publish(60);
    device->queue_notify(0);
    EXPECT_EQ(driver.take_used().size(), 1u);
    EXPECT_EQ(device->stats().bad_chains, 1u);
    EXPECT_EQ(device->stats().reads, 0u);
}

// ---- through the MMIO transport --------------------------------------------------------------

std::uint32_t reg_read(MmioTransport& t, std::uint64_t offset) {
    std::uint32_t value = 0;
    t.read(offset, std::as_writable_bytes(std::span(&value, 1)));
    return value;
}
void reg_write(MmioTransport& t, std::uint64_t offset, std::uint32_t value) {
    t.write(offset, std::as_bytes(std::span(&value, 1)));
}

TEST(MmioTransport, HandshakeActivatesTheDeviceAndNotifyRunsIt) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    auto backend = std::make_shared<MemoryBackend>(1 << 20);
    auto device = std::make_shared<BlockDevice>(backend, "mmio");
    int interrupts = 0;
    MmioTransport t(device, memory, [&] { ++interrupts; });
    using T = MmioTransport;
    EXPECT_EQ(reg_read(t, T::kMagicValue), 0x74726976u);
    EXPECT_EQ(reg_read(t, T::kVersionReg), 2u);
    EXPECT_EQ(reg_read(t, T::kDeviceId), 2u);
    reg_write(t, T::kStatus, T::kStatusAcknowledge);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver);
    reg_write(t, T::kDeviceFeaturesSel, 1);
    const std::uint32_t high = reg_read(t, T::kDeviceFeatures);
    EXPECT_TRUE(high & 1u) << "VERSION_1";
    reg_write(t, T::kDriverFeaturesSel, 1);
    reg_write(t, T::kDriverFeatures, 1);  // VERSION_1 only
    reg_write(t, T::kDriverFeaturesSel, 0);
    reg_write(t, T::kDriverFeatures, 0);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk);
    EXPECT_TRUE(reg_read(t, T::kStatus) & T::kStatusFeaturesOk);
    VirtQueueDriver driver(memory, kRings, 16);
    reg_write(t, T::kQueueSel, 0);
    EXPECT_EQ(reg_read(t, T::kQueueNumMax), 256u);
    reg_write(t, T::kQueueNum, 16);
    reg_write(t, T::kQueueDescLow, static_cast<std::uint32_t>(driver.desc_table()));
    reg_write(t, T::kQueueDriverLow, static_cast<std::uint32_t>(driver.avail_ring()));
    reg_write(t, T::kQueueDeviceLow, static_cast<std::uint32_t>(driver.used_ring()));
    reg_write(t, T::kQueueReady, 1);
    EXPECT_EQ(reg_read(t, T::kQueueReady), 1u);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk | T::kStatusDriverOk);
    ASSERT_TRUE(t.activated()) << t.last_error();
    reg_write(t, T::kQueueSel, 1);
    EXPECT_EQ(reg_read(t, T::kQueueNumMax), 0u) << "no second queue";

    memory.write_obj(kHeader, BlkHeader{4, 0, 0});  // flush
    driver.add_chain({{kHeader, 16, false}, {kStatus, 1, true}});
    reg_write(t, T::kQueueNotify, 0);
    EXPECT_EQ(driver.take_used().size(), 1u);
    EXPECT_EQ(interrupts, 1);
    EXPECT_EQ(reg_read(t, T::kInterruptStatus), 1u);
    reg_write(t, T::kInterruptAck, 1);
    EXPECT_EQ(reg_read(t, T::kInterruptStatus), 0u);
    reg_write(t, T::kStatus, 0);
    EXPECT_FALSE(t.activated());
    EXPECT_EQ(reg_read(t, T::kStatus), 0u);
}

TEST(MmioTransport, RefusesBadFeaturesAndBadQueues) {
    auto memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    auto device = std::make_shared<BlockDevice>(std::make_shared<MemoryBackend>(1 << 20), "x");
    MmioTransport t(device, memory, nullptr);
    using T = MmioTransport;
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver);
    reg_write(t, T::kDriverFeaturesSel, 0);
    reg_write(t, T::kDriverFeatures, 1u << 31);  // not offered
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk);
    EXPECT_FALSE(reg_read(t, T::kStatus) & T::kStatusFeaturesOk) << "legacy-only / unknown features refused";
    reg_write(t, T::kStatus, 0);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver);
    reg_write(t, T::kDriverFeaturesSel, 1);
    reg_write(t, T::kDriverFeatures, 1);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk);
    reg_write(t, T::kQueueNum, 16);
    reg_write(t, T::kQueueDescLow, 0xfffff000);  // outside RAM
    reg_write(t, T::kQueueReady, 1);
    EXPECT_EQ(reg_read(t, T::kQueueReady), 0u);
    EXPECT_TRUE(reg_read(t, T::kStatus) & T::kStatusNeedsReset) << t.last_error();
    // Byte-sized register access is ignored / all-ones.
    std::uint8_t byte = 0;
    t.read(T::kMagicValue, std::as_writable_bytes(std::span(&byte, 1)));
    EXPECT_EQ(byte, 0xff);
    // DRIVER_OK without a ready queue: activation fails, device is not run.
    reg_write(t, T::kStatus, 0);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver);
    reg_write(t, T::kDriverFeaturesSel, 1);
    reg_write(t, T::kDriverFeatures, 1);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk);
    reg_write(t, T::kStatus, T::kStatusAcknowledge | T::kStatusDriver | T::kStatusFeaturesOk | T::kStatusDriverOk);
    EXPECT_FALSE(t.activated());
    EXPECT_TRUE(reg_read(t, T::kStatus) & T::kStatusNeedsReset);
}

}  // namespace
}  // namespace boxlite::devices::virtio
