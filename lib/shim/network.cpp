#include "network.hpp"

#include "base/fd_passing.hpp"
#include "net/box_interface.hpp"
#include "net/connect_redirect.hpp"
#include "net/pump.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/route.h>
#include <poll.h>
#include <sched.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace boxlite::shim {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// The box's MAC and addresses: upstream's (docs/networking.md).
constexpr unsigned char kBoxMac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
using net::kBoxAddress;
using net::kGatewayAddress;
// Not pasta's 65520: this passt (Debian 12's, 2023-03) reads its stream socket in big batches and,
// when a read ends inside a frame, makes one more blocking recv() for the rest and drops the frame
// if that recv() returns less. A UNIX stream socket queues a write in buffers of about 36 KiB
// (SKB_MAX_HEAD(0) + 32 KiB), and recv() returns at a buffer's end, so the rest of a 64 KiB frame
// could come in two recv()s: passt dropped box -> host frames, the box's TCP (passt sends no SACK)
// waited a retransmission timeout each time (72 retransmissions, 6 timeouts in one 32 MiB run,
// none at this MTU). A frame of at most 32 KiB + headers always ends within the next buffer.
constexpr int kBoxMtu = 32768;

}  // namespace

int create_box_tap(std::string& error) {
    const int tap = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tap < 0) {
        error = errno_text("opening /dev/net/tun for the box's eth0");
        return -1;
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, kBoxInterface, IFNAMSIZ - 1);
    // IFF_VNET_HDR: each frame crosses with a virtio_net_hdr, through which the pump tells the
    // box's stack that passt's checksums are good (net::BoxFraming::VnetHeader); no offloads.
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(tap, TUNSETIFF, &ifr) != 0) {
        error = errno_text("creating the tap device eth0");
        ::close(tap);
        return -1;
    }
    // Persistent, so that the last close (the pump's exit, when the box stops) does not unregister
    // eth0 itself: that waits for RCU grace periods under the RTNL lock, 12-24 ms here, and the
    // shim waits for the pump. The device lives in the box's network namespace only, which the
    // kernel tears down (eth0 with it) in the background once the box and the tap fd are gone.
    // Best effort: without it the box works the same, and only stops slower.
    (void)::ioctl(tap, TUNSETPERSIST, 1);
    {
        auto write_sysctl = [](const char* path, std::string_view text) {
            const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
            if (fd < 0) return;
            (void)!::write(fd, text.data(), text.size());
            ::close(fd);
        };
        // A 1 MiB initial receive window in the box's namespace (the default, 128 KiB of buffer and
        // a window of about two 65520-byte frames, made every round trip through the pump and passt
        // wait for the box's ACK: docs/networking.md, Performance). Best effort.
        write_sysctl("/proc/sys/net/ipv4/tcp_rmem", "4096 2097152 16777216");  // min, default, max
        // Debian 12's passt drops the box's segments that its host socket cannot take at once (it
        // offers the box the host peer's whole window on loopback), and offers neither SACK nor
        // timestamps: each lost segment waits for a retransmission timeout, and the box's TCP backs
        // those off (0.2, 0.4, ... 6.4 s) until passt resets the stalled connection. A 1 s ceiling
        // keeps a loss a short pause (docs/networking.md, "Stalls and resets"). Best effort: Linux
        // 6.15 and later.
        write_sysctl("/proc/sys/net/ipv4/tcp_rto_max_ms", "1000");
    }
    // MAC, MTU, address, IPv6 off, up, default route: as the VM guest's eth0 (net/box_interface.hpp),
    // which keeps the MAC and MTU its device offers.
    net::BoxLink link;
    link.mac.emplace();
    std::memcpy(link.mac->data(), kBoxMac, link.mac->size());
    link.mtu = kBoxMtu;
    if (!net::configure_box_interface(kBoxInterface, -1, error, link)) {
        ::close(tap);
        return -1;
    }
    return tap;
}

