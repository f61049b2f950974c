// Split virtqueue parsing over real guest memory, with well-formed and hostile chains.
#include "virtqueue_driver.hpp"

#include <gtest/gtest.h>

namespace boxlite::devices::virtio {
namespace {

using testing::Segment;
using testing::VirtQueueDriver;

constexpr std::uint64_t kMemory = 1 << 20;
constexpr std::uint64_t kRings = 0x10000;
constexpr std::uint64_t kData = 0x40000;

struct QueueFixture : ::testing::Test {
    vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, kMemory));
    VirtQueue queue{256};
    VirtQueueDriver driver{memory, kRings, 16};
    void SetUp() override { driver.configure(queue, kFeatureVersion1 | kFeatureRingIndirectDesc); }
};

TEST_F(QueueFixture, PopsAWellFormedChainReadableThenWritable) {
    ASSERT_TRUE(queue.validate(memory));
    const char text[] = "hello";
    memory.write_bytes(kData, std::as_bytes(std::span(text, 5)));
    auto head = driver.add_chain({{kData, 5, false}, {kData + 0x100, 64, true}});
    auto popped = queue.pop(memory);
    ASSERT_TRUE(popped);
    ASSERT_TRUE(popped->has_value());
    auto& chain = **popped;
    EXPECT_EQ(chain.head, head);
    EXPECT_EQ(chain.readable_bytes(), 5u);
    EXPECT_EQ(chain.writable_bytes(), 64u);
    ChainReader reader(chain);
    std::array<std::byte, 8> out{};
    EXPECT_EQ(reader.read(out), 5u);
    EXPECT_EQ(std::memcmp(out.data(), "hello", 5), 0);
    ChainWriter writer(chain);
    EXPECT_EQ(writer.write(std::as_bytes(std::span("abc", 3))), 3u);
    queue.add_used(memory, chain.head, 3);
    auto used = driver.take_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].id, head);
    EXPECT_EQ(used[0].length, 3u);
    auto again = queue.pop(memory);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->has_value()) << "ring is empty now";
}

TEST_F(QueueFixture, RejectsInvalidConfiguration) {
    VirtQueue bad(256);
    driver.configure(bad);
    bad.size = 12;
    EXPECT_FALSE(bad.validate(memory)) << "not a power of two";
    bad.size = 512;
    EXPECT_FALSE(bad.validate(memory)) << "above the maximum";
    bad.size = 16;
    bad.desc_table = kMemory - 16;
    EXPECT_FALSE(bad.validate(memory)) << "table runs off the end of RAM";
    bad.desc_table = kRings + 8;
    EXPECT_FALSE(bad.validate(memory)) << "misaligned";
}

TEST_F(QueueFixture, DescriptorLoopIsRejectedAndCompleted) {
    // 0 -> 1 -> 0 -> ...
    driver.write_descriptor(0, {kData, 16, kDescNext, 1});
    driver.write_descriptor(1, {kData, 16, kDescNext, 0});
    driver.publish(0);
    auto popped = queue.pop(memory);
    ASSERT_FALSE(popped);
    EXPECT_NE(popped.error().message().find("loop"), std::string::npos) << popped.error().message();
    auto used = driver.take_used();
    ASSERT_EQ(used.size(), 1u) << "a bad chain is handed back, length 0";
    EXPECT_EQ(used[0].length, 0u);
    EXPECT_FALSE(queue.broken());
}

TEST_F(QueueFixture, RejectsOutOfRangeIndexAddressAndOrder) {
    driver.write_descriptor(0, {kData, 16, kDescNext, 99});  // next beyond the table
    driver.publish(0);
    EXPECT_FALSE(queue.pop(memory));
    driver.write_descriptor(2, {kMemory - 8, 16, 0, 0});  // buffer runs off RAM
    driver.publish(2);
    EXPECT_FALSE(queue.pop(memory));
    driver.write_descriptor(3, {~0ULL - 4, 16, 0, 0});  // wraps the address space
    driver.publish(3);
    EXPECT_FALSE(queue.pop(memory));
    driver.write_descriptor(4, {kData, 16, kDescWrite | kDescNext, 5});
    driver.write_descriptor(5, {kData, 16, 0, 0});  // readable after writable
    driver.publish(4);
    EXPECT_FALSE(queue.pop(memory));
    driver.publish(200);  // head beyond the table
    EXPECT_FALSE(queue.pop(memory));
    EXPECT_EQ(driver.take_used().size(), 5u);
    EXPECT_FALSE(queue.broken());
}

TEST_F(QueueFixture, HugeLengthsAreBoundedNotAllocated) {
    // Sixteen descriptors of 2^32-1 bytes would be 64 GiB; every one is outside RAM anyway, and
    // the total is capped before translation.
    for (std::uint16_t i = 0; i < 16; ++i)
        driver.write_descriptor(i, {0, 0xffffffff, static_cast<std::uint16_t>(i < 15 ? kDescNext : 0),
                                    static_cast<std::uint16_t>(i + 1)});
    driver.publish(0);
    auto popped = queue.pop(memory);
    ASSERT_FALSE(popped);
}

