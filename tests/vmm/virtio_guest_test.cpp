// A tiny 32-bit guest drives our virtio-mmio transport and virtio-blk device under real KVM.
#include "guest_helpers.hpp"

#include "devices/virtio/blk/device.hpp"
#include "qcow2/qcow2_image.hpp"
#include "vmm/device_manager.hpp"

#include <cstdlib>
#include <filesystem>

namespace boxlite::vmm {
namespace {

// The disk is a real QCOW2 file (our Qcow2Image); afterwards it is reopened cold and checked by
// qemu-img, so the guest's write really went through the QCOW2 metadata.
TEST(VirtioGuest, TinyGuestHandshakesAndRoundTripsASectorOnQcow2) {
    if (auto reason = testing::kvm_unusable_reason(); !reason.empty()) GTEST_SKIP() << reason;
    const auto disk = std::filesystem::temp_directory_path() /
                      ("boxlite-tiny-guest-" + std::to_string(::getpid()) + ".qcow2");
    {
        qcow2::CreateOptions create;
        create.size = 1 << 20;
        auto image = qcow2::Qcow2Image::create(disk, create);
        ASSERT_TRUE(image) << image.error().to_string();
        std::shared_ptr<block::BlockBackend> backend = std::move(*image);

        MachineConfig config;
        config.memory_bytes = 16ULL << 20;
        auto created = Machine::create(config);
        ASSERT_TRUE(created) << created.error().to_string();
        auto& machine = **created;
        DeviceManager devices(machine);
        ASSERT_TRUE(devices.add_legacy_devices(nullptr));
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
        EXPECT_EQ(blk->stats().writes, 1u);
        EXPECT_EQ(blk->stats().reads, 1u);
        EXPECT_TRUE(slot->transport->activated());
        ASSERT_TRUE(backend->flush());
    }  // machine, devices and the image are closed here

    auto reopened = qcow2::Qcow2Image::open(disk, {.read_only = true});
    ASSERT_TRUE(reopened) << reopened.error().to_string();
    std::array<std::uint8_t, 512> sector{};
    iovec iov{sector.data(), sector.size()};
    ASSERT_TRUE((*reopened)->read(512, std::span(&iov, 1)));
    for (int i = 0; i < 512; ++i) ASSERT_EQ(sector[i], (i & 0xff) ^ 0xa5) << "byte " << i;
    reopened->reset();
    if (std::system("command -v qemu-img > /dev/null 2>&1") == 0) {
        EXPECT_EQ(std::system(("qemu-img check -q " + disk.string()).c_str()), 0) << "qemu-img check";
    }
    std::filesystem::remove(disk);
}

}  // namespace
}  // namespace boxlite::vmm
