// The splice port forwarder (lib/net/port_forwarder.*) on the host's loopback: a listener on one
// port, the target a real server on another. Bytes cross whole both ways with their half-closes,
// a refused or resetting target resets the client, the connection limit holds clients in the
// backlog, and a target that never reads stops the client instead of filling memory.
#include "net/port_forwarder.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace boxlite::net {
namespace {

using namespace std::chrono_literals;

/// A TCP socket bound to 127.0.0.1 on a free port, listening; its port in `port`.
base::OwnedFd loopback_listener(std::uint16_t& port) {
    base::OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof in;
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&in), sizeof in), 0) << std::strerror(errno);
    EXPECT_EQ(::listen(fd.get(), 64), 0);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&in), &length);
    port = ntohs(in.sin_port);
    return fd;
}

sockaddr_storage loopback_address(std::uint16_t port) {
    sockaddr_storage storage{};
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return storage;
}

int connect_to(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto address = loopback_address(port);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(sockaddr_in)) != 0) {
        ::close(fd);
        return -1;
    }
    timeval guard{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &guard, sizeof guard);
    return fd;
}

std::string pattern(std::size_t bytes, std::uint64_t seed) {
    std::string data(bytes, '\0');
    for (std::size_t i = 0; i < bytes; ++i) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        data[i] = static_cast<char>(seed >> 56);
    }
    return data;
}

bool send_all(int fd, const std::string& data) {
    for (std::size_t sent = 0; sent < data.size();) {
        const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

/// Reads to EOF (or an error: its errno in `error`).
std::string read_all(int fd, int* error = nullptr) {
    std::string out;
    char buffer[65536];
    for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n > 0) {
            out.append(buffer, static_cast<std::size_t>(n));
            continue;
        }
        if (error != nullptr) *error = n == 0 ? 0 : errno;
        return out;
    }
}

/// CPU time of this process (every thread: the forwarder's included), in ms.
double process_cpu_ms() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000.0 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000.0;
}

/// A client connected through the forwarder at `port`, and the target server's end of it (its
/// listener `server`); either invalid on failure.
struct Ends {
    base::OwnedFd client;
    base::OwnedFd target;
    [[nodiscard]] bool ok() const { return client.valid() && target.valid(); }
};
Ends connect_through(std::uint16_t port, int server) {
    Ends ends;
    ends.client.reset(connect_to(port));
    if (ends.client) ends.target.reset(::accept4(server, nullptr, nullptr, SOCK_CLOEXEC));
    return ends;
}

/// The forwarder on its own thread: from a fresh listener to `target_port`.
struct Running {
    std::uint16_t port = 0;
    base::OwnedFd stop{::eventfd(0, EFD_CLOEXEC)};
    std::unique_ptr<PortForwarder> forwarder;
    BoxliteResult<void> result;
    std::thread thread;

    Running(std::uint16_t target_port, std::size_t max_connections = PortForwarder::kDefaultMaxConnections) {
        std::vector<ForwardedPort> ports(1);
        ports[0].listener = loopback_listener(port);
        ports[0].target = loopback_address(target_port);
        ports[0].target_length = sizeof(sockaddr_in);
        forwarder = std::make_unique<PortForwarder>(std::move(ports), max_connections);
        thread = std::thread([this] { result = forwarder->run(stop.get()); });
    }
    ~Running() { finish(); }
    void finish() {
        if (!thread.joinable()) return;
        const std::uint64_t one = 1;
        (void)!::write(stop.get(), &one, sizeof one);
        thread.join();
        EXPECT_TRUE(result) << result.error().to_string();
    }
};

