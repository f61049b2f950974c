// The namespace engine's box network (docs/networking.md): a tap device "eth0" in the box's
// network namespace, made by the box's init before it seals itself and handed to the shim, which
// pumps its frames to a passt it starts, through the egress firewall (lib/net).
//
//   box netns: lo, eth0 = 192.168.127.2/24, default route via 192.168.127.1, IPv6 off
//   shim:      tap fd <-> net::FramePump (firewall) <-> socketpair <-> passt --fd (host netns)
//
// passt gets its end of a socketpair (--fd), so there is no socket file for anyone to reach, and
// runs with -1: when the shim goes (however it goes, kill -9 included) its end closes and passt
// exits, freeing any published port. Started as root, passt drops to nobody in its own sandbox.
#pragma once

#include "shim.hpp"

#include "base/fd.hpp"
#include "net/connect_redirect.hpp"
#include "net/firewall.hpp"
#include "net/port_forwarder.hpp"

#include <boxlite/error.hpp>

#include <sys/types.h>

#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace boxlite::shim {

inline constexpr const char* kBoxInterface = "eth0";

/// In the box's init, right after it entered its new network namespace: creates and configures
/// eth0 and returns its tap descriptor (close-on-exec, IFF_VNET_HDR: net::BoxFraming::VnetHeader),
/// or -1 with `error` set.
int create_box_tap(std::string& error);

/// An ARP request from the box for the gateway: the pump sends it to passt first, so passt knows
/// the box's MAC before a published port's first connection comes in (until it has seen a frame
/// from the box it addresses frames to a MAC the box's eth0 drops).
std::vector<unsigned char> box_arp_request();

/// SCM_RIGHTS over a UNIX socket: one descriptor with one byte.
bool send_fd(int socket, int fd);
/// The descriptor sent, or -1 (the peer closed, or sent none).
int receive_fd(int socket);

/// Closes every descriptor from `first` up, except those in `keep`: a few close_range() calls
/// instead of one close() per possible descriptor (thousands of system calls in each process the
/// network starts, on the box's start path).
void close_descriptors_from(int first, std::initializer_list<int> keep);
void close_descriptors_from(int first, std::span<const int> keep);

/// fork(), and in the child: every signal unblocked, SIGKILL when the parent dies (and an exit
/// with `orphan_status` when it died already). For the shim's helper processes (the pump, the
/// port forwarder, passt's keeper), which must never outlive it.
pid_t fork_tied_to_parent(int orphan_status = 0);

/// The passt binary to run (--passt, else the usual places), or empty with `error` set.
std::string find_passt(const ShimOptions& o, std::string& error);

/// Starts passt on `passt_fd` (its end of a connected socketpair), with the box network's
/// addresses, DNS forwarded from the gateway, and `o.publish` as -t/-u forwards. Returns its pid,
/// or -1 with `error` set.
pid_t start_passt(const ShimOptions& o, int passt_fd, std::string& error);

/// Sizes the socket pair between the pump and passt (root may exceed net.core.wmem_max): 8 MiB
/// for passt's writes (it drops a frame it cannot write at once) and the pump's reads; 2 MiB for
/// the pump's writes, so that what waits for passt (at most twice that) stays below the 8 MiB
/// that Debian 12's passt reads at once: a read of its never ends inside a frame
/// (docs/networking.md, "The stream to passt").
void size_passt_socket_pair(int pump_end, int passt_end);

/// Waits (up to `timeout_ms`) until every port of `publish` is bound on the host (a TCP listener
/// or a UDP socket, as /proc/net says), so a box reported ready takes connections on them. False
/// on timeout, or when `starter` (the process that starts passt, called `starter_name` in the
/// error) has ended first (it is not reaped), with `error` naming the first port still unbound.
bool wait_for_published_ports(const std::vector<PublishedPort>& publish, int timeout_ms, pid_t starter,
                              std::string& error, std::string_view starter_name = "the network pump");

/// The host side of a published TCP port that the namespace engine forwards itself (spec
/// "[ADDR/]HOSTPORT:BOXPORT"; no ADDR: every IPv4 address): a listening socket, bound with
/// SO_REUSEADDR as passt binds, and the box's own address and port as the target. A Config error
/// naming the port when the host port is taken.
BoxliteResult<net::ForwardedPort> bind_published_tcp_port(const PublishedPort& port);

