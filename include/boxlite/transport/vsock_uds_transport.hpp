// VsockUdsTransport: reaches a guest agent listening on a vsock port, through the Unix socket
// that the VMM's userspace virtio-vsock device exposes on the host (Firecracker's "hybrid vsock").
//
// Endpoint: "vsock-uds:<path to the shim's vsock.sock>:<guest port>".
// Handshake: connect to the Unix socket, send "CONNECT <port>\n"; the device answers
// "OK <host-side port>\n" once the guest accepted, and from then on the socket carries the
// guest connection's bytes. Anything else (or nothing within the timeout) is a refusal.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include <poll.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace boxlite {

class VsockUdsTransport {
public:
    using stream_type = UnixStream;
    static constexpr std::string_view kScheme = "vsock-uds:";
    /// The answer line is "OK " + at most 10 digits + "\n"; anything longer is not the device.
    static constexpr std::size_t kMaxAnswer = 32;

    BoxliteResult<UnixStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
        BOXLITE_TRY(const auto target, parse(endpoint));
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        std::string last_refusal;
        while (true) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            BOXLITE_TRY(auto stream, UnixTransport{}.connect("unix:" + target.path,
                                                             std::max(left, std::chrono::milliseconds(1))));
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

    struct Target {
        std::string path;
        std::uint32_t port = 0;
    };

    /// Splits "vsock-uds:<path>:<port>"; the port is the text after the last ':'.
    [[nodiscard]] static BoxliteResult<Target> parse(std::string_view endpoint) {
        if (endpoint.substr(0, kScheme.size()) != kScheme) {
            return fail(ErrorKind::InvalidArgument,
                        "endpoint '{}' is not a hybrid vsock endpoint (expected vsock-uds:<path>:<port>)", endpoint);
        }
        const auto rest = endpoint.substr(kScheme.size());
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
            return fail(ErrorKind::InvalidArgument, "endpoint '{}' needs a socket path and a port: vsock-uds:<path>:<port>",
                        endpoint);
        }
        Target target{std::string(rest.substr(0, colon)), 0};
        const auto digits = rest.substr(colon + 1);
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), target.port);
        if (ec != std::errc{} || end != digits.data() + digits.size()) {
            return fail(ErrorKind::InvalidArgument, "endpoint '{}': port '{}' is not a number in 0..4294967295",
                        endpoint, digits);
        }
        return target;
    }

private:
    struct Refusal {
        std::string reason;
        bool retryable = true;
    };

    static tl::expected<void, Refusal> handshake(UnixStream& stream, std::uint32_t port,
                                                 std::chrono::steady_clock::time_point deadline) {
        const auto request = "CONNECT " + std::to_string(port) + "\n";
        if (auto sent = stream.write_all(std::as_bytes(std::span(request.data(), request.size()))); !sent) {
            return tl::unexpected(Refusal{sent.error().message(), true});
        }
        // Read one byte at a time so no byte of the guest's stream is consumed with the answer.
        std::string line;
        while (true) {
            if (line.size() >= kMaxAnswer) {
                return tl::unexpected(Refusal{fmt::format("vsock handshake answer longer than {} bytes", kMaxAnswer), false});
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd pfd{stream.native_handle(), POLLIN, 0};
            const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
            if (ready == 0) return tl::unexpected(Refusal{fmt::format("no answer to CONNECT {} in time", port), true});
            if (ready < 0 && errno == EINTR) continue;
            if (ready < 0) return tl::unexpected(Refusal{"waiting for the vsock handshake failed", true});
            std::byte byte{};
            auto n = stream.read_some(std::span(&byte, 1));
            if (!n || *n == 0) {
                return tl::unexpected(Refusal{
                    fmt::format("the VMM closed the connection to port {} (is the guest agent listening?)", port), true});
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
};

}  // namespace boxlite