TEST(PortForwarder, CarriesBytesBothWaysWithTheirHalfCloses) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    const auto upload = pattern(8 << 20, 1);
    const auto download = pattern(6 << 20, 2);
    std::string received_by_server;
    std::thread serve([&] {
        const int c = ::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC);
        ASSERT_GE(c, 0);
        received_by_server = read_all(c);  // to the client's FIN
        EXPECT_TRUE(send_all(c, download));
        ::close(c);
    });
    const int client = connect_to(forward.port);
    ASSERT_GE(client, 0) << std::strerror(errno);
    ASSERT_TRUE(send_all(client, upload));
    ::shutdown(client, SHUT_WR);
    // A slow reader: the server has sent everything and closed while most of it still waits in
    // the forwarder (the server's socket is then fully shut, and must not end the connection).
    std::this_thread::sleep_for(200ms);
    int error = -1;
    const auto received = read_all(client, &error);
    ::close(client);
    serve.join();
    EXPECT_EQ(error, 0) << "the server's FIN did not arrive: " << std::strerror(error);
    EXPECT_TRUE(received_by_server == upload) << received_by_server.size() << " of " << upload.size() << " bytes";
    EXPECT_TRUE(received == download) << received.size() << " of " << download.size() << " bytes";
    forward.finish();
    EXPECT_EQ(forward.forwarder->stats().accepted, 1U);
    EXPECT_EQ(forward.forwarder->stats().bytes_in, upload.size());
    EXPECT_EQ(forward.forwarder->stats().bytes_out, download.size());
    EXPECT_EQ(forward.forwarder->open_connections(), 0U);
}

TEST(PortForwarder, ManyConnectionsAtOnceEachGetTheirOwnBytes) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    constexpr int kClients = 16;
    std::thread serve([&] {  // an echo server, one thread per connection
        std::vector<std::thread> echoes;
        for (int i = 0; i < kClients; ++i) {
            const int c = ::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC);
            ASSERT_GE(c, 0);
            echoes.emplace_back([c] {
                char buffer[16384];
                for (ssize_t n; (n = ::recv(c, buffer, sizeof buffer, 0)) > 0;) {
                    if (::send(c, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) break;
                }
                ::close(c);
            });
        }
        for (auto& e : echoes) e.join();
    });
    std::vector<std::thread> clients;
    std::atomic<int> intact{0};
    for (int i = 0; i < kClients; ++i) {
        clients.emplace_back([&, i] {
            const int fd = connect_to(forward.port);
            if (fd < 0) return;
            const auto data = pattern(256 << 10, static_cast<std::uint64_t>(i) + 10);
            std::thread writer([&] {
                send_all(fd, data);
                ::shutdown(fd, SHUT_WR);
            });
            const auto echoed = read_all(fd);
            writer.join();
            ::close(fd);
            if (echoed == data) ++intact;
        });
    }
    for (auto& c : clients) c.join();
    serve.join();
    EXPECT_EQ(intact.load(), kClients);
}

TEST(PortForwarder, ARefusedTargetResetsTheClient) {
    std::uint16_t closed_port = 0;
    { auto gone = loopback_listener(closed_port); }  // a port nobody listens on now
    Running forward(closed_port);
    const int client = connect_to(forward.port);
    ASSERT_GE(client, 0);
    int error = 0;
    EXPECT_EQ(read_all(client, &error), "");
    EXPECT_EQ(error, ECONNRESET) << std::strerror(error);
    ::close(client);
    forward.finish();
    EXPECT_EQ(forward.forwarder->stats().refused, 1U);
}

TEST(PortForwarder, ATargetThatResetsResetsTheClient) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    auto ends = connect_through(forward.port, server.get());
    ASSERT_TRUE(ends.ok()) << std::strerror(errno);
    ASSERT_TRUE(send_all(ends.target.get(), "before the reset"));
    char got[16];
    ASSERT_EQ(::recv(ends.client.get(), got, sizeof got, MSG_WAITALL), 16);
    const linger abort{1, 0};
    ::setsockopt(ends.target.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    ends.target.reset();
    int error = 0;
    EXPECT_EQ(read_all(ends.client.get(), &error), "");
    EXPECT_EQ(error, ECONNRESET) << std::strerror(error);
}

TEST(PortForwarder, TheConnectionLimitHoldsClientsInTheBacklog) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port, /*max_connections=*/2);
    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(connect_to(forward.port));  // the kernel completes all three
    std::vector<int> accepted;
    auto accept_within = [&](std::chrono::milliseconds wait) {
        pollfd ready{server.get(), POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(wait.count())) != 1) return false;
        accepted.push_back(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
        return true;
    };
    EXPECT_TRUE(accept_within(10s));
    EXPECT_TRUE(accept_within(10s));
    EXPECT_FALSE(accept_within(300ms)) << "a third connection reached the target past the limit of 2";
    ::close(clients[0]);  // its FIN, then the target's: the first connection ends
    ::close(accepted[0]);
    EXPECT_TRUE(accept_within(10s)) << "the third client was not let through after one closed";
    for (const int fd : clients) ::close(fd);
    for (const int fd : accepted) ::close(fd);
}

