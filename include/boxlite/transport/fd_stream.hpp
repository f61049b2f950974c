// FdStream: a ByteStream over one owned, connected socket (or pipe-like) file descriptor.
// Transports that end in a socket (unix, vsock-uds, pipe) yield it. Its system calls are
// compiled in the library (lib/transport/fd_stream.cpp).
//
// close() may be called from another thread while a read_some blocks: it shuts the socket
// down first, which wakes the blocked reader with EOF, then closes the descriptor. Calls that
// start after close() fail with RpcTransport ("closed stream") instead of touching the number.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/transport.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
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

    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer);
    BoxliteResult<void> write_all(std::span<const std::byte> data);
    BoxliteResult<void> shutdown_write();
    void close();

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