/// The splice of the box's connections to host.boxlite.internal (docs/networking.md, "The host
/// alias, spliced"), as run_port_forwarder() takes it: the box's cgroup v2 directory, where the
/// forwarder attaches the box's connect hook (net::ConnectRedirect), and the socket on which the
/// pump names each host port the host accepted a connection of the box's on.
struct HostAliasSplice {
    std::string cgroup_dir;
    int learn = -1;
    [[nodiscard]] bool on() const noexcept { return !cgroup_dir.empty() && learn >= 0; }
};

/// Host alias ports spliced at once, at most (each holds a listener in the box's network
/// namespace, and an entry in the hook's maps); beyond, connections go through passt.
inline constexpr std::size_t kMaxSplicedAliasPorts = net::ConnectRedirect::kMaxPorts;

/// The forwarder process of the namespace engine (net::PortForwarder): the published TCP ports
/// (started by the shim), or the host alias ports the pump names on `splice.learn` (started by
/// the pump, HostAliasSplicer). For the latter it first loads and attaches the box's connect hook
/// (still root) and starts a thread that stays in the host's network namespace (it makes the
/// sockets to the host's loopback). It enters the box's network namespace, `box_network`, or one
/// it waits for on `channel` (a descriptor sent with send_fd(); it answers one byte there, 'k' or
/// an error line), drops to nobody, and forwards until it is killed. Never returns.
[[noreturn]] void run_port_forwarder(int channel, std::vector<net::ForwardedPort> ports, const std::string& box_id,
                                     HostAliasSplice splice = {}, int box_network = -1);

/// In the pump: the splice of the box's connections to host.boxlite.internal. The first port the
/// host accepts a connection of the box's on (the firewall's on_host_alias_accepted) forks the
/// alias forwarder (run_port_forwarder: no published ports, the network namespace of the box's
/// `tap`); that port and each later one are named to it. Nothing is done before: a box that never
/// reaches the host alias pays nothing. A forwarder that cannot start, or ends, is logged once,
/// and the box's connections go on through passt.
class HostAliasSplicer {
public:
    HostAliasSplicer(std::string box_id, std::string cgroup_dir, int tap)
        : box_id_(std::move(box_id)), cgroup_dir_(std::move(cgroup_dir)), tap_(tap) {}
    ~HostAliasSplicer();
    HostAliasSplicer(const HostAliasSplicer&) = delete;
    HostAliasSplicer& operator=(const HostAliasSplicer&) = delete;

    void accepted(std::uint16_t port);

private:
    bool start();
    void give_up(const std::string& why);

    std::string box_id_;
    std::string cgroup_dir_;
    int tap_;
    int learn_ = -1;
    pid_t forwarder_ = -1;
    bool given_up_ = false;
};

/// The VM engines' box network past the device (boxlite-shim-kvm and boxlite-shim-qemu alike):
/// the egress firewall, a passt on its end of a socket pair, and the pump thread between the
/// device's host end and passt (docs/networking.md).
struct PasstNetwork {
    std::optional<net::EgressFirewall> firewall;
    base::OwnedFd stop;  ///< eventfd: written once, the pump (and a vhost-user accept) return
    pid_t passt = -1;
    std::vector<PublishedPort> publish;  ///< the ports passt was told to publish
    std::thread pump;

    PasstNetwork() = default;
    PasstNetwork(const PasstNetwork&) = delete;
    PasstNetwork& operator=(const PasstNetwork&) = delete;
    ~PasstNetwork() { shut_down(); }

    /// Writes `stop` (idempotent): the pump returns.
    void signal_stop() noexcept;
    /// signal_stop(), joins the pump, kills and reaps passt.
    void shut_down() noexcept;
};

/// Parses `allow_net` into the firewall (a Config error when malformed), makes `stop`, the socket
/// pair (large buffers both ways) and starts passt on its end with `passt_options` (passt, dns,
/// publish). Returns the pump's end of the pair.
BoxliteResult<base::OwnedFd> start_passt_network(const std::vector<std::string>& allow_net,
                                                 const ShimOptions& passt_options, PasstNetwork& network);

/// wait_for_published_ports() for a VM shim's `network`: its ports, passt's keeper as the
/// starter, 10 s. True at once without ports.
bool wait_for_passt_ports(const PasstNetwork& network, std::string& error);

/// Starts the pump thread: frames between `box_end` (a device's host end, one frame per datagram)
/// and `passt_end`, through the firewall; it first sends passt box_arp_request(). `who` prefixes
/// its error line on stderr.
void start_pump(PasstNetwork& network, base::OwnedFd box_end, base::OwnedFd passt_end, const char* who);

}  // namespace boxlite::shim
