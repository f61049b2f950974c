// Descriptors beside bytes on a UNIX stream socket (SCM_RIGHTS), header-only so the static guest
// agent uses the same code as the host library.
//
//   send_with_fds(sock, bytes, {fd})    one sendmsg: the descriptors travel with the first byte
//   recv_with_fds(sock, buf, flags, out) one recvmsg: every descriptor that came with these bytes
//                                        is appended to `out` (close-on-exec); any the control
//                                        buffer could not hold the kernel closes (MSG_CTRUNC)
//
// On a stream socket a descriptor belongs to the sendmsg() whose first byte it came with; the
// kernel never hands it out with bytes of a later sendmsg(), so a receiver that reads exactly one
// message's bytes at a time can tell which message carried it.
#pragma once

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

namespace boxlite::base {

/// Why `fd` may not be handed to a box command as its stdin, or nullptr when it may: only the
/// read end of an anonymous pipe. Never a terminal (TIOCSTI would type into the user's shell), a
/// file, a socket, a named FIFO (its /proc/self/fd link would lead to a host path), or anything
/// open for writing.
inline const char* stdin_pipe_problem(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return "the stdin descriptor cannot be examined";
    struct statfs fs {};
    if (!S_ISFIFO(st.st_mode) || ::fstatfs(fd, &fs) != 0 || fs.f_type != PIPEFS_MAGIC)
        return "the stdin descriptor is not an anonymous pipe (allowed: the read end of a pipe, never a terminal, "
               "file, socket or named FIFO)";
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) != O_RDONLY)
        return "the stdin descriptor is open for writing (allowed: the read end of a pipe, open read-only)";
    return nullptr;
}

/// The most descriptors one recv_with_fds() accepts; more are closed by the kernel.
inline constexpr std::size_t kMaxPassedFds = 8;

/// Sends `bytes` (possibly only a prefix: the count is returned, -1 with errno on failure) with
/// `fds` attached. MSG_NOSIGNAL: a closed peer is EPIPE, not a signal.
inline ssize_t send_with_fds(int socket, std::span<const std::byte> bytes, std::span<const int> fds, int flags = 0) {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxPassedFds * sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        if (fds.size() > kMaxPassedFds) {
            errno = EINVAL;
            return -1;
        }
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size() * sizeof(int));
    }
    ssize_t n = -1;
    do {
        n = ::sendmsg(socket, &msg, flags | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

/// Receives into `buffer` like recv(2) with `flags`; descriptors that came with the bytes are
/// appended to `fds` (close-on-exec). Returns what recvmsg returned.
inline ssize_t recv_with_fds(int socket, std::span<std::byte> buffer, int flags, std::vector<int>& fds) {
    iovec iov{buffer.data(), buffer.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxPassedFds * sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket, &msg, flags | MSG_CMSG_CLOEXEC);
    if (n < 0 || msg.msg_controllen == 0) return n;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
            fds.push_back(fd);
        }
    }
    return n;
}

}  // namespace boxlite::base