// Out of descriptors, accept() fails while the client stays in the backlog: the forwarder must
// not spin on its level-triggered listener, and must take the client once descriptors are back.
TEST(PortForwarder, OutOfDescriptorsItWaitsWithoutSpinningAndRecovers) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    {  // one connection through first: the forwarder is in its loop, its own descriptors made
        auto warm = connect_through(forward.port, server.get());
        ASSERT_TRUE(warm.ok()) << std::strerror(errno);
        warm = {};
        std::this_thread::sleep_for(100ms);  // its descriptors closed: the limit below binds
    }
    const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // made before the limit
    ASSERT_GE(client, 0);
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    const int probe = ::dup(0);  // the lowest free descriptor: the limit makes it the first refused
    ASSERT_GE(probe, 0);
    ::close(probe);
    rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(probe);
    const double before = process_cpu_ms();
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
    const auto address = loopback_address(forward.port);
    const int connected = ::connect(client, reinterpret_cast<const sockaddr*>(&address), sizeof(sockaddr_in));
    std::this_thread::sleep_for(500ms);
    ::setrlimit(RLIMIT_NOFILE, &saved);
    const double after = process_cpu_ms();
    ASSERT_EQ(connected, 0) << std::strerror(errno);  // the kernel completes it: the client is in the backlog
    EXPECT_LT(after - before, 250.0) << "the forwarder spun while out of descriptors";
    timeval guard{30, 0};
    ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
    pollfd ready{server.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&ready, 1, 10'000), 1) << "the client was not taken once descriptors were back";
    const int c = ::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(c, 0);
    ASSERT_TRUE(send_all(c, "late but whole"));
    ::close(c);
    EXPECT_EQ(read_all(client), "late but whole");
    ::close(client);
}

/// Fills the path from `fd` until it takes no more (its peer does not read; `quiet_tries` sends
/// 20 ms apart found no room): 1 GiB at most. Returns the bytes sent.
std::size_t fill(int fd, int quiet_tries = 10) {
    const std::string chunk(1 << 20, 'x');
    std::size_t sent = 0;
    for (int quiet = 0; quiet < quiet_tries && sent < (1ULL << 30);) {
        const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            quiet = 0;
        } else {
            ++quiet;
            std::this_thread::sleep_for(20ms);
        }
    }
    return sent;
}

// A socket that fails (the client resets) or is shut both ways (the target half-closed, the
// client sent its FIN) while the other side does not read: its error or hang-up must not wake
// the forwarder again and again (a level-triggered HUP or ERR would spin it, at a client's will).
TEST(PortForwarder, AClientThatResetsOrHangsUpBehindASlowTargetDoesNotSpinIt) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    // The client resets with its bytes still queued towards a target that does not read.
    auto reset = connect_through(forward.port, server.get());
    ASSERT_TRUE(reset.ok()) << std::strerror(errno);
    fill(reset.client.get());
    const linger abort{1, 0};
    ::setsockopt(reset.client.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    // The target half-closes (its FIN reaches the client) and reads nothing; the client fills the
    // path and sends its FIN: the forwarder's client socket is then shut both ways.
    auto hung = connect_through(forward.port, server.get());
    ASSERT_TRUE(hung.ok()) << std::strerror(errno);
    ::shutdown(hung.target.get(), SHUT_WR);
    char byte = 0;
    ASSERT_EQ(::recv(hung.client.get(), &byte, 1, 0), 0);  // the target's FIN, passed on
    fill(hung.client.get());
    ::shutdown(hung.client.get(), SHUT_WR);
    const double before = process_cpu_ms();
    reset.client.reset();
    std::this_thread::sleep_for(500ms);
    EXPECT_LT(process_cpu_ms() - before, 250.0) << "the forwarder spun on a failed or hung-up socket";
    // The reset client's connection is closed: its target sees the end (a reset or EOF once read).
    ::fcntl(reset.target.get(), F_SETFL, O_NONBLOCK);
    std::string drained;
    int error = 0;
    for (int i = 0; i < 200; ++i) {
        const auto got = read_all(reset.target.get(), &error);
        drained += got;
        if (error != EAGAIN) break;
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(error == 0 || error == ECONNRESET) << std::strerror(error);
}

TEST(PortForwarder, ATargetThatNeverReadsStopsTheClientInsteadOfFillingMemory) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    Running forward(target_port);
    auto ends = connect_through(forward.port, server.get());  // the target's end is never read
    ASSERT_TRUE(ends.ok()) << std::strerror(errno);
    const std::size_t sent = fill(ends.client.get(), 20);
    // What is held: the two sockets' buffers (a few MiB on loopback) and one pipe.
    EXPECT_LT(sent, 64ULL << 20) << "the forwarder kept reading from a client whose target does not read";
}