std::vector<unsigned char> box_arp_request() {
    std::vector<unsigned char> frame(42, 0);
    std::memset(frame.data(), 0xff, 6);
    std::memcpy(frame.data() + 6, kBoxMac, 6);
    frame[12] = 0x08;
    frame[13] = 0x06;
    const unsigned char header[8] = {0, 1, 8, 0, 6, 4, 0, 1};  // Ethernet, IPv4, request
    std::memcpy(frame.data() + 14, header, 8);
    std::memcpy(frame.data() + 22, kBoxMac, 6);
    ::inet_pton(AF_INET, kBoxAddress, frame.data() + 28);
    ::inet_pton(AF_INET, kGatewayAddress, frame.data() + 38);
    return frame;
}

bool send_fd(int socket, int fd) {
    const std::byte byte{'f'};
    return base::send_with_fds(socket, std::span(&byte, 1), std::span(&fd, 1)) == 1;
}

int receive_fd(int socket) {
    std::byte byte{};
    std::vector<int> fds;
    ssize_t n;
    do {
        n = base::recv_with_fds(socket, std::span(&byte, 1), 0, fds);
    } while (n < 0 && errno == EINTR);
    const int fd = n == 1 && !fds.empty() ? fds.front() : -1;
    for (const int extra : fds) {
        if (extra != fd) ::close(extra);  // one was asked for: any more are the sender's mistake
    }
    return fd;
}

void close_descriptors_from(int first, std::initializer_list<int> keep) {
    close_descriptors_from(first, std::span<const int>(keep.begin(), keep.size()));
}

void close_descriptors_from(int first, std::span<const int> keep) {
    std::vector<int> kept;
    for (const int fd : keep) {
        if (fd >= first) kept.push_back(fd);
    }
    std::sort(kept.begin(), kept.end());
    auto close_between = [](unsigned low, unsigned high) {  // inclusive
        if (::close_range(low, high, 0) == 0 || errno != ENOSYS) return;
        for (unsigned fd = low; fd <= high && fd < 4096; ++fd) ::close(static_cast<int>(fd));  // before Linux 5.9
    };
    unsigned low = static_cast<unsigned>(first);
    for (const int fd : kept) {
        if (static_cast<unsigned>(fd) > low) close_between(low, static_cast<unsigned>(fd) - 1);
        low = static_cast<unsigned>(fd) + 1;
    }
    close_between(low, ~0U);
}

pid_t fork_tied_to_parent(int orphan_status) {
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(orphan_status);
    return 0;
}

std::string find_passt(const ShimOptions& o, std::string& error) {
    std::string binary = o.passt;
    if (binary.empty()) {
        for (const char* candidate : {"/usr/bin/passt", "/usr/local/bin/passt", "/bin/passt"}) {
            if (::access(candidate, X_OK) == 0) {
                binary = candidate;
                break;
            }
        }
    }
    if (binary.empty() || ::access(binary.c_str(), X_OK) != 0) {
        error =
            "passt is not installed (Debian package passt), and the box's network needs it; install it, "
            "or create the box with network mode disabled";
        return {};
    }
    return binary;
}

