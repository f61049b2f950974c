// DeviceManager: puts devices on a Machine's buses at the addresses layout.hpp assigns —
// COM1, the i8042, the ACPI sleep registers, and virtio-mmio windows with one GSI each, wired
// to an irqfd so a device interrupt never needs a vCPU exit. The ACPI builder reads the
// resulting list to describe every virtio-mmio device in the DSDT.
//
// Queue notifications: each queue's QueueNotify address gets an ioeventfd (datamatch = the
// queue index) served by one EventLoop thread, so a notify never exits to userspace and the
// device runs off the vCPU thread. Where KVM refuses an ioeventfd, that queue falls back to
// the MMIO exit, and the device runs on the vCPU thread that wrote QueueNotify. Both paths end
// in MmioTransport::notify_queue, which is safe from any thread (see transport.hpp). A device
// that names its own notify eventfd (VirtioDevice::queue_notify_eventfd: a vhost-user back end's
// kick) gets that one registered instead, outside the loop.
#pragma once

#include "devices/legacy/i8042.hpp"
#include "devices/legacy/uart8250.hpp"
#include "devices/virtio/mmio/transport.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/machine.hpp"

#include <memory>
#include <vector>

namespace boxlite::vmm {

struct VirtioMmioSlot {
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    std::uint32_t gsi = 0;
    std::shared_ptr<devices::virtio::MmioTransport> transport;
};

struct DeviceManagerOptions {
    /// Serve QueueNotify through ioeventfds and the event loop (false: every notify is an MMIO
    /// exit handled on the vCPU thread, as when KVM refuses ioeventfds).
    bool ioeventfd = true;
};

class DeviceManager {
public:
    explicit DeviceManager(Machine& machine, DeviceManagerOptions options = {})
        : machine_(machine), options_(options) {}
    /// Stops the event loop before any device goes away.
    ~DeviceManager();
    DeviceManager(const DeviceManager&) = delete;
    DeviceManager& operator=(const DeviceManager&) = delete;

    /// COM1 writing to `console`, the i8042 (reset) and the ACPI sleep control (power-off).
    BoxliteResult<void> add_legacy_devices(devices::Uart8250::Sink console);
    /// The next virtio-mmio window and GSI, serving `device`.
    BoxliteResult<VirtioMmioSlot> add_virtio_device(std::shared_ptr<devices::virtio::VirtioDevice> device);

    [[nodiscard]] const std::vector<VirtioMmioSlot>& virtio_slots() const noexcept { return slots_; }
    [[nodiscard]] devices::Uart8250* uart() const noexcept { return uart_.get(); }

    /// Stops the event loop: no device runs on its thread afterwards (call it before flushing
    /// a disk the devices write to). Idempotent.
    void stop_event_loop();
    /// Queues whose notifications arrive through an ioeventfd, and how many notifications the
    /// event loop has served.
    [[nodiscard]] std::size_t ioeventfd_queues() const noexcept { return ioeventfd_queues_; }
    /// Of those, the queues whose ioeventfd is the device's own kick fd (vhost-user: KVM signals
    /// the back end directly).
    [[nodiscard]] std::size_t direct_ioeventfd_queues() const noexcept { return direct_ioeventfd_queues_; }
    [[nodiscard]] std::uint64_t ioeventfd_notifies() const noexcept { return loop_ ? loop_->dispatched() : 0; }
    /// Why notifications fall back to MMIO exits (empty when every queue has an ioeventfd).
    [[nodiscard]] const std::string& ioeventfd_fallback_reason() const noexcept { return fallback_reason_; }

private:
    /// An eventfd registered as an irqfd for `gsi` (or -1 without an in-kernel irqchip).
    BoxliteResult<int> make_irqfd(std::uint32_t gsi);
    /// One ioeventfd per queue of `slot`; on failure, records why and leaves the rest to MMIO exits.
    void attach_ioeventfds(const VirtioMmioSlot& slot, std::size_t queues);

    Machine& machine_;
    DeviceManagerOptions options_;
    std::shared_ptr<devices::Uart8250> uart_;
    std::vector<VirtioMmioSlot> slots_;
    std::vector<int> eventfds_;
    std::unique_ptr<EventLoop> loop_;
    std::size_t ioeventfd_queues_ = 0;
    std::size_t direct_ioeventfd_queues_ = 0;
    std::string fallback_reason_;
};

}  // namespace boxlite::vmm
