// boxlite-agent: the process inside every box that runs commands for the host.
//
// One single-threaded poll loop serves every connection and every execution, so fork() is always
// safe and no lock exists. Per connection: a frame decoder, an output queue, and the executions
// that connection started (its stream ids). Per execution: the child's process group, its stdio
// fds, the stdin bytes the host sent that the child has not read yet, and the credit the host
// granted for stdout/stderr. Flow control (docs/protocol.md):
//   - stdout/stderr: a pipe is only polled while its credit is positive, so a host that stops
//     reading stops us reading, the pipe fills, and the child blocks in write() — without
//     affecting any other execution;
//   - stdin: the host may have at most `stdin_window` unwritten bytes here; we grant credit back
//     as the child consumes them (or as we drop them, once nobody can read them). A host that
//     overruns the window is disconnected.
//   - our own output queue: a connection whose queue backs up is neither read (so replies to its
//     pings cannot pile up) nor fed from pipes until the host drains it.
// An execution is its leader's process group. The group outlives the leader when the command
// leaves background processes (`sh -c 'sleep 100 &'`): the pgid stays reserved while any member
// lives, so signals, kill, the timeout and a disconnect keep acting on the whole group until the
// execution ends — which is when the leader has exited and every holder of its stdout/stderr has
// closed them (or, after a timeout, a short grace period for the output has passed).
// As PID 1 it also reaps orphans and, on Shutdown or SIGTERM, stops everything and exits.
#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>
#include "base/fd_passing.hpp"
#include "base/unix_address.hpp"
#include "protocol/tar.hpp"
#include "vm_init.hpp"
#include <boxlite/version.hpp>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace boxlite;
using namespace boxlite::protocol;
using Clock = std::chrono::steady_clock;

constexpr const char* kAgentVersion = BOXLITE_VERSION_STRING;
/// A connection whose unsent output exceeds this is not read and its pipes are not polled.
constexpr std::size_t kMaxQueuedOutput = 64U << 20;
/// How long a timed-out execution's output may still drain after its group was killed.
constexpr auto kTimeoutOutputGrace = std::chrono::milliseconds(1000);
/// How long one stdin frame's payload may wait in the socket for room in the command's pipe
/// (see Connection::parked) before it is received and queued instead: what a frame the host
/// sent behind it (a signal, a ping) can be delayed by, at most once per stdin frame.
constexpr auto kStdinParkBudget = std::chrono::milliseconds(10);

void log(const std::string& text) {
    const auto line = "boxlite-agent: " + text + "\n";
    (void)!::write(2, line.data(), line.size());
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }
void set_cloexec(int fd) { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

struct Connection;

struct Execution {
    std::uint32_t id = 0;
    Connection* conn = nullptr;
    pid_t pid = -1;
    ExecKind kind = ExecKind::Command;
    bool tty = false;
    int stdin_fd = -1;
    int stdout_fd = -1;
    int stderr_fd = -1;
    std::vector<std::byte> stdin_buffer;  // bytes received, not yet written to the child
    std::size_t stdin_offset = 0;
    std::size_t stdin_ungranted = 0;  // written to the child, credit not yet returned to the host
    std::uint32_t stdin_window = kDefaultWindow;
    bool stdin_close_requested = false;
    std::uint64_t stdout_credit = 0;
    std::uint64_t stderr_credit = 0;
    bool leader_exited = false;  // reaped; `pid` stays the group's id while members remain
    bool group_gone = false;     // a signal found no member left: never signal that pgid again
    int exit_code = 0;
    bool timed_out = false;
    std::uint64_t oom_kills_at_start = 0;  // the box's memory cgroup oom_kill count at the fork
    bool oom_killed = false;
    std::optional<Clock::time_point> deadline;
    // After a timeout: when to stop waiting for pipes that a process outside the group holds.
    std::optional<Clock::time_point> give_up_output;

    [[nodiscard]] std::size_t stdin_pending() const { return stdin_buffer.size() - stdin_offset; }
};

struct Connection {
    int fd = -1;
    FrameDecoder decoder;
    std::vector<std::byte> out;
    std::size_t out_offset = 0;
    bool hello_done = false;
    bool closing = false;  // flush `out`, then close
    // A UNIX socket (the namespace engine): descriptors may come with frames (HelloAck offers
    // kFeatureStdinDescriptor). `frame_fds` are those that came with the header of the frame
    // being read; whatever its handling does not take is closed once it is handled.
    bool passes_fds = false;
    std::vector<int> frame_fds;
    // A stdin frame whose header was taken and whose payload is still in the socket: it goes
    // from there into the execution's stdin pipe by splice(2) (see read_connection).
    std::uint32_t stdin_stream = 0;
    std::size_t stdin_left = 0;
    bool no_splice = false;  // splice(2) failed on this socket (not a unix one): receive instead
    // The command's pipe is full and that payload is next in the socket: rather than receive and
    // queue it (two copies), the socket is not read until the pipe has room, so that the payload
    // is still spliced. Only while no execution of this connection waits for output credit (the
    // host's Credit frames may sit behind the payload) and for kStdinParkBudget per frame (any
    // other frame behind it waits at most that long; the host's writer may itself be blocked
    // behind the payload on a full socket).
    bool parked = false;
    bool park_expired = false;         // this frame used up its budget: receive the rest
    Clock::time_point stdin_frame_at;  // when the current stdin frame's header was taken
    std::map<std::uint32_t, std::unique_ptr<Execution>> executions;

    [[nodiscard]] bool backed_up() const { return out.size() - out_offset > kMaxQueuedOutput; }
};

/// Signals the execution's process group while it has members. The pgid is the leader's pid and
/// stays reserved while any member lives, so this never reaches an unrelated process; once a
/// signal finds the group empty, that number may be reused and is never signalled again.
void signal_group(Execution& e, int signo) {
    if (e.pid <= 0 || e.group_gone) return;
    if (::kill(-e.pid, signo) != 0 && errno == ESRCH) e.group_gone = true;
}

class Agent {
public:
    Agent(int listen_fd, std::vector<std::string> base_env, std::string default_workdir, std::string default_user,
          int memory_events_fd = -1, int memory_cgroup_fd = -1, int cgroups_joined_fd = -1)
        : listen_fd_(listen_fd),
          memory_events_fd_(memory_events_fd),
          memory_cgroup_fd_(memory_cgroup_fd),
          cgroups_joined_fd_(memory_cgroup_fd >= 0 ? cgroups_joined_fd : -1),
          base_env_(std::move(base_env)),
          default_workdir_(default_workdir.empty() ? "/" : std::move(default_workdir)),
          default_user_(std::move(default_user)) {}

    /// Called once, before the first execution starts (whatever its kind): what must be done
    /// before anything runs in the box that the agent could serve without.
    void before_first_execution(std::function<void()> wait) { before_first_execution_ = std::move(wait); }

    int run(int ready_fd) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, nullptr);
        signal_fd_ = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        ::signal(SIGPIPE, SIG_IGN);
        set_nonblocking(listen_fd_);
        started_ = Clock::now();
        if (ready_fd >= 0) {
            (void)!::write(ready_fd, "ready\n", 6);
            ::close(ready_fd);
        }
        while (!exit_now_) loop_once();
        return shutdown_everything();
    }

