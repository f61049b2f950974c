#include "net/port_forwarder.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <vector>

namespace boxlite::net {

namespace {

bool transient(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

/// Closes `fd` with a reset (SO_LINGER 0) instead of a FIN: the peer learns the other side failed.
void close_with_reset(int fd) {
    if (fd < 0) return;
    const linger abort{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    ::close(fd);
}

void no_delay(int fd) {
    const int one = 1;  // what the ends wrote goes on as written; their own Nagle already batched
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

struct PortForwarder::Watch {
    enum class Kind : std::uint8_t { Stop, Listener, Client, Box, Fd };
    Kind kind = Kind::Stop;
    std::size_t port = 0;
    Connection* connection = nullptr;
};

/// One direction of a connection: bytes spliced from one socket into the pipe, and on to the other.
struct Half {
    int read_end = -1;
    int write_end = -1;
    std::size_t capacity = 0;
    std::size_t queued = 0;  ///< in the pipe, not yet written on
    bool eof = false;        ///< the source sent its FIN
    bool shut = false;       ///< the FIN was passed on (shutdown(SHUT_WR) of the destination)

    bool open_pipe() {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return false;
        read_end = ends[0];
        write_end = ends[1];
        (void)::fcntl(write_end, F_SETPIPE_SZ, static_cast<int>(PortForwarder::kPipeBytes));
        const int size = ::fcntl(write_end, F_GETPIPE_SZ);
        capacity = size > 0 ? static_cast<std::size_t>(size) : 65536;
        return true;
    }
    void close_pipe() {
        if (read_end >= 0) ::close(read_end);
        if (write_end >= 0) ::close(write_end);
        read_end = write_end = -1;
    }
    [[nodiscard]] bool done() const noexcept { return shut; }

    /// Moves what it can from `from` to `to`, until neither socket takes a step (both sockets
    /// are edge-triggered: what stops here resumes at the next edge of either; a read stopped by
    /// a full pipe resumes after the next write, in this loop). False on a failure of either
    /// socket (a reset).
    bool move(int from, int to, std::uint64_t& counted) {
        for (;;) {
            bool progress = false;
            if (queued > 0) {
                const ssize_t n = ::splice(read_end, nullptr, to, nullptr, queued, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (n > 0) {
                    queued -= static_cast<std::size_t>(n);
                    counted += static_cast<std::uint64_t>(n);
                    progress = true;
                } else if (n < 0 && !transient(errno)) {
                    return false;
                }
            }
            if (!eof && queued < capacity) {
                const ssize_t n = ::splice(from, nullptr, write_end, nullptr, capacity - queued,
                                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (n > 0) {
                    queued += static_cast<std::size_t>(n);
                    progress = true;
                } else if (n == 0) {
                    eof = true;
                    progress = true;
                } else if (!transient(errno)) {
                    return false;
                }
            }
            if (eof && queued == 0 && !shut) {
                ::shutdown(to, SHUT_WR);
                shut = true;
            }
            if (!progress) return true;
        }
    }
};

struct PortForwarder::Connection {
    int client = -1;
    int box = -1;
    std::uint64_t generation = 0;  ///< of the port it was accepted on (box_watch.port)
    bool connecting = true;
    bool dead = false;
    Half in;   ///< client -> box
    Half out;  ///< box -> client
    Watch client_watch;
    Watch box_watch;
};

namespace {

void make_non_blocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

}  // namespace

PortForwarder::PortForwarder(std::vector<ForwardedPort> ports, std::size_t max_connections)
    : ports_(std::move(ports)), max_connections_(max_connections == 0 ? 1 : max_connections) {
    for (auto& port : ports_) make_non_blocking(port.listener.get());
    for (std::size_t i = 0; i < ports_.size(); ++i) generations_.push_back(next_generation_++);
}

std::size_t PortForwarder::add_port(ForwardedPort port) {
    make_non_blocking(port.listener.get());
    std::size_t index = 0;
    while (index < ports_.size() && ports_[index].listener) ++index;
    if (index == ports_.size()) {
        ports_.push_back(std::move(port));
        generations_.push_back(next_generation_++);
    } else {
        ports_[index] = std::move(port);
        generations_[index] = next_generation_++;
    }
    if (epoll_ >= 0) register_port(index);
    return index;
}

void PortForwarder::remove_port(std::size_t index) {
    if (index >= ports_.size() || !ports_[index].listener) return;
    if (epoll_ >= 0) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, ports_[index].listener.get(), nullptr);
    ports_[index].listener.reset();
    generations_[index] = next_generation_++;  // its connections' refusals are no longer reported
}

void PortForwarder::register_port(std::size_t index) {
    while (listener_watches_.size() <= index)
        listener_watches_.push_back(new Watch{Watch::Kind::Listener, listener_watches_.size(), nullptr});
    epoll_event event{};
    event.events = listening_ ? static_cast<std::uint32_t>(EPOLLIN) : 0U;
    event.data.ptr = listener_watches_[index];
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, ports_[index].listener.get(), &event);
}

void PortForwarder::watch(int fd, std::function<void()> on_readable) {
    std::size_t index = 0;
    while (index < fd_watches_.size() && fd_watches_[index].fd >= 0) ++index;
    if (index == fd_watches_.size()) fd_watches_.push_back({});
    auto& entry = fd_watches_[index];
    entry.fd = fd;
    entry.on_readable = std::move(on_readable);
    if (entry.watch == nullptr) entry.watch = new Watch{Watch::Kind::Fd, index, nullptr};
    if (epoll_ >= 0) register_watch(index);
}

void PortForwarder::register_watch(std::size_t index) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = fd_watches_[index].watch;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd_watches_[index].fd, &event);
}

void PortForwarder::unwatch(int fd) {
    for (auto& entry : fd_watches_) {
        if (entry.fd != fd || fd < 0) continue;
        if (epoll_ >= 0) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
        entry.fd = -1;  // its callback is kept until the slot is used again: it may be running now
    }
}

PortForwarder::~PortForwarder() {
    for (auto* c : live_) {
        if (!c->dead) close_connection(*c, /*reset=*/true);
    }
    release_closed();
    for (auto* watch : listener_watches_) delete watch;
    for (auto& entry : fd_watches_) delete entry.watch;
    if (epoll_ >= 0) ::close(epoll_);
}

void PortForwarder::release_closed() {
    for (auto* c : closed_) {
        std::erase(live_, c);
        delete c;
    }
    closed_.clear();
}

void PortForwarder::set_listening(bool on) {
    if (on == listening_) return;
    for (std::size_t i = 0; i < ports_.size(); ++i) {
        if (!ports_[i].listener) continue;
        epoll_event event{};
        event.events = on ? static_cast<std::uint32_t>(EPOLLIN) : 0U;
        event.data.ptr = listener_watches_[i];
        ::epoll_ctl(epoll_, EPOLL_CTL_MOD, ports_[i].listener.get(), &event);
    }
    listening_ = on;
}

void PortForwarder::accept_from(std::size_t port) {
    while (connections_ < max_connections_ && ports_[port].listener) {
        const int client = ::accept4(ports_[port].listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) {
            // EMFILE and the like: the client waits in the backlog until a connection closes, or
            // (none open) the next try, kRetryMs later; a level-triggered listener would spin.
            if (!transient(errno) && errno != ECONNABORTED) {
                set_listening(false);
                retry_listening_ = connections_ == 0;
            }
            return;
        }
        ++stats_.accepted;
        const auto& target = ports_[port].target;
        int box = -1;
        if (!ports_[port].target_elsewhere) {
            box = ::socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        } else if (socket_maker_ && (box = socket_maker_(target.ss_family)) >= 0) {
            make_non_blocking(box);
        }
        const bool started = box >= 0 && (::connect(box, reinterpret_cast<const sockaddr*>(&target),
                                                    ports_[port].target_length) == 0 ||
                                          errno == EINPROGRESS);
        const bool target_failed = box >= 0 && !started;
        auto* c = new Connection;
        c->client = client;
        c->box = box;
        c->generation = generations_[port];
        if (!started || !c->in.open_pipe() || !c->out.open_pipe()) {
            ++stats_.refused;
            c->dead = true;
            c->in.close_pipe();
            c->out.close_pipe();
            if (box >= 0) ::close(box);
            close_with_reset(client);
            delete c;
            if (target_failed && on_refused_) on_refused_(port);  // may remove the port
            continue;
        }
        no_delay(client);
        no_delay(box);
        c->client_watch = {Watch::Kind::Client, port, c};
        c->box_watch = {Watch::Kind::Box, port, c};
        // Edge-triggered, both ways, for good: every wake-up moves all it can, so nothing is
        // missed, and a socket's hang-up or error wakes the forwarder once, not at every wait
        // (level-triggered, a client that resets or hangs up behind a target that does not read
        // would spin it). The box's socket is connected (or refused) at its first EPOLLOUT.
        epoll_event event{};
        event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        event.data.ptr = &c->client_watch;
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, client, &event);
        event.data.ptr = &c->box_watch;
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, box, &event);
        live_.push_back(c);
        ++connections_;
    }
    set_listening(false);  // at the limit: clients wait in the backlog
}

void PortForwarder::connected(Connection& c) {
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(c.box, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
        ++stats_.refused;
        close_connection(c, /*reset=*/true);
        if (on_refused_ && c.generation == generations_[c.box_watch.port]) on_refused_(c.box_watch.port);
        return;
    }
    c.connecting = false;
    service(c);
}

void PortForwarder::service(Connection& c) {
    if (c.dead || c.connecting) return;
    if (!c.in.move(c.client, c.box, stats_.bytes_in) || !c.out.move(c.box, c.client, stats_.bytes_out)) {
        close_connection(c, /*reset=*/true);
        return;
    }
    if (c.in.done() && c.out.done()) close_connection(c, /*reset=*/false);
}

void PortForwarder::close_connection(Connection& c, bool reset) {
    if (c.dead) return;
    c.dead = true;
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, c.client, nullptr);
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, c.box, nullptr);
    if (reset) {
        close_with_reset(c.client);
        close_with_reset(c.box);
    } else {
        ::close(c.client);
        ::close(c.box);
    }
    c.in.close_pipe();
    c.out.close_pipe();
    closed_.push_back(&c);
    --connections_;
    set_listening(true);
}

