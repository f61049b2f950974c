// The vhost-user back end driving our real device models (virtio-blk over a MemoryBackend and a
// QCOW2 image, virtio-vsock with its hybrid Unix socket) from an in-test frontend: shared memfd
// guest memory, eventfd kicks and calls, and hostile messages.
#include "frontend.hpp"

#include "../devices/memory_backend.hpp"
#include "../devices/virtqueue_driver.hpp"
#include "support/support.hpp"

#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/vsock/device.hpp"
#include "qcow2/qcow2_image.hpp"

#include <gtest/gtest.h>

#include <sys/un.h>

namespace boxlite::vhost_user {
namespace {

using devices::virtio::BlockDevice;
using devices::virtio::VsockDevice;
using devices::virtio::VsockHeader;
using devices::virtio::testing::Segment;
using devices::virtio::testing::VirtQueueDriver;
using testing::TestFrontend;

constexpr std::uint64_t kQueueBase = 0x10000;
constexpr std::uint64_t kData = 0x40000;

struct BlkRequestHeader {
    std::uint32_t type, reserved;
    std::uint64_t sector;
};

/// One virtio-blk request through the driver: header, data, status; returns the status byte.
std::uint8_t blk_request(TestFrontend& frontend, VirtQueueDriver& driver, std::uint32_t type, std::uint64_t sector,
                         std::uint32_t data_bytes, bool data_writable) {
    const auto& memory = frontend.memory();
    memory.write_obj(kData, BlkRequestHeader{type, 0, sector});
    memory.write_obj<std::uint8_t>(kData + 0x100 + data_bytes, 0xff);
    std::vector<Segment> segments{{kData, 16, false}};
    if (data_bytes) segments.push_back({kData + 0x100, data_bytes, data_writable});
    segments.push_back({kData + 0x100 + data_bytes, 1, true});
    driver.set_used_event(driver.used_idx());  // EVENT_IDX: interrupt me at the next completion
    driver.add_chain(segments);
    frontend.kick(0);
    if (!frontend.wait_call(0)) return 0xee;
    return memory.read_obj<std::uint8_t>(kData + 0x100 + data_bytes).value_or(0xdd);
}

TEST(VhostUserBackend, NegotiatesFeaturesAndReadsTheConfigSpace) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(8 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "serial"), {});
    frontend.send(Request::GetFeatures, nullptr, 0);
    const auto features = frontend.reply_u64();
    ASSERT_TRUE(features);
    EXPECT_TRUE(*features & kFeatureProtocolFeatures);
    EXPECT_TRUE(*features & devices::virtio::kFeatureVersion1);
    frontend.send(Request::GetProtocolFeatures, nullptr, 0);
    const auto protocol = frontend.reply_u64();
    ASSERT_TRUE(protocol);
    EXPECT_TRUE(*protocol & kProtocolConfig);
    EXPECT_TRUE(*protocol & kProtocolReplyAck);

    // With REPLY_ACK, a NEED_REPLY message gets its status.
    std::uint64_t ack_features = kProtocolReplyAck | kProtocolConfig;
    frontend.send(Request::SetProtocolFeatures, &ack_features, 8, {}, kVersion | kFlagNeedReply);
    EXPECT_EQ(frontend.reply_u64(), 0u);

    struct {
        ConfigHeader header;
        std::uint8_t data[8];
    } get{{0, 8, 0}, {}};
    frontend.send(Request::GetConfig, &get, sizeof get);
    auto config = frontend.reply();
    ASSERT_TRUE(config);
    ASSERT_EQ(config->size(), sizeof get);
    std::uint64_t capacity;
    std::memcpy(&capacity, config->data() + sizeof(ConfigHeader), 8);
    EXPECT_EQ(capacity, (8u << 20) / 512);
    EXPECT_TRUE(frontend.finish());
}