private:
    // ----------------------------------------------------------------- output
    void send(Connection& c, FrameType type, std::uint32_t stream, std::span<const std::byte> payload) {
        const auto header = encode_header(type, stream, static_cast<std::uint32_t>(payload.size()));
        c.out.insert(c.out.end(), header.begin(), header.end());
        c.out.insert(c.out.end(), payload.begin(), payload.end());
    }
    void send(Connection& c, FrameType type, std::uint32_t stream, const std::vector<std::byte>& payload) {
        send(c, type, stream, std::span<const std::byte>(payload));
    }
    void send_error(Connection& c, std::uint32_t stream, const std::string& message) {
        send(c, FrameType::Error, stream, ErrorMessage{message}.encode());
    }
    void protocol_violation(Connection& c, const std::string& message) {
        log("closing connection: " + message);
        send_error(c, 0, message);
        c.closing = true;
    }

    bool flush(Connection& c) {
        while (c.out_offset < c.out.size()) {
            const auto n = ::send(c.fd, c.out.data() + c.out_offset, c.out.size() - c.out_offset,
                                  MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n <= 0) return false;
            c.out_offset += static_cast<std::size_t>(n);
        }
        if (c.out_offset == c.out.size()) {
            c.out.clear();
            c.out_offset = 0;
        } else if (c.out_offset > (1U << 20)) {
            c.out.erase(c.out.begin(), c.out.begin() + static_cast<std::ptrdiff_t>(c.out_offset));
            c.out_offset = 0;
        }
        return true;
    }

    // ----------------------------------------------------------------- loop
    void loop_once() {
        std::vector<pollfd> fds;
        enum class Kind { Listen, Signal, Joined, Conn, Out, Err, In, Park };
        struct Slot {
            Kind kind;
            Connection* conn;
            std::uint32_t exec_id;  // looked up again: an earlier slot may have ended it
        };
        std::vector<Slot> slots;
        auto add = [&](int fd, short events, Kind kind, Connection* c, Execution* e) {
            fds.push_back({fd, events, 0});
            slots.push_back({kind, c, e != nullptr ? e->id : 0});
        };
        auto find = [](Connection* c, std::uint32_t id) -> Execution* {
            if (c == nullptr || c->fd < 0) return nullptr;
            auto it = c->executions.find(id);
            return it == c->executions.end() ? nullptr : it->second.get();
        };
        if (!shutting_down_) add(listen_fd_, POLLIN, Kind::Listen, nullptr, nullptr);
        add(signal_fd_, POLLIN, Kind::Signal, nullptr, nullptr);
        if (cgroups_joined_fd_ >= 0) add(cgroups_joined_fd_, POLLIN, Kind::Joined, nullptr, nullptr);
        auto timeout_ms = -1;
        const auto now = Clock::now();
        auto wake_at = [&](Clock::time_point when) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(when - now).count();
            const int ms = static_cast<int>(std::clamp<long long>(left + 1, 0, 60000));
            timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
        };
        for (auto& c : connections_) {
            // A backed-up connection is not read either: every request may queue a reply, so a
            // host that sends without reading must not grow our memory without bound.
            const bool backed_up = c->backed_up();
            Execution* parked_on = c->parked ? still_parked(*c, now) : nullptr;
            short ev = c->closing || backed_up || parked_on != nullptr ? 0 : POLLIN;
            if (c->out_offset < c->out.size()) ev |= POLLOUT;
            add(c->fd, ev, Kind::Conn, c.get(), nullptr);
            if (parked_on != nullptr) {
                add(parked_on->stdin_fd, POLLOUT, Kind::Park, c.get(), nullptr);
                wake_at(c->stdin_frame_at + kStdinParkBudget);
            }
            for (auto& [id, e] : c->executions) {
                if (e->stdout_fd >= 0 && e->stdout_credit > 0 && !backed_up)
                    add(e->stdout_fd, POLLIN, Kind::Out, c.get(), e.get());
                if (e->stderr_fd >= 0 && e->stderr_credit > 0 && !backed_up)
                    add(e->stderr_fd, POLLIN, Kind::Err, c.get(), e.get());
                if (e->stdin_fd >= 0 && (e->stdin_pending() > 0 || e->stdin_close_requested)) {
                    add(e->stdin_fd, POLLOUT, Kind::In, c.get(), e.get());
                }
                // The leader's exit does not end the timeout: its group may live on.
                if (e->deadline) wake_at(*e->deadline);
                if (e->give_up_output) wake_at(*e->give_up_output);
            }
        }
        if (shutting_down_) timeout_ms = timeout_ms < 0 ? 50 : std::min(timeout_ms, 50);
        const int ready = ::poll(fds.data(), fds.size(), timeout_ms);
        if (ready < 0 && errno != EINTR) {
            log(std::string("poll failed: ") + std::strerror(errno));
            exit_now_ = true;
            return;
        }
        // Handle signals first (reaping), then data; pointers in slots stay valid until we erase
        // connections at the end of the iteration.
        for (std::size_t i = 0; i < fds.size() && ready > 0; ++i) {
            if (fds[i].revents == 0) continue;
            auto& s = slots[i];
            switch (s.kind) {
                case Kind::Listen: accept_connections(); break;
                case Kind::Signal: handle_signals(); break;
                case Kind::Joined: {
                    char byte = 0;
                    (void)!::read(cgroups_joined_fd_, &byte, 1);
                    ::close(cgroups_joined_fd_);
                    cgroups_joined_fd_ = -1;
                    // The first command's spare; its join follows the shim's joins closely, which
                    // usually spares it the grace period, and overlaps the host's connect.
                    if (executions_started_ == 0) spare_wanted_ = true;
                    break;
                }
                case Kind::Conn:
                    if (s.conn->fd >= 0 && (fds[i].revents & POLLIN)) read_connection(*s.conn);
                    if (s.conn->fd >= 0 && (fds[i].revents & (POLLHUP | POLLERR)) && !(fds[i].revents & POLLIN))
                        drop(*s.conn);
                    if (s.conn->fd >= 0 && !flush(*s.conn)) drop(*s.conn);
                    break;
                case Kind::Out:
                    if (auto* e = find(s.conn, s.exec_id)) pump_output(*s.conn, *e, true);
                    break;
                case Kind::Err:
                    if (auto* e = find(s.conn, s.exec_id)) pump_output(*s.conn, *e, false);
                    break;
                case Kind::In:
                    if (auto* e = find(s.conn, s.exec_id)) pump_stdin(*s.conn, *e);
                    break;
                case Kind::Park:
                    // The pipe has room: splice what it takes of the waiting payload.
                    if (s.conn->fd >= 0 && s.conn->parked) {
                        s.conn->parked = false;
                        read_connection(*s.conn);
                    }
                    break;
            }
        }
        enforce_deadlines();
        for (auto& c : connections_) {
            if (c->fd < 0) continue;
            if (!flush(*c)) drop(*c);
            else if (c->closing && c->out_offset >= c->out.size()) drop(*c);
        }
        std::erase_if(connections_, [](const auto& c) { return c->fd < 0; });
        // Once replies are flushed (a Started frame is not held up by the fork). One attempt per
        // request: under a full pids limit the fork fails, and the next exec asks again.
        if (spare_wanted_) {
            spare_wanted_ = false;
            ensure_spare();
        }
        if (shutting_down_) {
            bool idle = true;
            for (auto& c : connections_) idle = idle && c->out_offset >= c->out.size();
            if (idle || Clock::now() > shutdown_deadline_) exit_now_ = true;
        }
    }

    void accept_connections() {
        while (true) {
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;
            int size = 4 << 20;
            ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            auto c = std::make_unique<Connection>();
            c->fd = fd;
            int domain = 0;
            socklen_t length = sizeof domain;
            c->passes_fds = ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 && domain == AF_UNIX;
            connections_.push_back(std::move(c));
        }
    }

    /// Closes the descriptors that came with the last frame and were not taken: the agent keeps
    /// no descriptor of the host's beyond the frame that brought it.
    static void close_frame_fds(Connection& c) {
        for (const int fd : c.frame_fds) ::close(fd);
        c.frame_fds.clear();
    }

    void drop(Connection& c) {
        close_frame_fds(c);
        // A host that goes away takes its executions with it: nobody could read their output.
        // That includes groups whose leader already exited but whose members still run.
        for (auto& [id, e] : c.executions) {
            signal_group(*e, SIGKILL);
            close_exec_fds(*e);
        }
        c.executions.clear();
        if (c.fd >= 0) ::close(c.fd);
        c.fd = -1;
    }

    void read_connection(Connection& c) {
        for (int rounds = 0; rounds < 16 && !c.closing && !c.backed_up(); ++rounds) {
            if (c.stdin_left > 0) {
                if (!receive_stdin_payload(c)) return;
                continue;
            }
            // At a frame boundary only a header is read; a stdin frame's payload then moves from
            // the socket into the command's pipe without passing through us (splice), when
            // nothing of it is queued.
            if (c.decoder.buffered() == kHeaderSize && take_stdin_header(c)) continue;
            // Received straight into the decoder and handled in place (a stdin payload that
            // could not be spliced goes from there into the command's pipe): first the header
            // alone, then exactly the rest of that frame, so nothing is left over to move. The
            // host sends few frames besides stdin (credit per quarter window, signals), so two
            // receives per frame cost little. The last case is a header decoding will refuse.
            const auto missing = c.decoder.missing();
            const auto buffered = c.decoder.buffered();
            auto room = c.decoder.prepare(missing > 0              ? missing
                                          : buffered < kHeaderSize ? kHeaderSize - buffered
                                                                   : kMaxChunk + kHeaderSize);
            // On a UNIX socket, descriptors come with a frame's first bytes (the kernel hands
            // them out with the bytes of the sendmsg that carried them, and this reads one frame
            // at a time): those of a receive at a frame boundary belong to that frame; any other
            // (mid-frame, hostile) is closed at once.
            if (buffered == 0) close_frame_fds(c);
            ssize_t n = -1;
            if (c.passes_fds) {
                std::vector<int> fds;
                n = base::recv_with_fds(c.fd, room, MSG_DONTWAIT, fds);
                for (const int fd : fds) {
                    if (buffered == 0 && n > 0) c.frame_fds.push_back(fd);
                    else ::close(fd);
                }
            } else {
                n = ::recv(c.fd, room.data(), room.size(), MSG_DONTWAIT);
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n <= 0) {
                drop(c);
                return;
            }
            c.decoder.commit(static_cast<std::size_t>(n));
            // Every frame read is handled (the decoder holds no frames between polls); what this
            // adds to the queue is bounded by the bytes read per round.
            while (!c.closing) {
                auto frame = c.decoder.next_view();
                if (!frame) {
                    protocol_violation(c, frame.error().message());
                    return;
                }
                if (!*frame) break;
                handle_frame(c, **frame);
                close_frame_fds(c);
                if (c.fd < 0) return;
            }
        }
    }

    std::vector<std::byte> stdin_scratch_;  // a stdin payload the pipe could not take right away

    // ----------------------------------------------------------------- frames
    void handle_frame(Connection& c, const FrameView& f) {
        if (!c.hello_done) {
            if (f.type != FrameType::Hello) return protocol_violation(c, "the first frame must be hello");
            auto hello = Hello::decode(f.payload);
            if (!hello) return protocol_violation(c, hello.error().message());
            const auto version = std::min(hello->max_version, kMaxVersion);
            if (version < hello->min_version || version < kMinVersion) {
                return protocol_violation(c, fmt::format("no common protocol version: host speaks {}-{}, agent {}-{}",
                                                         hello->min_version, hello->max_version, kMinVersion,
                                                         kMaxVersion));
            }
            c.hello_done = true;
            send(c, FrameType::HelloAck, 0,
                 HelloAck{version, kAgentVersion, version >= 2 && c.passes_fds ? kFeatureStdinDescriptor : 0U}.encode());
            return;
        }
        switch (f.type) {
            case FrameType::Ping: send(c, FrameType::Pong, f.stream, f.payload); return;
            case FrameType::MetricsRequest: send(c, FrameType::MetricsReply, f.stream, metrics().encode()); return;
            case FrameType::Shutdown:
                send(c, FrameType::ShutdownAck, 0, std::vector<std::byte>{});
                begin_shutdown();
                return;
            case FrameType::Exec: return start_execution(c, f);
            default: break;
        }
        if (f.stream == 0)
            return protocol_violation(c, fmt::format("frame type {} is not valid on stream 0", to_string(f.type)));
        auto it = c.executions.find(f.stream);
        if (it == c.executions.end()) {
            // Late frames for an execution that already ended (e.g. credit racing the exit) are
            // harmless; ignore them rather than failing the connection.
            return;
        }
        auto& e = *it->second;
        switch (f.type) {
            case FrameType::Stdin: {
                if (e.stdin_close_requested) return protocol_violation(c, "stdin data after stdin-close");
                if (e.stdin_pending() + e.stdin_ungranted + f.payload.size() > e.stdin_window) {
                    return protocol_violation(c, fmt::format("execution {} overran its stdin window of {} bytes", e.id,
                                                             e.stdin_window));
                }
                deliver_stdin(c, e, f.payload);
                return;
            }
            case FrameType::StdinClose:
                e.stdin_close_requested = true;
                pump_stdin(c, e);
                return;
            default: break;
        }
        handle_execution_frame(c, e, f);
    }

    /// Hands stdin bytes from the host to the child: written now when nothing is queued, the
    /// rest queued (within the window the caller checked).
    void deliver_stdin(Connection& c, Execution& e, std::span<const std::byte> data) {
        if (e.stdin_fd < 0) {
            // The child closed its stdin: drop the bytes but return the credit.
            grant_stdin(c, e, data.size(), true);
            return;
        }
        // Drop the written prefix before appending, once it is at least as long as what
        // is still pending (the move then costs at most what was written): without this a
        // reader that never quite empties the buffer let it grow by every frame, however
        // small the window (1 GiB to a slow `cat` peaked at hundreds of MiB).
        if (e.stdin_offset > 0 && e.stdin_offset >= e.stdin_pending()) {
            e.stdin_buffer.erase(e.stdin_buffer.begin(),
                                 e.stdin_buffer.begin() + static_cast<std::ptrdiff_t>(e.stdin_offset));
            e.stdin_offset = 0;
        }
        auto rest = data;
        if (e.stdin_pending() == 0) {
            // Nothing queued: straight from the frame into the pipe, and keep only what
            // the pipe did not take (one copy fewer on the common path).
            const auto written = write_stdin_now(c, e, rest);
            if (e.stdin_fd < 0) return;
            rest = rest.subspan(written);
        }
        e.stdin_buffer.insert(e.stdin_buffer.end(), rest.begin(), rest.end());
        pump_stdin(c, e);
    }

    /// With a whole header buffered and nothing after it: when it starts a stdin frame that the
    /// splice path can take (the checks handle_frame makes pass, nothing queued, a pipe), takes
    /// the header and leaves the payload in the socket for receive_stdin_payload(). Any other
    /// frame goes the usual way.
    bool take_stdin_header(Connection& c) {
        if (c.no_splice || !c.hello_done) return false;
        const auto header = c.decoder.peek_header();
        if (!header || header->type != FrameType::Stdin || header->length == 0 || header->stream == 0) return false;
        auto it = c.executions.find(header->stream);
        if (it == c.executions.end()) return false;
        auto& e = *it->second;
        if (e.tty || e.stdin_fd < 0 || e.stdin_close_requested || e.stdin_pending() > 0) return false;
        if (e.stdin_ungranted + header->length > e.stdin_window) return false;
        c.decoder.take_header();
        c.stdin_stream = header->stream;
        c.stdin_left = header->length;
        c.park_expired = false;
        c.stdin_frame_at = Clock::now();
        return true;
    }

    /// Whether this connection may leave its socket unread while the current stdin payload waits
    /// for room in the pipe: no execution of it waits for output credit, which the host may
    /// have sent behind the payload.
    [[nodiscard]] bool may_park(const Connection& c) const {
        if (c.park_expired || c.no_splice || shutting_down_) return false;
        for (const auto& [id, e] : c.executions) {
            if ((e->stdout_fd >= 0 && e->stdout_credit == 0) || (e->stderr_fd >= 0 && e->stderr_credit == 0))
                return false;
        }
        return true;
    }

    /// The execution a parked connection waits for (its pipe to take more), or nullptr after
    /// clearing `parked` when it must read its socket again: the execution or its stdin is
    /// gone, something got queued, output waits for credit, or the frame's budget is spent
    /// (then the rest of the payload is received and queued).
    Execution* still_parked(Connection& c, Clock::time_point now) {
        auto it = c.executions.find(c.stdin_stream);
        Execution* e = it == c.executions.end() ? nullptr : it->second.get();
        if (now >= c.stdin_frame_at + kStdinParkBudget) c.park_expired = true;
        if (c.stdin_left == 0 || e == nullptr || e->stdin_fd < 0 || e->stdin_pending() > 0 || !may_park(c)) {
            c.parked = false;
            return nullptr;
        }
        return e;
    }

    /// Moves the rest of the current stdin frame's payload: spliced from the socket into the
    /// child's pipe while nothing is queued, else received and delivered as a frame's payload
    /// would be (the pipe is full, the child closed it, or the execution is gone: then dropped).
    /// False when the socket has nothing now, or the connection was dropped.
    bool receive_stdin_payload(Connection& c) {
        auto it = c.executions.find(c.stdin_stream);
        Execution* e = it == c.executions.end() ? nullptr : it->second.get();
        if (e != nullptr && e->stdin_fd >= 0 && e->stdin_pending() == 0 && !c.no_splice) {
            const auto n = ::splice(c.fd, nullptr, e->stdin_fd, nullptr, c.stdin_left,
                                    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                c.stdin_left -= static_cast<std::size_t>(n);
                grant_stdin(c, *e, static_cast<std::size_t>(n));
                return true;
            }
            if (n == 0) {
                drop(c);
                return false;
            }
            if (errno == EINTR) return true;
            if (errno == EPIPE) close_stdin(*e);  // the child closed its stdin: the rest is dropped
            else if (errno != EAGAIN) c.no_splice = true;
            else if (int queued = 0; may_park(c) && ::ioctl(c.fd, FIONREAD, &queued) == 0 && queued > 0) {
                // The socket holds payload bytes, so the pipe is full: wait for it (loop_once
                // polls the pipe instead of the socket) rather than receive and queue.
                c.parked = true;
                return false;
            }
        }
        // EAGAIN: the socket is empty (the receive below finds out) or the pipe is full.
        if (stdin_scratch_.empty()) stdin_scratch_.resize(kMaxChunk);
        const auto want = std::min(c.stdin_left, stdin_scratch_.size());
        const auto n = ::recv(c.fd, stdin_scratch_.data(), want, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) return true;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
        if (n <= 0) {
            drop(c);
            return false;
        }
        c.stdin_left -= static_cast<std::size_t>(n);
        if (e != nullptr)
            deliver_stdin(c, *e, std::span<const std::byte>(stdin_scratch_.data(), static_cast<std::size_t>(n)));
        return c.fd >= 0;
    }

    void handle_execution_frame(Connection& c, Execution& e, const FrameView& f) {
        switch (f.type) {
            case FrameType::Credit: {
                auto credit = Credit::decode(f.payload);
                if (!credit) return protocol_violation(c, credit.error().message());
                if (credit->channel == Channel::Stdin)
                    return protocol_violation(c, "the host granted stdin credit, which only the agent grants");
                auto& target = credit->channel == Channel::Stderr ? e.stderr_credit : e.stdout_credit;
                target = std::min<std::uint64_t>(target + credit->bytes, 1ULL << 40);
                return;
            }
            case FrameType::Signal: {
                auto sig = SignalRequest::decode(f.payload);
                if (!sig) return send_error(c, e.id, sig.error().message());
                signal_group(e, sig->signo);
                return;
            }
            case FrameType::Resize: {
                auto size = ResizeRequest::decode(f.payload);
                if (!size) return protocol_violation(c, size.error().message());
                if (e.tty && e.stdout_fd >= 0) {
                    winsize ws{};
                    ws.ws_row = size->rows;
                    ws.ws_col = size->cols;
                    ::ioctl(e.stdout_fd, TIOCSWINSZ, &ws);
                }
                return;
            }
            default:
                return protocol_violation(c,
                                          fmt::format("frame type {} is not valid from the host", to_string(f.type)));
        }
    }

    /// Returns stdin credit for `bytes` the child took (or that were dropped). Grants go out in
    /// batches of a quarter window (or at once with `now`): a writer that has used up its window
    /// has pending + ungranted == window here, so once the child has read a quarter of it a grant
    /// is due — batching never leaves the host waiting for credit that is not coming.
    void grant_stdin(Connection& c, Execution& e, std::size_t bytes, bool now = false) {
        e.stdin_ungranted += bytes;
        if (e.stdin_ungranted == 0) return;
        if (!now && e.stdin_ungranted < std::max<std::size_t>(e.stdin_window / 4, 1)) return;
        send(c, FrameType::Credit, e.id,
             Credit{Channel::Stdin, static_cast<std::uint32_t>(std::exchange(e.stdin_ungranted, 0))}.encode());
    }

    /// Writes what the child's stdin pipe takes now of `data` (nothing queued before it) and
    /// returns the count; on EPIPE/EIO closes stdin and counts all of `data` as dropped.
    std::size_t write_stdin_now(Connection& c, Execution& e, std::span<const std::byte> data) {
        std::size_t written = 0;
        while (e.stdin_fd >= 0 && written < data.size()) {
            const auto n = ::write(e.stdin_fd, data.data() + written, data.size() - written);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0) {
                close_stdin(e);
                grant_stdin(c, e, data.size(), true);
                return data.size();
            }
            written += static_cast<std::size_t>(n);
        }
        grant_stdin(c, e, written);
        return written;
    }

    void pump_stdin(Connection& c, Execution& e) {
        std::size_t written_total = 0;
        while (e.stdin_fd >= 0 && e.stdin_pending() > 0) {
            const auto n = ::write(e.stdin_fd, e.stdin_buffer.data() + e.stdin_offset, e.stdin_pending());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0) {
                // EPIPE/EIO: the child will never read more. Return all credit and stop.
                written_total += e.stdin_pending();
                e.stdin_buffer.clear();
                e.stdin_offset = 0;
                close_stdin(e);
                grant_stdin(c, e, written_total, true);
                return;
            }
            e.stdin_offset += static_cast<std::size_t>(n);
            written_total += static_cast<std::size_t>(n);
        }
        if (e.stdin_offset == e.stdin_buffer.size()) {
            e.stdin_buffer.clear();
            e.stdin_offset = 0;
        }
        grant_stdin(c, e, written_total);
        if (e.stdin_close_requested && e.stdin_pending() == 0 && e.stdin_fd >= 0) {
            if (e.tty) {
                // A terminal has no half-close: send the EOF character the line discipline knows.
                termios t{};
                char eof = 4;
                if (::tcgetattr(e.stdin_fd, &t) == 0) eof = static_cast<char>(t.c_cc[VEOF]);
                (void)!::write(e.stdin_fd, &eof, 1);
                e.stdin_close_requested = false;
            } else {
                close_stdin(e);
            }
        }
    }

    /// Forgets the stdin bytes nobody will read, giving their credit back so that a host writer
    /// never waits for credit that cannot come.
    void drop_stdin(Connection& c, Execution& e) {
        grant_stdin(c, e, e.stdin_pending(), true);
        e.stdin_buffer.clear();
        e.stdin_offset = 0;
    }

    void close_stdin(Execution& e) {
        if (e.stdin_fd < 0) return;
        if (!e.tty) ::close(e.stdin_fd);  // a tty shares the fd with stdout
        e.stdin_fd = -1;
    }

    void pump_output(Connection& c, Execution& e, bool is_stdout) {
        int& fd = is_stdout ? e.stdout_fd : e.stderr_fd;
        auto& credit = is_stdout ? e.stdout_credit : e.stderr_credit;
        auto& buf = chunk_buffer_;
        for (int rounds = 0; rounds < 4 && fd >= 0 && credit > 0; ++rounds) {
            const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(credit, buf.size()));
            const auto n = ::read(fd, buf.data(), want);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n <= 0) {  // EOF, or EIO from a pty whose slave side closed
                if (e.tty) {
                    drop_stdin(c, e);
                    e.stdin_fd = -1;
                }
                ::close(fd);
                fd = -1;
                maybe_finish(c, e);
                return;
            }
            credit -= static_cast<std::uint64_t>(n);
            send(c, is_stdout ? FrameType::Stdout : FrameType::Stderr, e.id,
                 std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)));
        }
    }

    // ----------------------------------------------------------------- executions
    /// Who a command runs as: resolved from the box's own /etc/passwd and /etc/group, parsed
    /// directly because a static binary must not rely on NSS.
    struct Identity {
        uid_t uid = 0;
        gid_t gid = 0;
        std::vector<gid_t> groups;  ///< primary + supplementary, as initgroups() would set them
        std::string home = "/root";
    };

    static std::vector<std::string> split(const std::string& line, char separator) {
        std::vector<std::string> fields;
        std::size_t pos = 0;
        while (true) {
            const auto next = line.find(separator, pos);
            fields.push_back(line.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
            if (next == std::string::npos) return fields;
            pos = next + 1;
        }
    }

    static bool all_digits(const std::string& text) {
        return !text.empty() && text.size() <= 10 &&
               std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    }

    /// "" (root), "name", "uid", "name:gid" or "uid:gid"; nullopt when the box does not know the
    /// user or the group part is not a number.
    static std::optional<Identity> resolve_user(const std::string& user) {
        const auto colon = user.find(':');
        const auto name = user.empty() ? std::string("root") : user.substr(0, colon);
        Identity id;
        std::string account;  // the passwd name, for group membership
        bool found = false;
        const bool numeric = all_digits(name);
        if (numeric) id.uid = static_cast<uid_t>(std::strtoul(name.c_str(), nullptr, 10));
        std::ifstream passwd("/etc/passwd");
        std::string line;
        while (std::getline(passwd, line)) {
            const auto f = split(line, ':');
            if (f.size() < 6 || !all_digits(f[2])) continue;
            const auto entry_uid = static_cast<uid_t>(std::strtoul(f[2].c_str(), nullptr, 10));
            if ((numeric && entry_uid == id.uid) || (!numeric && f[0] == name)) {
                id.uid = entry_uid;
                id.gid = all_digits(f[3]) ? static_cast<gid_t>(std::strtoul(f[3].c_str(), nullptr, 10)) : 0;
                id.home = f[5];
                account = f[0];
                found = true;
                break;
            }
        }
        if (!found) {
            if (!numeric && name != "root") return std::nullopt;
            id.gid = static_cast<gid_t>(id.uid);  // a bare uid the box does not list
        }
        if (colon != std::string::npos) {
            const auto g = user.substr(colon + 1);
            if (!all_digits(g)) return std::nullopt;
            id.gid = static_cast<gid_t>(std::strtoul(g.c_str(), nullptr, 10));
        }
        id.groups.push_back(id.gid);
        if (!account.empty()) {
            std::ifstream group("/etc/group");
            while (std::getline(group, line)) {
                const auto f = split(line, ':');
                if (f.size() < 4 || !all_digits(f[2])) continue;
                const auto members = split(f[3], ',');
                if (std::find(members.begin(), members.end(), account) == members.end()) continue;
                const auto gid = static_cast<gid_t>(std::strtoul(f[2].c_str(), nullptr, 10));
                if (std::find(id.groups.begin(), id.groups.end(), gid) == id.groups.end()) id.groups.push_back(gid);
            }
        }
        return id;
    }

    /// execvpe() with the *command's* PATH (glibc's searches the agent's own). Returns only on
    /// failure, with errno set as execvp would: EACCES if some candidate was not executable,
    /// else the last error.
    static void exec_program(const std::string& program, char** argv, char** envp, const std::string& path) {
        auto try_exec = [&](const std::string& file) {
            ::execve(file.c_str(), argv, envp);
            if (errno != ENOEXEC) return;
            // No #! line: a shell script, as execvp runs it.
            std::vector<char*> shell_argv{const_cast<char*>("/bin/sh"), const_cast<char*>(file.c_str())};
            for (char** a = argv + 1; *a != nullptr; ++a) shell_argv.push_back(*a);
            shell_argv.push_back(nullptr);
            ::execve("/bin/sh", shell_argv.data(), envp);
            errno = ENOEXEC;
        };
        if (program.find('/') != std::string::npos) {
            try_exec(program);
            return;
        }
        bool denied = false;
        for (const auto& dir : split(path, ':')) {
            try_exec((dir.empty() ? std::string(".") : dir) + "/" + program);
            const int error = errno;
            if (error == EACCES) {
                denied = true;
                continue;
            }
            const bool not_here = error == ENOENT || error == ENOTDIR || error == ESTALE || error == ELOOP ||
                                  error == ENAMETOOLONG || error == ENODEV || error == ETIMEDOUT;
            if (!not_here) return;  // the file exists but cannot run: stop, as execvp does
        }
        errno = denied ? EACCES : ENOENT;
    }

    // ----------------------------------------------------------------- a command's process
    /// Reports why a command's process cannot become the command (on the status pipe, which the
    /// agent reads until the exec closes it) and exits.
    [[noreturn]] static void child_fail(int status_fd, const std::string& what) {
        const int e = errno;
        const std::string msg = what + ": " + std::strerror(e);
        (void)!::write(status_fd, msg.data(), msg.size());
        ::_exit(127);
    }

    /// The agent blocks its signals for the signalfd and ignores SIGPIPE; a command starts with
    /// neither.
    static void leave_agent_signals() {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
    }

    /// The agent is exempt from the OOM killer (-1000, set by the box's init); its commands are
    /// not. Raising the value needs no privilege.
    static void reset_oom_score_adj() {
        if (const int adj = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); adj >= 0) {
            (void)!::write(adj, "0", 1);
            ::close(adj);
        }
    }

    /// In a command's process (a session leader already): its stdio (the pseudo-terminal's slave
    /// when `pty` names one, else the three pipe ends), its working directory and its user.
    static void enter_command(int status_fd, const std::string& pty, int in_fd, int out_fd, int err_fd,
                              const std::string& cwd, const std::string& user, const Identity& ids) {
        if (!pty.empty()) {
            const int slave = ::open(pty.c_str(), O_RDWR);
            if (slave < 0) child_fail(status_fd, "opening the pseudo-terminal");
            ::ioctl(slave, TIOCSCTTY, 0);
            ::dup2(slave, 0);
            ::dup2(slave, 1);
            ::dup2(slave, 2);
            if (slave > 2) ::close(slave);
        } else {
            ::dup2(in_fd, 0);
            ::dup2(out_fd, 1);
            ::dup2(err_fd, 2);
        }
        if (::chdir(cwd.c_str()) != 0) child_fail(status_fd, "working directory '" + cwd + "'");
        // As root: exactly the user's groups, then gid, then uid. An agent that is not root
        // (run directly, in tests) can only run commands as itself.
        if (::geteuid() == 0) {
            if (::setgroups(ids.groups.size(), ids.groups.data()) != 0 || ::setgid(ids.gid) != 0 ||
                ::setuid(ids.uid) != 0) {
                child_fail(status_fd, "switching to user '" + user + "'");
            }
        } else if (ids.uid != ::geteuid() || ids.gid != ::getegid()) {
            errno = EPERM;
            child_fail(status_fd, "switching to user '" + user + "' (the agent is not root)");
        }
    }

    // ----------------------------------------------------------------- the spare
    // Where the agent is kept out of the box's memory cgroup (cgroup v1 without CAP_SYS_RESOURCE),
    // each command joins it before its exec, and on cgroup v1 a join waits for an RCU grace period
    // (cgroup_threadgroup_rwsem; 7-25 ms on this host) unless another join happened within one.
    // That wait was most of a `boxlite exec` on a quiet host. So the agent keeps one child forked
    // ahead of time that has joined already and waits for its command: an exec hands it the
    // command (descriptors by SCM_RIGHTS, the rest as bytes) and then forks the next spare, whose
    // join overlaps the command. The first command of a box is forked here (see start_execution). The spare is a direct child of the agent, reaped like any
    // command, non-dumpable like the agent (the flag is inherited), and holds no descriptor of
    // the agent's but its socket. Without a spare (it died, a fork failed, a copy execution), the
    // agent forks the command itself as before.
    struct Spare {
        pid_t pid = -1;
        int sock = -1;
    };
    /// What a spare needs to become a command: everything start_execution resolved, and the
    /// descriptors it made (the status pipe's write end; stdin, stdout and stderr unless a tty).
    struct CommandSpec {
        const std::string& program;
        const std::string& search_path;
        const std::string& cwd;
        const std::string& user;
        const std::string& pty;
        const Identity& ids;
        const std::vector<std::string>& argv;
        const std::vector<std::string>& env;
        int status_fd, in_fd, out_fd, err_fd;
    };
    /// A command bigger than this (arguments and environment) is forked here instead: the hand-off
    /// then always fits in the socket's buffer and never blocks the agent.
    static constexpr std::size_t kMaxSpareJob = 64 * 1024;
    /// The first byte a spare writes on the status pipe: it has the command.
    static constexpr char kSpareTookIt = 'R';

    static void put_u32(std::string& out, std::uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
    static void put_string(std::string& out, const std::string& text) {
        put_u32(out, static_cast<std::uint32_t>(text.size()));
        out += text;
    }
    static void put_strings(std::string& out, const std::vector<std::string>& list) {
        put_u32(out, static_cast<std::uint32_t>(list.size()));
        for (const auto& text : list) put_string(out, text);
    }

    /// Reads what put_* wrote; every read is bounds-checked (ok() is false past the end).
    struct JobReader {
        const std::string& data;
        std::size_t at = 0;
        bool good = true;
        std::uint32_t u32() {
            std::uint32_t v = 0;
            if (data.size() - at < 4) {
                good = false;
                return 0;
            }
            std::memcpy(&v, data.data() + at, 4);
            at += 4;
            return v;
        }
        std::string string() {
            const auto n = u32();
            if (!good || data.size() - at < n) {
                good = false;
                return {};
            }
            std::string text = data.substr(at, n);
            at += n;
            return text;
        }
        std::vector<std::string> strings() {
            const auto n = u32();
            std::vector<std::string> list;
            for (std::uint32_t i = 0; good && i < n; ++i) list.push_back(string());
            return list;
        }
    };

    /// Forks the next spare, unless there is one, the agent is not kept out of the memory
    /// cgroup, or the box is shutting down. A failed fork (the pids limit) leaves none.
    void ensure_spare() {
        if (memory_cgroup_fd_ < 0 || spare_.pid > 0 || shutting_down_) return;
        int sv[2] = {-1, -1};
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
        const pid_t pid = ::fork();
        if (pid == 0) run_spare(sv[1]);
        ::close(sv[1]);
        if (pid < 0) {
            ::close(sv[0]);
            return;
        }
        spare_ = Spare{pid, sv[0]};
    }

    /// Ends the spare (a failed hand-off, or shutdown). Not waited for here: one still in its
    /// join dies only when the join returns; the SIGCHLD loop (or shutdown) reaps it.
    void discard_spare() {
        if (spare_.pid <= 0) return;
        ::close(spare_.sock);
        ::kill(spare_.pid, SIGKILL);
        spare_ = Spare{};
    }

    /// Hands the command to the spare; returns its pid (now the command's), or -1 when it could
    /// not (the caller forks instead).
    pid_t hand_to_spare(const CommandSpec& spec) {
        std::string job;
        put_string(job, spec.program);
        put_string(job, spec.search_path);
        put_string(job, spec.cwd);
        put_string(job, spec.user);
        put_string(job, spec.pty);
        put_u32(job, spec.ids.uid);
        put_u32(job, spec.ids.gid);
        put_u32(job, static_cast<std::uint32_t>(spec.ids.groups.size()));
        for (const auto g : spec.ids.groups) put_u32(job, g);
        put_strings(job, spec.argv);
        put_strings(job, spec.env);
        if (job.size() > kMaxSpareJob) return -1;

        // The length, with the descriptors attached; then the job.
        const bool pipes = spec.pty.empty();
        const int fds[4] = {spec.status_fd, spec.in_fd, spec.out_fd, spec.err_fd};
        std::uint32_t length = static_cast<std::uint32_t>(job.size());
        bool sent = base::send_with_fds(spare_.sock, std::as_bytes(std::span(&length, 1)),
                                        std::span<const int>(fds, pipes ? 4 : 1)) ==
                    static_cast<ssize_t>(sizeof length);
        for (std::size_t done = 0; sent && done < job.size();) {
            const auto n = ::send(spare_.sock, job.data() + done, job.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) sent = false;
            else done += static_cast<std::size_t>(n);
        }
        if (!sent) {
            discard_spare();
            return -1;
        }
        const pid_t pid = spare_.pid;
        ::close(spare_.sock);
        spare_ = Spare{};
        return pid;
    }

    /// The spare's life: join the memory cgroup, wait for a command, become it. Exits quietly
    /// when the agent closes the socket without a command.
    [[noreturn]] void run_spare(int sock) {
        leave_agent_signals();
        ::setsid();
        ::prctl(PR_SET_NAME, "boxlite-spare");
        // Nothing of the agent's stays open here but the socket and the cgroup file.
        const int keep_low = std::min(sock, memory_cgroup_fd_), keep_high = std::max(sock, memory_cgroup_fd_);
        if (keep_low > 3) ::close_range(3, static_cast<unsigned>(keep_low - 1), 0);
        if (keep_high > keep_low + 1)
            ::close_range(static_cast<unsigned>(keep_low + 1), static_cast<unsigned>(keep_high - 1), 0);
        ::close_range(static_cast<unsigned>(keep_high + 1), ~0U, 0);
        int join_error = 0;
        if (::write(memory_cgroup_fd_, "0", 1) != 1) join_error = errno != 0 ? errno : EIO;
        ::close(memory_cgroup_fd_);
        reset_oom_score_adj();

        std::uint32_t length = 0;
        std::vector<int> received;
        ssize_t got = -1;
        do {
            got = base::recv_with_fds(sock, std::as_writable_bytes(std::span(&length, 1)), MSG_WAITALL, received);
        } while (got < 0 && errno == EINTR);
        if (got != static_cast<ssize_t>(sizeof length)) ::_exit(0);  // the agent let it go
        int fds[4] = {-1, -1, -1, -1};
        const std::size_t nfds = std::min<std::size_t>(4, received.size());
        std::copy_n(received.begin(), nfds, fds);
        if (nfds == 0 || length > kMaxSpareJob) ::_exit(127);
        const int status_fd = fds[0];
        std::string job(length, '\0');
        for (std::size_t done = 0; done < job.size();) {
            const auto n = ::read(sock, job.data() + done, job.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) ::_exit(127);
            done += static_cast<std::size_t>(n);
        }
        ::close(sock);
        (void)!::write(status_fd, &kSpareTookIt, 1);
        JobReader r{job};
        const auto program = r.string(), search_path = r.string(), cwd = r.string(), user = r.string(),
                   pty = r.string();
        Identity ids;
        ids.uid = r.u32();
        ids.gid = r.u32();
        const auto ngroups = r.u32();
        for (std::uint32_t i = 0; r.good && i < ngroups; ++i) ids.groups.push_back(r.u32());
        auto argv_storage = r.strings();
        auto env = r.strings();
        if (!r.good || argv_storage.empty() || (pty.empty() && nfds != 4)) {
            errno = EPROTO;
            child_fail(status_fd, "the command handed to the spare was malformed");
        }
        if (join_error != 0) {
            errno = join_error;
            child_fail(status_fd, "joining the memory cgroup");
        }
        enter_command(status_fd, pty, fds[1], fds[2], fds[3], cwd, user, ids);
        std::vector<char*> argv, envp;
        for (auto& a : argv_storage) argv.push_back(a.data());
        argv.push_back(nullptr);
        for (auto& kv : env) envp.push_back(kv.data());
        envp.push_back(nullptr);
        exec_program(program, argv.data(), envp.data(), search_path);
        child_fail(status_fd, "cannot run '" + program + "'");
    }

    /// Runs in the forked child for copy executions: tar on stdin/stdout, errors on stderr.
    [[noreturn]] static void run_copy(const ExecRequest& req) {
        BoxliteResult<void> result;
        if (req.kind == ExecKind::CopyIn) {
            std::string dest = req.path.empty() ? "/" : req.path;
            tar::Placement placement;
            if (dest.back() == '/') {
                std::string partial;
                for (std::size_t i = 1; i <= dest.size(); ++i) {
                    if (i == dest.size() || dest[i] == '/') ::mkdir(dest.substr(0, i).c_str(), 0755);
                }
                placement = {dest, std::nullopt};
            } else {
                placement = tar::place(dest);
            }
            tar::Extractor extractor(
                [](std::span<std::byte> out) -> BoxliteResult<std::size_t> {
                    while (true) {
                        const auto n = ::read(0, out.data(), out.size());
                        if (n < 0 && errno == EINTR) continue;
                        if (n < 0) return fail_errno(ErrorKind::Storage, "reading the tar stream", errno);
                        return static_cast<std::size_t>(n);
                    }
                },
                tar::ExtractOptions{placement.rename_top, ::geteuid() == 0});
            result = extractor.extract_to(placement.directory);
            // Drain whatever follows so the host's writes never fail with EPIPE mid-archive.
            if (result) {
                char sink[4096];
                while (::read(0, sink, sizeof sink) > 0) {}
            }
        } else {
            tar::Writer writer([](std::span<const std::byte> data) -> BoxliteResult<void> {
                std::size_t done = 0;
                while (done < data.size()) {
                    const auto n = ::write(1, data.data() + done, data.size() - done);
                    if (n < 0 && errno == EINTR) continue;
                    if (n < 0) return fail_errno(ErrorKind::Storage, "writing the tar stream", errno);
                    done += static_cast<std::size_t>(n);
                }
                return {};
            });
            result = writer.add_tree(req.path, tar::top_name(req.path));
            if (result) result = writer.finish();
        }
        if (!result) {
            const auto text = result.error().message();
            (void)!::write(2, text.data(), text.size());
            ::_exit(1);
        }
        ::_exit(0);
    }

    void start_execution(Connection& c, const FrameView& f) {
        if (f.stream == 0) return protocol_violation(c, "exec on stream 0");
        if (c.executions.count(f.stream) != 0)
            return protocol_violation(c, fmt::format("stream {} is already in use", f.stream));
        if (shutting_down_) return send_error(c, f.stream, "the box is shutting down");
        auto req_result = ExecRequest::decode(f.payload);
        if (!req_result) return send_error(c, f.stream, req_result.error().message());
        const auto& req = *req_result;
        if (req.kind == ExecKind::Command && req.program.empty()) return send_error(c, f.stream, "empty program name");
        if (before_first_execution_) {  // the VM's network, brought up while the agent served already
            const auto wait = std::move(before_first_execution_);
            before_first_execution_ = nullptr;
            wait();
        }
        // The command's stdin as a host pipe (see ExecRequest::stdin_descriptor). It stays with
        // the frame (closed after it, whatever happens) until close_all below owns it.
        if (req.stdin_descriptor) {
            auto refused = check_passed_stdin(c, req);
            if (!refused.empty()) return send_error(c, f.stream, refused);
        }

        const auto& user = req.user.empty() ? default_user_ : req.user;
        // A non-root agent (run directly, in tests) runs unnamed users as itself.
        auto ids = user.empty() && ::geteuid() != 0
                       ? std::optional<Identity>(Identity{::geteuid(), ::getegid(), {}, "/"})
                       : resolve_user(user);
        if (!ids) {
            return send_error(c, f.stream,
                              fmt::format("user '{}' is not in the box's /etc/passwd (allowed: a name from it, "
                                          "a numeric uid, optionally ':<numeric gid>')",
                                          user));
        }
        const auto& home = ids->home;

        int passed_stdin = -1;
        if (req.stdin_descriptor) {
            passed_stdin = c.frame_fds.front();
            c.frame_fds.clear();
        }
        int in[2] = {passed_stdin, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
        int master = -1;
        std::string slave_name;
        auto close_all = [&] {
            for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1], status[0], status[1], master}) {
                if (fd >= 0) ::close(fd);
            }
        };
        if (::pipe2(status, O_CLOEXEC) != 0) {
            close_all();
            return send_error(c, f.stream, std::string("pipe: ") + std::strerror(errno));
        }
        if (req.tty && req.kind == ExecKind::Command) {
            master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
            if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
                close_all();
                return send_error(c, f.stream,
                                  std::string("cannot allocate a pseudo-terminal: ") + std::strerror(errno));
            }
            slave_name = ::ptsname(master);
            winsize ws{};
            ws.ws_row = req.rows;
            ws.ws_col = req.cols;
            ::ioctl(master, TIOCSWINSZ, &ws);
        } else if ((passed_stdin < 0 && ::pipe2(in, O_CLOEXEC) != 0) || ::pipe2(out, O_CLOEXEC) != 0 ||
                   ::pipe2(err, O_CLOEXEC) != 0) {
            close_all();
            return send_error(c, f.stream, std::string("pipe: ") + std::strerror(errno));
        } else {
            // 1 MiB output pipes (the default is 64 KiB): a fast writer wakes the agent a
            // sixteenth as often. Best effort: a lower fs.pipe-max-size keeps the default.
            (void)::fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
            (void)::fcntl(err[0], F_SETPIPE_SZ, 1 << 20);
            if (in[1] >= 0) (void)::fcntl(in[1], F_SETPIPE_SZ, 1 << 20);  // and a fast reader of stdin
        }

        // The box's environment (the image's Env and BoxOptions::env, given to the agent at
        // start) overridden by the command's own.
        std::vector<std::string> env = base_env_;
        for (const auto& kv : req.env) {
            const auto key = kv.substr(0, kv.find('='));
            std::erase_if(env, [&](const std::string& e) { return e.compare(0, key.size() + 1, key + "=") == 0; });
            env.push_back(kv);
        }
        auto has = [&](std::string_view key) {
            return std::any_of(env.begin(), env.end(), [&](const std::string& kv) {
                return kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=';
            });
        };
        if (!has("PATH")) env.emplace_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        std::string search_path;
        for (const auto& kv : env) {
            if (kv.compare(0, 5, "PATH=") == 0) search_path = kv.substr(5);
        }
        if (!has("HOME")) env.push_back("HOME=" + home);
        if (req.tty && !has("TERM")) env.emplace_back("TERM=xterm");
        std::vector<char*> envp;
        for (auto& kv : env) envp.push_back(kv.data());
        envp.push_back(nullptr);
        std::vector<std::string> argv_storage{req.program};
        argv_storage.insert(argv_storage.end(), req.args.begin(), req.args.end());
        std::vector<char*> argv;
        for (auto& a : argv_storage) argv.push_back(a.data());
        argv.push_back(nullptr);
        const std::string cwd = !req.working_dir.empty() ? req.working_dir : default_workdir_;

        const std::uint64_t oom_kills_at_fork = oom_kills();
        // A command goes to the spare (already in the memory cgroup) when there is one; a copy,
        // or a command when the spare is missing or gone, to a child forked here.
        pid_t pid = -1;
        if (req.kind == ExecKind::Command && spare_.pid > 0) {
            const CommandSpec spec{req.program, search_path,  cwd, user,      slave_name,
                                   *ids,        argv_storage, env, status[1], master >= 0 ? -1 : in[0],
                                   out[1],      err[1]};
            pid = hand_to_spare(spec);
            if (pid > 0) {
                // The spare says it took the command before anything else on the status pipe; an
                // end of file first means it died with the command unread (`kill -9 -1` in the box
                // just before): reap it and fork the command here, with a fresh status pipe.
                ::close(status[1]);
                status[1] = -1;
                char mark = 0;
                ssize_t n = -1;
                do {
                    n = ::read(status[0], &mark, 1);
                } while (n < 0 && errno == EINTR);
                if (n != 1 || mark != kSpareTookIt) {
                    ::waitpid(pid, nullptr, 0);
                    pid = -1;
                    ::close(status[0]);
                    status[0] = -1;
                    if (::pipe2(status, O_CLOEXEC) != 0) {
                        close_all();
                        return send_error(c, f.stream, std::string("pipe: ") + std::strerror(errno));
                    }
                }
            }
        }
        if (pid < 0) pid = ::fork();
        if (pid < 0) {
            close_all();
            return send_error(c, f.stream, std::string("fork: ") + std::strerror(errno));
        }
        if (pid == 0) {
            // Child: its own session and process group, so signals reach everything it starts.
            leave_agent_signals();
            ::setsid();
            // Into the box's memory cgroup (as root, before the user switch), where the agent
            // is kept out of it.
            if (memory_cgroup_fd_ >= 0 && ::write(memory_cgroup_fd_, "0", 1) != 1)
                child_fail(status[1], "joining the memory cgroup");
            reset_oom_score_adj();
            enter_command(status[1], slave_name, in[0], out[1], err[1], cwd, user, *ids);
            if (req.kind != ExecKind::Command) {
                // No exec follows, so O_CLOEXEC does not help: drop every inherited descriptor
                // (sockets, other executions' pipes, our own stdin's write end) by hand.
                ::close_range(3, ~0U, 0);
                run_copy(req);
            }
            exec_program(req.program, argv.data(), envp.data(), search_path);
            child_fail(status[1], "cannot run '" + req.program + "'");
        }
        // Parent: the status pipe closes on a successful exec (CLOEXEC) or carries the reason.
        if (status[1] >= 0) ::close(status[1]);
        status[1] = -1;
        std::string failure;
        char buf[512];
        while (true) {
            const auto n = ::read(status[0], buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n > 0) {
                failure.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            break;
        }
        if (!failure.empty()) {
            // The child exits with 127; reap it here so the SIGCHLD loop never sees it.
            ::waitpid(pid, nullptr, 0);
            close_all();
            return send_error(c, f.stream, failure);
        }
        ::close(status[0]);
        ++executions_started_;

        auto e = std::make_unique<Execution>();
        e->id = f.stream;
        e->conn = &c;
        e->pid = pid;
        e->oom_kills_at_start = oom_kills_at_fork;
        e->kind = req.kind;
        e->tty = master >= 0;
        e->stdout_credit = req.stdout_window;
        e->stderr_credit = req.stderr_window;
        if (master >= 0) {
            set_nonblocking(master);
            e->stdin_fd = master;
            e->stdout_fd = master;
        } else {
            ::close(in[0]);  // a passed stdin too: only the command holds it now
            ::close(out[1]);
            ::close(err[1]);
            if (in[1] >= 0) set_nonblocking(in[1]);
            set_nonblocking(out[0]);
            set_nonblocking(err[0]);
            e->stdin_fd = in[1];
            e->stdout_fd = out[0];
            e->stderr_fd = err[0];
        }
        if (req.timeout_ms > 0) e->deadline = Clock::now() + std::chrono::milliseconds(req.timeout_ms);
        send(c, FrameType::Started, e->id, protocol::Started{pid, e->stdin_window}.encode());
        by_pid_[pid] = e.get();
        c.executions[e->id] = std::move(e);
        // The next command's spare, joining while this one runs. Never before the first command
        // unless the shim said it has moved the agent into the box's other cgroups (pids, cpu;
        // Kind::Joined): it does so while the box starts, and a process forked before that move
        // would stay outside them; the host sends no command before the shim reported the box
        // started, after the move. Nor after the first: a box
        // that has run one command may be a `run --rm` about to stop, where the spare would be
        // forked for nothing and, caught in its join, hold the stop up by a grace period.
        if (memory_cgroup_fd_ >= 0 && executions_started_ >= 2) spare_wanted_ = true;
    }

    /// Why an exec that says its stdin is a descriptor is refused, or empty: exactly one
    /// descriptor came with the frame, the read end of an anonymous pipe (base::stdin_pipe_problem),
    /// for a command without a tty.
    static std::string check_passed_stdin(const Connection& c, const ExecRequest& req) {
        if (!c.passes_fds) return "a stdin descriptor cannot be passed on this connection (not a UNIX socket)";
        if (req.kind != ExecKind::Command || req.tty)
            return "a stdin descriptor is allowed only for a command without a tty";
        if (c.frame_fds.size() != 1) {
            return fmt::format(
                "the exec request says its stdin is a descriptor but {} descriptors came with it "
                "(allowed: exactly 1, the read end of a pipe)",
                c.frame_fds.size());
        }
        const char* problem = base::stdin_pipe_problem(c.frame_fds.front());
        return problem != nullptr ? std::string(problem) : std::string();
    }

    void close_exec_fds(Execution& e) {
        if (e.stdout_fd >= 0) ::close(e.stdout_fd);
        if (e.stderr_fd >= 0) ::close(e.stderr_fd);
        if (e.stdin_fd >= 0 && !e.tty) ::close(e.stdin_fd);
        e.stdout_fd = e.stderr_fd = e.stdin_fd = -1;
        // Only while the leader is unreaped; its number may belong to another leader since.
        if (auto it = by_pid_.find(e.pid); it != by_pid_.end() && it->second == &e) by_pid_.erase(it);
    }

    /// Sends Exit once the leader has exited and its output has ended: both pipes at EOF, or
    /// (after a timeout) the grace period for the output is over.
    void maybe_finish(Connection& c, Execution& e) {
        if (!e.leader_exited) return;
        const bool output_done = e.stdout_fd < 0 && e.stderr_fd < 0;
        const bool gave_up = e.give_up_output && Clock::now() >= *e.give_up_output;
        if (!output_done && !gave_up) return;
        ExitStatus status{e.exit_code, e.timed_out, {}};
        if (e.timed_out) status.message = "the command exceeded its timeout and was killed";
        else if (e.oom_killed)
            status.message =
                "the command was killed by the out-of-memory killer: the box ran out of memory "
                "(exit 137, SIGKILL)";
        send(c, FrameType::Exit, e.id, status.encode());
        close_exec_fds(e);
        c.executions.erase(e.id);  // destroys e
    }

    void handle_signals() {
        signalfd_siginfo info{};
        bool child = false;
        while (::read(signal_fd_, &info, sizeof info) == sizeof info) {
            if (info.ssi_signo == SIGCHLD) child = true;
            else begin_shutdown();
        }
        if (!child) return;
        while (true) {
            int status = 0;
            const pid_t pid = ::waitpid(-1, &status, WNOHANG);
            if (pid <= 0) break;
            if (pid == spare_.pid) {  // killed in the box (kill -9 -1) or failed: the next exec forks
                ::close(spare_.sock);
                spare_ = Spare{};
                continue;
            }
            auto it = by_pid_.find(pid);
            if (it == by_pid_.end()) continue;  // an orphan we adopted as PID 1
            auto* e = it->second;
            by_pid_.erase(it);
            e->leader_exited = true;
            e->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            // SIGKILL while the box's OOM kill count went up: the OOM killer's doing (or, at worst,
            // another process of the box was its victim at the same time).
            if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !e->timed_out &&
                oom_kills() > e->oom_kills_at_start) {
                e->oom_killed = true;
            }
            // Output the child wrote is still in the pipes; stdin is pointless now.
            if (!e->tty) {
                drop_stdin(*e->conn, *e);
                close_stdin(*e);
            }
            maybe_finish(*e->conn, *e);
        }
    }

    void enforce_deadlines() {
        const auto now = Clock::now();
        for (auto& c : connections_) {
            std::vector<Execution*> overdue;
            for (auto& [id, e] : c->executions) {
                if (e->deadline && now >= *e->deadline) {
                    e->timed_out = true;
                    e->deadline.reset();
                    signal_group(*e, SIGKILL);
                    // A process that left the group (setsid) may still hold the pipes: the
                    // timeout ends the execution anyway once the output had a moment to drain.
                    e->give_up_output = now + kTimeoutOutputGrace;
                }
                if (e->give_up_output && now >= *e->give_up_output) overdue.push_back(e.get());
            }
            for (auto* e : overdue) maybe_finish(*c, *e);  // may erase *e
        }
    }

    [[nodiscard]] GuestMetrics metrics() const {
        GuestMetrics m;
        struct sysinfo si {};
        if (::sysinfo(&si) == 0) m.memory_total_bytes = static_cast<std::uint64_t>(si.totalram) * si.mem_unit;
        std::ifstream meminfo("/proc/meminfo");
        std::string key;
        std::uint64_t value = 0;
        std::string unit;
        while (meminfo >> key >> value) {
            std::getline(meminfo, unit);
            if (key == "MemAvailable:") m.memory_available_bytes = value * 1024;
        }
        rusage ru{};
        ::getrusage(RUSAGE_CHILDREN, &ru);
        auto ns = [](const timeval& tv) {
            return static_cast<std::uint64_t>(tv.tv_sec) * 1000000000ULL +
                   static_cast<std::uint64_t>(tv.tv_usec) * 1000ULL;
        };
        m.cpu_time_ns = ns(ru.ru_utime) + ns(ru.ru_stime);
        if (DIR* d = ::opendir("/proc")) {
            while (auto* entry = ::readdir(d)) {
                if (entry->d_name[0] >= '1' && entry->d_name[0] <= '9') ++m.process_count;
            }
            ::closedir(d);
        }
        m.uptime_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count());
        m.executions_started = executions_started_;
        return m;
    }

    void begin_shutdown() {
        if (shutting_down_) return;
        shutting_down_ = true;
        discard_spare();
        shutdown_deadline_ = Clock::now() + std::chrono::seconds(2);
        for (auto& c : connections_) {
            for (auto& [id, e] : c->executions) signal_group(*e, SIGTERM);
        }
    }

    int shutdown_everything() {
        for (auto& c : connections_) {
            flush(*c);
            drop(*c);
        }
        if (::getpid() == 1) {
            // As init: everything in the box goes with us; give it a moment to exit cleanly.
            ::kill(-1, SIGTERM);
            // Reaped as they exit (SIGCHLD on the signalfd), not polled: a 10 ms sleep per turn
            // made every stop of a box with a running process take 20 ms and more.
            const auto until = Clock::now() + std::chrono::seconds(2);
            while (true) {
                pid_t reaped = 0;
                while ((reaped = ::waitpid(-1, nullptr, WNOHANG)) > 0) {}
                if (reaped < 0 && errno == ECHILD) break;
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
                if (left <= 0) break;
                pollfd child{signal_fd_, POLLIN, 0};
                (void)::poll(&child, 1, static_cast<int>(left) + 1);
                signalfd_siginfo info{};
                while (::read(signal_fd_, &info, sizeof info) == sizeof info) {}
            }
            ::kill(-1, SIGKILL);
            // No sync(2) here: under the namespace engine it would flush every filesystem of the
            // host (8 ms and more per box stop on a busy host), and the box's files are in the
            // host's page cache like any process's. A VM syncs its own disks before it powers
            // off.
        }
        log("shut down");
        return 0;
    }

    /// The `oom_kill` count of the box's memory cgroup (memory.events on cgroup v2,
    /// memory.oom_control on v1), read from a descriptor the shim opened; 0 without one.
    [[nodiscard]] std::uint64_t oom_kills() const {
        if (memory_events_fd_ < 0) return 0;
        char buf[1024];
        const auto n = ::pread(memory_events_fd_, buf, sizeof buf - 1, 0);
        if (n <= 0) return 0;
        buf[n] = '\0';
        const char* at = std::strstr(buf, "oom_kill ");
        return at == nullptr ? 0 : std::strtoull(at + 9, nullptr, 10);
    }

    int listen_fd_;
    /// Output read from a command before it is framed (not zeroed per read, unlike a local).
    std::vector<std::byte> chunk_buffer_ = std::vector<std::byte>(kMaxChunk);
    /// What one recv takes from the host: a whole stdin frame at a time.
    int memory_events_fd_ = -1;
    /// cgroup.procs of the box's memory cgroup when the agent itself is kept out of it (a host
    /// where it cannot be -1000): each command joins it before its exec.
    int memory_cgroup_fd_ = -1;
    /// Readable (a byte, or EOF) once the shim has moved the agent into the box's other cgroups
    /// (pids, cpu): from then on a spare forked here is in them too, so the first command's may
    /// be forked before that command arrives.
    int cgroups_joined_fd_ = -1;
    Spare spare_;
    bool spare_wanted_ = false;
    std::vector<std::string> base_env_;
    std::function<void()> before_first_execution_;
    std::string default_workdir_;
    std::string default_user_;
    int signal_fd_ = -1;
    bool shutting_down_ = false;
    bool exit_now_ = false;
    Clock::time_point shutdown_deadline_;
    Clock::time_point started_;
    std::uint64_t executions_started_ = 0;
    std::vector<std::unique_ptr<Connection>> connections_;
    std::map<pid_t, Execution*> by_pid_;
};

