// Run inside a box by network_test.cpp: binds UDP PORT on every address, answers one datagram
// with "box got " and its payload, and exits. Static, so it runs in any box root (busybox's nc
// has no UDP).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fputs("usage: udp_echo_probe PORT\n", stderr);
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
