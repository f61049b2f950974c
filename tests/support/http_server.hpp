// A tiny HTTP server for the network tests (the namespace engine's in tests/agent, the qemu
// engine's in tests/cli): it answers whole requests only, so a test can tell a request the
// firewall cut short from one that arrived.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace boxlite::test {

/// A tiny HTTP server on one address: answers every request with `body`, until destroyed.
class HttpServer {
public:
    HttpServer(const char* address, std::string body) : body_(std::move(body)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in in{};
        in.sin_family = AF_INET;
        ::inet_pton(AF_INET, address, &in.sin_addr);
        ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&in), sizeof in) == 0 && ::listen(fd_, 16) == 0;
        socklen_t length = sizeof in;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&in), &length);
        port_ = ntohs(in.sin_port);
        thread_ = std::thread([this] {
            for (;;) {
                const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (client < 0) return;
                // A whole request, as a server waits for it: an HTTP header block to its empty
                // line, or one TLS record (a ClientHello). Anything less is not answered.
                std::string request;
                char buffer[4096];
                bool whole = false;
                while (!whole) {
                    const ssize_t n = ::read(client, buffer, sizeof buffer);
                    if (n <= 0) break;
                    request.append(buffer, static_cast<std::size_t>(n));
                    whole = request.find("\r\n\r\n") != std::string::npos ||
                            (request[0] == '\x16' && request.size() >= 5 &&
                             request.size() >=
                                 5 + ((static_cast<std::size_t>(static_cast<unsigned char>(request[3])) << 8) |
                                      static_cast<unsigned char>(request[4])));
                }
                if (!whole) {
                    ::close(client);
                    continue;
                }
                ++requests_;
                const std::string answer = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body_.size()) +
                                           "\r\nConnection: close\r\n\r\n" + body_;
                (void)!::write(client, answer.data(), answer.size());
                ::close(client);
            }
        });
    }
    ~HttpServer() {
        ::shutdown(fd_, SHUT_RDWR);
        thread_.join();
        ::close(fd_);
    }
    [[nodiscard]] bool ok() const { return ok_; }
    [[nodiscard]] std::uint16_t port() const { return port_; }
    /// Whole requests answered.
    [[nodiscard]] int requests() const { return requests_; }

private:
    int fd_ = -1;
    bool ok_ = false;
    std::uint16_t port_ = 0;
    std::atomic<int> requests_{0};
    std::string body_;
    std::thread thread_;
};

}  // namespace boxlite::test
