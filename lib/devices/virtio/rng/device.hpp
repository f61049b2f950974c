// virtio-rng (virtio 1.2 §5.4): fills every device-writable buffer the guest offers with bytes
// from the host's getrandom(). One queue, no configuration. A single request is capped so a
// guest cannot make one exit draw gigabytes of entropy.
#pragma once

#include "devices/virtio/device.hpp"

#include <mutex>

namespace boxlite::devices::virtio {

class RngDevice final : public VirtioDevice {
public:
    static constexpr std::uint16_t kQueueSize = 256;
    static constexpr std::uint32_t kMaxBytesPerRequest = 64 * 1024;

    [[nodiscard]] DeviceType device_type() const override { return DeviceType::Rng; }
    [[nodiscard]] std::uint64_t device_features() const override {
        return kFeatureVersion1 | kFeatureRingEventIdx | kFeatureRingIndirectDesc;
    }
    [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(std::uint64_t, std::span<std::byte> data) override {
        for (auto& b : data) b = std::byte{0};
    }
    BoxliteResult<void> activate(const ActivateContext& context) override;
    void queue_notify(std::uint16_t queue) override;
    void reset() override;
    [[nodiscard]] std::uint64_t bytes_served() const;

private:
    mutable std::mutex mutex_;
    ActivateContext context_;
    bool active_ = false;
    std::uint64_t bytes_served_ = 0;
    std::uint64_t bad_chains_ = 0;
};

}  // namespace boxlite::devices::virtio