namespace {

/// A published port's spec as passt takes it and engine::passt_port_spec() writes it,
/// "[ADDR/]HOSTPORT:BOXPORT" (or HOSTPORT alone: the same port in the box).
struct PortSpecParts {
    std::string address;  ///< empty: every address
    long host_port = 0;
    long box_port = 0;
};
PortSpecParts parse_port_spec(const std::string& spec) {
    PortSpecParts parts;
    const auto slash = spec.find('/');
    if (slash != std::string::npos) parts.address = spec.substr(0, slash);
    const std::string ports = slash == std::string::npos ? spec : spec.substr(slash + 1);
    const auto colon = ports.find(':');
    parts.host_port = std::strtol(ports.substr(0, colon).c_str(), nullptr, 10);
    parts.box_port = colon == std::string::npos ? parts.host_port : std::strtol(ports.c_str() + colon + 1, nullptr, 10);
    return parts;
}

/// The inodes of the sockets that the processes below `root` hold open (its descendants, up to
/// four levels: the namespace engine's pump, passt's keeper, the init of passt's PID namespace,
/// passt), or nullopt when /proc cannot say: no children lists (CONFIG_PROC_CHILDREN), or a
/// descendant whose descriptors this user may not read.
std::optional<std::set<unsigned long>> socket_inodes_below(pid_t root) {
    std::set<unsigned long> inodes;
    std::vector<pid_t> level = {root};
    for (int depth = 0; depth < 4 && !level.empty(); ++depth) {
        std::vector<pid_t> next;
        for (const pid_t pid : level) {
            const std::string proc = "/proc/" + std::to_string(pid);
            if (depth > 0) {
                DIR* fds = ::opendir((proc + "/fd").c_str());
                if (fds == nullptr) {
                    if (errno == ENOENT) continue;  // gone meanwhile
                    return std::nullopt;
                }
                while (auto* entry = ::readdir(fds)) {
                    char target[64] = {};
                    const auto n = ::readlinkat(::dirfd(fds), entry->d_name, target, sizeof target - 1);
                    unsigned long inode = 0;
                    if (n > 0 && std::sscanf(target, "socket:[%lu]", &inode) == 1) inodes.insert(inode);
                }
                ::closedir(fds);
            }
            DIR* tasks = ::opendir((proc + "/task").c_str());
            if (tasks == nullptr) continue;
            while (auto* entry = ::readdir(tasks)) {
                if (entry->d_name[0] == '.') continue;
                std::FILE* children = std::fopen((proc + "/task/" + entry->d_name + "/children").c_str(), "re");
                if (children == nullptr) {
                    if (errno == ENOENT && depth == 0 && std::string_view(entry->d_name) == std::to_string(pid)) {
                        ::closedir(tasks);
                        return std::nullopt;  // the kernel keeps no children lists
                    }
                    continue;
                }
                for (int child = 0; std::fscanf(children, "%d", &child) == 1;) next.push_back(child);
                std::fclose(children);
            }
            ::closedir(tasks);
        }
        level = std::move(next);
    }
    return inodes;
}

/// Whether a socket in /proc/net/<table> is bound to local `port` (TCP: listening), and, when
/// `held_by` is given, is one of those inodes (another program's socket on the port does not count).
bool port_bound(const char* table, int port, bool tcp, const std::set<unsigned long>* held_by) {
    std::FILE* f = std::fopen(table, "re");
    if (f == nullptr) return false;
    char line[512];
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f) != nullptr) {
        // "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout
        // inode ...": local "HEXADDR:HEXPORT", state hex.
        char local[128] = {}, remote[128] = {};
        unsigned state = 0;
        unsigned long inode = 0;
        if (std::sscanf(line, "%*s %127s %127s %x %*s %*s %*s %*u %*u %lu", local, remote, &state, &inode) != 4)
            continue;
        const char* colon = std::strrchr(local, ':');
        if (colon == nullptr) continue;
        const long local_port = std::strtol(colon + 1, nullptr, 16);
        found = local_port == port && (!tcp || state == 0x0A) &&  // TCP_LISTEN
                (held_by == nullptr || held_by->count(inode) != 0);
    }
    std::fclose(f);
    return found;
}

}  // namespace

bool wait_for_published_ports(const std::vector<PublishedPort>& publish, int timeout_ms, pid_t starter,
                              std::string& error, std::string_view starter_name) {
    for (int waited = 0;; ++waited) {
        const PublishedPort* missing = nullptr;
        // Only passt's own sockets count (those of the processes below the starter), so a port
        // another program took in the meantime is not mistaken for passt's; where /proc cannot
        // say whose a socket is, any socket on the port does.
        const auto inodes = starter > 0 ? socket_inodes_below(starter) : std::nullopt;
        const auto* held_by = inodes ? &*inodes : nullptr;
        for (const auto& p : publish) {
            const int port = static_cast<int>(parse_port_spec(p.spec).host_port);
            const bool bound = p.udp ? port_bound("/proc/net/udp", port, false, held_by) ||
                                           port_bound("/proc/net/udp6", port, false, held_by)
                                     : port_bound("/proc/net/tcp", port, true, held_by) ||
                                           port_bound("/proc/net/tcp6", port, true, held_by);
            if (!bound) {
                missing = &p;
                break;
            }
        }
        if (missing == nullptr) return true;
        siginfo_t info{};
        const bool starter_ended = starter > 0 &&
                                   ::waitid(P_PID, static_cast<id_t>(starter), &info, WEXITED | WNOHANG | WNOWAIT) ==
                                       0 &&
                                   info.si_pid == starter;
        if (starter_ended || waited >= timeout_ms) {
            error = "passt did not bind the published " + std::string(missing->udp ? "UDP" : "TCP") + " port " +
                    missing->spec +
                    (starter_ended ? " (" + std::string(starter_name) + " ended; see shim.log)"
                                   : " within " + std::to_string(timeout_ms) + " ms");
            return false;
        }
        ::usleep(1000);
    }
}

