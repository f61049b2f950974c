#include "vhost_user/backend.hpp"

#include "base/unix_address.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sys/eventfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace boxlite::vhost_user {
namespace {

using devices::virtio::VirtQueue;

/// Whether `fd` is an eventfd: kick and call fds must be, so that a read never blocks or spins
/// and a write never lands in some file.
bool is_eventfd(int fd) {
    std::array<char, 64> target{};
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const auto n = ::readlink(link.c_str(), target.data(), target.size() - 1);
    return n > 0 && std::string_view(target.data(), static_cast<std::size_t>(n)) == "anon_inode:[eventfd]";
}

}  // namespace

struct Backend::Ring {
    std::uint16_t num = 0;
    bool has_addr = false;
    std::uint64_t desc_user = 0, avail_user = 0, used_user = 0;
    std::uint16_t base = 0;
    base::OwnedFd kick;
    bool started = false;
    bool enabled = false;
};

/// The device's Interrupt: a write to the ring's call eventfd. The device calls it from its own
/// threads too, so the fds are guarded.
class Backend::CallInterrupt final : public devices::virtio::Interrupt {
public:
    explicit CallInterrupt(std::size_t rings) : fds_(rings) {}
    void set(std::size_t ring, base::OwnedFd fd) {
        std::lock_guard lock(mutex_);
        fds_[ring] = std::move(fd);
    }
    void clear() {
        std::lock_guard lock(mutex_);
        for (auto& fd : fds_) fd.reset();
    }
    void signal_used_queue(std::uint16_t queue) override {
        std::lock_guard lock(mutex_);
        if (queue >= fds_.size() || !fds_[queue]) return;
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fds_[queue].get(), &one, sizeof one);
        calls_.fetch_add(1, std::memory_order_relaxed);
    }
    // Config changes would need the back-end request channel, which we do not negotiate; our
    // devices never change their config after activation.
    void signal_config_change() override {}
    [[nodiscard]] std::uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }

private:
    std::mutex mutex_;
    std::vector<base::OwnedFd> fds_;
    std::atomic<std::uint64_t> calls_{0};
};

struct Backend::Message {
    Header header{};
    std::vector<std::byte> payload;
    std::vector<base::OwnedFd> fds;

    template <class T>
    BoxliteResult<T> as() const {
        if (payload.size() != sizeof(T))
            return fail(ErrorKind::InvalidArgument, "vhost-user {}: payload of {} bytes, expected {}",
                        request_name(header.request), payload.size(), sizeof(T));
        T value;
        std::memcpy(&value, payload.data(), sizeof(T));
        return value;
    }
};

namespace {

enum class ReadEnd { Message, Closed, Stopped };

/// Waits until `fd` is readable or `stop_fd` is; true when `fd` is.
bool wait_readable(int fd, int stop_fd) {
    for (;;) {
        std::array<pollfd, 2> fds{{{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}}};
        const int n = ::poll(fds.data(), stop_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (stop_fd >= 0 && fds[1].revents) return false;
        return true;
    }
}

/// Reads exactly `out.size()` bytes, gathering any fds that come with them (at most kMaxFds).
BoxliteResult<ReadEnd> read_exact(int fd, int stop_fd, std::span<std::byte> out, std::vector<base::OwnedFd>& fds) {
    std::size_t done = 0;
    while (done < out.size()) {
        if (!wait_readable(fd, stop_fd)) return ReadEnd::Stopped;
        alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
        iovec iov{out.data() + done, out.size() - done};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        const auto n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0 && errno == ECONNRESET) return ReadEnd::Closed;
        if (n < 0) return fail_errno(ErrorKind::Engine, "reading from the vhost-user frontend", errno);
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int received;
                std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fds.emplace_back(received);  // owned at once: closed on every error path
            }
        }
        if (msg.msg_flags & MSG_CTRUNC)
            return fail(ErrorKind::InvalidArgument, "vhost-user frontend sent more than {} file descriptors", kMaxFds);
        if (fds.size() > kMaxFds)
            return fail(ErrorKind::InvalidArgument, "vhost-user frontend sent more than {} file descriptors", kMaxFds);
        if (n == 0) return ReadEnd::Closed;  // at a boundary or mid-message: the frontend is gone either way
        done += static_cast<std::size_t>(n);
    }
    return ReadEnd::Message;
}

