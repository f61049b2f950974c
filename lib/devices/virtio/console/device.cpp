#include "devices/virtio/console/device.hpp"

namespace boxlite::devices::virtio {
namespace {
constexpr std::uint64_t kConsoleSize = 1ULL << 0;  // VIRTIO_CONSOLE_F_SIZE: cols/rows in config
constexpr std::uint16_t kReceiveQueue = 0, kTransmitQueue = 1;
}  // namespace

std::uint64_t ConsoleDevice::device_features() const {
    return kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc | kConsoleSize;
}

void ConsoleDevice::read_config(std::uint64_t offset, std::span<std::byte> data) {
    struct __attribute__((packed)) {
        std::uint16_t cols = 80, rows = 25;
        std::uint32_t max_nr_ports = 1;
        std::uint32_t emerg_wr = 0;
    } config;
    read_config_bytes(as_bytes_of(config), offset, data);
}

BoxliteResult<void> ConsoleDevice::activate(const ActivateContext& context) {
    std::lock_guard lock(mutex_);
    if (context.queues.size() != 2 || !context.queues[kReceiveQueue].ready || !context.queues[kTransmitQueue].ready)
        return fail(ErrorKind::InvalidArgument,
                    "virtio-console needs its receive and transmit queues before DRIVER_OK");
    context_ = context;
    active_ = true;
    deliver_input_locked();
    return {};
}

void ConsoleDevice::reset() {
    std::lock_guard lock(mutex_);
    active_ = false;
    context_ = {};
}

std::size_t ConsoleDevice::pending_input() const {
    std::lock_guard lock(mutex_);
    return input_.size();
}

void ConsoleDevice::enqueue_input(std::span<const std::byte> bytes) {
    std::lock_guard lock(mutex_);
    for (auto b : bytes) {
        if (input_.size() >= kMaxPendingInput) break;
        input_.push_back(b);
    }
    if (active_) deliver_input_locked();
}

void ConsoleDevice::deliver_input_locked() {
    if (input_.empty()) return;
    VirtQueue& queue = context_.queues[kReceiveQueue];
    const auto& memory = *context_.memory;
    bool delivered = false;
    while (!input_.empty()) {
        auto popped = queue.pop(memory);
        if (!popped) {
            ++bad_chains_;
            continue;
        }
        if (!*popped) break;
        ChainWriter writer(**popped);
        std::uint32_t written = 0;
        while (!input_.empty() && writer.remaining() > 0) {
            const std::byte b = input_.front();
            writer.write(std::span<const std::byte>(&b, 1));
            input_.pop_front();
            ++written;
        }
        queue.add_used(memory, (*popped)->head, written);
        delivered = true;
    }
    if (delivered && context_.interrupt && queue.needs_notification(memory))
        context_.interrupt->signal_used_queue(kReceiveQueue);
}

void ConsoleDevice::queue_notify(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    if (!active_) return;
    if (queue == kReceiveQueue) {
        deliver_input_locked();
        return;
    }
    if (queue != kTransmitQueue) return;
    drain_queue(
        context_, kTransmitQueue,
        [this](const DescriptorChain& chain) -> std::uint32_t {
            if (sink_)
                for (const auto& buffer : chain.readable) sink_(buffer.host);
            return 0;
        },
        &bad_chains_);
}

}  // namespace boxlite::devices::virtio