pid_t start_passt(const ShimOptions& o, int passt_fd, std::string& error) {
    const std::string binary = find_passt(o, error);
    if (binary.empty()) return -1;
    std::vector<std::string> args = {
        binary,          "--foreground",  "--quiet",   "--one-off", "--ipv4-only", "--fd",          "3",
        "--address",     "192.168.127.2", "--netmask", "24",        "--gateway",   "192.168.127.1", "--dns-forward",
        "192.168.127.1", "--no-dhcpv6",   "--no-ndp",  "--no-ra"};
    if (!o.dns.empty()) args.insert(args.end(), {"--dns", o.dns});
    std::string tcp, udp;
    for (const auto& port : o.publish) {
        std::string& list = port.udp ? udp : tcp;
        list += (list.empty() ? "" : ",") + port.spec;
    }
    args.insert(args.end(), {"--tcp-ports", tcp.empty() ? "none" : tcp, "--udp-ports", udp.empty() ? "none" : udp});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // passt drops to nobody, which clears a parent-death signal, and with some connections open
    // it outlived its peer (Debian 12's passt spun on a closed --fd instead of exiting for
    // --one-off). So it runs as PID 2 of a PID namespace of its own, whose init dies with the
    // keeper below, and the keeper with its caller (the namespace engine's pump, whose exit or
    // death thus ends passt): the kernel kills whatever the namespace holds when its init goes,
    // whoever that is running as. The caller knows the keeper as passt.
    int alive[2] = {-1, -1};  // the init's way to learn that the keeper is already gone
    if (::pipe2(alive, O_CLOEXEC) != 0) {
        error = errno_text("pipe for passt's keeper");
        return -1;
    }
    for (int& end : alive) {  // above fd 3, which passt's socket takes in the child
        if (end > 3) continue;
        const int moved = ::fcntl(end, F_DUPFD_CLOEXEC, 10);
        ::close(end);
        end = moved;
    }
    const pid_t pid = fork_tied_to_parent(127);
    if (pid < 0) {
        error = errno_text("fork for passt");
        ::close(alive[0]);
        ::close(alive[1]);
        return -1;
    }
    if (pid == 0) {
        if (passt_fd == 3) {
            ::fcntl(3, F_SETFD, 0);
        } else if (::dup2(passt_fd, 3) != 3) {
            ::_exit(127);
        }
        close_descriptors_from(4, {alive[0], alive[1]});  // nothing of the caller's but its socket
        if (::unshare(CLONE_NEWPID) != 0) ::_exit(127);
        const pid_t init = ::fork();
        if (init < 0) ::_exit(127);
        if (init == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            ::close(alive[1]);
            pollfd gone{alive[0], POLLIN, 0};
            if (::poll(&gone, 1, 0) != 0) ::_exit(127);  // the keeper died before the prctl
            const pid_t passt = ::fork();
            if (passt == 0) {
                ::close(alive[0]);
                ::execv(argv[0], argv.data());
                ::_exit(127);
            }
            ::close(3);
            int status = 0;
            for (;;) {  // PID 1: reaps whatever passt leaves, until passt itself ends
                const pid_t reaped = ::waitpid(-1, &status, 0);
                if (reaped == passt || (reaped < 0 && errno != EINTR)) break;
            }
            ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
        }
        ::close(3);
        ::close(alive[0]);
        int status = 0;
        while (::waitpid(init, &status, 0) < 0 && errno == EINTR) {}
        ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
    }
    ::close(alive[0]);
    ::close(alive[1]);
    return pid;
}

