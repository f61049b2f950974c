#include "devices/virtio/vsock/device.hpp"

#include "base/unix_address.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <vector>

namespace boxlite::devices::virtio {
namespace {

constexpr std::uint16_t kRxQueue = 0, kTxQueue = 1;
constexpr std::uint32_t kShutdownReceive = 1, kShutdownSend = 2;
constexpr std::size_t kMaxConnectLine = 32;       // "CONNECT 4294967295\n" is 19 bytes
constexpr std::size_t kMaxControlBacklog = 4096;  // headers waiting for guest rx buffers

std::uint64_t stream_key(std::uint32_t host_port, std::uint32_t guest_port) {
    return (std::uint64_t{host_port} << 32) | guest_port;
}

BoxliteResult<base::UnixAddress> unix_address(const std::string& path) {
    base::UnixAddress address;
    if (std::string why; !base::UnixAddress::make(path, address, why))
        return fail(ErrorKind::InvalidArgument, "{}", why);
    return address;
}

}  // namespace

struct VsockDevice::Stream {
    enum class State { AwaitingConnectLine, Connecting, Established, Closing };
    using Clock = std::chrono::steady_clock;
    int fd = -1;
    std::uint32_t host_port = 0;
    std::uint32_t guest_port = 0;
    State state = State::AwaitingConnectLine;
    std::string line;
    // Credit the guest gave us (for host → guest data).
    std::uint32_t peer_buf_alloc = 0;
    std::uint32_t peer_fwd_cnt = 0;
    std::uint32_t tx_cnt = 0;
    // Our side (guest → host data).
    std::uint32_t rx_cnt = 0;
    std::uint32_t fwd_cnt = 0;
    std::uint32_t fwd_cnt_reported = 0;
    std::deque<std::byte> to_host;
    bool host_eof = false;
    bool guest_done_sending = false;
    bool guest_done_receiving = false;
    /// When a waiting state gives up (AwaitingConnectLine, Connecting, Closing); max() otherwise.
    Clock::time_point deadline = Clock::time_point::max();

    void enter(State next, std::chrono::milliseconds timeout) {
        state = next;
        deadline = Clock::now() + timeout;
    }
    ~Stream() {
        if (fd >= 0) ::close(fd);
    }
    [[nodiscard]] std::uint32_t peer_credit() const {
        const std::uint32_t in_flight = tx_cnt - peer_fwd_cnt;
        return in_flight > peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
    }
};

BoxliteResult<std::shared_ptr<VsockDevice>> VsockDevice::create(std::uint64_t guest_cid, std::filesystem::path uds_path,
                                                                VsockTimeouts timeouts) {
    if (guest_cid <= kVsockHostCid || guest_cid >= 0xffffffffULL)
        return fail(ErrorKind::Config, "guest CID {} is reserved; use 3..4294967294", guest_cid);
    BOXLITE_TRY(auto address, unix_address(uds_path.string()));
    int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) return fail_errno(ErrorKind::Engine, "creating the vsock Unix socket", errno);
    ::unlink(uds_path.c_str());  // a stale socket from a previous run of this box
    if (::bind(listener, address.get(), address.size()) != 0 || ::listen(listener, 64) != 0) {
        const int error = errno;
        ::close(listener);
        return fail_errno(ErrorKind::Engine, fmt::format("listening on vsock socket {}", uds_path.string()), error);
    }
    int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) {
        const int error = errno;
        ::close(listener);
        return fail_errno(ErrorKind::Engine, "eventfd for the vsock thread", error);
    }
    std::shared_ptr<VsockDevice> device(new VsockDevice(guest_cid, std::move(uds_path), listener, wake, timeouts));
    device->thread_ = std::thread([raw = device.get()] { raw->run(); });
    return device;
}

VsockDevice::VsockDevice(std::uint64_t guest_cid, std::filesystem::path uds_path, int listener, int wake,
                         VsockTimeouts timeouts)
    : guest_cid_(guest_cid), uds_path_(std::move(uds_path)), listener_(listener), wake_(wake), timeouts_(timeouts) {}

VsockDevice::~VsockDevice() {
    stopping_ = true;
    wake();
    if (thread_.joinable()) thread_.join();
    streams_.clear();
    ::close(listener_);
    ::close(wake_);
    ::unlink(uds_path_.c_str());
}