TEST(VhostUserBackend, ServesBlockRequestsThroughSharedMemoryAndEventfds) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(8 << 20);
    auto device = std::make_shared<BlockDevice>(disk, "serial");
    TestFrontend frontend(device, {});
    frontend.set_up();
    VirtQueueDriver driver(frontend.memory(), kQueueBase, 128);
    frontend.start_ring(0, driver.desc_table(), driver.avail_ring(), driver.used_ring(), 128);
    frontend.sync();
    ASSERT_TRUE(frontend.backend().device_active());

    // Write a sector, then read it back into another buffer.
    std::vector<std::byte> pattern(512);
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 7);
    frontend.memory().write_bytes(kData + 0x100, pattern);
    EXPECT_EQ(blk_request(frontend, driver, 1 /*OUT*/, 9, 512, false), 0);
    EXPECT_EQ(std::memcmp(disk->data().data() + 9 * 512, pattern.data(), 512), 0);
    frontend.memory().write_bytes(kData + 0x100, std::vector<std::byte>(512));
    EXPECT_EQ(blk_request(frontend, driver, 0 /*IN*/, 9, 512, true), 0);
    std::vector<std::byte> back(512);
    frontend.memory().read_bytes(kData + 0x100, back);
    EXPECT_EQ(back, pattern);
    // Past the end of the disk: IOERR, not a crash.
    EXPECT_EQ(blk_request(frontend, driver, 0, (8 << 20) / 512, 512, true), 1);
    EXPECT_EQ(device->stats().reads, 1u);
    EXPECT_EQ(device->stats().writes, 1u);

    // GET_VRING_BASE stops the ring and tells where: three requests made, three consumed.
    frontend.send_state(Request::GetVringBase, 0, 0);
    auto state = frontend.reply();
    ASSERT_TRUE(state);
    VringState base;
    std::memcpy(&base, state->data(), sizeof base);
    EXPECT_EQ(base.num, 3u);
    EXPECT_FALSE(frontend.backend().device_active());

    // Restarted at that base, the ring goes on where it stopped.
    frontend.start_ring(0, driver.desc_table(), driver.avail_ring(), driver.used_ring(), 128, 3);
    frontend.sync();
    ASSERT_TRUE(frontend.backend().device_active());
    EXPECT_EQ(blk_request(frontend, driver, 4 /*FLUSH*/, 0, 0, false), 0);
    EXPECT_EQ(disk->flushes, 1);
    EXPECT_GE(frontend.backend().stats().kicks, 4u);
    EXPECT_TRUE(frontend.finish());
    EXPECT_FALSE(frontend.backend().device_active());
}

TEST(VhostUserBackend, BlockRequestsReachAQcow2ImageThatChecksClean) {
    test::TempDir dir;
    qcow2::CreateOptions create;
    create.size = 16 << 20;
    auto image = qcow2::Qcow2Image::create(dir.path() / "disk.qcow2", create);
    ASSERT_TRUE(image) << image.error().message();
    std::shared_ptr<qcow2::Qcow2Image> qcow(std::move(*image));
    {
        TestFrontend frontend(std::make_shared<BlockDevice>(qcow, "disk"), {});
        frontend.set_up();
        VirtQueueDriver driver(frontend.memory(), kQueueBase, 64);
        frontend.start_ring(0, driver.desc_table(), driver.avail_ring(), driver.used_ring(), 64);
        std::vector<std::byte> data(4096, std::byte{0x5a});
        frontend.memory().write_bytes(kData + 0x100, data);
        EXPECT_EQ(blk_request(frontend, driver, 1, 2048, 4096, false), 0);
        EXPECT_EQ(blk_request(frontend, driver, 4, 0, 0, false), 0);
        EXPECT_TRUE(frontend.finish());
    }
    auto report = qcow->check();
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->clean());
    std::vector<std::byte> back(4096);
    iovec iov{back.data(), back.size()};
    ASSERT_TRUE(qcow->read(2048 * 512, std::span(&iov, 1)));
    EXPECT_EQ(back, std::vector<std::byte>(4096, std::byte{0x5a}));
    ASSERT_TRUE(qcow->close());
    if (test::have_tool("qemu-img")) {
        EXPECT_NO_THROW(test::shell("qemu-img check -q " + (dir / "disk.qcow2") + " 2>&1"));
    }
}

