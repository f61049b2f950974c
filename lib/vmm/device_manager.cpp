#include "vmm/device_manager.hpp"

#include "vmm/layout.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

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
    for (int fd : eventfds_) ::close(fd);
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

BoxliteResult<VirtioMmioSlot> DeviceManager::add_virtio_device(
    std::shared_ptr<devices::virtio::VirtioDevice> device) {
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
    slots_.push_back(slot);
    return slot;
}

}  // namespace boxlite::vmm