BoxliteResult<void> write_all(int fd, const void* data, std::size_t size) {
    const auto* bytes = static_cast<const char*>(data);
    while (size > 0) {
        const auto n = ::send(fd, bytes, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(ErrorKind::Engine, "replying to the vhost-user frontend", errno);
        bytes += n;
        size -= static_cast<std::size_t>(n);
    }
    return {};
}

}  // namespace

Backend::Backend(std::shared_ptr<devices::virtio::VirtioDevice> device, BackendOptions options)
    : device_(std::move(device)), options_(std::move(options)) {
    const auto sizes = device_->queue_max_sizes();
    frontend_queues_ = options_.frontend_queues == 0 || options_.frontend_queues > sizes.size()
                           ? static_cast<std::uint16_t>(sizes.size())
                           : options_.frontend_queues;
    rings_.resize(sizes.size());
    queues_.reserve(sizes.size());
    for (auto size : sizes) queues_.emplace_back(std::max(size, options_.max_ring_size));
    interrupt_ = std::make_unique<CallInterrupt>(sizes.size());
    stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

Backend::~Backend() { forget_session(); }

void Backend::stop() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_.get(), &one, sizeof one);
}

BackendStats Backend::stats() const {
    std::lock_guard lock(stats_mutex_);
    BackendStats out = stats_;
    out.calls = interrupt_->calls();
    return out;
}

void Backend::trace(std::string_view what) const {
    if (options_.trace) options_.trace(what);
}

std::uint64_t Backend::offered_features() const { return device_->device_features() | kFeatureProtocolFeatures; }

std::uint64_t Backend::offered_protocol_features() const {
    return kProtocolReplyAck | kProtocolConfig | kProtocolResetDevice;
}