TEST(VhostUserBackend, VsockHostConnectReachesTheGuestRxRing) {
    test::TempDir dir;
    auto vsock = VsockDevice::create(3, dir.path() / "vsock.sock");
    ASSERT_TRUE(vsock) << vsock.error().message();
    BackendOptions options;
    options.frontend_queues = 2;  // QEMU keeps the event queue
    TestFrontend frontend(*vsock, options);
    frontend.set_up();
    VirtQueueDriver rx(frontend.memory(), kQueueBase, 64);
    VirtQueueDriver tx(frontend.memory(), kQueueBase + 0x8000, 64);
    // The guest posts an rx buffer before the device starts.
    rx.add_chain({{kData, 4096, true}});
    frontend.start_ring(0, rx.desc_table(), rx.avail_ring(), rx.used_ring(), 64);
    frontend.start_ring(1, tx.desc_table(), tx.avail_ring(), tx.used_ring(), 64);
    frontend.sync();
    ASSERT_TRUE(frontend.backend().device_active());

    base::OwnedFd host(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const auto path = (dir.path() / "vsock.sock").string();
    ASSERT_LT(path.size(), sizeof address.sun_path);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(host.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::write(host.get(), "CONNECT 2695\n", 13), 13);
    // The vsock thread delivers the REQUEST and interrupts through the call eventfd.
    ASSERT_TRUE(frontend.wait_call(0));
    auto used = rx.take_used();
    ASSERT_EQ(used.size(), 1u);
    auto header = frontend.memory().read_obj<VsockHeader>(kData);
    ASSERT_TRUE(header);
    EXPECT_EQ(header->op, static_cast<std::uint16_t>(devices::virtio::VsockOp::Request));
    EXPECT_EQ(header->dst_port, 2695u);
    EXPECT_EQ(header->dst_cid, 3u);
    EXPECT_EQ((*vsock)->stream_count(), 1u);

    // The frontend dies: the device is reset, its streams dropped, the host socket closed.
    EXPECT_TRUE(frontend.finish());
    EXPECT_EQ((*vsock)->stream_count(), 0u);
    char byte;
    EXPECT_EQ(::read(host.get(), &byte, 1), 0);
}

TEST(VhostUserBackend, FrontendDyingMidMessageEndsTheSessionCleanly) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "s"), {});
    frontend.set_up();
    VirtQueueDriver driver(frontend.memory(), kQueueBase, 16);
    frontend.start_ring(0, driver.desc_table(), driver.avail_ring(), driver.used_ring(), 16);
    frontend.sync();
    ASSERT_TRUE(frontend.backend().device_active());
    // Half a SET_VRING_ADDR: the header promises 40 bytes, 10 arrive, then the frontend is gone.
    std::array<std::byte, 40> partial{};
    frontend.send_raw(static_cast<std::uint32_t>(Request::SetVringAddr), kVersion, partial.data(), 40, 10);
    EXPECT_TRUE(frontend.finish());
    EXPECT_FALSE(frontend.backend().device_active());
}

TEST(VhostUserBackend, StopEndsAnIdleSession) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "s"), {});
    frontend.set_up();
    frontend.sync();
    frontend.backend().stop();
    EXPECT_TRUE(frontend.finish());
}

// ---- hostile messages: each ends the session with an error that names what was wrong --------

struct Hostile {
    const char* name;
    std::function<void(TestFrontend&)> send;
    const char* expected;
};

class VhostUserHostile : public ::testing::TestWithParam<Hostile> {};

TEST_P(VhostUserHostile, IsRefusedWithAClearError) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "s"), {});
    GetParam().send(frontend);
    // The session ends by itself: the backend closed the socket.
    char byte;
    pollfd p{frontend.socket(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    while (::read(frontend.socket(), &byte, 1) > 0) {}
    auto result = frontend.finish();
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find(GetParam().expected), std::string::npos) << result.error().message();
    EXPECT_FALSE(frontend.backend().device_active());
}

void mem_table(TestFrontend& f, std::uint32_t nregions, MemoryRegionDesc region, std::vector<int> fds) {
    struct {
        MemoryTableHeader header;
        MemoryRegionDesc regions[kMaxRegions + 1];
    } table{};
    table.header.nregions = nregions;
    for (auto& r : table.regions) r = region;
    const auto size = static_cast<std::uint32_t>(sizeof(MemoryTableHeader) +
                                                 std::min(nregions, kMaxRegions + 1) * sizeof(MemoryRegionDesc));
    f.send(Request::SetMemTable, &table, size, std::move(fds));
}

