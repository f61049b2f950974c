// The connection workload of benchmark/net: `net_probe connect IP PORT N` makes N TCP connections
// to IP:PORT one after the other (connect, then close) and prints the mean nanoseconds per
// connection. Static, so a busybox box can run it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
    if (argc != 5 || std::string(argv[1]) != "connect") {
        std::fputs("usage: net_probe connect IP PORT N\n", stderr);
        return 2;
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[3])));
    if (::inet_pton(AF_INET, argv[2], &to.sin_addr) != 1) return 2;
    const long n = std::atol(argv[4]);
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
            std::fprintf(stderr, "net_probe: connect %ld: %s\n", i, std::strerror(errno));
            return 1;
        }
        ::close(fd);
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    std::printf("%lld\n", static_cast<long long>(ns.count() / (n > 0 ? n : 1)));
    return 0;
}