BoxliteResult<void> Backend::serve(base::OwnedFd connection) {
    connection_ = std::move(connection);
    BoxliteResult<void> result;
    for (;;) {
        std::vector<pollfd> fds{{connection_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
        std::vector<std::size_t> ring_of;
        for (std::size_t i = 0; i < rings_.size(); ++i) {
            if (!rings_[i].kick) continue;
            fds.push_back({rings_[i].kick.get(), POLLIN, 0});
            ring_of.push_back(i);
        }
        const int n = ::poll(fds.data(), fds.size(), -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            result = fail_errno(ErrorKind::Engine, "polling the vhost-user frontend", errno);
            break;
        }
        if (fds[1].revents) break;  // stop()
        for (std::size_t i = 2; i < fds.size(); ++i)
            if (fds[i].revents) on_kick(ring_of[i - 2]);
        if (!fds[0].revents) continue;
        Message message;
        auto end = read_exact(connection_.get(), stop_fd_.get(),
                              std::as_writable_bytes(std::span<Header, 1>(&message.header, 1)), message.fds);
        if (!end) {
            result = fail(end.error());
            break;
        }
        if (*end != ReadEnd::Message) {
            trace(*end == ReadEnd::Closed ? "frontend closed the connection" : "stopped");
            break;
        }
        if (message.header.size > kMaxPayload) {
            result = fail(ErrorKind::InvalidArgument, "vhost-user {}: payload of {} bytes (at most {})",
                          request_name(message.header.request), message.header.size, kMaxPayload);
            break;
        }
        message.payload.resize(message.header.size);
        end = read_exact(connection_.get(), stop_fd_.get(), message.payload, message.fds);
        if (!end) {
            result = fail(end.error());
            break;
        }
        if (*end != ReadEnd::Message) {
            trace("frontend went away in the middle of a message");
            break;
        }
        {
            std::lock_guard lock(stats_mutex_);
            ++stats_.messages;
        }
        if (auto handled = handle(message); !handled) {
            result = fail(handled.error());
            break;
        }
    }
    if (!result) trace(fmt::format("ending the session: {}", result.error().message()));
    forget_session();
    connection_.reset();
    return result;
}

void Backend::on_kick(std::size_t ring) {
    std::uint64_t count = 0;
    const auto n = ::read(rings_[ring].kick.get(), &count, sizeof count);
    if (n != static_cast<ssize_t>(sizeof count)) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        // An eventfd always reads 8 bytes; anything else is not one any more (hung up): stop
        // listening to it rather than spin.
        rings_[ring].kick.reset();
        std::lock_guard lock(stats_mutex_);
        ++stats_.bad_kick_fds;
        return;
    }
    {
        std::lock_guard lock(stats_mutex_);
        ++stats_.kicks;
    }
    if (active_) device_->queue_notify(static_cast<std::uint16_t>(ring));
}

BoxliteResult<Backend::Ring*> Backend::ring_at(std::uint64_t index) {
    if (index >= rings_.size())
        return fail(ErrorKind::InvalidArgument, "vhost-user: ring {} does not exist (the device has {})", index,
                    rings_.size());
    return &rings_[static_cast<std::size_t>(index)];
}

BoxliteResult<void> Backend::reply(const Header& request, const void* payload, std::uint32_t size) {
    std::vector<std::byte> out(kHeaderSize + size);
    const Header header{request.request, kVersion | kFlagReply, size};
    std::memcpy(out.data(), &header, kHeaderSize);
    if (size) std::memcpy(out.data() + kHeaderSize, payload, size);
    return write_all(connection_.get(), out.data(), out.size());
}

BoxliteResult<void> Backend::ack(const Header& request, bool ok) {
    if (!(protocol_features_ & kProtocolReplyAck) || !(request.flags & kFlagNeedReply)) return {};
    const std::uint64_t status = ok ? 0 : 1;
    return reply(request, &status, sizeof status);
}

BoxliteResult<std::uint64_t> Backend::translate(std::uint64_t user_address) const {
    for (const auto& region : table_) {
        if (user_address >= region.userspace_addr && user_address - region.userspace_addr < region.memory_size)
            return region.guest_phys_addr + (user_address - region.userspace_addr);
    }
    return fail(ErrorKind::InvalidArgument, "vhost-user: ring address {:#x} is in no region of the memory table",
                user_address);
}

BoxliteResult<void> Backend::handle(Message& message) {
    const Header& header = message.header;
    trace(fmt::format("{} flags={:#x} size={} fds={}", request_name(header.request), header.flags, header.size,
                      message.fds.size()));
    if ((header.flags & kVersionMask) != kVersion)
        return fail(ErrorKind::InvalidArgument, "vhost-user message of version {} (only 1 exists)",
                    header.flags & kVersionMask);
    const auto request = static_cast<Request>(header.request);
    const bool takes_fds = request == Request::SetMemTable || request == Request::SetVringKick ||
                           request == Request::SetVringCall || request == Request::SetVringErr ||
                           request == Request::SetLogFd || request == Request::SetLogBase;
    if (!takes_fds && !message.fds.empty() && request_name(header.request) != "unknown")
        return fail(ErrorKind::InvalidArgument, "vhost-user {} came with {} file descriptors it cannot take",
                    request_name(header.request), message.fds.size());

    switch (request) {
        case Request::GetFeatures: {
            const std::uint64_t features = offered_features();
            return reply(header, &features, sizeof features);
        }
        case Request::SetFeatures: {
            BOXLITE_TRY(auto features, message.as<std::uint64_t>());
            if (features & ~offered_features())
                return fail(ErrorKind::InvalidArgument, "vhost-user: features {:#x} were not offered (offered {:#x})",
                            features, offered_features());
            if (active_ && features != features_) deactivate();
            features_ = features;
            return ack(header, true);
        }
        case Request::SetOwner: return ack(header, true);
        case Request::ResetOwner:
        case Request::ResetDevice: {
            auto keep_protocol = protocol_features_;
            forget_session();
            protocol_features_ = keep_protocol;
            return ack(header, true);
        }
        case Request::SetMemTable: return handle_mem_table(message);
        case Request::SetVringNum: {
            BOXLITE_TRY(auto state, message.as<VringState>());
            BOXLITE_TRY(Ring * ring, ring_at(state.index));
            const auto max = queues_[state.index].max_size();
            if (state.num == 0 || state.num > max || (state.num & (state.num - 1)) != 0)
                return fail(ErrorKind::InvalidArgument, "vhost-user: ring {} size {} is not a power of two in 1..{}",
                            state.index, state.num, max);
            deactivate();
            ring->num = static_cast<std::uint16_t>(state.num);
            return ack(header, true);
        }
        case Request::SetVringAddr: {
            BOXLITE_TRY(auto addr, message.as<VringAddr>());
            BOXLITE_TRY(Ring * ring, ring_at(addr.index));
            deactivate();
            ring->desc_user = addr.desc_user_addr;
            ring->avail_user = addr.avail_user_addr;
            ring->used_user = addr.used_user_addr;
            ring->has_addr = true;
            try_activate();
            return ack(header, true);
        }
        case Request::SetVringBase: {
            BOXLITE_TRY(auto state, message.as<VringState>());
            BOXLITE_TRY(Ring * ring, ring_at(state.index));
            if (state.num > 0xffff)
                return fail(ErrorKind::InvalidArgument, "vhost-user: ring {} base {} is not a 16-bit index",
                            state.index, state.num);
            deactivate();
            ring->base = static_cast<std::uint16_t>(state.num);
            return ack(header, true);
        }
        case Request::GetVringBase: {
            BOXLITE_TRY(auto state, message.as<VringState>());
            BOXLITE_TRY(Ring * ring, ring_at(state.index));
            deactivate();  // records every ring's position in its base
            ring->started = false;
            ring->enabled = false;
            ring->kick.reset();
            const VringState out{state.index, ring->base};
            return reply(header, &out, sizeof out);
        }
        case Request::SetVringKick:
        case Request::SetVringCall:
        case Request::SetVringErr: return handle_vring_fd(message);
        case Request::GetProtocolFeatures: {
            const std::uint64_t features = offered_protocol_features();
            return reply(header, &features, sizeof features);
        }
        case Request::SetProtocolFeatures: {
            BOXLITE_TRY(auto features, message.as<std::uint64_t>());
            if (features & ~offered_protocol_features())
                return fail(ErrorKind::InvalidArgument,
                            "vhost-user: protocol features {:#x} were not offered (offered {:#x})", features,
                            offered_protocol_features());
            protocol_features_ = features;
            return ack(header, true);
        }
        case Request::GetQueueNum: {
            const std::uint64_t queues = frontend_queues_;
            return reply(header, &queues, sizeof queues);
        }
        case Request::SetVringEnable: {
            BOXLITE_TRY(auto state, message.as<VringState>());
            BOXLITE_TRY(Ring * ring, ring_at(state.index));
            if (state.num > 1)
                return fail(ErrorKind::InvalidArgument, "vhost-user: ring {} enable value {} (0 or 1)", state.index,
                            state.num);
            if (!state.num) deactivate();
            ring->enabled = state.num == 1;
            try_activate();
            return ack(header, true);
        }
        case Request::GetConfig:
        case Request::SetConfig: {
            if (message.payload.size() < sizeof(ConfigHeader))
                return fail(ErrorKind::InvalidArgument, "vhost-user {}: payload of {} bytes is shorter than its header",
                            request_name(header.request), message.payload.size());
            ConfigHeader config;
            std::memcpy(&config, message.payload.data(), sizeof config);
            if (config.offset > kMaxConfigSize || config.size > kMaxConfigSize - config.offset ||
                message.payload.size() != sizeof config + config.size)
                return fail(ErrorKind::InvalidArgument,
                            "vhost-user {}: {} bytes at offset {} in a payload of {} (config space is {} bytes)",
                            request_name(header.request), config.size, config.offset, message.payload.size(),
                            kMaxConfigSize);
            auto data = std::span(message.payload).subspan(sizeof config);
            if (request == Request::SetConfig) {
                device_->write_config(config.offset, data);
                return ack(header, true);
            }
            device_->read_config(config.offset, data);
            return reply(header, message.payload.data(), static_cast<std::uint32_t>(message.payload.size()));
        }
        case Request::SetLogBase:
        case Request::SetLogFd: break;  // dirty logging (migration) is not offered
    }
    {
        std::lock_guard lock(stats_mutex_);
        ++stats_.unsupported;
    }
    trace(fmt::format("request {} is not supported: ignored", header.request));
    message.fds.clear();
    return ack(header, false);
}

BoxliteResult<void> Backend::handle_mem_table(Message& message) {
    if (message.payload.size() < sizeof(MemoryTableHeader))
        return fail(ErrorKind::InvalidArgument, "vhost-user SET_MEM_TABLE: payload of {} bytes",
                    message.payload.size());
    MemoryTableHeader table;
    std::memcpy(&table, message.payload.data(), sizeof table);
    if (table.nregions == 0 || table.nregions > kMaxRegions)
        return fail(ErrorKind::InvalidArgument, "vhost-user SET_MEM_TABLE: {} regions (1..{})", table.nregions,
                    kMaxRegions);
    if (message.payload.size() != sizeof table + table.nregions * sizeof(MemoryRegionDesc))
        return fail(ErrorKind::InvalidArgument, "vhost-user SET_MEM_TABLE: {} regions in a payload of {} bytes",
                    table.nregions, message.payload.size());
    if (message.fds.size() != table.nregions)
        return fail(ErrorKind::InvalidArgument, "vhost-user SET_MEM_TABLE: {} regions but {} file descriptors",
                    table.nregions, message.fds.size());
    std::vector<MemoryRegionDesc> regions(table.nregions);
    std::memcpy(regions.data(), message.payload.data() + sizeof table, regions.size() * sizeof(MemoryRegionDesc));
    std::vector<vmm::SharedRegion> shared;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const auto& r = regions[i];
        if (r.userspace_addr + r.memory_size < r.userspace_addr)
            return fail(ErrorKind::InvalidArgument, "vhost-user SET_MEM_TABLE: region {} wraps the address space", i);
        shared.push_back({message.fds[i].get(), r.guest_phys_addr, r.memory_size, r.mmap_offset});
    }
    auto memory = vmm::GuestMemory::map_shared(shared);
    if (!memory) return fail(memory.error().with_context("vhost-user SET_MEM_TABLE"));
    message.fds.clear();  // the mappings hold the pages
    // The device must let go of the old mapping before it goes away; rings resume at once if
    // they were running (their addresses are re-translated through the new table).
    deactivate();
    memory_ = std::move(*memory);
    table_ = std::move(regions);
    try_activate();
    return ack(message.header, true);
}