namespace {

/// splice() into a socket whose peer has gone raises SIGPIPE (it has no MSG_NOSIGNAL): blocked in
/// the forwarding thread for as long as it forwards, so the call fails with EPIPE instead of the
/// signal ending the process. The SIGPIPEs left pending are taken before the old mask returns.
class SigpipeBlocked {
public:
    SigpipeBlocked() {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        ::pthread_sigmask(SIG_BLOCK, &pipe, &old_);
    }
    ~SigpipeBlocked() {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        const timespec now{0, 0};
        while (::sigtimedwait(&pipe, nullptr, &now) == SIGPIPE) {}
        ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeBlocked(const SigpipeBlocked&) = delete;
    SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

private:
    sigset_t old_{};
};

}  // namespace

BoxliteResult<void> PortForwarder::run(int stop_fd) {
    const SigpipeBlocked no_sigpipe;
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) return fail_errno(ErrorKind::Internal, "epoll_create1 for the port forwarder", errno);
    Watch stop{Watch::Kind::Stop, 0, nullptr};
    if (stop_fd >= 0) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.ptr = &stop;
        if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, stop_fd, &event) != 0)
            return fail_errno(ErrorKind::Internal, "watching the port forwarder's stop descriptor", errno);
    }
    listening_ = true;
    for (std::size_t i = 0; i < ports_.size(); ++i) {
        if (ports_[i].listener) register_port(i);
    }
    for (std::size_t i = 0; i < fd_watches_.size(); ++i) {
        if (fd_watches_[i].fd >= 0) register_watch(i);
    }

    std::array<epoll_event, 64> events{};
    for (;;) {
        const int n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                                   retry_listening_ ? kRetryMs : -1);
        if (n == 0 && retry_listening_) {
            retry_listening_ = false;
            set_listening(true);
            continue;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail_errno(ErrorKind::Internal, "epoll_wait in the port forwarder", errno);
        }
        for (int i = 0; i < n; ++i) {
            auto* watch = static_cast<Watch*>(events[i].data.ptr);
            const std::uint32_t what = events[i].events;
            if (watch->kind == Watch::Kind::Stop) {
                for (auto* c : live_) {
                    if (!c->dead) close_connection(*c, /*reset=*/true);
                }
                release_closed();
                return {};
            }
            if (watch->kind == Watch::Kind::Listener) {
                if (watch->port < ports_.size() && ports_[watch->port].listener) accept_from(watch->port);
                continue;
            }
            if (watch->kind == Watch::Kind::Fd) {
                auto& entry = fd_watches_[watch->port];
                if (entry.fd >= 0) {
                    auto callback = entry.on_readable;  // a copy: the callback may unwatch its fd
                    callback();
                }
                continue;
            }
            Connection& c = *watch->connection;
            if (c.dead) continue;
            const bool client = watch->kind == Watch::Kind::Client;
            if (c.connecting) {
                if (!client) connected(c);  // the client's bytes wait: service() reads them then
                else if ((what & EPOLLERR) != 0) close_connection(c, /*reset=*/true);
                continue;
            }
            service(c);  // first: what a peer sent before it reset can still be read and passed on
            if (c.dead) continue;
            if ((what & EPOLLERR) != 0) {  // a reset (or a timeout): nothing more gets through it
                close_connection(c, /*reset=*/true);
                continue;
            }
            if ((what & EPOLLHUP) == 0) continue;
            // Both directions of that socket are shut. Once its FIN is read, nothing more can be
            // written to it: with our own FIN not yet sent, its peer went away without taking the
            // rest (a reset for the other side).
            const Half& reading = client ? c.in : c.out;
            const Half& writing = client ? c.out : c.in;
            if (reading.eof && !writing.shut) close_connection(c, /*reset=*/true);
        }
        release_closed();  // not before: a later event of the batch may name a closed one
    }
}

}  // namespace boxlite::net
