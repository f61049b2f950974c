// TCP transfers for the network benchmarks (net_bench.cpp: the namespace engine against pasta;
// qemu_net_bench.cpp: the qemu engine against QEMU's own -netdev stream), and the network
// namespace they run in: loopback, and a tap nobody reads carrying 198.51.100.1/24 (and .2, a
// second host address for net_bench's pasta side) with the default route, so no packet leaves
// the machine.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace boxlite::bench::net {

/// Moves this process into a new network namespace as above; false when that failed.
inline bool enter_bench_netns() {
    return ::unshare(CLONE_NEWNET) == 0 &&
           std::system(
               "ip link set lo up && ip tuntap add t0 mode tap && ip addr add 198.51.100.1/24 dev t0 && "
               "ip addr add 198.51.100.2/24 dev t0 && "
               "ip link set t0 up && ip route add default via 198.51.100.254") == 0;
}

/// MiB per transfer: `env` when set to a positive number, else `fallback`.
inline long long transfer_mib(const char* env, long long fallback) {
    if (const char* value = std::getenv(env)) {
        if (const long long n = std::atoll(value); n > 0) return n;
    }
    return fallback;
}

/// A TCP listener on IPv4 `address`:`port` (0: one the kernel picks; the port bound is written
/// back), or -1.
inline int listen_on(const char* address, std::uint16_t& port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    if (::inet_pton(AF_INET, address, &in.sin_addr) != 1 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0 || ::listen(fd, 64) != 0) {
        ::close(fd);
        return -1;
    }
    socklen_t length = sizeof in;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&in), &length);
    port = ntohs(in.sin_port);
    return fd;
}

inline int listen_loopback(std::uint16_t& port) { return listen_on("127.0.0.1", port); }

/// Accepts one connection on `listener` and reads `bytes` from it: the time from the accept to
/// the last byte (0 when fewer came).
inline double sink(int listener, std::size_t bytes) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return 0;
    const auto start = std::chrono::steady_clock::now();
    std::vector<char> buffer(1 << 20);
    std::size_t got = 0;
    while (got < bytes) {
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    ::close(fd);
    return got >= bytes ? ns : 0;
}

/// Connects to `address`:`port` (127.0.0.1 unless given), sends `bytes`, half-closes (unless
/// `half_close` is false: the receiver counts to a known size) and reads the answer (a count):
/// the time from connect to the answer, 0 on failure; `answer` gets it, or why it failed.
inline double push(std::uint16_t port, std::size_t bytes, std::string& answer, int timeout_seconds = 120,
                   const char* address = "127.0.0.1", bool half_close = true) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval guard{timeout_seconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    ::inet_pton(AF_INET, address, &in.sin_addr);
    const auto start = std::chrono::steady_clock::now();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
        answer = std::string("(connect: ") + std::strerror(errno) + ")";
        ::close(fd);
        return 0;
    }
    std::vector<char> block(1 << 20, 'n');
    std::size_t sent = 0;
    while (sent < bytes) {
        const ssize_t n = ::send(fd, block.data(), std::min(block.size(), bytes - sent), MSG_NOSIGNAL);
        if (n <= 0) {
            answer = "(send after " + std::to_string(sent) + " bytes: " + std::strerror(errno) + ")";
            ::close(fd);
            return 0;
        }
        sent += static_cast<std::size_t>(n);
    }
    if (half_close) ::shutdown(fd, SHUT_WR);
    answer.clear();
    char buffer[256];
    std::string failure = "(the connection closed without an answer)";
    for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n < 0) failure = std::string("(no answer: ") + std::strerror(errno) + ")";
        if (n <= 0) break;
        answer.append(buffer, static_cast<std::size_t>(n));
        if (answer.find('\n') != std::string::npos) break;
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    ::close(fd);
    if (answer.empty()) {
        answer = failure;
        return 0;
    }
    return ns;
}

}  // namespace boxlite::bench::net
