// A fast path from a namespace-engine box to a host service on host.boxlite.internal
// (192.168.127.254): cgroup BPF programs rewrite the box's TCP connect() to the alias into a
// connect() to a listener on the loopback of the box's own network namespace, which a host-side
// forwarder splices to the host's 127.0.0.1 (lib/net/port_forwarder.*, the other direction).
//
//   box: connect(192.168.127.254:P) --connect4--> 127.0.0.1:F (listener in the box's netns,
//        held by the forwarder) -> splice -> host 127.0.0.1:P
//
// Without it the SYN would cross the tap, the frame pump and passt's TCP stack; with it the box's
// kernel carries the connection over its loopback and only the forwarder's splices remain. The
// programs are attached to the box's cgroup, not its netns: every process of the box is in the
// cgroup whatever namespaces it made, and a socket keeps the cgroup it was made in. They are
// attached through BPF links that this object holds, so they go with the process that holds it.
//
// Two hash maps, both written by whoever holds their descriptors (the forwarder, which may run as
// nobody: since Linux 5.19, commit c8644cd0efe7, commands on a map descriptor one already has need
// no capability even under kernel.unprivileged_bpf_disabled; creating maps and loading programs do):
//   forward[P] = F   read by connect4: which loopback port serves alias port P
//   reverse[F] = P   read by getpeername4: the box asks who its peer is and is told
//                    192.168.127.254:P, as if nothing had been rewritten (a client that checks its
//                    peer, or logs it, sees what it asked for)
// Keys and values are u32 holding a port in network byte order in their low 16 bits, the way
// struct bpf_sock_addr's user_port holds it, so the programs compare and copy without swapping.
// A port not in `forward` is not touched: the connect goes to the alias as before (through passt).
//
// The same two programs for IPv6 sockets (connect6, getpeername6) act on the IPv4-mapped alias
// (::ffff:192.168.127.254), which a dual-stack socket (Java's, by default) connects to.
//
// What it does not do: UDP (the programs check SOCK_STREAM; a datagram's sendmsg() has its own
// hook), a real IPv6 alias (there is none), and it cannot tell a socket it redirected from one the
// box connected to 127.0.0.1:F by itself (getpeername reports the alias for both; F is the
// forwarder's ephemeral port, which the box has no reason to use).
//
// The programs are assembled here by hand (no libbpf, no clang): each is some twenty instructions.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace boxlite::net {

class ConnectRedirect {
public:
    /// Ports that can be redirected at once (the capacity of each map).
    static constexpr std::size_t kMaxPorts = 64;
    /// host.boxlite.internal, host byte order.
    static constexpr std::uint32_t kHostAliasIpv4 = 0xC0A87FFE;  // 192.168.127.254

    /// Creates the two maps and loads the four programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, for
    /// BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET4_GETPEERNAME and their INET6 twins) that redirect
    /// connects to `alias_ipv4` (host byte order; IPv4-mapped on an IPv6 socket). Unsupported, with the reason, when the kernel
    /// will not (EPERM without CAP_BPF and CAP_NET_ADMIN; EINVAL before Linux 5.8, which has no
    /// getpeername hook; EACCES and the verifier's log if it rejects a program): the caller then
    /// runs without the fast path.
    [[nodiscard]] static BoxliteResult<ConnectRedirect> load(std::uint32_t alias_ipv4 = kHostAliasIpv4);

    /// Attaches the four programs to the cgroup v2 directory `cgroup_v2_dir` through BPF links (other
    /// programs there, and in the cgroups above, still run). The attachment lasts as long as this
    /// object (it holds the links): when its holder ends, however it ends, the box's connects go
    /// to the alias again, never to a loopback port whose listener has gone with it.
    [[nodiscard]] BoxliteResult<void> attach(const std::string& cgroup_v2_dir);

    /// The maps' descriptors, owned by this object (dup() them to keep them longer).
    [[nodiscard]] int forward_map() const noexcept { return forward_.get(); }
    [[nodiscard]] int reverse_map() const noexcept { return reverse_.get(); }

    /// Redirects `alias_port` to the loopback's `local_port` (both host byte order):
    /// forward[alias_port] = local_port and reverse[local_port] = alias_port. Works for any holder
    /// of the two descriptors. False, with errno set, if either map refused (E2BIG: kMaxPorts ports
    /// are already set); the maps are then as they were.
    static bool set_port(int forward_map, int reverse_map, std::uint16_t alias_port, std::uint16_t local_port);
    /// Undoes set_port(). False, with errno set, if either entry could not be removed (ENOENT: it
    /// was not there); what could be removed is.
    static bool clear_port(int forward_map, int reverse_map, std::uint16_t alias_port, std::uint16_t local_port);

private:
    ConnectRedirect() = default;

    base::OwnedFd forward_;
    base::OwnedFd reverse_;
    base::OwnedFd connect4_;
    base::OwnedFd getpeername4_;
    base::OwnedFd connect6_;
    base::OwnedFd getpeername6_;
    std::vector<base::OwnedFd> links_;
};

}  // namespace boxlite::net
