// UnixTransport: the Transport policy for agents listening on a Unix stream socket
// (endpoint "unix:/path/to/agent.sock"), as the namespace engine's agent does. Its system calls
// are compiled in the library (lib/transport/unix_transport.cpp).
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/transport.hpp>

#include <chrono>
#include <cstddef>
#include <span>
#include <string_view>
#include <utility>

namespace boxlite {

/// A connected Unix stream socket; satisfies ByteStream.
class UnixStream {
public:
    UnixStream() = default;
    explicit UnixStream(int fd) noexcept : fd_(fd) {}
    UnixStream(UnixStream&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    UnixStream& operator=(UnixStream&& other) noexcept {
        if (this != &other) {
            release();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    UnixStream(const UnixStream&) = delete;
    UnixStream& operator=(const UnixStream&) = delete;
    ~UnixStream() { release(); }

    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer);
    BoxliteResult<void> write_all(std::span<const std::byte> data);
    BoxliteResult<void> shutdown_write();

    /// Wakes any reader blocked in another thread (shutdown), then releases the descriptor when
    /// the stream is destroyed: closing it here could let the number be reused under that reader.
    void close();

    [[nodiscard]] int native_handle() const noexcept { return fd_; }

private:
    void release() noexcept;
    int fd_ = -1;
};

static_assert(ByteStream<UnixStream>);

class UnixTransport {
public:
    using stream_type = UnixStream;
    static constexpr std::string_view kScheme = "unix:";

    /// Connects to "unix:<path>", retrying while the socket is missing or not yet listening.
    BoxliteResult<UnixStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout);
};

}  // namespace boxlite
