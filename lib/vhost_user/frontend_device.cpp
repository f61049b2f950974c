#include "vhost_user/frontend_device.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace boxlite::vhost_user {
namespace {

using devices::virtio::kFeatureRingEventIdx;
using devices::virtio::kFeatureRingIndirectDesc;
using devices::virtio::kFeatureVersion1;

/// What we let through from the back end to the driver: the back end reads the split rings
/// itself, so their options are between the two; anything touching the transport (packed rings,
/// ACCESS_PLATFORM, notification data) our transport does not do.
constexpr std::uint64_t kPassedFeatures = kFeatureVersion1 | kFeatureRingIndirectDesc | kFeatureRingEventIdx;

/// virtio-fs config (virtio 1.2 §5.11.4).
constexpr std::size_t kFsTagSize = 36;

void signal(int fd) {
    const std::uint64_t one = 1;
    // A full counter (EAGAIN) still has the notification pending: nothing is lost.
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
}

}  // namespace

BoxliteResult<FrontendDeviceOptions> virtio_fs_options(std::string_view tag, std::uint16_t queue_size) {
    if (tag.empty() || tag.size() > kFsTagSize)
        return fail(ErrorKind::Config, "virtio-fs tag '{}': {} bytes; 1 to {} allowed", tag, tag.size(), kFsTagSize);
    FrontendDeviceOptions options;
    options.type = devices::virtio::DeviceType::Fs;
    options.queue_sizes = {queue_size, queue_size};  // hiprio, one request queue
    options.config.assign(kFsTagSize + 4, std::byte{0});
    std::memcpy(options.config.data(), tag.data(), tag.size());
    const std::uint32_t request_queues = 1;  // little-endian on x86
    std::memcpy(options.config.data() + kFsTagSize, &request_queues, 4);
    return options;
}

BoxliteResult<std::shared_ptr<FrontendDevice>> FrontendDevice::create(Frontend frontend,
                                                                      FrontendDeviceOptions options) {
    if (options.queue_sizes.empty() || options.queue_sizes.size() > kVringIndexMask)
        return fail(ErrorKind::Config, "vhost-user device: {} queues (1 to {} allowed)", options.queue_sizes.size(),
                    kVringIndexMask);
    BOXLITE_TRY_VOID(frontend.open());
    const std::uint64_t offered = frontend.features() & kPassedFeatures;
    if (!(offered & kFeatureVersion1))
        return fail(
            ErrorKind::Engine,
            "vhost-user back end offers features {:#x} without VERSION_1; a virtio-mmio version 2 device needs it",
            frontend.features());
    std::shared_ptr<FrontendDevice> device(new FrontendDevice(std::move(frontend), std::move(options), offered));
    BOXLITE_TRY_VOID(device->make_eventfds());
    device->watcher_ = std::thread([raw = device.get()] { raw->watch_calls(); });
    return device;
}

FrontendDevice::FrontendDevice(Frontend frontend, FrontendDeviceOptions options, std::uint64_t offered)
    : frontend_(std::move(frontend)), options_(std::move(options)), offered_(offered) {}

FrontendDevice::~FrontendDevice() {
    if (stop_) signal(stop_.get());
    if (watcher_.joinable()) watcher_.join();
}

BoxliteResult<void> FrontendDevice::make_eventfds() {
    auto make = [](const char* what) -> BoxliteResult<base::OwnedFd> {
        base::OwnedFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd) return fail_errno(ErrorKind::Engine, fmt::format("vhost-user device: eventfd for {}", what), errno);
        return fd;
    };
    for (std::size_t i = 0; i < options_.queue_sizes.size(); ++i) {
        BOXLITE_TRY(auto kick, make("a kick"));
        BOXLITE_TRY(auto call, make("a call"));
        kicks_.push_back(std::move(kick));
        calls_fds_.push_back(std::move(call));
    }
    BOXLITE_TRY(stop_, make("stopping"));
    return {};
}

void FrontendDevice::watch_calls() {
    std::vector<pollfd> fds;
    for (const auto& call : calls_fds_) fds.push_back({call.get(), POLLIN, 0});
    fds.push_back({stop_.get(), POLLIN, 0});
    for (;;) {
        const int ready = ::poll(fds.data(), fds.size(), -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds.back().revents) return;
        for (std::size_t i = 0; i + 1 < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            std::uint64_t count = 0;
            if (::read(fds[i].fd, &count, sizeof count) != sizeof count) continue;
            calls_.fetch_add(count, std::memory_order_relaxed);
            std::lock_guard lock(interrupt_mutex_);
            if (interrupt_) interrupt_->signal_used_queue(static_cast<std::uint16_t>(i));
        }
    }
}

void FrontendDevice::read_config(std::uint64_t offset, std::span<std::byte> data) {
    devices::virtio::read_config_bytes(options_.config, offset, data);
}

int FrontendDevice::queue_notify_eventfd(std::uint16_t queue) const {
    return queue < kicks_.size() ? kicks_[queue].get() : -1;
}

void FrontendDevice::queue_notify(std::uint16_t queue) {
    if (queue < kicks_.size() && active_.load()) signal(kicks_[queue].get());
}

BoxliteResult<void> FrontendDevice::activate(const devices::virtio::ActivateContext& context) {
    std::lock_guard lock(mutex_);
    if (!context.memory) return fail(ErrorKind::Internal, "vhost-user device activated without guest memory");
    if (!frontend_.connected())
        return fail(ErrorKind::Engine, "vhost-user back end is gone ({}); the device cannot start",
                    frontend_.failure());
    BOXLITE_TRY_VOID(frontend_.set_features(context.features & offered_));
    BOXLITE_TRY_VOID(frontend_.set_mem_table(*context.memory));
    {
        std::lock_guard interrupt_lock(interrupt_mutex_);
        interrupt_ = context.interrupt;
    }
    for (std::uint32_t i = 0; i < context.queues.size() && i < kicks_.size(); ++i) {
        const auto& queue = context.queues[i];
        if (!queue.ready) continue;
        const FrontendRing ring{i,
                                queue.size,
                                queue.desc_table,
                                queue.avail_ring,
                                queue.used_ring,
                                queue.next_avail(),
                                kicks_[i].get(),
                                calls_fds_[i].get()};
        if (auto started = frontend_.start_ring(ring, *context.memory); !started) {
            for (auto index : started_) (void)frontend_.stop_ring(index);
            started_.clear();
            std::lock_guard interrupt_lock(interrupt_mutex_);
            interrupt_ = nullptr;
            return fail(started.error());
        }
        started_.push_back(i);
    }
    active_ = true;
    return {};
}

void FrontendDevice::reset() {
    std::lock_guard lock(mutex_);
    {
        // After this no call becomes an interrupt: the transport may go away.
        std::lock_guard interrupt_lock(interrupt_mutex_);
        interrupt_ = nullptr;
    }
    active_ = false;
    // A back end that is gone fails each at once; a stalled one costs one timeout, then the
    // session is over and the rest fail at once.
    for (auto index : started_) (void)frontend_.stop_ring(index);
    started_.clear();
}

bool FrontendDevice::connected() const {
    std::lock_guard lock(mutex_);
    return frontend_.connected();
}

std::string FrontendDevice::failure() const {
    std::lock_guard lock(mutex_);
    return frontend_.failure();
}

}  // namespace boxlite::vhost_user