void VsockDevice::wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_, &one, sizeof(one));
}

void VsockDevice::read_config(std::uint64_t offset, std::span<std::byte> data) {
    read_config_bytes(as_bytes_of(guest_cid_), offset, data);
}

BoxliteResult<void> VsockDevice::activate(const ActivateContext& context) {
    std::lock_guard lock(mutex_);
    if (context.queues.size() != 3 || !context.queues[kRxQueue].ready || !context.queues[kTxQueue].ready)
        return fail(ErrorKind::InvalidArgument, "virtio-vsock needs its rx and tx queues set up before DRIVER_OK");
    context_ = context;
    active_ = true;
    wake();
    return {};
}

void VsockDevice::reset() {
    std::lock_guard lock(mutex_);
    active_ = false;
    context_ = {};
    streams_.clear();  // the guest driver forgot every stream: drop the host ends too
    control_.clear();
    wake();
}

VsockStats VsockDevice::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

std::size_t VsockDevice::stream_count() const {
    std::lock_guard lock(mutex_);
    return streams_.size();
}

void VsockDevice::queue_notify(std::uint16_t queue) {
    std::lock_guard lock(mutex_);
    if (!active_) return;
    if (queue == kTxQueue) handle_tx_locked();
    deliver_rx_locked();
    wake();  // credit, buffers or streams changed: the poller re-evaluates what to wait for
}

// ---- guest → host ----------------------------------------------------------------------------

void VsockDevice::handle_tx_locked() {
    drain_queue(
        context_, kTxQueue,
        [this](const DescriptorChain& chain) -> std::uint32_t {
            ChainReader reader(chain);
            auto header = reader.read_obj<VsockHeader>();
            if (!header || header->len > kMaxPacketPayload || header->len > reader.remaining()) {
                ++stats_.bad_packets;
                return 0;
            }
            std::vector<std::byte> payload(header->len);
            reader.read(payload);
            handle_packet_locked(*header, payload);
            return 0;
        },
        &stats_.bad_packets);
}

