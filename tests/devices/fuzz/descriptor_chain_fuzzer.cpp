// libFuzzer target: the guest writes anything it likes into the descriptor table and rings;
// popping chains and serving them as virtio-blk requests must never touch memory outside
// guest RAM, loop, or allocate without bound.
//
// Input: byte 0 = log2 queue size (mod 9), byte 1 = feature bits (event-idx, indirect),
// the rest = the first bytes of a 64 KiB guest RAM image: the descriptor table at 0, the
// available ring right after it, the used ring after that (packed, so short inputs reach every
// structure), buffers anywhere.
#include "devices/virtio/blk/device.hpp"
#include "devices/virtio/queue.hpp"
#include "vmm/memory.hpp"

#include "../memory_backend.hpp"

#include <cstring>

using namespace boxlite;
using namespace boxlite::devices::virtio;

namespace {

class NullInterrupt final : public Interrupt {
public:
    void signal_used_queue(std::uint16_t) override {}
    void signal_config_change() override {}
};

constexpr std::uint64_t kRam = 64 * 1024;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    static vmm::GuestMemory memory = std::move(*vmm::GuestMemory::create_flat(0, kRam));
    static auto backend = std::make_shared<devices::testing::MemoryBackend>(64 * 1024);
    const std::uint16_t queue_size = static_cast<std::uint16_t>(1u << (data[0] % 9));
    std::uint64_t features = kFeatureVersion1;
    if (data[1] & 1) features |= kFeatureRingEventIdx;
    if (data[1] & 2) features |= kFeatureRingIndirectDesc;
    auto ram = *memory.slice(0, kRam);
    std::memset(ram.data(), 0, ram.size());
    std::memcpy(ram.data(), data + 2, std::min<std::size_t>(size - 2, kRam));

    const std::uint64_t avail = 16ULL * queue_size;
    const std::uint64_t used = (avail + 6 + 2ULL * queue_size + 3) & ~3ULL;

    // 1. Raw pops.
    VirtQueue queue(256);
    queue.size = queue_size;
    queue.desc_table = 0;
    queue.avail_ring = avail;
    queue.used_ring = used;
    queue.ready = true;
    if (!queue.validate(memory)) return 0;
    queue.activate(features);
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

    // 2. The same rings (as the guest left them) served as virtio-blk requests.
    std::memcpy(ram.data(), data + 2, std::min<std::size_t>(size - 2, kRam));
    VirtQueue queues[1] = {VirtQueue(256)};
    queues[0].size = queue_size;
    queues[0].desc_table = 0;
    queues[0].avail_ring = avail;
    queues[0].used_ring = used;
    queues[0].ready = true;
    queues[0].activate(features);
    NullInterrupt interrupt;
    BlockDevice device(backend, "fuzz");
    if (device.activate({&memory, queues, &interrupt, features})) device.queue_notify(0);
    return 0;
}
