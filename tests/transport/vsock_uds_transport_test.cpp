// VsockUdsTransport against a real Unix socket server that plays the VMM's hybrid-vsock side.
#include <boxlite/concepts.hpp>
#include <boxlite/engine/select.hpp>
#include <boxlite/transport/vsock_uds_transport.hpp>

#include <gtest/gtest.h>
#include <support/support.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

namespace boxlite {
namespace {

static_assert(Transport<VsockUdsTransport>);

/// A listening Unix socket whose every accepted connection is handed to `serve` on a thread.
class FakeVmm {
public:
    explicit FakeVmm(std::function<void(int)> serve) : serve_(std::move(serve)) {
        path_ = dir_ / "vsock.sock";
        listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
        EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(::listen(listener_, 8), 0);
        thread_ = std::thread([this] {
            while (true) {
                const int fd = ::accept(listener_, nullptr, nullptr);
                if (fd < 0 || stopping_) {
                    if (fd >= 0) ::close(fd);
                    return;
                }
                serve_(fd);
                ::close(fd);
            }
        });
    }
    ~FakeVmm() {
        stopping_ = true;
        ::shutdown(listener_, SHUT_RDWR);
        ::close(listener_);
        thread_.join();
    }
    [[nodiscard]] std::string endpoint(std::uint32_t port) const {
        return "vsock-uds:" + path_ + ":" + std::to_string(port);
    }

private:
    std::function<void(int)> serve_;
    boxlite::test::TempDir dir_{"boxlite-vsock"};
    std::string path_;
    int listener_ = -1;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

std::string read_line(int fd) {
    std::string line;
    char c = 0;
    while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
    return line;
}

/// MSG_NOSIGNAL: the client may hang up mid-answer (that is what some tests check).
void write_text(int fd, std::string_view text) { (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL); }

TEST(VsockUdsTransport, HandshakesThenCarriesTheGuestStream) {
    FakeVmm vmm([](int fd) {
        EXPECT_EQ(read_line(fd), "CONNECT 2695");
        // The answer and the guest's first bytes arrive in one segment: none may be lost.
        write_text(fd, "OK 1073741824\nhello from the guest");
        char buffer[64];
        const auto n = ::read(fd, buffer, sizeof buffer);
        ASSERT_GT(n, 0);
        write_text(fd, std::string_view(buffer, static_cast<std::size_t>(n)));
    });
    VsockUdsTransport transport;
    auto stream = transport.connect(vmm.endpoint(2695), std::chrono::seconds(5));
    ASSERT_TRUE(stream) << stream.error().to_string();
    std::string received;
    std::byte buffer[64];
    while (received.size() < std::string_view("hello from the guest").size()) {
        auto n = stream->read_some(buffer);
        ASSERT_TRUE(n && *n > 0);
        received.append(reinterpret_cast<const char*>(buffer), *n);
    }
    EXPECT_EQ(received, "hello from the guest");
    const std::string ping = "ping";
    ASSERT_TRUE(stream->write_all(std::as_bytes(std::span(ping.data(), ping.size()))));
    auto n = stream->read_some(buffer);
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(buffer), *n), "ping");
}

TEST(VsockUdsTransport, RetriesWhileTheGuestIsNotListeningThenSucceeds) {
    std::atomic<int> attempts{0};
    FakeVmm vmm([&](int fd) {
        (void)read_line(fd);
        if (++attempts < 3) return;  // closed without an answer: the guest port is not open yet
        write_text(fd, "OK 5\n");
    });
    auto stream = VsockUdsTransport{}.connect(vmm.endpoint(7), std::chrono::seconds(5));
    ASSERT_TRUE(stream) << stream.error().to_string();
    EXPECT_EQ(attempts.load(), 3);
}

TEST(VsockUdsTransport, RefusalsAndHostileAnswersAreRpcTransportErrors) {
    FakeVmm refusing([](int fd) {
        (void)read_line(fd);
        write_text(fd, "NO such port\n");
    });
    auto refused = VsockUdsTransport{}.connect(refusing.endpoint(9), std::chrono::milliseconds(200));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::RpcTransport);
    EXPECT_NE(refused.error().message().find("refused"), std::string::npos) << refused.error().to_string();

    FakeVmm babbling([](int fd) {
        (void)read_line(fd);
        write_text(fd, std::string(4096, 'A'));
    });
    auto babbled = VsockUdsTransport{}.connect(babbling.endpoint(9), std::chrono::milliseconds(200));
    ASSERT_FALSE(babbled);
    EXPECT_NE(babbled.error().message().find("longer than"), std::string::npos) << babbled.error().to_string();
}

TEST(VsockUdsTransport, MalformedEndpointsNameTheExpectedForm) {
    for (const char* endpoint : {"unix:/tmp/x", "vsock-uds:", "vsock-uds:/tmp/x", "vsock-uds:/tmp/x:", "vsock-uds::5",
                                 "vsock-uds:/tmp/x:port", "vsock-uds:/tmp/x:99999999999"}) {
        auto result = VsockUdsTransport{}.connect(endpoint, std::chrono::milliseconds(10));
        ASSERT_FALSE(result) << endpoint;
        EXPECT_EQ(result.error().kind(), ErrorKind::InvalidArgument) << endpoint;
        EXPECT_NE(result.error().message().find("vsock-uds:"), std::string::npos) << result.error().to_string();
    }
}

TEST(VsockUdsTransport, DefaultTransportRoutesTheScheme) {
    auto transport = default_transport();
    EXPECT_TRUE(transport.handles("vsock-uds"));
    EXPECT_TRUE(transport.handles("unix"));
}

TEST(EngineSelect, KvmIsBuiltInAndSaysWhyItCannotRunHere) {
    auto engine = make_engine(EngineKind::Kvm);
    if (engine) {
        EXPECT_EQ(engine->kind(), "kvm");
        return;
    }
    EXPECT_EQ(engine.error().kind(), ErrorKind::UnsupportedEngine);
    EXPECT_EQ(engine.error().message().find("not built"), std::string::npos) << engine.error().to_string();
    EXPECT_NE(engine.error().message().find("kvm"), std::string::npos) << engine.error().to_string();
}

}  // namespace
}  // namespace boxlite