void VsockDevice::handle_packet_locked(const VsockHeader& h, std::span<const std::byte> payload) {
    if (h.src_cid != guest_cid_ || h.dst_cid != kVsockHostCid) {
        ++stats_.bad_packets;  // spoofed or misrouted: drop silently
        return;
    }
    if (h.type != kVsockTypeStream) {
        queue_reset_locked(h.dst_port, h.src_port);
        return;
    }
    const std::uint64_t key = stream_key(h.dst_port, h.src_port);
    auto it = streams_.find(key);
    const auto op = static_cast<VsockOp>(h.op);

    if (op == VsockOp::Request) {
        if (it != streams_.end() || streams_.size() >= kMaxStreams) {
            queue_reset_locked(h.dst_port, h.src_port);
            return;
        }
        auto address = unix_address(fmt::format("{}_{}", uds_path_.string(), h.dst_port));
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (!address || fd < 0 || ::connect(fd, address->get(), address->size()) != 0) {
            if (fd >= 0) ::close(fd);
            queue_reset_locked(h.dst_port, h.src_port);
            return;
        }
        auto stream = std::make_unique<Stream>();
        stream->fd = fd;
        stream->host_port = h.dst_port;
        stream->guest_port = h.src_port;
        stream->state = Stream::State::Established;
        stream->peer_buf_alloc = h.buf_alloc;
        stream->peer_fwd_cnt = h.fwd_cnt;
        queue_control_locked(*stream, VsockOp::Response);
        streams_.emplace(key, std::move(stream));
        ++stats_.connections_opened;
        return;
    }
    if (it == streams_.end()) {
        if (op != VsockOp::Rst) queue_reset_locked(h.dst_port, h.src_port);
        return;
    }
    Stream& stream = *it->second;
    stream.peer_buf_alloc = h.buf_alloc;
    stream.peer_fwd_cnt = h.fwd_cnt;
    auto reset_stream = [&] {
        queue_reset_locked(stream.host_port, stream.guest_port);
        close_stream_locked(key);
    };

    switch (op) {
        case VsockOp::Response: {
            if (stream.state != Stream::State::Connecting) return reset_stream();
            stream.state = Stream::State::Established;
            stream.deadline = Stream::Clock::time_point::max();
            const std::string ok = fmt::format("OK {}\n", stream.host_port);
            if (::send(stream.fd, ok.data(), ok.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(ok.size()))
                return reset_stream();
            ++stats_.connections_opened;
            return;
        }
        case VsockOp::Rw: {
            if (stream.state != Stream::State::Established || stream.guest_done_sending) return reset_stream();
            const std::uint32_t buffered = stream.rx_cnt - stream.fwd_cnt;
            if (payload.size() > kBufferPerStream - buffered) return reset_stream();  // beyond our credit
            stream.to_host.insert(stream.to_host.end(), payload.begin(), payload.end());
            stream.rx_cnt += static_cast<std::uint32_t>(payload.size());
            flush_to_host_locked(stream);
            return;
        }
        case VsockOp::CreditUpdate: return;  // recorded above; the poller now reads if it can
        case VsockOp::CreditRequest: queue_control_locked(stream, VsockOp::CreditUpdate); return;
        case VsockOp::Shutdown: {
            if (h.flags & kShutdownSend) stream.guest_done_sending = true;
            if (h.flags & kShutdownReceive) stream.guest_done_receiving = true;
            if (stream.guest_done_sending && stream.guest_done_receiving) return reset_stream();  // clean close
            if (stream.guest_done_sending && stream.to_host.empty()) ::shutdown(stream.fd, SHUT_WR);
            return;
        }
        case VsockOp::Rst: close_stream_locked(key); return;
        default: return reset_stream();
    }
}

void VsockDevice::flush_to_host_locked(Stream& stream) {
    while (!stream.to_host.empty()) {
        // std::deque is not contiguous: send its first contiguous run.
        std::byte chunk[16 * 1024];
        const std::size_t n = std::min(stream.to_host.size(), sizeof(chunk));
        std::copy_n(stream.to_host.begin(), n, chunk);
        const ssize_t sent = ::send(stream.fd, chunk, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // POLLOUT resumes it
            queue_reset_locked(stream.host_port, stream.guest_port);
            close_stream_locked(stream_key(stream.host_port, stream.guest_port));
            return;
        }
        stream.to_host.erase(stream.to_host.begin(), stream.to_host.begin() + sent);
        stream.fwd_cnt += static_cast<std::uint32_t>(sent);
        stats_.bytes_to_host += static_cast<std::uint64_t>(sent);
    }
    // Tell the guest about freed buffer space once a quarter of it is free again, so a sender
    // that exhausted its credit always hears back.
    if (stream.fwd_cnt - stream.fwd_cnt_reported >= kBufferPerStream / 4)
        queue_control_locked(stream, VsockOp::CreditUpdate);
    if (stream.to_host.empty() && stream.guest_done_sending) ::shutdown(stream.fd, SHUT_WR);
}

// ---- host → guest ----------------------------------------------------------------------------

void VsockDevice::queue_control_locked(const Stream& stream, VsockOp op, std::uint32_t flags) {
    VsockHeader h{};
    h.src_cid = kVsockHostCid;
    h.dst_cid = guest_cid_;
    h.src_port = stream.host_port;
    h.dst_port = stream.guest_port;
    h.type = kVsockTypeStream;
    h.op = static_cast<std::uint16_t>(op);
    h.flags = flags;
    h.buf_alloc = kBufferPerStream;
    h.fwd_cnt = stream.fwd_cnt;
    const_cast<Stream&>(stream).fwd_cnt_reported = stream.fwd_cnt;
    if (control_.size() < kMaxControlBacklog) control_.push_back(h);
}

void VsockDevice::queue_reset_locked(std::uint32_t host_port, std::uint32_t guest_port) {
    VsockHeader h{};
    h.src_cid = kVsockHostCid;
    h.dst_cid = guest_cid_;
    h.src_port = host_port;
    h.dst_port = guest_port;
    h.type = kVsockTypeStream;
    h.op = static_cast<std::uint16_t>(VsockOp::Rst);
    ++stats_.resets_sent;
    if (control_.size() < kMaxControlBacklog) control_.push_back(h);
}

void VsockDevice::close_stream_locked(std::uint64_t key) { streams_.erase(key); }

void VsockDevice::interrupt_rx_locked(bool delivered) {
    if (delivered && context_.interrupt && context_.queues[kRxQueue].needs_notification(*context_.memory))
        context_.interrupt->signal_used_queue(kRxQueue);
}

void VsockDevice::deliver_rx_locked() {
    if (!active_) return;
    VirtQueue& rx = context_.queues[kRxQueue];
    const auto& memory = *context_.memory;
    bool delivered = false;
    auto pop_rx = [&]() -> std::optional<DescriptorChain> {
        for (int attempts = 0; attempts < kQueueSize; ++attempts) {
            auto popped = rx.pop(memory);
            if (!popped) {
                ++stats_.bad_packets;
                continue;
            }
            if (!*popped) return std::nullopt;
            if ((*popped)->writable_bytes() < sizeof(VsockHeader)) {  // useless buffer: hand it back
                rx.add_used(memory, (*popped)->head, 0);
                ++stats_.bad_packets;
                continue;
            }
            return std::move(**popped);
        }
        return std::nullopt;
    };
    for (int pass = 0; pass < 2; ++pass) {
        while (!control_.empty()) {
            auto chain = pop_rx();
            if (!chain) return interrupt_rx_locked(delivered);
            ChainWriter writer(*chain);
            writer.write(as_bytes_of(control_.front()));
            rx.add_used(memory, chain->head, sizeof(VsockHeader));
            control_.pop_front();
            delivered = true;
        }
        if (pass == 1) break;
        for (auto& [key, stream_ptr] : streams_) {
            Stream& stream = *stream_ptr;
            if (stream.state != Stream::State::Established || stream.host_eof || stream.guest_done_receiving) continue;
            for (int budget = 0; budget < 16 && stream.peer_credit() > 0; ++budget) {
                auto chain = pop_rx();
                if (!chain) return interrupt_rx_locked(delivered);
                ChainWriter writer(*chain);
                writer.advance(sizeof(VsockHeader));
                const std::uint64_t room = std::min<std::uint64_t>(
                    {writer.remaining(), stream.peer_credit(), kMaxPacketPayload});
                auto iov = writer.iovecs(room);
                ssize_t n = -1;
                if (!iov.empty()) {
                    do {
                        n = ::readv(stream.fd, iov.data(), static_cast<int>(iov.size()));
                    } while (n < 0 && errno == EINTR);
                }
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    rx.undo_pop();
                    break;
                }
                if (n <= 0) {
                    rx.undo_pop();
                    stream.host_eof = true;  // the host closed (or broke) its end
                    queue_control_locked(stream, VsockOp::Shutdown, kShutdownReceive | kShutdownSend);
                    stream.enter(Stream::State::Closing, timeouts_.shutdown);
                    break;
                }
                VsockHeader h{};
                h.src_cid = kVsockHostCid;
                h.dst_cid = guest_cid_;
                h.src_port = stream.host_port;
                h.dst_port = stream.guest_port;
                h.len = static_cast<std::uint32_t>(n);
                h.type = kVsockTypeStream;
                h.op = static_cast<std::uint16_t>(VsockOp::Rw);
                h.buf_alloc = kBufferPerStream;
                h.fwd_cnt = stream.fwd_cnt;
                stream.fwd_cnt_reported = stream.fwd_cnt;
                ChainWriter header_writer(*chain);
                header_writer.write(as_bytes_of(h));
                rx.add_used(memory, chain->head, static_cast<std::uint32_t>(sizeof(VsockHeader) + n));
                stream.tx_cnt += static_cast<std::uint32_t>(n);
                stats_.bytes_to_guest += static_cast<std::uint64_t>(n);
                delivered = true;
            }
        }
    }
    interrupt_rx_locked(delivered);
}

