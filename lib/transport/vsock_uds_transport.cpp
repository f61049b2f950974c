// VsockUdsTransport's connection and handshake (include/boxlite/transport/vsock_uds_transport.hpp).
#include <boxlite/transport/vsock_uds_transport.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <span>
#include <string>

namespace boxlite {
namespace {

struct Refusal {
    std::string reason;
    bool retryable = true;
};

tl::expected<void, Refusal> handshake(UnixStream& stream, std::uint32_t port,
                                      std::chrono::steady_clock::time_point deadline) {
    const auto request = "CONNECT " + std::to_string(port) + "\n";
    if (auto sent = stream.write_all(std::as_bytes(std::span(request.data(), request.size()))); !sent) {
        return tl::unexpected(Refusal{sent.error().message(), true});
    }
    // Read one byte at a time so no byte of the guest's stream is consumed with the answer.
    std::string line;
    while (true) {
        if (line.size() >= VsockUdsTransport::kMaxAnswer) {
            return tl::unexpected(
                Refusal{fmt::format("vsock handshake answer longer than {} bytes", VsockUdsTransport::kMaxAnswer),
                        false});
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                std::chrono::steady_clock::now());
        pollfd pfd{stream.native_handle(), POLLIN, 0};
        const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
        if (ready == 0) return tl::unexpected(Refusal{fmt::format("no answer to CONNECT {} in time", port), true});
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return tl::unexpected(Refusal{"waiting for the vsock handshake failed", true});
        std::byte byte{};
        auto n = stream.read_some(std::span(&byte, 1));
        if (!n || *n == 0) {
            return tl::unexpected(
                Refusal{fmt::format("the VMM closed the connection to port {} (is the guest agent listening?)", port),
                        true});
        }
        const char c = static_cast<char>(byte);
        if (c == '\n') break;
        line.push_back(c);
    }
    if (line.rfind("OK ", 0) != 0 || line.size() == 3) {
        return tl::unexpected(Refusal{fmt::format("vsock handshake refused: '{}'", line), false});
    }
    return {};
}

}  // namespace

BoxliteResult<UnixStream> VsockUdsTransport::connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
    BOXLITE_TRY(const auto target, parse(endpoint));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last_refusal;
    while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                std::chrono::steady_clock::now());
        BOXLITE_TRY(auto stream,
                    UnixTransport{}.connect("unix:" + target.path, std::max(left, std::chrono::milliseconds(1))));
        auto answer = handshake(stream, target.port, deadline);
        if (answer) return stream;
        // The device closes the connection while the guest agent is not yet listening: that
        // is worth retrying. An answer that is not "OK <n>" means this is no hybrid vsock
        // device (or a hostile one): fail at once with what it said.
        if (!answer.error().retryable) {
            return fail(ErrorKind::RpcTransport, "cannot connect to the agent at {}: {}", endpoint,
                        answer.error().reason);
        }
        if (last_refusal.empty() || answer.error().reason.find("in time") == std::string::npos) {
            last_refusal = answer.error().reason;
        }
        if (std::chrono::steady_clock::now() >= deadline) break;
        ::usleep(20000);
    }
    return fail(ErrorKind::RpcTransport, "cannot connect to the agent at {}: {}", endpoint, last_refusal);
}

}  // namespace boxlite
