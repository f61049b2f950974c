#include "devices/virtio/net/device.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::devices::virtio {

BoxliteResult<std::shared_ptr<NetDevice>> NetDevice::create(std::array<std::uint8_t, 6> mac, int socket_buffer) {
    // SEQPACKET keeps frame boundaries and, unlike DGRAM, tells each end when the other closed.
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
        return fail_errno(ErrorKind::Engine, "socketpair for the virtio-net device", errno);
    base::OwnedFd device_end(pair[0]), host_end(pair[1]);
    for (const int fd : pair) {
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &socket_buffer, sizeof socket_buffer);
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &socket_buffer, sizeof socket_buffer);
    }
    base::OwnedFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake) return fail_errno(ErrorKind::Engine, "eventfd for the virtio-net thread", errno);
    std::shared_ptr<NetDevice> device(new NetDevice(mac, std::move(device_end), std::move(host_end), std::move(wake)));
    device->thread_ = std::thread([raw = device.get()] { raw->run(); });
    return device;
}

NetDevice::NetDevice(std::array<std::uint8_t, 6> mac, base::OwnedFd device_end, base::OwnedFd host_end,
                     base::OwnedFd wake)
    : mac_(mac),
      device_end_(std::move(device_end)),
      host_end_(std::move(host_end)),
      wake_(std::move(wake)),
      rx_frame_(kMaxFrame + 1),
      tx_frame_(kMaxFrame) {}

NetDevice::~NetDevice() {
    stopping_ = true;
    wake();
    if (thread_.joinable()) thread_.join();
}

void NetDevice::wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

void NetDevice::read_config(std::uint64_t offset, std::span<std::byte> data) {
    NetConfig config{};
    std::memcpy(config.mac, mac_.data(), mac_.size());
    config.status = kNetStatusLinkUp;
    config.max_virtqueue_pairs = 1;
    config.mtu = kMtu;
    read_config_bytes(as_bytes_of(config), offset, data);
}

BoxliteResult<void> NetDevice::activate(const ActivateContext& context) {
    {
        std::lock_guard lock(mutex_);
        if (context.queues.size() != 2 || !context.queues[kRxQueue].ready || !context.queues[kTxQueue].ready)
            return fail(ErrorKind::InvalidArgument, "virtio-net needs its rx and tx queues set up before DRIVER_OK");
        context_ = context;
        active_ = true;
        rx_starved_ = false;
        tx_blocked_ = false;
        // Buffers the driver posted before DRIVER_OK, and frames already waiting.
        deliver_rx_locked();
        process_tx_locked();
    }
    wake();
    return {};
}

void NetDevice::reset() {
    std::lock_guard lock(mutex_);
    active_ = false;
    context_ = {};
    rx_starved_ = false;
    tx_blocked_ = false;
}

NetStats NetDevice::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

void NetDevice::queue_notify(std::uint16_t queue) {
    bool rewatch = false;
    {
        std::lock_guard lock(mutex_);
        if (!active_) return;
        if (queue == kRxQueue) {
            rewatch = rx_starved_;
            rx_starved_ = false;
            deliver_rx_locked();
        } else if (queue == kTxQueue) {
            const bool was_blocked = tx_blocked_;
            if (!tx_blocked_) process_tx_locked();
            rewatch = tx_blocked_ && !was_blocked;
        }
    }
    if (rewatch) wake();  // the thread's poll set changed
}

