// The cgroup BPF connect redirect (lib/net/connect_redirect.*) on the running kernel: each test
// loads the programs, attaches them to a cgroup of its own and connects from a forked child.
//
// No packet may leave the machine: every connect is made by a child in a fresh network namespace
// whose only device is its loopback, where host.boxlite.internal has no route, so a connect that
// is not redirected fails at once with ENETUNREACH, and one that is reaches a listener on that
// namespace's 127.0.0.1. A child that could not make its namespace connects nowhere. The children
// report in words through a pipe (gtest's assertions in a forked child would report to a copy of
// the test): an empty report is success.
#include "net/connect_redirect.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace boxlite::net {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uint16_t kAliasPort = 8080;
/// The listener's port in the child's fresh namespace: nothing else is there, so it is free.
constexpr std::uint16_t kLocalPort = 47001;
constexpr std::uint32_t kNobody = 65534;

std::string errno_text(std::string_view what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

/// Where cgroup v2 is mounted: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a pure one.
std::optional<fs::path> cgroup_v2_root() {
    std::error_code ignored;
    if (fs::exists("/sys/fs/cgroup/unified/cgroup.procs", ignored)) return fs::path("/sys/fs/cgroup/unified");
    if (fs::exists("/sys/fs/cgroup/cgroup.controllers", ignored)) return fs::path("/sys/fs/cgroup");
    return std::nullopt;
}

/// Runs `body` in a forked child; its report, or what killed it.
std::string in_child(const std::function<std::string()>& body) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) return errno_text("pipe2");
    const pid_t pid = ::fork();
    if (pid < 0) return errno_text("fork");
    if (pid == 0) {
        ::close(ends[0]);
        ::alarm(10);  // a hung connect or accept ends the child, not the test run
        const std::string report = body();
        (void)!::write(ends[1], report.data(), report.size());
        ::_exit(report.empty() ? 0 : 1);
    }
    ::close(ends[1]);
    std::string report;
    char buffer[512];
    for (ssize_t n; (n = ::read(ends[0], buffer, sizeof buffer)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        report.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(ends[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status)) return fmt::format("child killed by signal {} {}", WTERMSIG(status), report);
    if (WEXITSTATUS(status) != 0 && report.empty()) return fmt::format("child exited {}", WEXITSTATUS(status));
    return report;
}

/// A network namespace of the caller's own with its loopback up, and nothing else.
std::string enter_fresh_netns() {
    if (::unshare(CLONE_NEWNET) != 0) return errno_text("unshare(CLONE_NEWNET)");
    const base::OwnedFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(fd.get(), SIOCGIFFLAGS, &request) != 0) return errno_text("SIOCGIFFLAGS lo");
    request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(fd.get(), SIOCSIFFLAGS, &request) != 0) return errno_text("SIOCSIFFLAGS lo");
    return "";
}

std::string join_cgroup(const fs::path& cgroup) {
    std::ofstream procs(cgroup / "cgroup.procs");
    procs << ::getpid() << std::flush;
    if (!procs) return fmt::format("joining {} failed", cgroup.string());
    return "";
}

sockaddr_in ipv4(std::uint32_t address, std::uint16_t port) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(address);
    in.sin_port = htons(port);
    return in;
}

base::OwnedFd listener_on_loopback(std::uint16_t port) {
    base::OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto address = ipv4(INADDR_LOOPBACK, port);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(fd.get(), 16) != 0) {
        return {};
    }
    return fd;
}

/// connect() of `fd` to host.boxlite.internal:`port`: 0, or its errno.
int connect_alias(int fd, std::uint16_t port) {
    const auto address = ipv4(ConnectRedirect::kHostAliasIpv4, port);
    return ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 ? 0 : errno;
}

int connect_alias_from_new_socket(int type, std::uint16_t port) {
    const base::OwnedFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
    return connect_alias(fd.get(), port);
}