BoxliteResult<void> Backend::handle_vring_fd(Message& message) {
    BOXLITE_TRY(auto value, message.as<std::uint64_t>());
    const auto name = request_name(message.header.request);
    if (value & ~(kVringIndexMask | kVringNoFd))
        return fail(ErrorKind::InvalidArgument, "vhost-user {}: unknown bits in {:#x}", name, value);
    BOXLITE_TRY(Ring * ring, ring_at(value & kVringIndexMask));
    const std::size_t index = static_cast<std::size_t>(value & kVringIndexMask);
    const bool no_fd = value & kVringNoFd;
    if (message.fds.size() != (no_fd ? 0u : 1u))
        return fail(ErrorKind::InvalidArgument, "vhost-user {}: {} file descriptors ({} expected)", name,
                    message.fds.size(), no_fd ? 0 : 1);
    base::OwnedFd fd = no_fd ? base::OwnedFd{} : std::move(message.fds[0]);
    const auto request = static_cast<Request>(message.header.request);
    if (request == Request::SetVringErr) return ack(message.header, true);  // we never report ring errors
    if (fd && !is_eventfd(fd.get()))
        return fail(ErrorKind::InvalidArgument,
                    "vhost-user {}: ring {} was given a file descriptor that is not an eventfd", name, index);
    if (request == Request::SetVringCall) {
        interrupt_->set(index, std::move(fd));
        return ack(message.header, true);
    }
    // SET_VRING_KICK starts the ring; without protocol features it is enabled at once.
    if (no_fd)
        return fail(ErrorKind::InvalidArgument,
                    "vhost-user SET_VRING_KICK: ring {} without an eventfd (polling "
                    "mode is not supported)",
                    index);
    deactivate();
    ring->kick = std::move(fd);
    ring->started = true;
    if (!(features_ & kFeatureProtocolFeatures)) ring->enabled = true;
    try_activate();
    return ack(message.header, true);
}