void PasstNetwork::signal_stop() noexcept {
    if (!stop) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop.get(), &one, sizeof one);
}

void PasstNetwork::shut_down() noexcept {
    signal_stop();
    if (pump.joinable()) pump.join();
    if (passt > 0) {
        ::kill(passt, SIGKILL);  // its keeper: the PID namespace's init, and passt, go with it
        while (::waitpid(passt, nullptr, 0) < 0 && errno == EINTR) {}
        passt = -1;
    }
}

void size_passt_socket_pair(int pump_end, int passt_end) {
    auto set = [](int fd, int option, int forced, int bytes) {
        if (::setsockopt(fd, SOL_SOCKET, forced, &bytes, sizeof bytes) != 0)
            ::setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes);
    };
    constexpr int kLarge = 8 * 1024 * 1024;
    constexpr int kPumpWrites = 2 * 1024 * 1024;
    set(pump_end, SO_SNDBUF, SO_SNDBUFFORCE, kPumpWrites);
    set(pump_end, SO_RCVBUF, SO_RCVBUFFORCE, kLarge);
    set(passt_end, SO_SNDBUF, SO_SNDBUFFORCE, kLarge);
    set(passt_end, SO_RCVBUF, SO_RCVBUFFORCE, kLarge);
}

BoxliteResult<base::OwnedFd> start_passt_network(const std::vector<std::string>& allow_net,
                                                 const ShimOptions& passt_options, PasstNetwork& network) {
    auto allow = net::AllowList::parse(allow_net);
    if (!allow) return fail(ErrorKind::Config, "box network: {}", allow.error().message());
    network.firewall.emplace(std::move(*allow));
    network.stop.reset(::eventfd(0, EFD_CLOEXEC));
    if (!network.stop) return fail_errno(ErrorKind::Engine, "eventfd for the box network", errno);
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        return fail_errno(ErrorKind::Engine, "socketpair for passt", errno);
    base::OwnedFd ours(pair[0]), theirs(pair[1]);
    size_passt_socket_pair(ours.get(), theirs.get());
    std::string error;
    network.passt = start_passt(passt_options, theirs.get(), error);
    if (network.passt < 0) return fail(ErrorKind::Engine, "starting passt for the box network: {}", error);
    network.publish = passt_options.publish;
    return ours;
}

