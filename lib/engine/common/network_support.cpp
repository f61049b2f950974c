#include "engine/common/network_support.hpp"

#include "net/firewall.hpp"

#include <fmt/ranges.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::engine {

BoxliteResult<void> check_network_options(const BoxConfig& box) {
    const auto& options = box.options;
    if (!options.ports.empty() && options.network.mode == NetworkMode::Disabled) {
        return fail(ErrorKind::Config,
                    "box {} publishes ports ({}) but its network is disabled; enable the network "
                    "or drop the port mappings",
                    box.id, fmt::format("{}", fmt::join(options.ports, ", ")));
    }
    if (options.network.mode == NetworkMode::Enabled) {
        // The firewall's own parser, stricter than the syntax check of BoxOptions (a CIDR with
        // bits set after its prefix, host.boxlite.internal:PORT): refused at create, not at start.
        if (auto allow = net::AllowList::parse(options.network.allow_net); !allow) {
            return fail(ErrorKind::Config, "box {}: {}", box.id, allow.error().message());
        }
    }
    return {};
}

BoxliteResult<std::vector<PortSpec>> publish_ports(const BoxConfig& box) {
    std::vector<PortSpec> out;
    for (auto port : box.options.ports) {
        const bool v6 = port.host_ip.find(':') != std::string::npos;
        const bool udp = port.protocol == PortProtocol::Udp;
        const int fd = ::socket(v6 ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail_errno(ErrorKind::Engine, "socket for a published port", errno);
        if (!udp) {
            const int one = 1;  // as passt binds: a port in TIME_WAIT is free, a listener is not
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        }
        sockaddr_storage address{};
        socklen_t length = 0;
        const std::uint16_t wanted = port.host_port.value_or(0);
        if (v6) {
            auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons(wanted);
            ::inet_pton(AF_INET6, port.host_ip.c_str(), &in6->sin6_addr);
            length = sizeof *in6;
        } else {
            auto* in = reinterpret_cast<sockaddr_in*>(&address);
            in->sin_family = AF_INET;
            in->sin_port = htons(wanted);
            ::inet_pton(AF_INET, port.host_ip.c_str(), &in->sin_addr);
            length = sizeof *in;
        }
        const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
                           (udp || ::listen(fd, 1) == 0);
        const int error = errno;
        if (bound) ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
        ::close(fd);
        if (!bound) {
            if (error == EADDRINUSE) {
                return fail(ErrorKind::Config,
                            "box {}: host port {} ({}) is already in use, by another box or program; choose "
                            "another host port, or leave it out (or 0) to get a free one",
                            box.id, wanted, fmt::format("{}", port));
            }
            return fail_errno(ErrorKind::Config, fmt::format("box {}: binding host port {}", box.id, port), error);
        }
        port.host_port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                  : reinterpret_cast<sockaddr_in*>(&address)->sin_port);
        out.push_back(port);
    }
    return out;
}

std::string passt_port_spec(const PortSpec& bound) {
    const bool any = bound.host_ip == "0.0.0.0" || bound.host_ip == "::";
    return fmt::format("{}{}{}:{}", any ? "" : bound.host_ip, any ? "" : "/", bound.host_port.value_or(0),
                       bound.guest_port);
}

}  // namespace boxlite::engine
