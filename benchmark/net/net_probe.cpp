// The in-box workloads of benchmark/net, run alike by our box and by pasta's side so that both
// paths carry the same endpoints (the box has busybox, whose `wc -c` and `head -c` are several
// times slower than coreutils' and would otherwise be what a throughput comparison measures):
//
//   net_probe connect IP PORT N   N TCP connections to IP:PORT one after the other (connect, then
//                                 close); prints the mean nanoseconds per connection
//   net_probe send IP PORT BYTES  one connection to IP:PORT, BYTES zero bytes written to it in
//                                 256 KiB writes, then a half-close and a wait for the peer's close
//   net_probe count [BYTES]       reads stdin to its end, or until BYTES bytes came (256 KiB
//                                 reads), and prints the byte count: the program of
//                                 `nc -l -p PORT -e`. With BYTES the sender need not half-close
//                                 to get its answer (this passt's half-close has lost answers)
//
// Static, so a busybox box can run it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kChunk = 256 * 1024;

bool parse_address(const char* ip, const char* port, sockaddr_in& to) {
    to = {};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(std::atoi(port)));
    return ::inet_pton(AF_INET, ip, &to.sin_addr) == 1;
}

int connect_loop(const sockaddr_in& to, long n) {
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
            std::fprintf(stderr, "net_probe: connect %ld: %s\n", i, std::strerror(errno));
            return 1;
        }
        ::close(fd);
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    std::printf("%lld\n", static_cast<long long>(ns.count() / (n > 0 ? n : 1)));
    return 0;
}

int send_bytes(const sockaddr_in& to, long long bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
        std::fprintf(stderr, "net_probe: connect: %s\n", std::strerror(errno));
        return 1;
    }
    const std::vector<char> block(kChunk, 0);
    long long sent = 0;
    while (sent < bytes) {
        const auto want = static_cast<std::size_t>(std::min<long long>(static_cast<long long>(kChunk), bytes - sent));
        const ssize_t n = ::send(fd, block.data(), want, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::fprintf(stderr, "net_probe: send after %lld bytes: %s\n", sent, std::strerror(errno));
            return 1;
        }
        sent += n;
    }
    ::shutdown(fd, SHUT_WR);
    char sink[4096];
    while (::recv(fd, sink, sizeof sink, 0) > 0) {}
    ::close(fd);
    return 0;
}

int count_stdin(long long expected) {
    std::vector<char> buffer(kChunk);
    long long total = 0;
    while (expected <= 0 || total < expected) {
        const ssize_t n = ::read(0, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            std::fprintf(stderr, "net_probe: read after %lld bytes: %s\n", total, std::strerror(errno));
            return 1;
        }
        if (n == 0) break;
        total += n;
    }
    std::printf("%lld\n", total);
    std::fflush(stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    sockaddr_in to{};
    if (mode == "connect" && argc == 5 && parse_address(argv[2], argv[3], to))
        return connect_loop(to, std::atol(argv[4]));
    if (mode == "send" && argc == 5 && parse_address(argv[2], argv[3], to)) return send_bytes(to, std::atoll(argv[4]));
    if (mode == "count" && (argc == 2 || argc == 3)) return count_stdin(argc == 3 ? std::atoll(argv[2]) : 0);
    std::fputs("usage: net_probe connect IP PORT N | send IP PORT BYTES | count [BYTES]\n", stderr);
    return 2;
}