// The host alias splice's use of the forwarder (lib/shim/network.cpp): a port added while it
// runs, from a watched descriptor; its target's sockets from the socket maker; a refused
// connection reported, and the port removed from that report.
TEST(PortForwarder, APortAddedWhileRunningUsesTheSocketMakerAndIsRemovedWhenItsTargetRefuses) {
    std::uint16_t target_port = 0;
    auto server = loopback_listener(target_port);
    base::OwnedFd stop(::eventfd(0, EFD_CLOEXEC));
    base::OwnedFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    PortForwarder forwarder({});
    std::atomic<int> made{0};
    forwarder.set_socket_maker([&](int family) {
        ++made;
        return ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);  // blocking: the forwarder makes it non-blocking
    });
    std::atomic<std::uint16_t> added_port{0};
    std::atomic<int> refused_index{-1};
    std::size_t added_index = 0;
    forwarder.watch(wake.get(), [&] {
        std::uint64_t value = 0;
        (void)!::read(wake.get(), &value, sizeof value);
        std::uint16_t port = 0;
        ForwardedPort added;
        added.listener = loopback_listener(port);
        added.target = loopback_address(target_port);
        added.target_length = sizeof(sockaddr_in);
        added.target_elsewhere = true;
        added_index = forwarder.add_port(std::move(added));
        added_port = port;
    });
    forwarder.on_refused([&](std::size_t index) {
        refused_index = static_cast<int>(index);
        forwarder.remove_port(index);
    });
    BoxliteResult<void> result;
    std::thread thread([&] { result = forwarder.run(stop.get()); });
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(wake.get(), &one, sizeof one), 8);
    for (int i = 0; i < 500 && added_port == 0; ++i) std::this_thread::sleep_for(2ms);
    ASSERT_NE(added_port.load(), 0) << "the watched descriptor's callback never ran";

    auto ends = connect_through(added_port, server.get());
    ASSERT_TRUE(ends.ok()) << std::strerror(errno);
    ASSERT_TRUE(send_all(ends.client.get(), "ping"));
    char got[4] = {};
    ASSERT_EQ(::recv(ends.target.get(), got, sizeof got, MSG_WAITALL), 4);
    EXPECT_EQ(std::string(got, 4), "ping");
    EXPECT_EQ(made.load(), 1) << "the target's socket did not come from the socket maker";
    ends = {};

    // The target's server goes: the next connection is reset, the port reported and removed.
    server.reset();
    const int client = connect_to(added_port);
    ASSERT_GE(client, 0) << "the listener should still accept the connection it then resets";
    int error = 0;
    (void)read_all(client, &error);
    ::close(client);
    EXPECT_EQ(error, ECONNRESET) << std::strerror(error);
    for (int i = 0; i < 500 && refused_index < 0; ++i) std::this_thread::sleep_for(2ms);
    EXPECT_EQ(refused_index.load(), static_cast<int>(added_index));
    EXPECT_LT(connect_to(added_port), 0) << "a removed port's listener still accepts";
    EXPECT_EQ(errno, ECONNREFUSED);

    (void)!::write(stop.get(), &one, sizeof one);
    thread.join();
    EXPECT_TRUE(result) << result.error().to_string();
    EXPECT_EQ(forwarder.stats().refused, 1U);
}

}  // namespace
}  // namespace boxlite::net