std::string peer_of(int fd) {
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return errno_text("getpeername");
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
    return fmt::format("{}:{}", text, ntohs(peer.sin_port));
}

/// "" if the connect was refused for want of a route, the way an unredirected one is here.
std::string expect_unreachable(int error, std::string_view what) {
    if (error == ENETUNREACH) return "";
    if (error == 0) return fmt::format("{}: connected (redirected?)", what);
    return fmt::format("{}: {} instead of ENETUNREACH", what, std::strerror(error));
}

/// A TCP connect to the alias port that is redirected to `listener`, bytes both ways, and the
/// client's peer as the box should see it.
std::string expect_redirected(int listener, std::uint16_t alias_port) {
    const base::OwnedFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (const int error = connect_alias(client.get(), alias_port); error != 0) {
        return fmt::format("connect to the alias port {}: {}", alias_port, std::strerror(error));
    }
    const base::OwnedFd server(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!server) return errno_text("accept");
    const std::string request(3000, 'q');
    const std::string answer = "answer";
    if (::send(client.get(), request.data(), request.size(), 0) != static_cast<ssize_t>(request.size()) ||
        ::send(server.get(), answer.data(), answer.size(), 0) != static_cast<ssize_t>(answer.size())) {
        return errno_text("send");
    }
    std::string got(request.size(), '\0');
    if (::recv(server.get(), got.data(), got.size(), MSG_WAITALL) != static_cast<ssize_t>(got.size()) ||
        got != request) {
        return "the listener did not get the client's bytes";
    }
    got.assign(answer.size(), '\0');
    if (::recv(client.get(), got.data(), got.size(), MSG_WAITALL) != static_cast<ssize_t>(got.size()) ||
        got != answer) {
        return "the client did not get the listener's bytes";
    }
    if (const auto peer = peer_of(client.get()); peer != fmt::format("192.168.127.254:{}", alias_port)) {
        return fmt::format("the client's peer is {}, not the alias", peer);
    }
    return "";
}

/// Whether `map` holds a key for `port` (host order): set_port()'s bookkeeping seen from outside.
bool map_has(int map, std::uint16_t port) {
    std::uint32_t key = htons(port);
    std::uint32_t value = 0;
    bpf_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.map_fd = static_cast<std::uint32_t>(map);
    attr.key = reinterpret_cast<std::uintptr_t>(&key);
    attr.value = reinterpret_cast<std::uintptr_t>(&value);
    return ::syscall(__NR_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof attr) == 0;
}

class ConnectRedirectTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (loading cgroup BPF programs)";
        const auto root = cgroup_v2_root();
        if (!root) {
            GTEST_SKIP() << "precondition: no cgroup v2 hierarchy mounted (neither /sys/fs/cgroup/unified nor "
                            "/sys/fs/cgroup is one)";
        }
        auto loaded = ConnectRedirect::load();
        // A kernel that will not (no privilege for bpf(), no getpeername hook) is a precondition;
        // a verifier that ran and said no is this code's bug, and fails.
        if (!loaded && loaded.error().kind() == ErrorKind::Unsupported &&
            loaded.error().message().find("verifier log") == std::string::npos) {
            GTEST_SKIP() << "precondition: the kernel loads no cgroup BPF programs here: " << loaded.error().message();
        }
        ASSERT_TRUE(loaded) << loaded.error().to_string();
        redirect_.emplace(std::move(*loaded));
        static std::atomic<int> serial{0};
        const auto dir = *root / fmt::format("boxlite-test-{}-{}", ::getpid(), serial++);
        ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << errno_text(dir.string());
        cgroup_ = dir;
        const auto attached = redirect_->attach(cgroup_.string());
        ASSERT_TRUE(attached) << attached.error().to_string();
    }

    void TearDown() override {
        if (cgroup_.empty()) return;
        // Every child has been waited for; the kernel may still be finishing one's exit.
        int result = -1;
        for (int attempt = 0; attempt < 50 && (result = ::rmdir(cgroup_.c_str())) != 0 && errno == EBUSY; ++attempt) {
            std::this_thread::sleep_for(10ms);
        }
        EXPECT_EQ(result, 0) << errno_text("removing " + cgroup_.string());
    }

    [[nodiscard]] bool set(std::uint16_t alias_port, std::uint16_t local_port) const {
        return ConnectRedirect::set_port(redirect_->forward_map(), redirect_->reverse_map(), alias_port, local_port);
    }
    [[nodiscard]] bool clear(std::uint16_t alias_port, std::uint16_t local_port) const {
        return ConnectRedirect::clear_port(redirect_->forward_map(), redirect_->reverse_map(), alias_port, local_port);
    }

    /// A child in a fresh network namespace, in the test's cgroup when `join`, listening on
    /// 127.0.0.1:kLocalPort, runs `body` with its listener.
    std::string in_box(bool join, const std::function<std::string(int listener)>& body) const {
        return in_child([&]() -> std::string {
            if (auto failed = enter_fresh_netns(); !failed.empty()) return failed;
            if (join) {
                if (auto failed = join_cgroup(cgroup_); !failed.empty()) return failed;
            }
            const auto listener = listener_on_loopback(kLocalPort);
            if (!listener) return errno_text("listening on 127.0.0.1");
            return body(listener.get());
        });
    }

    std::optional<ConnectRedirect> redirect_;
    fs::path cgroup_;
};