bool wait_for_passt_ports(const PasstNetwork& network, std::string& error) {
    return network.publish.empty() || wait_for_published_ports(network.publish, 10'000, network.passt, error, "passt");
}

void start_pump(PasstNetwork& network, base::OwnedFd box_end, base::OwnedFd passt_end, const char* who) {
    auto* firewall = &*network.firewall;
    network.pump = std::thread(
        [box = std::move(box_end), passt = std::move(passt_end), firewall, stop = network.stop.get(), who]() {
            net::FramePump pump(box.get(), passt.get(), *firewall);
            pump.queue_to_passt(box_arp_request());
            auto result = pump.run(stop);
            if (!result) std::fprintf(stderr, "%s: network pump ended: %s\n", who, result.error().to_string().c_str());
        });
}

BoxliteResult<net::ForwardedPort> bind_published_tcp_port(const PublishedPort& port) {
    const auto [address, host_port, box_port] = parse_port_spec(port.spec);
    if (host_port < 1 || host_port > 65535 || box_port < 1 || box_port > 65535) {
        return fail(ErrorKind::Config, "published TCP port '{}': expected [ADDR/]HOSTPORT:BOXPORT with ports 1-65535",
                    port.spec);
    }
    sockaddr_storage host{};
    socklen_t host_length = 0;
    if (address.find(':') != std::string::npos) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&host);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(static_cast<std::uint16_t>(host_port));
        if (::inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) != 1)
            return fail(ErrorKind::Config, "published TCP port '{}': '{}' is not an IPv6 address", port.spec, address);
        host_length = sizeof *in6;
    } else {
        auto* in = reinterpret_cast<sockaddr_in*>(&host);
        in->sin_family = AF_INET;
        in->sin_port = htons(static_cast<std::uint16_t>(host_port));
        if (!address.empty() && ::inet_pton(AF_INET, address.c_str(), &in->sin_addr) != 1)
            return fail(ErrorKind::Config, "published TCP port '{}': '{}' is not an IPv4 address", port.spec, address);
        host_length = sizeof *in;
    }
    net::ForwardedPort forwarded;
    forwarded.listener.reset(::socket(host.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!forwarded.listener) return fail_errno(ErrorKind::Engine, "socket for a published TCP port", errno);
    const int one = 1;  // as passt binds: a port in TIME_WAIT is free, a listener is not
    ::setsockopt(forwarded.listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (host.ss_family == AF_INET6) ::setsockopt(forwarded.listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(forwarded.listener.get(), reinterpret_cast<sockaddr*>(&host), host_length) != 0 ||
        ::listen(forwarded.listener.get(), SOMAXCONN) != 0) {
        const int error = errno;
        if (error == EADDRINUSE) {
            return fail(ErrorKind::Config,
                        "the published TCP port {}: host port {} is already in use, by another box or program",
                        port.spec, host_port);
        }
        return fail_errno(ErrorKind::Engine, fmt::format("binding the published TCP port {}", port.spec), error);
    }
    auto* target = reinterpret_cast<sockaddr_in*>(&forwarded.target);
    target->sin_family = AF_INET;
    target->sin_port = htons(static_cast<std::uint16_t>(box_port));
    ::inet_pton(AF_INET, kBoxAddress, &target->sin_addr);
    forwarded.target_length = sizeof *target;
    return forwarded;
}

namespace {

/// Makes TCP sockets in the network namespace of the thread that start()ed it, for a thread that
/// has since entered another one: a socket belongs to the namespace of the thread that makes it.
/// One request at a time, over a SEQPACKET pair; the thread lives as long as the process.
class SocketMakerThread {
public:
    bool start() {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return false;
        request_ = pair[0];
        const int served = pair[1];
        try {
            std::thread([served] {
                int family = 0;
                while (::recv(served, &family, sizeof family, 0) == static_cast<ssize_t>(sizeof family)) {
                    int answer[2] = {::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), 0};
                    answer[1] = answer[0] < 0 ? errno : 0;
                    (void)::send(served, answer, sizeof answer, MSG_NOSIGNAL);
                }
            }).detach();
        } catch (const std::system_error&) {
            ::close(pair[0]);
            ::close(pair[1]);
            request_ = -1;
            return false;
        }
        return true;
    }

    int make(int family) const {
        int answer[2] = {-1, EIO};
        if (::send(request_, &family, sizeof family, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof family) ||
            ::recv(request_, answer, sizeof answer, 0) != static_cast<ssize_t>(sizeof answer)) {
            errno = EIO;
            return -1;
        }
        errno = answer[1];
        return answer[0];
    }

private:
    int request_ = -1;
};

/// A listener on the box's loopback (the calling thread's namespace) at a port the kernel picks.
std::optional<std::pair<base::OwnedFd, std::uint16_t>> box_loopback_listener() {
    base::OwnedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (!listener || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener.get(), SOMAXCONN) != 0 ||
        ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
        return std::nullopt;
    return std::pair{std::move(listener), ntohs(address.sin_port)};
}

/// A line of `box_id`'s in shim.log (the shim's and its helpers' stderr).
void box_log(const std::string& box_id, const std::string& text) {
    const auto line = "boxlite-shim: box " + box_id + ": " + text + "\n";
    (void)!::write(2, line.data(), line.size());
}

}  // namespace