// Moves frames waiting on the socket into the rx chains the driver posted, one frame per chain.
void NetDevice::deliver_rx_locked() {
    if (!active_ || host_closed_ || !context_.memory) return;
    VirtQueue& queue = context_.queues[kRxQueue];
    const vmm::GuestMemory& memory = *context_.memory;
    bool completed = false;
    // Bounded: frames dropped for a too-small chain do not consume it, so count every attempt.
    for (std::uint32_t budget = 4u * queue.size + 1; budget > 0; --budget) {
        auto popped = queue.pop(memory);
        if (!popped) {
            ++stats_.bad_chains;
            completed = true;
            continue;
        }
        if (!*popped) {
            rx_starved_ = true;  // wait for the driver's next rx notify before reading more
            break;
        }
        const DescriptorChain& chain = **popped;
        ssize_t n;
        do n = ::recv(device_end_.get(), rx_frame_.data(), rx_frame_.size(), MSG_DONTWAIT | MSG_TRUNC);
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            queue.undo_pop();
            // 0: SEQPACKET's end of file, the host end is gone; an error other than "nothing
            // waiting" (a reset) too: polling it again would only spin.
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) host_closed_ = true;
            break;
        }
        const auto size = static_cast<std::size_t>(n);
        if (size > kMaxFrame || size < kMinFrame || size + sizeof(NetHeader) > chain.writable_bytes()) {
            ++stats_.rx_dropped;
            queue.undo_pop();  // the chain stays for the next frame
            continue;
        }
        NetHeader header{};
        header.num_buffers = 1;
        ChainWriter writer(chain);
        writer.write(as_bytes_of(header));
        writer.write(std::span<const std::byte>(rx_frame_.data(), size));
        queue.add_used(memory, chain.head, static_cast<std::uint32_t>(sizeof(NetHeader) + size));
        ++stats_.frames_to_guest;
        completed = true;
    }
    if (completed && context_.interrupt && queue.needs_notification(memory))
        context_.interrupt->signal_used_queue(kRxQueue);
}

// Sends every frame the driver queued to the host end; a full socket pauses tx (the chain stays
// available) until the thread sees room.
void NetDevice::process_tx_locked() {
    if (!active_ || !context_.memory) return;
    VirtQueue& queue = context_.queues[kTxQueue];
    const vmm::GuestMemory& memory = *context_.memory;
    bool completed = false;
    for (std::uint32_t budget = 4u * queue.size + 1; budget > 0; --budget) {
        auto popped = queue.pop(memory);
        if (!popped) {
            ++stats_.bad_chains;
            completed = true;
            continue;
        }
        if (!*popped) break;
        const DescriptorChain& chain = **popped;
        const std::uint64_t total = chain.readable_bytes();
        if (total < sizeof(NetHeader) + kMinFrame || total - sizeof(NetHeader) > kMaxFrame) {
            ++stats_.bad_chains;
            queue.add_used(memory, chain.head, 0);
            completed = true;
            continue;
        }
        ChainReader reader(chain);
        reader.skip(sizeof(NetHeader));  // no offload negotiated: nothing in it matters
        const std::size_t size = reader.read(std::span<std::byte>(tx_frame_.data(), total - sizeof(NetHeader)));
        if (!host_closed_) {
            ssize_t n;
            do n = ::send(device_end_.get(), tx_frame_.data(), size, MSG_DONTWAIT | MSG_NOSIGNAL);
            while (n < 0 && errno == EINTR);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
                queue.undo_pop();
                tx_blocked_ = true;
                ++stats_.tx_blocked;
                break;
            }
            if (n < 0) {
                if (errno == EPIPE || errno == ECONNRESET) host_closed_ = true;
                ++stats_.tx_dropped;
            } else {
                ++stats_.frames_from_guest;
            }
        } else {
            ++stats_.tx_dropped;
        }
        queue.add_used(memory, chain.head, 0);
        completed = true;
    }
    if (completed && context_.interrupt && queue.needs_notification(memory))
        context_.interrupt->signal_used_queue(kTxQueue);
}

void NetDevice::run() {
    while (!stopping_) {
        short events = 0;
        {
            std::lock_guard lock(mutex_);
            if (active_ && !host_closed_) {
                if (!rx_starved_) events |= POLLIN;
                if (tx_blocked_) events |= POLLOUT;
            }
        }
        pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {events != 0 ? device_end_.get() : -1, events, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[0].revents & POLLIN) {
            std::uint64_t count;
            [[maybe_unused]] auto n = ::read(wake_.get(), &count, sizeof count);
        }
        if (fds[1].revents == 0) continue;
        std::lock_guard lock(mutex_);
        if (!active_) continue;
        if ((fds[1].revents & (POLLHUP | POLLERR)) != 0 && (fds[1].revents & POLLIN) == 0) host_closed_ = true;
        if ((fds[1].revents & POLLOUT) != 0 && tx_blocked_) {
            tx_blocked_ = false;
            process_tx_locked();
        }
        if ((fds[1].revents & POLLIN) != 0 && !rx_starved_) deliver_rx_locked();
    }
}

}  // namespace boxlite::devices::virtio