TEST_F(ConnectRedirectTest, MappedPortReachesTheLoopbackListenerAndThePeerIsTheAlias) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    EXPECT_EQ(in_box(true, [](int listener) { return expect_redirected(listener, kAliasPort); }), "");
}

// The forwarder that holds the redirect can die (it never should): its listeners go with it, so
// its redirect must go too, or the box's connects would be sent to loopback ports nobody listens
// on. A holder killed with SIGKILL takes its links, and so its attachment, with it.
TEST_F(ConnectRedirectTest, TheRedirectEndsWithTheProcessThatHoldsIt) {
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    const pid_t holder = ::fork();
    ASSERT_GE(holder, 0);
    if (holder == 0) {
        ::close(ready[0]);
        auto own = ConnectRedirect::load();
        const bool ok = own && own->attach(cgroup_.string()) &&
                        ConnectRedirect::set_port(own->forward_map(), own->reverse_map(), kAliasPort, kLocalPort);
        (void)!::write(ready[1], ok ? "y" : "n", 1);
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    char answer = 0;
    ASSERT_EQ(::read(ready[0], &answer, 1), 1);
    ::close(ready[0]);
    EXPECT_EQ(answer, 'y') << "the holder could not load, attach or map";
    EXPECT_EQ(in_box(true, [](int listener) { return expect_redirected(listener, kAliasPort); }), "");
    ASSERT_EQ(::kill(holder, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(holder, &status, 0), holder);
    EXPECT_EQ(in_box(true,
                     [](int) {
                         return expect_unreachable(connect_alias_from_new_socket(SOCK_STREAM, kAliasPort),
                                                   "TCP to a port mapped by a holder that has gone");
                     }),
              "");
}

/// connect() of a new IPv6 stream socket to the IPv4-mapped alias, ::ffff:192.168.127.254:`port`
/// (how a dual-stack program, Java by default, reaches it): 0 and the peer it is then told, or
/// the errno.
std::pair<int, std::string> connect_mapped_alias(std::uint16_t port, base::OwnedFd& fd) {
    fd.reset(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 to{};
    to.sin6_family = AF_INET6;
    to.sin6_port = htons(port);
    ::inet_pton(AF_INET6, "::ffff:192.168.127.254", &to.sin6_addr);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) return {errno, ""};
    sockaddr_in6 peer{};
    socklen_t length = sizeof peer;
    if (::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &length) != 0)
        return {0, errno_text("getpeername")};
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET6, &peer.sin6_addr, text, sizeof text);
    return {0, fmt::format("[{}]:{}", text, ntohs(peer.sin6_port))};
}

