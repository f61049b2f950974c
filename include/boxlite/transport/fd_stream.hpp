// FdStream: a ByteStream over one owned, connected socket (or pipe-like) file descriptor.
// Transports that end in a socket (unix, vsock-uds, pipe) yield it.
//
// close() may be called from another thread while a read_some blocks: it shuts the socket
// down first, which wakes the blocked reader with EOF, then closes the descriptor. Calls that
// start after close() fail with RpcTransport ("closed stream") instead of touching the number.
#pragma once

#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <utility>

namespace boxlite {

class FdStream {
public:
    FdStream() = default;
    /// Takes ownership of `fd`.
    explicit FdStream(int fd) : state_(std::make_unique<State>(fd)) {}

    FdStream(FdStream&&) noexcept = default;
    FdStream& operator=(FdStream&& other) noexcept {
        if (this != &other) {
            close();
            state_ = std::move(other.state_);
        }
        return *this;
    }
    FdStream(const FdStream&) = delete;
    FdStream& operator=(const FdStream&) = delete;
    ~FdStream() { close(); }

    [[nodiscard]] bool is_open() const noexcept { return state_ && state_->fd.load() >= 0; }

    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer) {
        if (buffer.empty()) return std::size_t{0};
        const int fd = live_fd();
        if (fd < 0) return fail(ErrorKind::RpcTransport, "read on a closed stream");
        for (;;) {
            const auto n = ::read(fd, buffer.data(), buffer.size());
            if (n >= 0) return static_cast<std::size_t>(n);
            if (errno == EINTR) continue;
            if (errno == ECONNRESET) return std::size_t{0};  // the peer went away: EOF
            return fail_errno(ErrorKind::RpcTransport, "reading from the agent stream", errno);
        }
    }

    BoxliteResult<void> write_all(std::span<const std::byte> data) {
        const int fd = live_fd();
        if (fd < 0) return fail(ErrorKind::RpcTransport, "write on a closed stream");
        while (!data.empty()) {
            // MSG_NOSIGNAL: a vanished peer is an error to report, not a SIGPIPE to die of.
            auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data(), data.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                return fail_errno(ErrorKind::RpcTransport, "writing to the agent stream", errno);
            }
            data = data.subspan(static_cast<std::size_t>(n));
        }
        return {};
    }

    BoxliteResult<void> shutdown_write() {
        const int fd = live_fd();
        if (fd < 0) return fail(ErrorKind::RpcTransport, "shutdown on a closed stream");
        if (::shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) {
            return fail_errno(ErrorKind::RpcTransport, "half-closing the agent stream", errno);
        }
        return {};
    }

    void close() {
        if (!state_) return;
        const int fd = state_->fd.exchange(-1);
        if (fd >= 0) {
            ::shutdown(fd, SHUT_RDWR);  // wakes a reader blocked in another thread
            ::close(fd);
        }
    }

    [[nodiscard]] int native_handle() const noexcept { return state_ ? state_->fd.load() : -1; }

    /// Gives up ownership; the caller closes the descriptor.
    [[nodiscard]] int release() noexcept { return state_ ? state_->fd.exchange(-1) : -1; }

private:
    struct State {
        explicit State(int f) : fd(f) {}
        std::atomic<int> fd;
    };
    [[nodiscard]] int live_fd() const noexcept { return state_ ? state_->fd.load() : -1; }

    // Heap state keeps the object cheap to move and the fd's address stable for close().
    std::unique_ptr<State> state_;
};

static_assert(ByteStream<FdStream>);

}  // namespace boxlite
