// UnixStream's and UnixTransport's system calls (include/boxlite/transport/unix_transport.hpp).
#include <boxlite/transport/unix_transport.hpp>

#include "base/unix_address.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

namespace boxlite {

BoxliteResult<std::size_t> UnixStream::read_some(std::span<std::byte> buffer) {
    while (true) {
        const auto n = ::recv(fd_, buffer.data(), buffer.size(), 0);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return std::size_t{0};
        return fail_errno(ErrorKind::RpcTransport, "reading from the agent socket", errno);
    }
}

BoxliteResult<void> UnixStream::write_all(std::span<const std::byte> data) {
    std::size_t done = 0;
    while (done < data.size()) {
        const auto n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(ErrorKind::RpcTransport, "writing to the agent socket", errno);
        done += static_cast<std::size_t>(n);
    }
    return {};
}

BoxliteResult<void> UnixStream::shutdown_write() {
    if (::shutdown(fd_, SHUT_WR) != 0)
        return fail_errno(ErrorKind::RpcTransport, "half-closing the agent socket", errno);
    return {};
}

void UnixStream::close() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void UnixStream::release() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

BoxliteResult<UnixStream> UnixTransport::connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
    if (endpoint.substr(0, kScheme.size()) != kScheme) {
        return fail(ErrorKind::InvalidArgument, "endpoint '{}' is not a Unix socket endpoint (expected unix:<path>)",
                    endpoint);
    }
    const auto path = std::string(endpoint.substr(kScheme.size()));
    base::UnixAddress addr;
    if (std::string why; !base::UnixAddress::make(path, addr, why)) return fail(ErrorKind::InvalidArgument, "{}", why);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto delay = std::chrono::microseconds(200);
    int last_errno = 0;
    while (true) {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail_errno(ErrorKind::RpcTransport, "creating a Unix socket", errno);
        if (::connect(fd, addr.get(), addr.size()) == 0) {
            // 4 MiB of send buffer, as the agent has on its end: stdin frames of up to
            // kMaxChunk, several in flight, queue without waiting for the agent to drain each.
            // Best effort (net.core.wmem_max may cap it).
            int size = 4 << 20;
            (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            return UnixStream(fd);
        }
        last_errno = errno;
        ::close(fd);
        const bool retryable = last_errno == ENOENT || last_errno == ECONNREFUSED || last_errno == EAGAIN ||
                               last_errno == EINTR;
        if (!retryable || std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, std::chrono::microseconds(20000));
    }
    return fail(ErrorKind::RpcTransport, "cannot connect to the agent at {}: {}", endpoint,
                std::system_category().message(last_errno));
}

}  // namespace boxlite