TEST_F(ConnectRedirectTest, AnIpv6SocketReachesTheMappedPortThroughTheIpv4MappedAlias) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    EXPECT_EQ(in_box(true,
                     [](int listener) -> std::string {
                         base::OwnedFd client;
                         const auto [error, peer] = connect_mapped_alias(kAliasPort, client);
                         if (error != 0) return fmt::format("connect: {}", std::strerror(error));
                         const base::OwnedFd server(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
                         if (!server) return errno_text("accept");
                         if (::send(client.get(), "v6", 2, 0) != 2) return errno_text("send");
                         char got[2] = {};
                         if (::recv(server.get(), got, 2, MSG_WAITALL) != 2 || std::string(got, 2) != "v6")
                             return "the listener did not get the client's bytes";
                         if (peer != fmt::format("[::ffff:192.168.127.254]:{}", kAliasPort))
                             return "the client's peer is " + peer + ", not the alias";
                         // Another port of the alias, and another IPv4-mapped address: left alone.
                         base::OwnedFd other;
                         if (auto failed = expect_unreachable(connect_mapped_alias(kAliasPort + 1, other).first,
                                                              "an unmapped port through an IPv6 socket");
                             !failed.empty())
                             return failed;
                         return "";
                     }),
              "");
}

TEST_F(ConnectRedirectTest, UnmappedPortIsLeftAlone) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    EXPECT_EQ(in_box(true,
                     [](int) {
                         return expect_unreachable(connect_alias_from_new_socket(SOCK_STREAM, kAliasPort + 1),
                                                   "TCP to an unmapped port");
                     }),
              "");
}

TEST_F(ConnectRedirectTest, UdpIsLeftAlone) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    // A datagram socket's connect() only looks the route up; without one it fails as TCP's does.
    EXPECT_EQ(in_box(true,
                     [](int) {
                         return expect_unreachable(connect_alias_from_new_socket(SOCK_DGRAM, kAliasPort),
                                                   "UDP to a mapped port");
                     }),
              "");
}

TEST_F(ConnectRedirectTest, ClearedPortIsNoLongerRedirected) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    const int forward = redirect_->forward_map();
    const int reverse = redirect_->reverse_map();
    EXPECT_EQ(in_box(true,
                     [&](int listener) {
                         if (auto failed = expect_redirected(listener, kAliasPort); !failed.empty()) return failed;
                         if (!ConnectRedirect::clear_port(forward, reverse, kAliasPort, kLocalPort)) {
                             return errno_text("clear_port");
                         }
                         return expect_unreachable(connect_alias_from_new_socket(SOCK_STREAM, kAliasPort),
                                                   "after clear_port");
                     }),
              "");
    EXPECT_FALSE(map_has(forward, kAliasPort));
    EXPECT_FALSE(map_has(reverse, kLocalPort));
    const bool cleared_again = clear(kAliasPort, kLocalPort);
    const int error = errno;
    EXPECT_FALSE(cleared_again);
    EXPECT_EQ(error, ENOENT) << std::strerror(error);
}

