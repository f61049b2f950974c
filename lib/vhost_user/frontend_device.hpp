// FrontendDevice: a virtio device whose queues run in a vhost-user back end (virtiofsd), behind
// our own virtio-mmio transport. The transport registers, the feature negotiation with the
// driver and the config space stay ours; the rings are handed over on DRIVER_OK.
//
//   kick   one eventfd per queue, made here. The DeviceManager registers it as the queue's KVM
//          ioeventfd (queue_notify_eventfd), so a guest's QueueNotify goes from KVM straight to
//          the back end; where KVM refuses, the MMIO exit lands in queue_notify(), which writes it.
//   call   one eventfd per queue, watched by this device's thread: a signal becomes the
//          transport's used-buffer interrupt (InterruptStatus bit 0, then the GSI's irqfd). It is
//          not a KVM irqfd of its own: the virtio-mmio driver reads InterruptStatus to learn why.
//
// The device offers the driver what the back end offers, within VERSION_1 and the split ring's
// INDIRECT_DESC and EVENT_IDX (the back end reads those rings; our transport never does).
//
// A back end that dies or misbehaves fails the activation (the transport marks the device
// DEVICE_NEEDS_RESET) or, once running, simply stops completing requests; reset() then does not
// wait for it. The VMM never blocks on it for longer than one reply timeout per message.
#pragma once

#include "devices/virtio/device.hpp"
#include "vhost_user/frontend.hpp"

#include "base/fd.hpp"

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace boxlite::vhost_user {

struct FrontendDeviceOptions {
    devices::virtio::DeviceType type = devices::virtio::DeviceType::Fs;
    /// One entry per queue: its largest size.
    std::vector<std::uint16_t> queue_sizes;
    /// The device's config space, as the driver reads it.
    std::vector<std::byte> config;
};

/// virtio-fs (virtio 1.2 §5.11): the config space for `tag` (at most 36 bytes, not empty) and
/// one request queue, and the queue sizes (hiprio + requests). Config error for a bad tag.
BoxliteResult<FrontendDeviceOptions> virtio_fs_options(std::string_view tag, std::uint16_t queue_size = 128);

class FrontendDevice final : public devices::virtio::VirtioDevice {
public:
    /// Opens the session (Frontend::open) and makes the kick and call eventfds.
    static BoxliteResult<std::shared_ptr<FrontendDevice>> create(Frontend frontend, FrontendDeviceOptions options);
    ~FrontendDevice() override;
    FrontendDevice(const FrontendDevice&) = delete;
    FrontendDevice& operator=(const FrontendDevice&) = delete;

    [[nodiscard]] devices::virtio::DeviceType device_type() const override { return options_.type; }
    [[nodiscard]] std::uint64_t device_features() const override { return offered_; }
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return options_.queue_sizes; }
    void read_config(std::uint64_t offset, std::span<std::byte> data) override;
    BoxliteResult<void> activate(const devices::virtio::ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;
    [[nodiscard]] int queue_notify_eventfd(std::uint16_t queue) const override;

    /// False once the back end's session ended; failure() says why.
    [[nodiscard]] bool connected() const;
    [[nodiscard]] std::string failure() const;
    /// Signals the back end wrote on the call eventfds (each write counts, also those that
    /// arrived while the device was inactive and were dropped).
    [[nodiscard]] std::uint64_t calls() const noexcept { return calls_.load(); }
    [[nodiscard]] bool active() const noexcept { return active_.load(); }

private:
    FrontendDevice(Frontend frontend, FrontendDeviceOptions options, std::uint64_t offered);
    BoxliteResult<void> make_eventfds();
    void watch_calls();

    Frontend frontend_;  // guarded by mutex_
    FrontendDeviceOptions options_;
    std::uint64_t offered_;
    std::vector<base::OwnedFd> kicks_;
    std::vector<base::OwnedFd> calls_fds_;
    base::OwnedFd stop_;
    std::thread watcher_;

    mutable std::mutex mutex_;
    std::vector<std::uint32_t> started_;  // rings handed to the back end
    // The interrupt the watcher raises; set while active, under interrupt_mutex_ so reset()
    // knows no signal is in flight once it cleared it.
    std::mutex interrupt_mutex_;
    devices::virtio::Interrupt* interrupt_ = nullptr;
    std::atomic<bool> active_{false};
    std::atomic<std::uint64_t> calls_{0};
};

}  // namespace boxlite::vhost_user
