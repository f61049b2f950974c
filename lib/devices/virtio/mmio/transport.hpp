// The virtio-mmio transport, modern interface (virtio 1.2 §4.2, register layout version 2).
// It owns the queues and the feature/status negotiation and forwards to a VirtioDevice that
// does not know it is on MMIO. Every register write is guest-controlled: unknown offsets and
// misaligned or wrongly sized accesses are ignored, queue changes after DRIVER_OK are refused,
// and a device whose activation fails is marked DEVICE_NEEDS_RESET instead of running.
//
// Threads and locks. Register accesses come from any vCPU thread; notify_queue() from a vCPU
// (QueueNotify as an MMIO exit) or from the VMM's event loop (QueueNotify as an ioeventfd);
// devices with threads of their own (vsock) run their queues from those too. Two locks, always
// taken in this order and never the other way round:
//   1. the transport's `mutex_`: status, features, selectors, the queues' layout fields and
//      `ready`; every register access but QueueNotify holds it for the whole access;
//   2. the device's own mutex: its activation context and everything its queue handlers touch
//      (including the queues' ring indices — pop/add_used only run under it).
// The queues' layout fields are written only before DRIVER_OK (writes after it are refused),
// and the device reads them only after activation, so the two locks never guard the same
// field at the same time. Reset (Status = 0) holds mutex_ and calls device->reset(), which
// waits for a queue handler in progress to finish on the device mutex; only then are the
// queues cleared. notify_queue() checks `activated_` under mutex_ and calls the device outside
// it, so a long request (QCOW2 I/O, fdatasync) never blocks register accesses; a notify that
// loses the race with a reset finds the device inactive and does nothing. Interrupts
// (signal_used_queue) touch only the atomic InterruptStatus and the irqfd, so a device may
// raise them holding its own lock.
#pragma once

#include "devices/virtio/device.hpp"
#include "memory/bus.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace boxlite::devices::virtio {

class MmioTransport final : public vmm::BusDevice, private Interrupt {
public:
    static constexpr std::uint32_t kMagic = 0x74726976;  // "virt"
    static constexpr std::uint32_t kVersion = 2;
    static constexpr std::uint32_t kVendorId = 0x4c584f42;  // "BOXL"
    // Register offsets.
    static constexpr std::uint64_t kMagicValue = 0x000, kVersionReg = 0x004, kDeviceId = 0x008, kVendorIdReg = 0x00c,
                                   kDeviceFeatures = 0x010, kDeviceFeaturesSel = 0x014, kDriverFeatures = 0x020,
                                   kDriverFeaturesSel = 0x024, kQueueSel = 0x030, kQueueNumMax = 0x034,
                                   kQueueNum = 0x038, kQueueReady = 0x044, kQueueNotify = 0x050,
                                   kInterruptStatus = 0x060, kInterruptAck = 0x064, kStatus = 0x070,
                                   kQueueDescLow = 0x080, kQueueDescHigh = 0x084, kQueueDriverLow = 0x090,
                                   kQueueDriverHigh = 0x094, kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4,
                                   kShmSel = 0x0ac, kShmLenLow = 0x0b0, kShmLenHigh = 0x0b4, kShmBaseLow = 0x0b8,
                                   kShmBaseHigh = 0x0bc, kConfigGeneration = 0x0fc, kConfig = 0x100;
    // Device status bits.
    static constexpr std::uint32_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4,
                                   kStatusFeaturesOk = 8, kStatusNeedsReset = 64, kStatusFailed = 128;
    static constexpr std::uint32_t kInterruptVring = 1, kInterruptConfig = 2;

    /// `memory` must outlive the transport; `raise_interrupt` pulses the device's interrupt line
    /// (an irqfd write under KVM, a counter in tests).
    MmioTransport(std::shared_ptr<VirtioDevice> device, const vmm::GuestMemory& memory,
                  std::function<void()> raise_interrupt);
    /// Resets an active device first: a device with threads of its own (a vhost-user frontend's
    /// call watcher) must stop raising this transport's interrupt before it goes away.
    ~MmioTransport() override;
    MmioTransport(const MmioTransport&) = delete;
    MmioTransport& operator=(const MmioTransport&) = delete;

    void read(std::uint64_t offset, std::span<std::byte> data) override;
    void write(std::uint64_t offset, std::span<const std::byte> data) override;

    /// What QueueNotify does, for an ioeventfd loop that bypasses the MMIO exit. Any thread.
    void notify_queue(std::uint16_t queue);

    [[nodiscard]] std::uint32_t status() const;
    [[nodiscard]] bool activated() const;
    [[nodiscard]] VirtioDevice& device() noexcept { return *device_; }
    [[nodiscard]] std::uint32_t interrupt_status() const noexcept { return interrupt_status_.load(); }
    /// Why the last activation failed (empty if none).
    [[nodiscard]] std::string last_error() const;
    /// QueueNotify writes that reached us as MMIO accesses (not through an ioeventfd).
    [[nodiscard]] std::uint64_t mmio_notifies() const noexcept { return mmio_notifies_.load(); }

private:
    void signal_used_queue(std::uint16_t queue) override;
    void signal_config_change() override;
    std::uint32_t read_register(std::uint64_t offset);
    void write_register(std::uint64_t offset, std::uint32_t value);
    void set_status(std::uint32_t value);
    void reset_locked();
    VirtQueue* selected_queue();

    std::shared_ptr<VirtioDevice> device_;
    const vmm::GuestMemory& memory_;
    std::function<void()> raise_interrupt_;

    mutable std::mutex mutex_;
    std::vector<VirtQueue> queues_;
    std::uint32_t status_ = 0;
    std::uint32_t device_features_sel_ = 0;
    std::uint32_t driver_features_sel_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint32_t queue_sel_ = 0;
    std::uint32_t config_generation_ = 0;
    bool activated_ = false;
    std::string last_error_;
    std::atomic<std::uint32_t> interrupt_status_{0};
    std::atomic<std::uint64_t> mmio_notifies_{0};
};

}  // namespace boxlite::devices::virtio
