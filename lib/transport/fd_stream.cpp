// FdStream's system calls (include/boxlite/transport/fd_stream.hpp).
#include <boxlite/transport/fd_stream.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite {

BoxliteResult<std::size_t> FdStream::read_some(std::span<std::byte> buffer) {
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

BoxliteResult<void> FdStream::write_all(std::span<const std::byte> data) {
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

BoxliteResult<void> FdStream::shutdown_write() {
    const int fd = live_fd();
    if (fd < 0) return fail(ErrorKind::RpcTransport, "shutdown on a closed stream");
    if (::shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        return fail_errno(ErrorKind::RpcTransport, "half-closing the agent stream", errno);
    }
    return {};
}

void FdStream::close() {
    if (!state_) return;
    const int fd = state_->fd.exchange(-1);
    if (fd >= 0) {
        ::shutdown(fd, SHUT_RDWR);  // wakes a reader blocked in another thread
        ::close(fd);
    }
}

}  // namespace boxlite