// ---- the host-side thread ----------------------------------------------------------------------

std::chrono::milliseconds VsockDevice::expire_streams_locked() {
    const auto now = Stream::Clock::now();
    auto next = Stream::Clock::time_point::max();
    for (auto it = streams_.begin(); it != streams_.end();) {
        Stream& stream = *it->second;
        if (stream.deadline > now) {
            next = std::min(next, stream.deadline);
            ++it;
            continue;
        }
        // The guest knows Connecting and Closing streams and is told; a host that never sent
        // its CONNECT line is simply hung up on.
        if (stream.state != Stream::State::AwaitingConnectLine) queue_reset_locked(stream.host_port, stream.guest_port);
        ++stats_.timeouts;
        it = streams_.erase(it);
    }
    if (next == Stream::Clock::time_point::max()) return std::chrono::milliseconds(-1);
    // Rounded up, so the poller never wakes a millisecond early and spins.
    return std::chrono::ceil<std::chrono::milliseconds>(next - now);
}

void VsockDevice::accept_host_connection_locked() {
    for (;;) {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (streams_.size() >= kMaxStreams) {
            ::close(fd);
            continue;
        }
        auto stream = std::make_unique<Stream>();
        stream->fd = fd;
        stream->enter(Stream::State::AwaitingConnectLine, timeouts_.connect_line);
        do {
            stream->host_port = next_host_port_++;
            if (next_host_port_ == 0) next_host_port_ = 1u << 30;
        } while (streams_.count(stream_key(stream->host_port, 0)) != 0);
        streams_.emplace(stream_key(stream->host_port, 0), std::move(stream));
    }
}

