// VsockUdsTransport: reaches a guest agent listening on a vsock port, through the Unix socket
// that the VMM's userspace virtio-vsock device exposes on the host (Firecracker's "hybrid vsock").
//
// Endpoint: "vsock-uds:<path to the shim's vsock.sock>:<guest port>".
// Handshake: connect to the Unix socket, send "CONNECT <port>\n"; the device answers
// "OK <host-side port>\n" once the guest accepted, and from then on the socket carries the
// guest connection's bytes. Anything else (or nothing within the timeout) is a refusal.
// connect() and the handshake are compiled in the library (lib/transport/vsock_uds_transport.cpp).
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/transport.hpp>
#include <boxlite/transport/unix_transport.hpp>

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

    BoxliteResult<UnixStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout);

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
            return fail(ErrorKind::InvalidArgument,
                        "endpoint '{}' needs a socket path and a port: vsock-uds:<path>:<port>", endpoint);
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
};

}  // namespace boxlite