TEST_F(ConnectRedirectTest, ProcessesAndSocketsOutsideTheCgroupAreLeftAlone) {
    ASSERT_TRUE(set(kAliasPort, kLocalPort)) << errno_text("set_port");
    EXPECT_EQ(in_box(false,
                     [](int) {
                         return expect_unreachable(connect_alias_from_new_socket(SOCK_STREAM, kAliasPort),
                                                   "a process outside the cgroup");
                     }),
              "");
    // A socket belongs to the cgroup its maker was in when it made it, not to the one it is in
    // when it connects: made before joining, it is left alone; made after, redirected.
    EXPECT_EQ(in_box(false,
                     [this](int listener) {
                         const base::OwnedFd made_outside(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
                         if (auto failed = join_cgroup(cgroup_); !failed.empty()) return failed;
                         if (auto failed = expect_unreachable(connect_alias(made_outside.get(), kAliasPort),
                                                              "a socket made before joining");
                             !failed.empty()) {
                             return failed;
                         }
                         return expect_redirected(listener, kAliasPort);
                     }),
              "");
}

TEST_F(ConnectRedirectTest, HolderOfTheMapDescriptorsUpdatesThemAsNobody) {
    const int forward = redirect_->forward_map();
    const int reverse = redirect_->reverse_map();
    EXPECT_EQ(in_child([&]() -> std::string {
                  if (::setgroups(0, nullptr) != 0 || ::setresgid(kNobody, kNobody, kNobody) != 0 ||
                      ::setresuid(kNobody, kNobody, kNobody) != 0) {
                      return errno_text("dropping to uid/gid 65534");
                  }
                  if (!ConnectRedirect::set_port(forward, reverse, kAliasPort + 1, kLocalPort + 1)) {
                      return errno_text("set_port as uid 65534");
                  }
                  if (!ConnectRedirect::clear_port(forward, reverse, kAliasPort + 1, kLocalPort + 1)) {
                      return errno_text("clear_port as uid 65534");
                  }
                  if (!ConnectRedirect::set_port(forward, reverse, kAliasPort, kLocalPort)) {
                      return errno_text("set_port as uid 65534");
                  }
                  return "";
              }),
              "");
    EXPECT_TRUE(map_has(forward, kAliasPort));
    EXPECT_FALSE(map_has(forward, kAliasPort + 1));
    EXPECT_EQ(in_box(true, [](int listener) { return expect_redirected(listener, kAliasPort); }), "");
}

TEST_F(ConnectRedirectTest, SetPortFailsCleanlyWhenTheMapsAreFull) {
    constexpr std::uint16_t kFirstAlias = 10000;
    constexpr std::uint16_t kFirstLocal = 20000;
    for (std::uint16_t i = 0; i < ConnectRedirect::kMaxPorts; ++i) {
        ASSERT_TRUE(set(kFirstAlias + i, kFirstLocal + i)) << errno_text(fmt::format("set_port #{}", i + 1));
    }
    const auto one_more = static_cast<std::uint16_t>(ConnectRedirect::kMaxPorts);
    bool done = set(kFirstAlias + one_more, kFirstLocal + one_more);
    int error = errno;
    EXPECT_FALSE(done);
    EXPECT_EQ(error, E2BIG) << std::strerror(error);
    EXPECT_FALSE(map_has(redirect_->forward_map(), kFirstAlias + one_more));
    EXPECT_FALSE(map_has(redirect_->reverse_map(), kFirstLocal + one_more));
    // Room again after a clear_port(); moving a set port to another local port lets its old one go.
    ASSERT_TRUE(clear(kFirstAlias, kFirstLocal)) << errno_text("clear_port");
    EXPECT_TRUE(set(kFirstAlias + 1, kFirstLocal + one_more)) << errno_text("set_port");
    EXPECT_FALSE(map_has(redirect_->reverse_map(), kFirstLocal + 1));

    // The forward map full and the reverse one not (two alias ports share a local port): the
    // reverse entry set_port() writes first is taken back when the forward one is refused.
    ASSERT_TRUE(set(kFirstAlias, kFirstLocal + 2)) << errno_text("set_port");
    done = set(kFirstAlias + one_more + 1, kFirstLocal + one_more + 1);
    error = errno;
    EXPECT_FALSE(done);
    EXPECT_EQ(error, E2BIG) << std::strerror(error);
    EXPECT_FALSE(map_has(redirect_->reverse_map(), kFirstLocal + one_more + 1));
    EXPECT_FALSE(map_has(redirect_->forward_map(), kFirstAlias + one_more + 1));
}

}  // namespace
}  // namespace boxlite::net