INSTANTIATE_TEST_SUITE_P(
    Messages, VhostUserHostile,
    ::testing::Values(
        Hostile{"OversizedPayload",
                [](TestFrontend& f) {
                    std::vector<std::byte> big(8);
                    f.send_raw(1, kVersion, big.data(), 1u << 30, 8);
                },
                "payload of 1073741824 bytes"},
        Hostile{"WrongVersion", [](TestFrontend& f) { f.send_raw(1, 0x2, nullptr, 0, 0); }, "version 2"},
        Hostile{"ShortPayload",
                [](TestFrontend& f) {
                    std::uint32_t four = 0;
                    f.send(Request::SetFeatures, &four, 4);
                },
                "payload of 4 bytes, expected 8"},
        Hostile{"FeaturesNotOffered", [](TestFrontend& f) { f.send_u64(Request::SetFeatures, 1ULL << 63); },
                "were not offered"},
        Hostile{"RingOutOfRange", [](TestFrontend& f) { f.send_state(Request::SetVringNum, 7, 16); },
                "ring 7 does not exist"},
        Hostile{"RingSizeNotPowerOfTwo", [](TestFrontend& f) { f.send_state(Request::SetVringNum, 0, 100); },
                "not a power of two"},
        Hostile{"RingSizeTooBig", [](TestFrontend& f) { f.send_state(Request::SetVringNum, 0, 32768); },
                "not a power of two in 1..1024"},
        Hostile{"BaseNot16Bit", [](TestFrontend& f) { f.send_state(Request::SetVringBase, 0, 70000); },
                "not a 16-bit index"},
        Hostile{"TooManyRegions",
                [](TestFrontend& f) {
                    mem_table(f, kMaxRegions + 1, {0, 4096, 0, 0}, {f.ram_fd()});
                },
                "9 regions (1..8)"},
        Hostile{"RegionsWithoutFds",
                [](TestFrontend& f) {
                    mem_table(f, 1, {0, 4096, 0, 0}, {});
                },
                "1 regions but 0 file descriptors"},
        Hostile{"RegionPastTheFile",
                [](TestFrontend& f) {
                    mem_table(f, 1, {0, 1ULL << 40, 0x1000, 0}, {f.ram_fd()});
                },
                "is not inside its file"},
        Hostile{"RegionOffsetWraps",
                [](TestFrontend& f) {
                    mem_table(f, 1, {0, 4096, 0, ~0ULL - 100}, {f.ram_fd()});
                },
                "wraps"},
        Hostile{"UnsealedMemfd",
                [](TestFrontend& f) {
                    auto unsealed = testing::sealed_memfd(1 << 20, false);
                    mem_table(f, 1, {0, 1 << 20, 0, 0}, {unsealed.get()});
                },
                "sealed against shrinking"},
        Hostile{"OverlappingRegions",
                [](TestFrontend& f) {
                    mem_table(f, 2, {0, 1 << 20, 0, 0}, {f.ram_fd(), f.ram_fd()});
                },
                "overlap"},
        Hostile{"KickThatIsNoEventfd",
                [](TestFrontend& f) {
                    int pipe_fds[2];
                    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
                    f.send_u64(Request::SetVringKick, 0, {pipe_fds[0]});
                    ::close(pipe_fds[0]);
                    ::close(pipe_fds[1]);
                },
                "not an eventfd"},
        Hostile{"KickWithoutFd", [](TestFrontend& f) { f.send_u64(Request::SetVringKick, 0); },
                "0 file descriptors (1 expected)"},
        Hostile{"KickUnknownBits", [](TestFrontend& f) { f.send_u64(Request::SetVringKick, 0x10000); }, "unknown bits"},
        Hostile{"FdsOnAMessageThatTakesNone",
                [](TestFrontend& f) {
                    auto fd = testing::make_eventfd();
                    f.send(Request::GetFeatures, nullptr, 0, {fd.get()});
                },
                "cannot take"},
        Hostile{"ConfigPastTheSpace",
                [](TestFrontend& f) {
                    std::array<std::byte, 12 + 16> config{};
                    const ConfigHeader header{250, 16, 0};
                    std::memcpy(config.data(), &header, sizeof header);
                    f.send(Request::GetConfig, config.data(), config.size());
                },
                "config space is 256 bytes"},
        Hostile{"ConfigSizeLies",
                [](TestFrontend& f) {
                    std::array<std::byte, 12 + 4> config{};
                    const ConfigHeader header{0, 200, 0};
                    std::memcpy(config.data(), &header, sizeof header);
                    f.send(Request::GetConfig, config.data(), config.size());
                },
                "in a payload of 16"}),
    [](const ::testing::TestParamInfo<Hostile>& param_info) { return std::string(param_info.param.name); });

TEST(VhostUserBackend, RingsOutsideTheMemoryTableNeverStartTheDevice) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "s"), {});
    frontend.set_up();
    // Ring addresses past the end of guest RAM (1 MiB) and in no region at all.
    frontend.start_ring(0, 0xff000, 0xfff00, 0x200000, 64);
    frontend.sync();
    EXPECT_FALSE(frontend.backend().device_active());
    EXPECT_TRUE(frontend.finish());
}

TEST(VhostUserBackend, UnknownRequestsAreIgnoredOrNacked) {
    auto disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    TestFrontend frontend(std::make_shared<BlockDevice>(disk, "s"), {});
    const std::uint64_t ack = kProtocolReplyAck;
    frontend.send(Request::SetProtocolFeatures, &ack, 8);
    frontend.send_raw(999, kVersion | kFlagNeedReply, nullptr, 0, 0);
    EXPECT_EQ(frontend.reply_u64(), 1u);
    frontend.sync();
    EXPECT_EQ(frontend.backend().stats().unsupported, 1u);
    EXPECT_TRUE(frontend.finish());
}

}  // namespace
}  // namespace boxlite::vhost_user
