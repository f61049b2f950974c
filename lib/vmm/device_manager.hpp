// DeviceManager: puts devices on a Machine's buses at the addresses layout.hpp assigns —
// COM1, the i8042, the ACPI sleep registers, and virtio-mmio windows with one GSI each, wired
// to an irqfd so a device interrupt never needs a vCPU exit. The ACPI builder reads the
// resulting list to describe every virtio-mmio device in the DSDT.
#pragma once

#include "devices/legacy/i8042.hpp"
#include "devices/legacy/uart8250.hpp"
#include "devices/virtio/mmio/transport.hpp"
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

class DeviceManager {
public:
    explicit DeviceManager(Machine& machine) : machine_(machine) {}
    ~DeviceManager();
    DeviceManager(const DeviceManager&) = delete;
    DeviceManager& operator=(const DeviceManager&) = delete;

    /// COM1 writing to `console`, the i8042 (reset) and the ACPI sleep control (power-off).
    BoxliteResult<void> add_legacy_devices(devices::Uart8250::Sink console);
    /// The next virtio-mmio window and GSI, serving `device`.
    BoxliteResult<VirtioMmioSlot> add_virtio_device(std::shared_ptr<devices::virtio::VirtioDevice> device);

    [[nodiscard]] const std::vector<VirtioMmioSlot>& virtio_slots() const noexcept { return slots_; }
    [[nodiscard]] devices::Uart8250* uart() const noexcept { return uart_.get(); }

private:
    /// An eventfd registered as an irqfd for `gsi` (or -1 without an in-kernel irqchip).
    BoxliteResult<int> make_irqfd(std::uint32_t gsi);

    Machine& machine_;
    std::shared_ptr<devices::Uart8250> uart_;
    std::vector<VirtioMmioSlot> slots_;
    std::vector<int> eventfds_;
};

}  // namespace boxlite::vmm