void Backend::try_activate() {
    if (active_ || !memory_) return;
    for (std::size_t i = 0; i < frontend_queues_; ++i) {
        const Ring& ring = rings_[i];
        if (!ring.num || !ring.has_addr || !ring.started || !ring.enabled) return;
    }
    for (std::size_t i = 0; i < queues_.size(); ++i) queues_[i].reset();
    const std::uint64_t features = features_ & ~kFeatureProtocolFeatures;
    for (std::size_t i = 0; i < frontend_queues_; ++i) {
        const Ring& ring = rings_[i];
        VirtQueue& queue = queues_[i];
        auto desc = translate(ring.desc_user);
        auto avail = translate(ring.avail_user);
        auto used = translate(ring.used_user);
        if (!desc || !avail || !used) {
            trace(fmt::format("ring {} is outside the memory table: not starting the device", i));
            for (auto& q : queues_) q.reset();
            return;
        }
        queue.size = ring.num;
        queue.desc_table = *desc;
        queue.avail_ring = *avail;
        queue.used_ring = *used;
        queue.ready = true;
        queue.activate(features);
        if (auto valid = queue.validate(*memory_); !valid) {
            trace(fmt::format("ring {}: {}: not starting the device", i, valid.error().message()));
            for (auto& q : queues_) q.reset();
            return;
        }
        queue.resume_at(ring.base, memory_->read_obj<std::uint16_t>(*used + 2).value_or(ring.base));
    }
    devices::virtio::ActivateContext context;
    context.memory = &*memory_;
    context.queues = queues_;
    context.interrupt = interrupt_.get();
    context.features = features;
    if (auto activated = device_->activate(context); !activated) {
        trace(fmt::format("the device refused to start: {}", activated.error().message()));
        for (auto& q : queues_) q.reset();
        return;
    }
    active_ = true;
    {
        std::lock_guard lock(stats_mutex_);
        ++stats_.activations;
    }
    trace("device started");
    // Buffers the driver made available before the device started have had their kick already.
    for (std::size_t i = 0; i < frontend_queues_; ++i) device_->queue_notify(static_cast<std::uint16_t>(i));
}

