// The vhost-user frontend (lib/vhost_user/frontend.*, frontend_device.*) against our own back end
// (lib/vhost_user/backend.*, serving our virtio-blk) over a socketpair, and against back ends
// that answer garbage, stall or die: each ends in a clear error, never a hang or a crash.
#include "../devices/memory_backend.hpp"
#include "../devices/virtqueue_driver.hpp"

#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/mmio/transport.hpp"
#include "vhost_user/backend.hpp"
#include "vhost_user/frontend.hpp"
#include "vhost_user/frontend_device.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <thread>

namespace boxlite::vhost_user {
namespace {

using devices::virtio::BlockDevice;
using devices::virtio::VirtQueue;
using devices::virtio::testing::Segment;
using devices::virtio::testing::VirtQueueDriver;

constexpr std::uint64_t kQueueBase = 0x10000;
constexpr std::uint64_t kData = 0x40000;

std::pair<base::OwnedFd, base::OwnedFd> socket_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
    return {base::OwnedFd(fds[0]), base::OwnedFd(fds[1])};
}

class CountingInterrupt final : public devices::virtio::Interrupt {
public:
    void signal_used_queue(std::uint16_t) override {
        std::lock_guard lock(mutex_);
        ++used_;
        cv_.notify_all();
    }
    void signal_config_change() override {}
    /// Waits (up to 5 s) until `count` used-buffer interrupts arrived.
    bool wait_for(int count) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return used_ >= count; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int used_ = 0;
};

/// Our Backend serving a virtio-blk disk on one end of a socketpair, on its own thread.
struct OurBackEnd {
    std::shared_ptr<devices::testing::MemoryBackend> disk = std::make_shared<devices::testing::MemoryBackend>(1 << 20);
    std::shared_ptr<BlockDevice> blk = std::make_shared<BlockDevice>(disk, "front");
    Backend backend{blk, {}};
    std::thread thread;
    BoxliteResult<void> result;

    base::OwnedFd start() {
        auto [ours, theirs] = socket_pair();
        thread = std::thread([this, fd = std::move(theirs)]() mutable { result = backend.serve(std::move(fd)); });
        return std::move(ours);
    }
    ~OurBackEnd() {
        backend.stop();
        if (thread.joinable()) thread.join();
    }
};

struct BlkRequestHeader {
    std::uint32_t type, reserved;
    std::uint64_t sector;
};

TEST(VhostUserFrontend, DrivesOurBlockBackEndThroughSharedMemoryKicksAndCalls) {
    OurBackEnd back_end;
    auto memory = vmm::GuestMemory::create_flat(0, 1 << 20);
    ASSERT_TRUE(memory) << memory.error().to_string();
    std::vector<std::string> sent;
    FrontendOptions options;
    options.trace = [&](std::string_view line) { sent.emplace_back(line); };
    FrontendDeviceOptions device_options{devices::virtio::DeviceType::Block, {128}, {}};
    auto device = FrontendDevice::create(Frontend(back_end.start(), options), device_options);
    ASSERT_TRUE(device) << device.error().to_string();
    EXPECT_TRUE((*device)->device_features() & devices::virtio::kFeatureVersion1);
    EXPECT_GE((*device)->queue_notify_eventfd(0), 0);
    EXPECT_EQ((*device)->queue_notify_eventfd(1), -1);

    VirtQueue queue(128);
    VirtQueueDriver driver(*memory, kQueueBase, 128);
    driver.configure(queue);
    CountingInterrupt interrupt;
    devices::virtio::ActivateContext context{&*memory, std::span(&queue, 1), &interrupt,
                                             devices::virtio::kFeatureVersion1};
    ASSERT_TRUE((*device)->activate(context));
    // With REPLY_ACK every set-up message was acknowledged: the back end is running the ring.
    EXPECT_TRUE(back_end.backend.device_active());

    // A write through the ring: the back end reads our memfd pages, signals our call eventfd,
    // and the device turns that into the transport's interrupt.
    std::vector<std::byte> pattern(512);
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 13);
    memory->write_obj(kData, BlkRequestHeader{1 /*OUT*/, 0, 3});
    memory->write_bytes(kData + 0x100, pattern);
    memory->write_obj<std::uint8_t>(kData + 0x300, 0xff);
    driver.add_chain({{kData, 16, false}, {kData + 0x100, 512, false}, {kData + 0x300, 1, true}});
    (*device)->queue_notify(0);  // what an MMIO exit does; KVM would write the same eventfd
    ASSERT_TRUE(interrupt.wait_for(1)) << "no used-buffer interrupt";
    EXPECT_EQ(memory->read_obj<std::uint8_t>(kData + 0x300), 0);
    EXPECT_EQ(std::memcmp(back_end.disk->data().data() + 3 * 512, pattern.data(), 512), 0);
    EXPECT_EQ(back_end.blk->stats().writes, 1u);
    EXPECT_GE((*device)->calls(), 1u);

