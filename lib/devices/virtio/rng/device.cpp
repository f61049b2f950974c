#include "devices/virtio/rng/device.hpp"

#include <sys/random.h>

#include <cerrno>

namespace boxlite::devices::virtio {

BoxliteResult<void> RngDevice::activate(const ActivateContext& context) {
    std::lock_guard lock(mutex_);
    if (context.queues.empty() || !context.queues[0].ready)
        return fail(ErrorKind::InvalidArgument, "virtio-rng needs its request queue set up before DRIVER_OK");
    context_ = context;
    active_ = true;
    return {};
}

void RngDevice::reset() {
    std::lock_guard lock(mutex_);
    active_ = false;
    context_ = {};
}

std::uint64_t RngDevice::bytes_served() const {
    std::lock_guard lock(mutex_);
    return bytes_served_;
}

void RngDevice::queue_notify(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    if (!active_ || queue != 0) return;
    drain_queue(
        context_, 0,
        [this](const DescriptorChain& chain) -> std::uint32_t {
            std::uint32_t filled = 0;
            for (const auto& buffer : chain.writable) {
                std::size_t offset = 0;
                while (offset < buffer.host.size() && filled < kMaxBytesPerRequest) {
                    const std::size_t want = std::min<std::size_t>(buffer.host.size() - offset,
                                                                   kMaxBytesPerRequest - filled);
                    const ssize_t got = ::getrandom(buffer.host.data() + offset, want, 0);
                    if (got < 0) {
                        if (errno == EINTR) continue;
                        return filled;
                    }
                    offset += static_cast<std::size_t>(got);
                    filled += static_cast<std::uint32_t>(got);
                }
            }
            bytes_served_ += filled;
            return filled;
        },
        &bad_chains_);
}

}  // namespace boxlite::devices::virtio
