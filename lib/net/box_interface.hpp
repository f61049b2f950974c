// The box's eth0 as both kinds of box see it (docs/networking.md): 192.168.127.2/24, the default
// route via passt's gateway 192.168.127.1, IPv6 off. One implementation for the namespace engine's
// tap (lib/shim/network.cpp, in the box's init) and the VM guest's virtio-net device (guest/
// vm_init.cpp, in the agent as PID 1): header-only, since the guest agent is a static binary
// that links no library of lib/.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace boxlite::net {

// Upstream's addresses; .254 is host.boxlite.internal.
inline constexpr const char* kBoxAddress = "192.168.127.2";
inline constexpr const char* kBoxNetmask = "255.255.255.0";
inline constexpr const char* kGatewayAddress = "192.168.127.1";
inline constexpr const char* kHostAlias = "192.168.127.254";

inline sockaddr ipv4_sockaddr(const char* address) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    ::inet_pton(AF_INET, address, &in.sin_addr);
    sockaddr out{};
    std::memcpy(&out, &in, sizeof in);
    return out;
}

/// Optional link settings, made before the interface goes up: a device that picks its own (the VM
/// guest's virtio-net, whose MAC and MTU the device model offers) leaves them unset; the namespace
/// engine's tap sets both.
struct BoxLink {
    std::optional<std::array<std::uint8_t, 6>> mac;
    std::optional<int> mtu;
};

/// Configures the existing interface `name` (at most IFNAMSIZ - 1 bytes) as the box's eth0: IPv6
/// off on it (through `sysctl_net_dir`, an open descriptor of /proc/sys/net, or -1 to open that
/// path; best effort: a kernel without IPv6 has no such file), `link`'s MAC and MTU when set, its
/// address and netmask, up, and the default route via the gateway. Returns false with `error`
/// naming the step that failed.
inline bool configure_box_interface(const char* name, int sysctl_net_dir, std::string& error,
                                    const BoxLink& link = {}) {
    auto failed = [&](const std::string& what) {
        error = std::string("configuring ") + name + ": " + what + ": " + std::strerror(errno);
        return false;
    };
    {
        const std::string v6 = std::string("ipv6/conf/") + name + "/disable_ipv6";
        const int dir = sysctl_net_dir >= 0 ? sysctl_net_dir
                                            : ::open("/proc/sys/net", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0) {
            if (const int fd = ::openat(dir, v6.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
                (void)!::write(fd, "1", 1);
                ::close(fd);
            }
            if (dir != sysctl_net_dir) ::close(dir);
        }
    }
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return failed("socket");
    ifreq req{};
    std::strncpy(req.ifr_name, name, IFNAMSIZ - 1);
    auto step = [&](unsigned long request, const char* what) {
        if (::ioctl(s, request, &req) == 0) return true;
        failed(what);
        return false;
    };
    bool ok = true;
    if (link.mac) {
        req.ifr_hwaddr.sa_family = 1;  // ARPHRD_ETHER
        std::memcpy(req.ifr_hwaddr.sa_data, link.mac->data(), link.mac->size());
        ok = step(SIOCSIFHWADDR, "MAC address");
    }
    if (ok && link.mtu) {
        req.ifr_mtu = *link.mtu;
        ok = step(SIOCSIFMTU, "MTU");
    }
    if (ok) {
        req.ifr_addr = ipv4_sockaddr(kBoxAddress);
        ok = step(SIOCSIFADDR, "address");
    }
    if (ok) {
        req.ifr_netmask = ipv4_sockaddr(kBoxNetmask);
        ok = step(SIOCSIFNETMASK, "netmask");
    }
    if (ok) ok = step(SIOCGIFFLAGS, "reading flags");
    if (ok) {
        req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
        ok = step(SIOCSIFFLAGS, "bringing it up");
    }
    if (ok) {
        rtentry route{};
        route.rt_dst = ipv4_sockaddr("0.0.0.0");
        route.rt_genmask = ipv4_sockaddr("0.0.0.0");
        route.rt_gateway = ipv4_sockaddr(kGatewayAddress);
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        char device[IFNAMSIZ] = {};
        std::strncpy(device, name, IFNAMSIZ - 1);
        route.rt_dev = device;
        if (::ioctl(s, SIOCADDRT, &route) != 0)
            ok = failed(std::string("adding the default route via ") + kGatewayAddress);
    }
    ::close(s);
    return ok;
}

}  // namespace boxlite::net