int listen_unix(const std::string& path) {
    boxlite::base::UnixAddress addr;
    if (std::string why; !boxlite::base::UnixAddress::make(path, addr, why)) return -1;
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::unlink(path.c_str());
    if (fd < 0 || ::bind(fd, addr.get(), addr.size()) != 0 || ::listen(fd, 128) != 0) return -1;
    return fd;
}

void usage() {
    std::fputs(
        "usage: boxlite-agent (--listen-fd N | --listen unix:PATH) [--ready-fd N] [--workdir DIR] [--user USER]\n"
        "       boxlite-agent --vm   (as PID 1 of a VM; the default for PID 1 without arguments)\n"
        "Commands inherit the agent's environment, working directory DIR and USER unless they set their own.\n"
        "Serves the BoxLite agent protocol (docs/protocol.md) on a stream socket.\n",
        stderr);
}

}  // namespace

int main(int argc, char** argv) {
    // Started from a memfd, the process would otherwise be called "memfd:boxlite-agent".
    ::prctl(PR_SET_NAME, "boxlite-agent");
    // execve made us dumpable again: box processes (root, without CAP_SYS_PTRACE) must not open
    // /proc/1/fd, /proc/1/mem or ptrace the agent. Commands become dumpable at their own execve.
    ::prctl(PR_SET_DUMPABLE, 0);
    // PID 1 with no arguments is the init of a VM (the kernel ran /init of the initramfs); the
    // namespace shim always passes --listen-fd. --vm forces it (to try the boot by hand).
    if ((::getpid() == 1 && argc == 1) || (argc == 2 && std::strcmp(argv[1], "--vm") == 0)) {
        auto boot = boxlite::guest::vm_boot();
        if (boot.listen_fd >= 0 && !boot.power_off_when_ready) {
            Agent agent(boot.listen_fd, std::move(boot.env), boot.working_dir, boot.user);
            agent.before_first_execution([&boot] { boot.wait_for_network(); });
            agent.run(-1);
        }
        boot.wait_for_network();
        boxlite::guest::vm_power_off();
    }
    int listen_fd = -1;
    int ready_fd = -1;
    int memory_events_fd = -1;
    int memory_cgroup_fd = -1;
    int cgroups_joined_fd = -1;
    std::string default_workdir = "/";
    std::string default_user;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--listen-fd" && has_value) {
            listen_fd = std::atoi(argv[++i]);
        } else if (arg == "--ready-fd" && has_value) {
            ready_fd = std::atoi(argv[++i]);
        } else if (arg == "--listen" && has_value) {
            const std::string endpoint = argv[++i];
            if (endpoint.rfind("unix:", 0) != 0) {
                std::fprintf(stderr, "boxlite-agent: endpoint '%s' is not supported (allowed: unix:PATH)\n",
                             endpoint.c_str());
                return 2;
            }
            listen_fd = listen_unix(endpoint.substr(5));
            if (listen_fd < 0) {
                std::fprintf(stderr, "boxlite-agent: cannot listen on %s: %s\n", endpoint.c_str(),
                             std::strerror(errno));
                return 1;
            }
        } else if (arg == "--memory-events-fd" && has_value) {
            memory_events_fd = std::atoi(argv[++i]);
        } else if (arg == "--memory-cgroup-fd" && has_value) {
            memory_cgroup_fd = std::atoi(argv[++i]);
        } else if (arg == "--cgroups-joined-fd" && has_value) {
            cgroups_joined_fd = std::atoi(argv[++i]);
        } else if (arg == "--workdir" && has_value) {
            default_workdir = argv[++i];
        } else if (arg == "--user" && has_value) {
            default_user = argv[++i];
        } else if (arg == "--version") {
            std::printf("boxlite-agent %s (protocol %u-%u)\n", kAgentVersion, kMinVersion, kMaxVersion);
            return 0;
        } else {
            usage();
            return 2;
        }
    }
    if (listen_fd < 0) {
        usage();
        return 2;
    }
    set_cloexec(listen_fd);
    if (ready_fd >= 0) set_cloexec(ready_fd);
    if (memory_events_fd >= 0) set_cloexec(memory_events_fd);
    if (memory_cgroup_fd >= 0) set_cloexec(memory_cgroup_fd);
    if (cgroups_joined_fd >= 0) set_cloexec(cgroups_joined_fd);
    std::vector<std::string> base_env;
    for (char** e = environ; *e != nullptr; ++e) base_env.emplace_back(*e);
    Agent agent(listen_fd, std::move(base_env), default_workdir, default_user, memory_events_fd, memory_cgroup_fd,
                cgroups_joined_fd);
    return agent.run(ready_fd);
}