    // Reset stops the ring (GET_VRING_BASE): the back end's device goes inactive.
    (*device)->reset();
    EXPECT_FALSE(back_end.backend.device_active());
    EXPECT_TRUE((*device)->connected());
    const std::vector<std::string> order{
        "SET_OWNER",      "GET_FEATURES",     "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_FEATURES",
        "SET_MEM_TABLE",  "SET_VRING_NUM",    "SET_VRING_ADDR",        "SET_VRING_BASE",        "SET_VRING_CALL",
        "SET_VRING_KICK", "SET_VRING_ENABLE", "GET_VRING_BASE"};
    std::size_t at = 0;
    for (const auto& line : sent)
        if (at < order.size() && line.find("-> " + order[at] + " ") == 0) ++at;
    EXPECT_EQ(at, order.size()) << "the messages went out in QEMU's order";

    // Activated again after the reset, it works again.
    queue.reset();
    VirtQueueDriver again(*memory, kQueueBase, 128);
    again.configure(queue);
    ASSERT_TRUE((*device)->activate(context));
    memory->write_obj(kData, BlkRequestHeader{0 /*IN*/, 0, 3});
    memory->write_bytes(kData + 0x100, std::vector<std::byte>(512));
    again.add_chain({{kData, 16, false}, {kData + 0x100, 512, true}, {kData + 0x300, 1, true}});
    (*device)->queue_notify(0);
    ASSERT_TRUE(interrupt.wait_for(2));
    std::vector<std::byte> back(512);
    memory->read_bytes(kData + 0x100, back);
    EXPECT_EQ(back, pattern);
    device->reset();  // closes our end: the back end's session ends without an error
    back_end.thread.join();
    EXPECT_TRUE(back_end.result) << back_end.result.error().to_string();
}

TEST(VhostUserFrontend, BackEndThatDiesAfterActivationLeavesAResettableDeviceAndAClearError) {
    OurBackEnd back_end;
    auto memory = vmm::GuestMemory::create_flat(0, 1 << 20);
    ASSERT_TRUE(memory);
    auto device = FrontendDevice::create(Frontend(back_end.start()), {devices::virtio::DeviceType::Block, {128}, {}});
    ASSERT_TRUE(device) << device.error().to_string();
    VirtQueue queue(128);
    VirtQueueDriver driver(*memory, kQueueBase, 128);
    driver.configure(queue);
    CountingInterrupt interrupt;
    devices::virtio::ActivateContext context{&*memory, std::span(&queue, 1), &interrupt,
                                             devices::virtio::kFeatureVersion1};
    ASSERT_TRUE((*device)->activate(context));
    back_end.backend.stop();  // the back end goes away, as a killed virtiofsd would
    back_end.thread.join();
    (*device)->queue_notify(0);  // a kick nobody reads: harmless
    (*device)->reset();          // does not wait for a reply that cannot come
    EXPECT_FALSE((*device)->connected());
    EXPECT_NE((*device)->failure().find("closed the connection"), std::string::npos) << (*device)->failure();
    queue.reset();
    driver.configure(queue);
    auto again = (*device)->activate(context);
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("back end is gone"), std::string::npos) << again.error().message();
}

/// A hostile or broken back end: `script` runs on its end of the socket, on its own thread.
class FakeBackEnd {
public:
    explicit FakeBackEnd(std::function<void(int)> script) {
        auto [ours, theirs] = socket_pair();
        ours_ = std::move(ours);
        thread_ = std::thread([script = std::move(script), fd = std::move(theirs)] { script(fd.get()); });
    }
    ~FakeBackEnd() {
        if (thread_.joinable()) thread_.join();
    }
    base::OwnedFd take() { return std::move(ours_); }

private:
    base::OwnedFd ours_;
    std::thread thread_;
};

/// Reads one message (header and payload; descriptors closed); false on EOF.
bool read_message(int fd, Header& header) {
    std::array<std::byte, kHeaderSize + kMaxPayload> buffer{};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
    iovec iov{buffer.data(), kHeaderSize};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    if (::recvmsg(fd, &message, MSG_WAITALL) != kHeaderSize) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            ::close(received);
        }
    }
    std::memcpy(&header, buffer.data(), kHeaderSize);
    if (header.size > kMaxPayload) return false;
    return header.size == 0 || ::recv(fd, buffer.data(), header.size, MSG_WAITALL) == header.size;
}