void VsockDevice::read_connect_line_locked(Stream& stream) {
    const std::uint64_t old_key = stream_key(stream.host_port, stream.guest_port);
    // Byte by byte: whatever follows the newline belongs to the stream, not to us.
    for (;;) {
        char c;
        const ssize_t n = ::recv(stream.fd, &c, 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) return close_stream_locked(old_key);
        if (c != '\n') {
            if (stream.line.size() >= kMaxConnectLine) return close_stream_locked(old_key);
            stream.line.push_back(c);
            continue;
        }
        std::string_view line(stream.line);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        constexpr std::string_view kPrefix = "CONNECT ";
        std::uint32_t port = 0;
        if (line.substr(0, kPrefix.size()) != kPrefix) return close_stream_locked(old_key);
        const auto digits = line.substr(kPrefix.size());
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
        if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty())
            return close_stream_locked(old_key);
        auto node = streams_.extract(old_key);
        Stream& s = *node.mapped();
        s.guest_port = port;
        s.enter(Stream::State::Connecting, timeouts_.connect);
        s.line.clear();
        const std::uint64_t new_key = stream_key(s.host_port, port);
        if (streams_.count(new_key)) return;  // impossible (host ports are unique); dropping node closes it
        queue_control_locked(s, VsockOp::Request);
        node.key() = new_key;
        streams_.insert(std::move(node));
        return;
    }
}

void VsockDevice::run() {
    std::vector<pollfd> fds;
    std::vector<std::uint64_t> keys;
    while (!stopping_) {
        fds.clear();
        keys.clear();
        fds.push_back({wake_, POLLIN, 0});
        fds.push_back({listener_, POLLIN, 0});
        std::chrono::milliseconds timeout{-1};
        {
            std::lock_guard lock(mutex_);
            timeout = expire_streams_locked();
            if (!control_.empty()) deliver_rx_locked();  // the RSTs expiry queued
            const bool rx_ready = active_ && context_.queues[kRxQueue].has_available(*context_.memory);
            for (auto& [key, stream] : streams_) {
                short events = 0;
                if (stream->state == Stream::State::AwaitingConnectLine) events |= POLLIN;
                if (stream->state == Stream::State::Established && !stream->host_eof && rx_ready &&
                    stream->peer_credit() > 0 && !stream->guest_done_receiving)
                    events |= POLLIN;
                if (!stream->to_host.empty()) events |= POLLOUT;
                if (events == 0) continue;
                fds.push_back({stream->fd, events, 0});
                keys.push_back(key);
            }
        }
        if (::poll(fds.data(), fds.size(), static_cast<int>(timeout.count())) < 0 && errno != EINTR) break;
        std::lock_guard lock(mutex_);
        if (fds[0].revents & POLLIN) {
            std::uint64_t drained;
            [[maybe_unused]] auto n = ::read(wake_, &drained, sizeof(drained));
        }
        if (fds[1].revents & POLLIN) accept_host_connection_locked();
        bool readable = false;
        for (std::size_t i = 2; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            auto it = streams_.find(keys[i - 2]);
            if (it == streams_.end()) continue;
            Stream& stream = *it->second;
            if (stream.state == Stream::State::AwaitingConnectLine) {
                read_connect_line_locked(stream);
                continue;
            }
            if (fds[i].revents & POLLOUT) flush_to_host_locked(stream);
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) readable = true;
        }
        if (readable || !control_.empty()) deliver_rx_locked();
    }
}

}  // namespace boxlite::devices::virtio
