// Run inside a box by network_test.cpp. Static, so it runs in any box root (busybox's nc has no
// UDP, and cannot choose the address it listens on).
//   udp_echo_probe PORT           binds UDP PORT on every address, answers one datagram with
//                                 "box got " and its payload, and exits
//   udp_echo_probe tcp ADDR PORT  listens on TCP ADDR:PORT, answers one connection with
//                                 "box saw PEER-ADDRESS", and exits
//   udp_echo_probe connect ADDR PORT  connects to TCP ADDR:PORT, prints "peer ADDR:PORT" (its
//                                 getpeername()), sends "hello from the box\n", half-closes, and
//                                 prints what comes back to the server's FIN; a failing call
//                                 prints "CALL: ERROR" and exits 1
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int tcp_answer(const char* address, const char* port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(static_cast<std::uint16_t>(std::atoi(port)));
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || ::inet_pton(AF_INET, address, &in.sin_addr) != 1 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0 || ::listen(fd, 4) != 0) {
        std::printf("listen: %s\n", std::strerror(errno));
        return 1;
    }
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    const int c = ::accept(fd, reinterpret_cast<sockaddr*>(&peer), &length);
    if (c < 0) return 1;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
    const std::string answer = "box saw " + std::string(text) + "\n";
    return ::write(c, answer.data(), answer.size()) == static_cast<ssize_t>(answer.size()) ? 0 : 1;
}

int tcp_connect(const char* address, const char* port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(static_cast<std::uint16_t>(std::atoi(port)));
    if (fd < 0 || ::inet_pton(AF_INET, address, &in.sin_addr) != 1 ||
        ::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
        std::printf("connect: %s\n", std::strerror(errno));
        return 1;
    }
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length);
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
    std::printf("peer %s:%u\n", text, static_cast<unsigned>(ntohs(peer.sin_port)));
    const std::string hello = "hello from the box\n";
    if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
        std::printf("write: %s\n", std::strerror(errno));
        return 1;
    }
    ::shutdown(fd, SHUT_WR);
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n == 0) break;
        if (n < 0) {
            std::printf("read: %s\n", std::strerror(errno));
            return 1;
        }
        std::fwrite(buffer, 1, static_cast<std::size_t>(n), stdout);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "tcp") return tcp_answer(argv[2], argv[3]);
    if (argc == 4 && std::string(argv[1]) == "connect") return tcp_connect(argv[2], argv[3]);
    if (argc != 2) {
        std::fputs("usage: udp_echo_probe PORT | udp_echo_probe tcp ADDR PORT | udp_echo_probe connect ADDR PORT\n",
                   stderr);
        return 2;
    }
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[1])));
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
        std::printf("bind: %s\n", std::strerror(errno));
        return 1;
    }
    char buffer[2048];
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    const ssize_t n = ::recvfrom(fd, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&peer), &length);
    if (n < 0) return 1;
    const std::string answer = "box got " + std::string(buffer, static_cast<std::size_t>(n));
    if (::sendto(fd, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&peer), length) < 0) return 1;
    return 0;
}