void Backend::deactivate() {
    if (!active_) return;
    device_->reset();
    for (std::size_t i = 0; i < frontend_queues_; ++i) rings_[i].base = queues_[i].next_avail();
    for (auto& queue : queues_) queue.reset();
    active_ = false;
    trace("device stopped");
}

void Backend::forget_session() {
    deactivate();
    for (auto& ring : rings_) ring = Ring{};
    interrupt_->clear();
    memory_.reset();
    table_.clear();
    features_ = 0;
    protocol_features_ = 0;
}

BoxliteResult<base::OwnedFd> listen_unix(const std::filesystem::path& path) {
    base::UnixAddress address;
    if (std::string why; !base::UnixAddress::make(path.string(), address, why))
        return fail(ErrorKind::InvalidArgument, "vhost-user socket: {}", why);
    base::OwnedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno(ErrorKind::Engine, "creating a vhost-user socket", errno);
    ::unlink(path.c_str());
    if (::bind(fd.get(), address.get(), address.size()) != 0 || ::listen(fd.get(), 4) != 0)
        return fail_errno(ErrorKind::Engine, fmt::format("listening on vhost-user socket {}", path.string()), errno);
    return fd;
}

BoxliteResult<base::OwnedFd> accept_one(int listener, int stop_fd) {
    for (;;) {
        if (!wait_readable(listener, stop_fd))
            return fail(ErrorKind::Engine, "stopped while waiting for the vhost-user frontend to connect");
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) return base::OwnedFd(fd);
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return fail_errno(ErrorKind::Engine, "accepting the vhost-user frontend", errno);
    }
}

}  // namespace boxlite::vhost_user