void run_port_forwarder(int channel, std::vector<net::ForwardedPort> ports, const std::string& box_id,
                        HostAliasSplice splice, int box_network) {
    auto say = [&](const std::string& line) {
        if (channel >= 0) {
            (void)!::send(channel, line.data(), line.size(), MSG_NOSIGNAL);
        } else if (line != "k") {
            box_log(box_id, "host alias forwarder: " + line);
        }
    };
    // The box's connect hook, while this process is still root; its maps stay here. The thread
    // is started before the move into the box's namespace, so that its sockets are the host's.
    std::optional<net::ConnectRedirect> hook;
    SocketMakerThread host_sockets;
    if (splice.on()) {
        auto loaded = net::ConnectRedirect::load();
        if (loaded) {
            if (auto attached = loaded->attach(splice.cgroup_dir); !attached) loaded = fail(attached.error());
        }
        if (!loaded) {
            box_log(box_id, "network: host.boxlite.internal goes through passt only: " + loaded.error().message());
        } else if (!host_sockets.start()) {
            box_log(box_id,
                    "network: host.boxlite.internal goes through passt only: no thread for the host's "
                    "sockets");
        } else {
            hook.emplace(std::move(*loaded));
        }
        if (!hook && ports.empty()) ::_exit(0);  // nothing left to forward
    }
    if (box_network < 0) box_network = receive_fd(channel);
    if (box_network < 0) ::_exit(0);  // the shim gave up on the box before it was ready
    if (::setns(box_network, CLONE_NEWNET) != 0) {
        say(errno_text("entering the box's network namespace for its published TCP ports"));
        ::_exit(1);
    }
    ::close(box_network);
    // Each connection holds six descriptors (two sockets, two pipes): room for the limit.
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 4096 && files.rlim_max > files.rlim_cur) {
        files.rlim_cur = std::min<rlim_t>(files.rlim_max, 4096);
        ::setrlimit(RLIMIT_NOFILE, &files);
    }
    const std::size_t room = files.rlim_cur > 64 ? (static_cast<std::size_t>(files.rlim_cur) - 32) / 6 : 1;
    // Nothing below needs root: the listeners are bound, and connecting to the box's address needs
    // no privilege. So the forwarder, which handles bytes from the box and from the host's
    // clients, runs as nobody (as passt does), cannot be traced by other processes of nobody's
    // (not dumpable), and can gain nothing by exec. A change of user clears the parent-death
    // signal: it is set again, and a parent that died in between is caught by getppid().
    const pid_t shim = ::getppid();
    const gid_t nobody_group = 65534;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody_group, nobody_group, nobody_group) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
        say(errno_text("dropping the port forwarder's privileges"));
        ::_exit(1);
    }
    ::prctl(PR_SET_DUMPABLE, 0);
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != shim) ::_exit(0);
    net::PortForwarder forwarder(std::move(ports), std::min(net::PortForwarder::kDefaultMaxConnections, room));
    // The host alias: each port the pump names (the host accepted a connection of the box's to
    // it) gets a listener on the box's loopback, and the box's connect hook sends later
    // connections to that port there; they are spliced to the host's 127.0.0.1:PORT. A port
    // whose host server has gone (a connection refused) goes back to passt.
    struct Spliced {
        std::uint16_t alias_port;
        std::uint16_t local_port;
    };
    std::map<std::size_t, Spliced> spliced;  // by forwarder port index
    auto splicing = [&](std::uint16_t alias_port) {
        return std::ranges::any_of(spliced, [&](const auto& entry) { return entry.second.alias_port == alias_port; });
    };
    if (hook) {
        forwarder.set_socket_maker([&](int family) { return host_sockets.make(family); });
        forwarder.watch(splice.learn, [&] {
            for (;;) {
                std::uint8_t bytes[2];
                const ssize_t n = ::recv(splice.learn, bytes, sizeof bytes, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    forwarder.unwatch(splice.learn);  // the pump has gone
                    return;
                }
                if (n < 0) return;
                const auto alias_port = static_cast<std::uint16_t>(bytes[0] << 8 | bytes[1]);
                if (n != 2 || alias_port == 0 || splicing(alias_port) || spliced.size() >= kMaxSplicedAliasPorts)
                    continue;
                auto listener = box_loopback_listener();
                if (!listener) {
                    box_log(box_id, fmt::format("host.boxlite.internal:{} is not spliced: {}", alias_port,
                                                std::strerror(errno)));
                    continue;
                }
                net::ForwardedPort port;
                port.listener = std::move(listener->first);
                auto* target = reinterpret_cast<sockaddr_in*>(&port.target);
                target->sin_family = AF_INET;
                target->sin_port = htons(alias_port);
                target->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                port.target_length = sizeof *target;
                port.target_elsewhere = true;
                const auto index = forwarder.add_port(std::move(port));
                if (!net::ConnectRedirect::set_port(hook->forward_map(), hook->reverse_map(), alias_port,
                                                    listener->second)) {
                    box_log(box_id, fmt::format("host.boxlite.internal:{} is not spliced: {}", alias_port,
                                                std::strerror(errno)));
                    forwarder.remove_port(index);
                    continue;
                }
                spliced[index] = {alias_port, listener->second};
                box_log(box_id, fmt::format("host.boxlite.internal:{} spliced from now on", alias_port));
            }
        });
        forwarder.on_refused([&](std::size_t index) {
            const auto it = spliced.find(index);
            if (it == spliced.end()) return;
            // The hook first: a connection made meanwhile goes through passt, not to a closed port.
            (void)net::ConnectRedirect::clear_port(hook->forward_map(), hook->reverse_map(), it->second.alias_port,
                                                   it->second.local_port);
            forwarder.remove_port(index);
            box_log(box_id, fmt::format("host.boxlite.internal:{} refused a spliced connection (reset); back "
                                        "through passt",
                                        it->second.alias_port));
            spliced.erase(it);
        });
    }
    say("k");
    if (channel >= 0) ::close(channel);
    auto result = forwarder.run(-1);
    box_log(box_id, "port forwarder ended: " + (result ? std::string("stopped") : result.error().message()));
    ::_exit(result ? 0 : 1);
}

