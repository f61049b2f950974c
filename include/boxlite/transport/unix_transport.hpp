// UnixTransport: the Transport policy for agents listening on a Unix stream socket
// (endpoint "unix:/path/to/agent.sock"), as the namespace engine's agent does.
#pragma once

#include <boxlite/error.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
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

    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer) {
        while (true) {
            const auto n = ::recv(fd_, buffer.data(), buffer.size(), 0);
            if (n >= 0) return static_cast<std::size_t>(n);
            if (errno == EINTR) continue;
            if (errno == ECONNRESET) return std::size_t{0};
            return fail_errno(ErrorKind::RpcTransport, "reading from the agent socket", errno);
        }
    }

    BoxliteResult<void> write_all(std::span<const std::byte> data) {
        std::size_t done = 0;
        while (done < data.size()) {
            const auto n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail_errno(ErrorKind::RpcTransport, "writing to the agent socket", errno);
            done += static_cast<std::size_t>(n);
        }
        return {};
    }

    BoxliteResult<void> shutdown_write() {
        if (::shutdown(fd_, SHUT_WR) != 0) return fail_errno(ErrorKind::RpcTransport, "half-closing the agent socket", errno);
        return {};
    }

    /// Wakes any reader blocked in another thread (shutdown), then releases the descriptor when
    /// the stream is destroyed: closing it here could let the number be reused under that reader.
    void close() {
        if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    }

    [[nodiscard]] int native_handle() const noexcept { return fd_; }

private:
    void release() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int fd_ = -1;
};

class UnixTransport {
public:
    using stream_type = UnixStream;
    static constexpr std::string_view kScheme = "unix:";

    /// Connects to "unix:<path>", retrying while the socket is missing or not yet listening.
    BoxliteResult<UnixStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
        if (endpoint.substr(0, kScheme.size()) != kScheme) {
            return fail(ErrorKind::InvalidArgument, "endpoint '{}' is not a Unix socket endpoint (expected unix:<path>)",
                        endpoint);
        }
        const auto path = std::string(endpoint.substr(kScheme.size()));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (path.empty() || path.size() >= sizeof addr.sun_path) {
            return fail(ErrorKind::InvalidArgument, "Unix socket path '{}' must be 1-{} bytes", path,
                        sizeof addr.sun_path - 1);
        }
        std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        auto delay = std::chrono::microseconds(200);
        int last_errno = 0;
        while (true) {
            const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return fail_errno(ErrorKind::RpcTransport, "creating a Unix socket", errno);
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return UnixStream(fd);
            last_errno = errno;
            ::close(fd);
            const bool retryable = last_errno == ENOENT || last_errno == ECONNREFUSED || last_errno == EAGAIN || last_errno == EINTR;
            if (!retryable || std::chrono::steady_clock::now() >= deadline) break;
            std::this_thread::sleep_for(delay);
            delay = std::min(delay * 2, std::chrono::microseconds(20000));
        }
        return fail(ErrorKind::RpcTransport, "cannot connect to the agent at {}: {}", endpoint,
                    std::system_category().message(last_errno));
    }
};

}  // namespace boxlite
