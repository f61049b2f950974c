// virtio-console (virtio 1.2 §5.3), single port, no multiport: queue 0 carries host → guest
// bytes (receiveq), queue 1 guest → host (transmitq). Output goes to a sink (console.log);
// input from enqueue_input() waits in a bounded buffer until the guest posts receive buffers.
#pragma once

#include "devices/virtio/device.hpp"

#include <deque>
#include <functional>
#include <mutex>

namespace boxlite::devices::virtio {

class ConsoleDevice final : public VirtioDevice {
public:
    using Sink = std::function<void(std::span<const std::byte>)>;
    static constexpr std::uint16_t kQueueSize = 256;
    /// Host input kept while the guest has no receive buffers; beyond this it is dropped.
    static constexpr std::size_t kMaxPendingInput = 64 * 1024;

    explicit ConsoleDevice(Sink sink) : sink_(std::move(sink)) {}

    [[nodiscard]] DeviceType device_type() const override { return DeviceType::Console; }
    [[nodiscard]] std::uint64_t device_features() const override;
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
    void read_config(std::uint64_t offset, std::span<std::byte> data) override;
    BoxliteResult<void> activate(const ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;

    /// Bytes typed at the console (from any thread).
    void enqueue_input(std::span<const std::byte> bytes);
    [[nodiscard]] std::size_t pending_input() const;

private:
    void deliver_input_locked();

    Sink sink_;
    mutable std::mutex mutex_;
    ActivateContext context_;
    bool active_ = false;
    std::deque<std::byte> input_;
    std::uint64_t bad_chains_ = 0;
};

}  // namespace boxlite::devices::virtio