void send_reply(int fd, std::uint32_t request, std::uint32_t flags, const void* payload, std::uint32_t claimed,
                std::uint32_t size) {
    std::vector<std::byte> bytes(kHeaderSize + size);
    const Header header{request, flags, claimed};
    std::memcpy(bytes.data(), &header, kHeaderSize);
    if (size) std::memcpy(bytes.data() + kHeaderSize, payload, size);
    [[maybe_unused]] auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
}

/// Answers SET_OWNER silently, then GET_FEATURES with `misbehave`.
BoxliteResult<std::shared_ptr<FrontendDevice>> create_against(
    std::function<void(int, const Header&)> misbehave, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    FakeBackEnd fake([misbehave = std::move(misbehave)](int fd) {
        Header header{};
        while (read_message(fd, header)) {
            if (header.request == static_cast<std::uint32_t>(Request::GetFeatures)) {
                misbehave(fd, header);
                return;
            }
        }
    });
    FrontendOptions options;
    options.reply_timeout = timeout;
    return FrontendDevice::create(Frontend(fake.take(), options), {devices::virtio::DeviceType::Block, {128}, {}});
}

constexpr std::uint32_t kReply = kVersion | kFlagReply;
constexpr std::uint64_t kGoodFeatures = devices::virtio::kFeatureVersion1;

void expect_error(const BoxliteResult<std::shared_ptr<FrontendDevice>>& created, std::string_view words) {
    ASSERT_FALSE(created) << "a hostile back end was accepted";
    EXPECT_EQ(created.error().kind(), ErrorKind::Engine);
    EXPECT_NE(created.error().message().find(words), std::string::npos) << created.error().message();
    EXPECT_NE(created.error().message().find("GET_FEATURES"), std::string::npos) << created.error().message();
}

TEST(VhostUserFrontend, HostileOrBrokenBackEndsEndInAClearErrorNotAHang) {
    // Dies mid-request: the connection closes before any reply.
    expect_error(create_against([](int, const Header&) {}), "closed the connection");
    // Dies mid-reply: half a header, then gone.
    expect_error(create_against([](int fd, const Header&) {
                     const std::uint32_t half[2] = {1, kReply};
                     [[maybe_unused]] auto n = ::send(fd, half, 6, MSG_NOSIGNAL);
                 }),
                 "closed the connection");
    // Answers another request.
    expect_error(create_against([](int fd, const Header&) { send_reply(fd, 3, kReply, &kGoodFeatures, 8, 8); }),
                 "answers request 3");
    // No reply flag.
    expect_error(create_against(
                     [](int fd, const Header& h) { send_reply(fd, h.request, kVersion, &kGoodFeatures, 8, 8); }),
                 "reply bit");
    // A size that is not the reply's (a huge one is never read into anything).
    expect_error(create_against([](int fd, const Header& h) {
                     send_reply(fd, h.request, kReply, &kGoodFeatures, 0xfffffff0u, 8);
                 }),
                 "where 8 belong");
    // Descriptors beside the reply.
    expect_error(create_against([](int fd, const Header& h) {
                     std::array<std::byte, kHeaderSize + 8> bytes{};
                     const Header header{h.request, kReply, 8};
                     std::memcpy(bytes.data(), &header, kHeaderSize);
                     std::memcpy(bytes.data() + kHeaderSize, &kGoodFeatures, 8);
                     iovec iov{bytes.data(), bytes.size()};
                     alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
                     msghdr message{};
                     message.msg_iov = &iov;
                     message.msg_iovlen = 1;
                     message.msg_control = control.data();
                     message.msg_controllen = control.size();
                     cmsghdr* c = CMSG_FIRSTHDR(&message);
                     c->cmsg_level = SOL_SOCKET;
                     c->cmsg_type = SCM_RIGHTS;
                     c->cmsg_len = CMSG_LEN(sizeof(int));
                     const int any = 0;
                     std::memcpy(CMSG_DATA(c), &any, sizeof any);
                     [[maybe_unused]] auto n = ::sendmsg(fd, &message, MSG_NOSIGNAL);
                 }),
                 "file descriptors");
    // Stalls: the reply never comes; the deadline ends it (the script holds the socket open
    // until the frontend closed its end).
    expect_error(create_against(
                     [](int fd, const Header&) {
                         pollfd p{fd, POLLIN, 0};
                         ::poll(&p, 1, 10000);
                     },
                     std::chrono::milliseconds(200)),
                 "no reply within 200 ms");
}

