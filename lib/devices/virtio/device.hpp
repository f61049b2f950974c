// VirtioDevice: what a device model implements, independent of the transport that serves it
// (our virtio-mmio transport under KVM, or a vhost-user back end under QEMU).
//
// Life cycle: the transport negotiates features and lets the driver configure queues; on
// DRIVER_OK it calls activate() with guest memory, the queues and an Interrupt; then every
// QueueNotify becomes queue_notify(i). reset() returns the device to its pre-activation state.
// queue_notify() may run on any vCPU thread or on the VMM's event-loop thread (ioeventfd),
// concurrently, so every device locks its own state; reset() may be called while another
// thread is in queue_notify() and must wait for it (the lock order is in mmio/transport.hpp).
#pragma once

#include "devices/virtio/queue.hpp"
#include "memory/guest_memory.hpp"

#include <boxlite/error.hpp>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace boxlite::devices::virtio {

/// Device IDs (virtio 1.2 §5).
enum class DeviceType : std::uint32_t { Net = 1, Block = 2, Console = 3, Rng = 4, Vsock = 19, Fs = 26 };

/// How a device tells the driver about completions or a config change.
class Interrupt {
public:
    virtual ~Interrupt() = default;
    virtual void signal_used_queue(std::uint16_t queue) = 0;
    virtual void signal_config_change() = 0;
};

struct ActivateContext {
    const vmm::GuestMemory* memory = nullptr;
    std::span<VirtQueue> queues;
    Interrupt* interrupt = nullptr;
    std::uint64_t features = 0;  ///< negotiated (driver-acked) feature bits
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    [[nodiscard]] virtual DeviceType device_type() const = 0;
    /// Offered features, including kFeatureVersion1.
    [[nodiscard]] virtual std::uint64_t device_features() const = 0;
    /// One entry per queue: its maximum size.
    [[nodiscard]] virtual std::vector<std::uint16_t> queue_max_sizes() const = 0;
    virtual void read_config(std::uint64_t offset, std::span<std::byte> data) = 0;
    virtual void write_config(std::uint64_t offset, std::span<const std::byte> data) {
        (void)offset;
        (void)data;  // read-only configuration by default
    }
    virtual BoxliteResult<void> activate(const ActivateContext& context) = 0;
    virtual void queue_notify(std::uint16_t queue) = 0;
    virtual void reset() = 0;
    /// An eventfd that KVM may signal directly for QueueNotify(queue) instead of calling
    /// queue_notify() (a device whose queues run in another process: its kick fd); -1 = none.
    [[nodiscard]] virtual int queue_notify_eventfd(std::uint16_t queue) const {
        (void)queue;
        return -1;
    }
};

/// Copies [offset, offset+out.size()) of a config structure; bytes past its end read as 0.
inline void read_config_bytes(std::span<const std::byte> config, std::uint64_t offset, std::span<std::byte> out) {
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::uint64_t at = offset + i;
        out[i] = at < config.size() && at >= offset ? config[static_cast<std::size_t>(at)] : std::byte{0};
    }
}

template <class T>
std::span<const std::byte> as_bytes_of(const T& value) {
    return std::as_bytes(std::span<const T, 1>(&value, 1));
}

/// Pops every chain of a queue, calling `handle(chain)` → bytes written; completes each one and
/// signals the driver once if it asked for it. Malformed chains were already completed by pop()
/// and are counted in `errors`.
template <class Handler>
void drain_queue(const ActivateContext& context, std::uint16_t queue_index, Handler&& handle,
                 std::uint64_t* errors = nullptr) {
    if (queue_index >= context.queues.size() || !context.memory) return;
    VirtQueue& queue = context.queues[queue_index];
    const vmm::GuestMemory& memory = *context.memory;
    bool completed = false;
    // Bounded: a guest refilling the ring as fast as we drain cannot pin this thread forever.
    for (std::uint32_t budget = 4u * queue.size + 1; budget > 0; --budget) {
        auto popped = queue.pop(memory);
        if (!popped) {
            if (errors) ++*errors;
            completed = true;
            continue;
        }
        if (!*popped) break;
        const std::uint32_t written = handle(**popped);
        queue.add_used(memory, (*popped)->head, written);
        completed = true;
    }
    if (completed && context.interrupt && queue.needs_notification(memory))
        context.interrupt->signal_used_queue(queue_index);
}

}  // namespace boxlite::devices::virtio
