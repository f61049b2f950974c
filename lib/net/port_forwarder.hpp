// The namespace engine's published TCP ports, forwarded by the shim with splice() instead of
// through passt and the frame pump (docs/networking.md, "Published TCP ports on the namespace
// engine").
//
//   host client -> listener (host netns) -> accept -> pipe -> socket made in the box's netns,
//                  connected to the box's own address (192.168.127.2:BOXPORT) -> box's server
//
// A box's own kernel carries the box's end of the connection over its loopback, so the bytes
// never cross the tap, the pump, the stream socket or passt's TCP stack: two splice() calls per
// chunk, no copy into user space. This is what pasta does for a connection from the host's
// loopback, and the kernel-side path rootlesskit's "builtin" port driver takes. The box sees the
// connection come from its own address. A server that listens on the box's loopback only is not
// reached (the forwarder connects to 192.168.127.2, not 127.0.0.1), as through passt before.
//
// Everything the box controls is bounded: each direction holds at most one pipe's worth of
// bytes (kPipeBytes) between a reader and a slower writer, and at most `max_connections`
// connections are open at once (the listeners are not polled while at the limit: clients wait in
// the kernel's backlog). A reset on either side resets the other; a half-close (FIN) is passed on
// once the bytes before it have been written.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace boxlite::net {

struct ForwardedPort {
    base::OwnedFd listener;  ///< a listening TCP socket (any netns)
    sockaddr_storage target{};
    socklen_t target_length = 0;
    /// The target lies in another network namespace: its sockets come from the forwarder's
    /// SocketMaker instead of being made in the calling thread's.
    bool target_elsewhere = false;
};

struct ForwarderStats {
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;    ///< connections whose target could not be reached
    std::uint64_t bytes_in = 0;   ///< client -> target
    std::uint64_t bytes_out = 0;  ///< target -> client
};

class PortForwarder {
public:
    /// Bytes in flight per direction of one connection (the pipe between the two splices).
    static constexpr std::size_t kPipeBytes = 256 * 1024;
    static constexpr std::size_t kDefaultMaxConnections = 128;

    /// A new stream socket of `family` (close-on-exec), made in the namespace of the targets marked
    /// `target_elsewhere`; -1 with errno on failure.
    using SocketMaker = std::function<int(int family)>;

    /// The listeners are made non-blocking. Sockets to the targets are made in the network
    /// namespace of the thread that calls run(), or by the SocketMaker (target_elsewhere).
    explicit PortForwarder(std::vector<ForwardedPort> ports, std::size_t max_connections = kDefaultMaxConnections);
    ~PortForwarder();
    PortForwarder(const PortForwarder&) = delete;
    PortForwarder& operator=(const PortForwarder&) = delete;

    /// Forwards until `stop_fd` (an eventfd or pipe; -1 for never) becomes readable. An error
    /// only when the forwarder itself cannot go on (epoll); a failing connection is closed.
    /// SIGPIPE is blocked in the calling thread meanwhile (splice() cannot suppress it).
    [[nodiscard]] BoxliteResult<void> run(int stop_fd);

    void set_socket_maker(SocketMaker maker) { socket_maker_ = std::move(maker); }

    /// Adds a listener, before run() or from a callback that run() calls (watch, on_refused);
    /// returns its index. Indexes of removed ports are used again.
    std::size_t add_port(ForwardedPort port);
    /// Closes the listener of port `index` (clients in its backlog are reset); the connections it
    /// accepted live on.
    void remove_port(std::size_t index);

    /// run() calls `on_readable` whenever `fd` is readable (level-triggered: it must read), until
    /// unwatch(fd).
    void watch(int fd, std::function<void()> on_readable);
    void unwatch(int fd);

    /// run() calls `callback(index)` when a connection accepted on port `index` could not reach
    /// its target (refused, unreachable), unless that port has been removed since (its index may
    /// name another port by then).
    void on_refused(std::function<void(std::size_t)> callback) { on_refused_ = std::move(callback); }

    [[nodiscard]] const ForwarderStats& stats() const noexcept { return stats_; }
    /// Connections open now (for tests of the limit).
    [[nodiscard]] std::size_t open_connections() const noexcept { return connections_; }

private:
    struct Connection;
    struct Watch;

    void accept_from(std::size_t port);
    void connected(Connection& c);
    void service(Connection& c);
    void close_connection(Connection& c, bool reset);
    void set_listening(bool on);
    void release_closed();
    void register_port(std::size_t index);
    void register_watch(std::size_t index);

    std::vector<ForwardedPort> ports_;        // a removed port's listener is closed
    std::vector<std::uint64_t> generations_;  // of each slot of ports_, new at each add_port() and remove_port()
    std::uint64_t next_generation_ = 1;
    std::vector<Watch*> listener_watches_;
    struct FdWatch {
        int fd = -1;
        std::function<void()> on_readable;
        Watch* watch = nullptr;
    };
    std::vector<FdWatch> fd_watches_;
    SocketMaker socket_maker_;
    std::function<void(std::size_t)> on_refused_;
    std::size_t max_connections_;
    std::size_t connections_ = 0;
    bool listening_ = false;
    /// Accepting failed for want of descriptors or memory with no connection open to free any:
    /// the listeners are polled again after kRetryMs.
    bool retry_listening_ = false;
    static constexpr int kRetryMs = 100;
    int epoll_ = -1;
    std::vector<Connection*> live_;    // every connection not yet freed
    std::vector<Connection*> closed_;  // freed after the current batch of events
    ForwarderStats stats_;
};

}  // namespace boxlite::net