TEST_F(QueueFixture, OverlappingBuffersAreAllowedButSafe) {
    // Readable and writable buffers over the same bytes: legal for the guest to do, and the
    // device sees consistent copies because readers copy.
    auto head = driver.add_chain({{kData, 64, false}, {kData, 64, true}});
    auto popped = queue.pop(memory);
    ASSERT_TRUE(popped && popped->has_value());
    EXPECT_EQ((*popped)->head, head);
    ChainWriter writer(**popped);
    std::array<std::byte, 64> junk{};
    junk.fill(std::byte{0x5a});
    EXPECT_EQ(writer.write(junk), 64u);
}

TEST_F(QueueFixture, AvailIndexJumpBreaksTheQueue) {
    driver.set_avail_idx(1000);  // more than `size` new entries: impossible for a sane driver
    auto popped = queue.pop(memory);
    ASSERT_FALSE(popped);
    EXPECT_TRUE(queue.broken());
    auto again = queue.pop(memory);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->has_value()) << "a broken queue yields nothing until reset";
}

TEST_F(QueueFixture, IndirectTablesAreFollowedOnceAndChecked) {
    constexpr std::uint64_t kTable = 0x30000;
    memory.write_obj<Descriptor>(kTable, {kData, 8, kDescNext, 1});
    memory.write_obj<Descriptor>(kTable + 16, {kData + 0x100, 32, kDescWrite, 0});
    driver.write_descriptor(0, {kTable, 32, kDescIndirect, 0});
    driver.publish(0);
    auto popped = queue.pop(memory);
    ASSERT_TRUE(popped) << popped.error().message();
    ASSERT_TRUE(popped->has_value());
    EXPECT_EQ((*popped)->readable_bytes(), 8u);
    EXPECT_EQ((*popped)->writable_bytes(), 32u);

    // Nested indirect.
    memory.write_obj<Descriptor>(kTable, {kTable, 32, kDescIndirect, 0});
    driver.write_descriptor(1, {kTable, 32, kDescIndirect, 0});
    driver.publish(1);
    EXPECT_FALSE(queue.pop(memory));
    // Length not a multiple of 16.
    driver.write_descriptor(2, {kTable, 20, kDescIndirect, 0});
    driver.publish(2);
    EXPECT_FALSE(queue.pop(memory));
    // Loop inside the indirect table.
    memory.write_obj<Descriptor>(kTable, {kData, 8, kDescNext, 1});
    memory.write_obj<Descriptor>(kTable + 16, {kData, 8, kDescNext, 0});
    driver.write_descriptor(3, {kTable, 32, kDescIndirect, 0});
    driver.publish(3);
    EXPECT_FALSE(queue.pop(memory));
}

TEST_F(QueueFixture, IndirectWithoutTheFeatureIsRejected) {
    VirtQueue plain(256);
    driver.configure(plain, kFeatureVersion1);
    driver.write_descriptor(0, {0x30000, 32, kDescIndirect, 0});
    driver.publish(0);
    EXPECT_FALSE(plain.pop(memory));
}

TEST_F(QueueFixture, EventIdxSuppressesAndRequestsNotifications) {
    VirtQueue q(256);
    driver.configure(q, kFeatureVersion1 | kFeatureRingEventIdx);
    driver.set_used_event(0);  // interrupt me after the first completion
    for (int i = 0; i < 3; ++i) driver.add_chain({{kData, 16, true}});
    for (int i = 0; i < 3; ++i) {
        auto popped = q.pop(memory);
        ASSERT_TRUE(popped && popped->has_value());
        q.add_used(memory, (*popped)->head, 0);
    }
    EXPECT_TRUE(q.needs_notification(memory)) << "first signal always goes out";
    driver.add_chain({{kData, 16, true}});
    auto popped = q.pop(memory);
    ASSERT_TRUE(popped && popped->has_value());
    q.add_used(memory, (*popped)->head, 0);
    EXPECT_FALSE(q.needs_notification(memory)) << "used_event 0 already passed";
    driver.set_used_event(4);  // the driver wants to hear about completion #5
    driver.add_chain({{kData, 16, true}});
    popped = q.pop(memory);
    ASSERT_TRUE(popped && popped->has_value());
    q.add_used(memory, (*popped)->head, 0);
    EXPECT_TRUE(q.needs_notification(memory));
    auto empty = q.pop(memory);
    ASSERT_TRUE(empty);
    EXPECT_FALSE(empty->has_value());
    EXPECT_EQ(driver.avail_event(), 5u) << "device asks for a kick at the next buffer";
}

TEST_F(QueueFixture, NoInterruptFlagSuppressesWithoutEventIdx) {
    driver.add_chain({{kData, 16, true}});
    auto popped = queue.pop(memory);
    ASSERT_TRUE(popped && popped->has_value());
    queue.add_used(memory, (*popped)->head, 0);
    driver.set_avail_flags(1);
    EXPECT_FALSE(queue.needs_notification(memory));
    driver.set_avail_flags(0);
    EXPECT_TRUE(queue.needs_notification(memory));
}

}  // namespace
}  // namespace boxlite::devices::virtio