TEST(VhostUserFrontend, ABackEndWithoutVersion1IsRefused) {
    auto created = create_against([](int fd, const Header& h) {
        const std::uint64_t legacy = 1ULL << 28;
        send_reply(fd, h.request, kReply, &legacy, 8, 8);
    });
    ASSERT_FALSE(created);
    EXPECT_NE(created.error().message().find("without VERSION_1"), std::string::npos) << created.error().message();
}

// On our virtio-mmio transport: a back end that refuses the memory table (a REPLY_ACK status
// that is not 0) fails the activation, and the driver reads DEVICE_NEEDS_RESET; the transport
// says which request was refused.
TEST(VhostUserFrontend, ARefusedMemoryTableMarksTheTransportNeedsReset) {
    FakeBackEnd fake([](int fd) {
        Header header{};
        while (read_message(fd, header)) {
            const auto request = static_cast<Request>(header.request);
            if (request == Request::GetFeatures) {
                const std::uint64_t features = kGoodFeatures | kFeatureProtocolFeatures;
                send_reply(fd, header.request, kReply, &features, 8, 8);
            } else if (request == Request::GetProtocolFeatures) {
                const std::uint64_t protocol = kProtocolReplyAck;
                send_reply(fd, header.request, kReply, &protocol, 8, 8);
            } else if (header.flags & kFlagNeedReply) {
                const std::uint64_t status = request == Request::SetMemTable ? 1 : 0;
                send_reply(fd, header.request, kReply, &status, 8, 8);
            }
        }
    });
    auto options = virtio_fs_options("refused");
    ASSERT_TRUE(options);
    auto device = FrontendDevice::create(Frontend(fake.take()), std::move(*options));
    ASSERT_TRUE(device) << device.error().to_string();
    auto memory = vmm::GuestMemory::create_flat(0, 1 << 20);
    ASSERT_TRUE(memory);
    using devices::virtio::MmioTransport;
    MmioTransport transport(*device, *memory, [] {});
    auto write = [&](std::uint64_t offset, std::uint32_t value) {
        transport.write(offset, std::as_bytes(std::span(&value, 1)));
    };
    auto read = [&](std::uint64_t offset) {
        std::uint32_t value = 0;
        transport.read(offset, std::as_writable_bytes(std::span(&value, 1)));
        return value;
    };
    EXPECT_EQ(read(MmioTransport::kDeviceId), 26u);
    std::array<char, 8> tag{};
    transport.read(MmioTransport::kConfig, std::as_writable_bytes(std::span(tag)));
    EXPECT_EQ(std::string(tag.data(), 7), "refused");
    write(MmioTransport::kStatus, 3);
    write(MmioTransport::kDriverFeaturesSel, 1);
    write(MmioTransport::kDriverFeatures, 1);  // VERSION_1
    write(MmioTransport::kStatus, 0xb);
    ASSERT_EQ(read(MmioTransport::kStatus) & MmioTransport::kStatusFeaturesOk, MmioTransport::kStatusFeaturesOk);
    write(MmioTransport::kQueueSel, 1);
    write(MmioTransport::kQueueNum, 8);
    write(MmioTransport::kQueueDescLow, 0x1000);
    write(MmioTransport::kQueueDriverLow, 0x2000);
    write(MmioTransport::kQueueDeviceLow, 0x3000);
    write(MmioTransport::kQueueReady, 1);
    write(MmioTransport::kStatus, 0xf);
    EXPECT_TRUE(read(MmioTransport::kStatus) & MmioTransport::kStatusNeedsReset);
    EXPECT_FALSE(transport.activated());
    EXPECT_NE(transport.last_error().find("refused SET_MEM_TABLE"), std::string::npos) << transport.last_error();
    EXPECT_TRUE((*device)->connected()) << "a refusal is an answer, not a broken session";
}

TEST(VhostUserFrontend, VirtioFsConfigCarriesTheTagAndOneRequestQueue) {
    auto options = virtio_fs_options("work");
    ASSERT_TRUE(options);
    EXPECT_EQ(options->type, devices::virtio::DeviceType::Fs);
    EXPECT_EQ(options->queue_sizes.size(), 2u);
    ASSERT_EQ(options->config.size(), 40u);
    EXPECT_EQ(std::memcmp(options->config.data(), "work\0", 5), 0);
    std::uint32_t queues;
    std::memcpy(&queues, options->config.data() + 36, 4);
    EXPECT_EQ(queues, 1u);
    EXPECT_FALSE(virtio_fs_options(""));
    EXPECT_FALSE(virtio_fs_options(std::string(37, 'x')));
}

}  // namespace
}  // namespace boxlite::vhost_user