HostAliasSplicer::~HostAliasSplicer() {
    if (learn_ >= 0) ::close(learn_);
}

void HostAliasSplicer::give_up(const std::string& why) {
    if (!given_up_) box_log(box_id_, "network: host.boxlite.internal goes through passt only: " + why);
    given_up_ = true;
    if (learn_ >= 0) learn_ = (::close(learn_), -1);
}

bool HostAliasSplicer::start() {
    // The box's network namespace, from its eth0: the forwarder enters it at once.
    const int network = ::ioctl(tap_, TUNGETDEVNETNS);
    if (network < 0) {
        give_up(errno_text("the box's network namespace (TUNGETDEVNETNS)"));
        return false;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        ::close(network);
        give_up(errno_text("socketpair for the host alias forwarder"));
        return false;
    }
    forwarder_ = fork_tied_to_parent();
    if (forwarder_ == 0) {
        close_descriptors_from(3, {pair[1], network});
        run_port_forwarder(-1, {}, box_id_, {cgroup_dir_, pair[1]}, network);
    }
    ::close(pair[1]);
    ::close(network);
    if (forwarder_ < 0) {
        ::close(pair[0]);
        give_up(errno_text("fork for the host alias forwarder"));
        return false;
    }
    learn_ = pair[0];
    // The pump never blocks on it: a port named when its queue is full is named again by the
    // host's next accept.
    const int flags = ::fcntl(learn_, F_GETFL);
    if (flags >= 0) ::fcntl(learn_, F_SETFL, flags | O_NONBLOCK);
    return true;
}

void HostAliasSplicer::accepted(std::uint16_t port) {
    if (given_up_ || (learn_ < 0 && !start())) return;
    const std::uint8_t bytes[2] = {static_cast<std::uint8_t>(port >> 8), static_cast<std::uint8_t>(port & 0xff)};
    if (::send(learn_, bytes, sizeof bytes, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0 || errno == EAGAIN) return;
    // The forwarder has ended (it logged why, when it could): reaped here, once.
    int status = 0;
    std::string how = "it ended";
    if (::waitpid(forwarder_, &status, WNOHANG) == forwarder_) {
        how = WIFSIGNALED(status) ? fmt::format("its forwarder ended (signal {})", WTERMSIG(status))
                                  : fmt::format("its forwarder ended (exit {})", WEXITSTATUS(status));
    }
    give_up(how);
}

}  // namespace boxlite::shim
