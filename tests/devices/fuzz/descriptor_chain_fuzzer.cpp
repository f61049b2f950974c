// libFuzzer target: the guest writes anything it likes into the descriptor tables and rings;
// popping chains and serving them as virtio-blk requests, virtio-vsock packets, virtio-console
// data or virtio-net frames must never touch memory outside guest RAM, loop, or allocate without
// bound.
//
// Input: byte 0 = log2 queue size (mod 9); byte 1 = bit 0 event-idx, bit 1 indirect descriptors,
// bits 2-3 the device (0 blk, 1 vsock, 2 console, 3 net); the rest = the first bytes of a
// 64 KiB guest RAM image. Queue q's descriptor table is at q * 8 KiB, its available ring right
// after it, its used ring after that (packed, so short inputs reach every structure of queue
// 0); buffers anywhere. vsock: queue 0 rx, 1 tx (the guest's packets), 2 event; console:
// queue 0 receive (host input goes there), 1 transmit; net: queue 0 rx (two frames from the host
// side wait for it), 1 tx (the guest's frames). Seeds: corpus/ (see corpus/README).
#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/console/device.hpp"
#include "devices/virtio/net/device.hpp"
#include "devices/virtio/queue.hpp"
#include "devices/virtio/vsock/device.hpp"
#include "memory/guest_memory.hpp"

#include "../memory_backend.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

using namespace boxlite;
using namespace boxlite::devices::virtio;

namespace {

class NullInterrupt final : public Interrupt {
public:
    void signal_used_queue(std::uint16_t) override {}
    void signal_config_change() override {}
};

constexpr std::uint64_t kRam = 64 * 1024;
constexpr std::uint64_t kQueueStride = 8 * 1024;

struct QueueLayout {
    std::uint64_t desc, avail, used;
};

QueueLayout layout_of(std::uint16_t queue_index, std::uint16_t queue_size) {
    const std::uint64_t desc = queue_index * kQueueStride;
    const std::uint64_t avail = desc + 16ULL * queue_size;
    const std::uint64_t used = (avail + 6 + 2ULL * queue_size + 3) & ~3ULL;
    return {desc, avail, used};
}

void configure(VirtQueue& queue, std::uint16_t index, std::uint16_t size, std::uint64_t features) {
    queue.reset();
    const auto l = layout_of(index, size);
    queue.size = size;
    queue.desc_table = l.desc;
    queue.avail_ring = l.avail;
    queue.used_ring = l.used;
    queue.ready = true;
    queue.activate(features);
}

VsockDevice& vsock_device() {
    // One device for the whole run: it binds a socket and starts its host-side thread.
    static std::shared_ptr<VsockDevice> device = [] {
        const auto uds = std::filesystem::temp_directory_path() / ("boxlite-fuzz-vsock-" + std::to_string(::getpid()));
        auto created = VsockDevice::create(3, uds);
        if (!created) std::abort();
        return *created;
    }();
    return *device;
}

/// One device for the whole run (it starts a thread) and the host end of its socket pair.
struct NetUnderTest {
    std::shared_ptr<NetDevice> device;
    base::OwnedFd host;
};
NetUnderTest& net_device() {
    static NetUnderTest net = [] {
        auto created = NetDevice::create({2, 0, 0, 0, 0, 1}, 256 * 1024);
        if (!created) std::abort();
        NetUnderTest out;
        out.device = *created;
        out.host = out.device->take_host_end();
        return out;
    }();
    return net;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    static vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, kRam));
    static auto backend = std::make_shared<devices::testing::MemoryBackend>(64 * 1024);
    const std::uint16_t queue_size = static_cast<std::uint16_t>(1u << (data[0] % 9));
    std::uint64_t features = kFeatureVersion1;
    if (data[1] & 1) features |= kFeatureRingEventIdx;
    if (data[1] & 2) features |= kFeatureRingIndirectDesc;
    const int which = (data[1] >> 2) & 3;
    // The vsock device's thread reads guest memory only while it is active: stop it before
    // the RAM is rewritten under it.
    vsock_device().reset();
    net_device().device->reset();
    auto ram = *memory.slice(0, kRam);
    auto load = [&] {
        std::memset(ram.data(), 0, ram.size());
        std::memcpy(ram.data(), data + 2, std::min<std::size_t>(size - 2, kRam));
    };
    load();

    // 1. Raw pops of queue 0.
    VirtQueue queue(256);
    configure(queue, 0, queue_size, features);
    if (!queue.validate(memory)) return 0;
    for (int i = 0; i < 4 * queue_size + 4; ++i) {
        auto popped = queue.pop(memory);
        if (popped && !*popped) break;
        if (!popped) continue;
        ChainReader reader(**popped);
        std::uint8_t sink[256];
        while (reader.read(std::as_writable_bytes(std::span(sink))) > 0) {}
        ChainWriter writer(**popped);
        while (writer.write(std::as_bytes(std::span(sink))) > 0) {}
        queue.add_used(memory, (*popped)->head, static_cast<std::uint32_t>(writer.written()));
        (void)queue.needs_notification(memory);
    }

    // 2. The same RAM (as the guest left it) served by a device.
    load();
    NullInterrupt interrupt;
    static VirtQueue queues[3] = {VirtQueue(256), VirtQueue(256), VirtQueue(256)};
    if (which == 1) {
        VsockDevice& vsock = vsock_device();
        for (std::uint16_t q = 0; q < 3; ++q) configure(queues[q], q, queue_size, features);
        if (vsock.activate({&memory, std::span(queues, 3), &interrupt, features})) {
            vsock.queue_notify(1);  // the guest's packets: headers, lengths, ports, ops
            vsock.queue_notify(0);  // rx buffers for the RSTs and RESPONSEs they caused
            vsock.reset();
        }
    } else if (which == 2) {
        ConsoleDevice console(nullptr);
        for (std::uint16_t q = 0; q < 2; ++q) configure(queues[q], q, queue_size, features);
        console.enqueue_input(std::as_bytes(std::span(data, std::min<std::size_t>(size, 300))));
        if (console.activate({&memory, std::span(queues, 2), &interrupt, features})) {
            console.queue_notify(1);
            console.queue_notify(0);
        }
    } else if (which == 3) {
        auto& net = net_device();
        // Whatever the guest sent last time goes; two frames from the host wait for rx buffers.
        char drain[2048];
        while (::recv(net.host.get(), drain, sizeof drain, MSG_DONTWAIT) > 0) {}
        const std::size_t frame = std::min<std::size_t>(size, 1514);
        if (frame >= NetDevice::kMinFrame) {
            (void)::send(net.host.get(), data, frame, MSG_DONTWAIT);
            (void)::send(net.host.get(), data, NetDevice::kMinFrame, MSG_DONTWAIT);
        }
        for (std::uint16_t q = 0; q < 2; ++q) configure(queues[q], q, queue_size, features);
        if (net.device->activate({&memory, std::span(queues, 2), &interrupt, features})) {
            net.device->queue_notify(1);
            net.device->queue_notify(0);
            net.device->reset();
        }
    } else {
        configure(queues[0], 0, queue_size, features);
        BlockDevice device(backend, "fuzz");
        if (device.activate({&memory, std::span(queues, 1), &interrupt, features})) device.queue_notify(0);
    }
    return 0;
}
