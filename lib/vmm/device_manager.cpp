#include "vmm/device_manager.hpp"

#include "vmm/layout.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace boxlite::vmm {
namespace {

std::function<void()> pulse(int fd) {
    if (fd < 0) return nullptr;
    return [fd] {
        const std::uint64_t one = 1;
        // A full counter (EAGAIN) still has the interrupt pending: nothing is lost.
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof(one));
    };
}

}  // namespace

DeviceManager::~DeviceManager() {
    stop_event_loop();
    for (int fd : eventfds_) ::close(fd);
}

void DeviceManager::stop_event_loop() {
    if (loop_) loop_->stop();
}

void DeviceManager::attach_ioeventfds(const VirtioMmioSlot& slot, std::size_t queues) {
    if (!options_.ioeventfd) {
        fallback_reason_ = "ioeventfds are switched off";
        return;
    }
    if (!loop_) {
        auto loop = EventLoop::create();
        if (!loop) {
            fallback_reason_ = loop.error().message();
            return;
        }
        // Running before any ioeventfd exists, so no registered queue is ever unserved.
        if (auto started = (*loop)->start(); !started) {
            fallback_reason_ = started.error().message();
            return;
        }
        loop_ = std::move(*loop);
    }
    const std::uint64_t notify = slot.base + devices::virtio::MmioTransport::kQueueNotify;
    for (std::size_t queue = 0; queue < queues; ++queue) {
        // A device whose queues run elsewhere (a vhost-user back end) has its own kick eventfd:
        // KVM signals it directly, and neither the loop nor the device sees the notify.
        if (const int own = slot.transport->device().queue_notify_eventfd(static_cast<std::uint16_t>(queue));
            own >= 0) {
            if (auto registered = machine_.vm().register_ioeventfd(own, notify, 4, queue, false); !registered) {
                fallback_reason_ = registered.error().message();
                return;
            }
            ++ioeventfd_queues_;
            ++direct_ioeventfd_queues_;
            continue;
        }
        base::OwnedFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd.valid()) {
            fallback_reason_ = fmt::format("eventfd for queue notifications: {}", std::strerror(errno));
            return;
        }
        // Into the loop first, then KVM: a registered ioeventfd nobody reads would make the
        // queue deaf, while a watched one KVM refused is merely never signalled.
        const int raw = fd.get();
        auto transport = slot.transport;
        const auto index = static_cast<std::uint16_t>(queue);
        if (auto added = loop_->add(std::move(fd), [transport, index] { transport->notify_queue(index); }); !added) {
            fallback_reason_ = added.error().message();
            return;
        }
        // QueueNotify is a 32-bit register holding the queue index: one ioeventfd per value.
        if (auto registered = machine_.vm().register_ioeventfd(raw, notify, 4, queue, false); !registered) {
            fallback_reason_ = registered.error().message();
            return;
        }
        ++ioeventfd_queues_;
    }
}

BoxliteResult<int> DeviceManager::make_irqfd(std::uint32_t gsi) {
    if (!machine_.config().irqchip) return -1;
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return fail_errno(ErrorKind::Engine, "eventfd for an interrupt line", errno);
    eventfds_.push_back(fd);
    BOXLITE_TRY_VOID(machine_.vm().register_irqfd(fd, gsi));
    return fd;
}

BoxliteResult<void> DeviceManager::add_legacy_devices(devices::Uart8250::Sink console) {
    BOXLITE_TRY(int uart_irq, make_irqfd(layout::kCom1Irq));
    uart_ = std::make_shared<devices::Uart8250>(std::move(console), pulse(uart_irq));
    BOXLITE_TRY_VOID(machine_.pio_bus().insert(layout::kCom1Port, layout::kCom1PortCount, uart_));
    Machine* machine = &machine_;
    auto i8042 = std::make_shared<devices::I8042>(
        [machine] { machine->request_stop(StopReason::Reset, "the guest reset the machine (i8042)"); });
    BOXLITE_TRY_VOID(machine_.pio_bus().insert(layout::kI8042DataPort,
                                               layout::kI8042CommandPort - layout::kI8042DataPort + 1, i8042));
    auto sleep = std::make_shared<devices::AcpiSleepControl>(
        [machine] { machine->request_stop(StopReason::PowerOff, "the guest powered off (ACPI S5)"); });
    BOXLITE_TRY_VOID(machine_.pio_bus().insert(layout::kAcpiSleepControlPort, 2, sleep));
    return {};
}

BoxliteResult<VirtioMmioSlot> DeviceManager::add_virtio_device(std::shared_ptr<devices::virtio::VirtioDevice> device) {
    if (slots_.size() >= layout::kVirtioMmioMaxDevices)
        return fail(ErrorKind::Config, "too many virtio devices (at most {})", layout::kVirtioMmioMaxDevices);
    const auto index = static_cast<std::uint32_t>(slots_.size());
    VirtioMmioSlot slot;
    slot.base = layout::kVirtioMmioBase + index * layout::kVirtioMmioSize;
    slot.size = layout::kVirtioMmioSize;
    slot.gsi = layout::kVirtioIrqBase + index;
    BOXLITE_TRY(int irq, make_irqfd(slot.gsi));
    slot.transport = std::make_shared<devices::virtio::MmioTransport>(std::move(device), machine_.memory(), pulse(irq));
    BOXLITE_TRY_VOID(machine_.mmio_bus().insert(slot.base, slot.size, slot.transport));
    attach_ioeventfds(slot, slot.transport->device().queue_max_sizes().size());
    slots_.push_back(slot);
    return slot;
}

}  // namespace boxlite::vmm
