// A tiny 32-bit guest drives our virtio-mmio transport and virtio-blk device under real KVM.
#include "guest_helpers.hpp"

#include "devices/virtio/blk/device.hpp"
#include "vmm/device_manager.hpp"

#include "../devices/memory_backend.hpp"

namespace boxlite::vmm {
namespace {

TEST(VirtioGuest, TinyGuestHandshakesAndRoundTripsASector) {
    if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    MachineConfig config;
    config.memory_bytes = 16ULL << 20;
    auto created = Machine::create(config);
    ASSERT_TRUE(created) << created.error().to_string();
    auto& machine = **created;
    DeviceManager devices(machine);
    ASSERT_TRUE(devices.add_legacy_devices(nullptr));
    auto backend = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    auto blk = std::make_shared<devices::virtio::BlockDevice>(backend, "tiny");
    auto slot = devices.add_virtio_device(blk);
    ASSERT_TRUE(slot);
    EXPECT_EQ(slot->base, layout::kVirtioMmioBase);
    auto result_port = std::make_shared<testing::RecordingDevice>();
    ASSERT_TRUE(machine.pio_bus().insert(layout::kTestResultPort, 4, result_port));
    testing::load_tiny_guest(machine, "virtio_blk.bin");

    auto outcome = machine.run();
    ASSERT_TRUE(outcome) << outcome.error().to_string();
    EXPECT_EQ(outcome->reason, StopReason::PowerOff) << outcome->detail;
    auto results = result_port->accesses();
    ASSERT_EQ(results.size(), 1u);
    std::uint32_t code = 99;
    std::memcpy(&code, results[0].data.data(), 4);
    EXPECT_EQ(code, 0u) << "the guest's failing step (see tests/guests/virtio_blk.S); transport says: "
                        << slot->transport->last_error();
    for (int i = 0; i < 512; ++i) ASSERT_EQ(backend->data()[512 + i], (i & 0xff) ^ 0xa5) << "byte " << i;
    EXPECT_EQ(blk->stats().writes, 1u);
    EXPECT_EQ(blk->stats().reads, 1u);
    EXPECT_TRUE(slot->transport->activated());
}

}  // namespace
}  // namespace boxlite::vmm
