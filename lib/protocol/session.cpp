// protocol::Session's members (session.hpp), compiled once here instead of in every file that
// includes the host side of the protocol.
#include <boxlite/protocol/session.hpp>

#include "base/fd_passing.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace boxlite::protocol {

BoxliteResult<void> Session::handshake(std::chrono::milliseconds timeout) {
    reader_ = std::thread([this] { read_loop(); });
    BOXLITE_TRY_VOID(send(FrameType::Hello, 0, Hello{}.encode()));
    std::unique_lock lock(mutex_);
    if (!control_cv_.wait_for(lock, timeout, [&] { return handshake_done_ || dead_.has_value(); })) {
        lock.unlock();
        stream_.close();  // wakes the reader, which then records the connection as dead
        return fail(ErrorKind::Rpc, "the agent did not answer the protocol handshake within {} ms", timeout.count());
    }
    if (!handshake_done_) return fail(dead_->with_context("agent handshake"));
    return {};
}

bool Session::can_pass_stdin(int fd) {
    if (fd < 0 || (features_ & kFeatureStdinDescriptor) == 0) return false;
    const int sock = stream_.native_handle ? stream_.native_handle() : -1;
    int domain = 0;
    socklen_t length = sizeof domain;
    if (sock < 0 || ::getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_UNIX) return false;
    // Only the read end of an anonymous pipe: never a terminal (TIOCSTI), a file, a socket, a
    // named FIFO or anything the box could write to.
    return base::stdin_pipe_problem(fd) == nullptr;
}

BoxliteResult<std::shared_ptr<ExecState>> Session::start(const ExecRequest& request, std::chrono::milliseconds timeout,
                                                         int stdin_fd) {
    auto state = new_execution_state(request);
    const bool pass = stdin_fd >= 0 && !request.tty && request.kind == ExecKind::Command && can_pass_stdin(stdin_fd);
    {
        std::lock_guard lock(mutex_);
        if (dead_) return fail(*dead_);
        state->id = next_id_++;
        if (pass) state->stdin_passed = state->stdin_closed = true;
        executions_[state->id] = state;
    }
    BoxliteResult<void> sent;
    if (pass) {
        ExecRequest with_fd = request;
        with_fd.stdin_descriptor = true;
        const auto payload = with_fd.encode();
        const auto header = encode_header(FrameType::Exec, state->id, static_cast<std::uint32_t>(payload.size()));
        std::vector<std::byte> frame(header.begin(), header.end());
        frame.insert(frame.end(), payload.begin(), payload.end());
        // The descriptor goes with the frame's first bytes; whatever sendmsg did not take follows
        // by the stream's own writes (the agent reads frame by frame, so it finds the descriptor
        // with this frame's header).
        std::lock_guard lock(write_mutex_);
        const int fds[1] = {stdin_fd};
        const int sock = stream_.native_handle();
        auto n = base::send_with_fds(sock, frame, fds, MSG_DONTWAIT);
        while (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd writable{sock, POLLOUT, 0};
            (void)::poll(&writable, 1, -1);
            n = base::send_with_fds(sock, frame, fds, MSG_DONTWAIT);
        }
        if (n <= 0) sent = fail_errno(ErrorKind::Rpc, "sending the exec request with its stdin descriptor", errno);
        else if (static_cast<std::size_t>(n) < frame.size())
            sent = stream_.write_all(std::span<const std::byte>(frame).subspan(static_cast<std::size_t>(n)));
    } else {
        sent = send(FrameType::Exec, state->id, request.encode());
    }
    if (!sent) {
        forget(state->id);
        return fail(sent.error());
    }
    std::unique_lock lock(mutex_);
    const bool answered = state->cv.wait_for(lock, timeout,
                                             [&] { return state->started || state->start_error || state->failure; });
    if (!answered) {
        // Stays registered: a late Started gets the process killed and its output dropped,
        // rather than an unknown-stream error that would end every other execution.
        state->abandoned = true;
        state->out.discard = state->err.discard = true;
        counters_.command_errors.fetch_add(1, std::memory_order_relaxed);
        return fail(ErrorKind::Rpc, "the agent did not start '{}' within {} ms", request.program, timeout.count());
    }
    if (state->start_error || (!state->started && state->failure)) {
        executions_.erase(state->id);
        counters_.command_errors.fetch_add(1, std::memory_order_relaxed);
        return fail(state->start_error ? *state->start_error : *state->failure);
    }
    counters_.commands_run.fetch_add(1, std::memory_order_relaxed);
    return state;
}

std::shared_ptr<ExecState> Session::new_execution_state(const ExecRequest& request) {
    auto state = std::make_shared<ExecState>();
    state->execution_id = BoxID::generate().str();
    state->out.window = request.stdout_window;
    state->err.window = request.stderr_window;
    state->out.outstanding_credit = request.stdout_window;
    state->err.outstanding_credit = request.stderr_window;
    return state;
}

BoxliteResult<std::shared_ptr<ExecState>> Session::begin(const ExecRequest& request, std::function<void()> waker) {
    auto state = new_execution_state(request);
    state->waker = std::move(waker);
    {
        std::lock_guard lock(mutex_);
        if (dead_) return fail(*dead_);
        state->id = next_id_++;
        executions_[state->id] = state;
    }
    if (auto sent = send(FrameType::Exec, state->id, request.encode()); !sent) {
        forget(state->id);
        return fail(sent.error());
    }
    return state;
}

std::optional<BoxliteResult<void>> Session::try_started(ExecState& e) {
    std::lock_guard lock(mutex_);
    if (e.started) {
        counters_.commands_run.fetch_add(1, std::memory_order_relaxed);
        return BoxliteResult<void>{};
    }
    if (!e.start_error && !e.failure) return std::nullopt;
    executions_.erase(e.id);
    counters_.command_errors.fetch_add(1, std::memory_order_relaxed);
    return BoxliteResult<void>(fail(e.start_error ? *e.start_error : *e.failure));
}

void Session::abandon(ExecState& e) {
    bool kill = false;
    {
        std::lock_guard lock(mutex_);
        e.waker = nullptr;
        if (e.finished()) return;
        if (e.start_error) {  // refused, and nobody will poll for the refusal
            executions_.erase(e.id);
            return;
        }
        e.out.discard = e.err.discard = true;
        if (e.started) kill = true;
        else e.abandoned = true;  // the Started handler kills it
    }
    if (kill) (void)send(FrameType::Signal, e.id, SignalRequest{9}.encode());
}

BoxliteResult<std::size_t> Session::take_stdin_credit(ExecState& e, std::uint64_t most) {
    std::unique_lock lock(mutex_);
    if (e.stdin_passed) {
        return fail(ErrorKind::InvalidState,
                    "stdin of execution {} is a host pipe the command reads itself; nothing is written through the "
                    "connection",
                    e.id);
    }
    if (e.stdin_closed) return fail(ErrorKind::InvalidState, "stdin of execution {} is already closed", e.id);
    e.stdin_cv.wait(lock, [&] { return e.stdin_credit > 0 || e.finished(); });
    if (e.finished()) {
        return fail(ErrorKind::Execution, "execution {} has ended; its stdin accepts no more data", e.id);
    }
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(e.stdin_credit, most));
    e.stdin_credit -= chunk;
    return chunk;
}

BoxliteResult<void> Session::write_stdin(ExecState& e, std::span<const std::byte> data) {
    while (!data.empty()) {
        BOXLITE_TRY(const std::size_t chunk, take_stdin_credit(e, std::min<std::uint64_t>(data.size(), kMaxChunk)));
        BOXLITE_TRY_VOID(send_stdin(e, data.first(chunk)));
        data = data.subspan(chunk);
    }
    return {};
}

BoxliteResult<std::optional<std::size_t>> Session::splice_stdin(ExecState& e, int from_fd) {
    const int to = stream_.native_handle ? stream_.native_handle() : -1;
    int available = 0;
    if (to < 0 || ::ioctl(from_fd, FIONREAD, &available) != 0 || available <= 0) return std::optional<std::size_t>{};
    BOXLITE_TRY(const std::size_t chunk,
                take_stdin_credit(e, std::min<std::uint64_t>(static_cast<std::uint64_t>(available), kMaxPayload)));
    const auto header = encode_header(FrameType::Stdin, e.id, static_cast<std::uint32_t>(chunk));
    std::lock_guard lock(write_mutex_);
    BOXLITE_TRY_VOID(stream_.write_all(header));
    std::size_t moved = 0;
    while (moved < chunk) {
        const auto n = ::splice(from_fd, nullptr, to, nullptr, chunk - moved, SPLICE_F_MOVE);
        if (n > 0) {
            moved += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            // A non-blocking pipe (or socket): wait for the socket while the pipe still holds bytes.
            int left = 0;
            if (::ioctl(from_fd, FIONREAD, &left) == 0 && left > 0) {
                pollfd p{to, POLLOUT, 0};
                (void)::poll(&p, 1, -1);
                continue;
            }
        }
        // The header promised bytes the pipe no longer has (another reader took them): the
        // stream is out of step, so the connection ends.
        const int error = n < 0 ? errno : 0;
        stream_.close();
        return fail(ErrorKind::RpcTransport, "stdin pipe gave {} of the {} bytes a frame announced{}{}", moved, chunk,
                    error != 0 ? ": " : "", error != 0 ? std::strerror(error) : "");
    }
    counters_.bytes_in.fetch_add(chunk, std::memory_order_relaxed);
    return std::optional<std::size_t>(chunk);
}

BoxliteResult<void> Session::send_stdin(ExecState& e, std::span<const std::byte> data) {
    BOXLITE_TRY_VOID(send(FrameType::Stdin, e.id, data));
    counters_.bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
    return {};
}

BoxliteResult<std::size_t> Session::try_write_stdin(ExecState& e, std::span<const std::byte> data) {
    std::size_t total = 0;
    {
        std::lock_guard lock(mutex_);
        if (e.stdin_closed) return fail(ErrorKind::InvalidState, "stdin of execution {} is already closed", e.id);
        if (e.finished()) {
            return fail(ErrorKind::Execution, "execution {} has ended; its stdin accepts no more data", e.id);
        }
        total = static_cast<std::size_t>(std::min<std::uint64_t>(e.stdin_credit, data.size()));
        e.stdin_credit -= total;
    }
    for (auto rest = data.first(total); !rest.empty();) {
        const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), kMaxChunk));
        BOXLITE_TRY_VOID(send_stdin(e, rest.first(chunk)));
        rest = rest.subspan(chunk);
    }
    return total;
}

void Session::set_waker(ExecState& e, std::function<void()> waker) {
    std::lock_guard lock(mutex_);
    e.waker = std::move(waker);
    if (e.waker) e.waker();
}

std::optional<BoxliteResult<ExitStatus>> Session::try_exit(ExecState& e) {
    std::lock_guard lock(mutex_);
    if (e.exit) return BoxliteResult<ExitStatus>(*e.exit);
    if (e.failure) return BoxliteResult<ExitStatus>(fail(*e.failure));
    return std::nullopt;
}

std::uint32_t Session::take_and_credit(ExecState& e, OutputBuffer& buf, std::span<std::byte> out, std::size_t& copied) {
    copied = take(buf, out);
    buf.unacked += copied;
    if (!e.finished() && buf.unacked >= std::max<std::uint64_t>(buf.window / 4, 1)) {
        const auto grant = static_cast<std::uint32_t>(buf.unacked);
        buf.outstanding_credit += buf.unacked;
        buf.unacked = 0;
        return grant;
    }
    return 0;
}

BoxliteResult<std::optional<std::size_t>> Session::try_read_output(ExecState& e, Channel channel,
                                                                   std::span<std::byte> out) {
    std::uint32_t grant = 0;
    std::size_t copied = 0;
    {
        std::lock_guard lock(mutex_);
        auto& buf = channel == Channel::Stderr ? e.err : e.out;
        if (buf.buffered == 0) {
            if (!e.finished()) return std::optional<std::size_t>{};
            if (e.failure && !e.exit) return fail(*e.failure);
            return std::optional<std::size_t>(0);
        }
        grant = take_and_credit(e, buf, out, copied);
    }
    if (grant > 0) BOXLITE_TRY_VOID(send(FrameType::Credit, e.id, Credit{channel, grant}.encode()));
    return std::optional<std::size_t>(copied);
}

BoxliteResult<void> Session::close_stdin(ExecState& e) {
    {
        std::lock_guard lock(mutex_);
        if (e.stdin_closed) return {};
        e.stdin_closed = true;
        if (e.finished()) return {};
    }
    return send(FrameType::StdinClose, e.id, std::span<const std::byte>{});
}

BoxliteResult<std::size_t> Session::read_output(ExecState& e, Channel channel, std::span<std::byte> out) {
    std::uint32_t grant = 0;
    std::size_t copied = 0;
    {
        std::unique_lock lock(mutex_);
        auto& buf = channel == Channel::Stderr ? e.err : e.out;
        buf.cv.wait(lock, [&] { return buf.buffered > 0 || e.finished(); });
        if (buf.buffered == 0) {
            if (e.failure && !e.exit) return fail(*e.failure);
            return std::size_t{0};
        }
        grant = take_and_credit(e, buf, out, copied);
    }
    if (grant > 0) BOXLITE_TRY_VOID(send(FrameType::Credit, e.id, Credit{channel, grant}.encode()));
    return copied;
}

void Session::discard_output(ExecState& e, Channel channel) {
    std::uint64_t grant = 0;
    {
        std::lock_guard lock(mutex_);
        auto& buf = channel == Channel::Stderr ? e.err : e.out;
        if (buf.discard) return;
        buf.discard = true;
        grant = buf.buffered + buf.unacked;
        buf.chunks.clear();
        buf.front_offset = 0;
        buf.buffered = 0;
        buf.unacked = 0;
        buf.outstanding_credit += grant;
        if (e.finished()) return;
    }
    if (grant > 0) (void)send(FrameType::Credit, e.id, Credit{channel, static_cast<std::uint32_t>(grant)}.encode());
}

void Session::wait_any_output(ExecState& e) {
    std::unique_lock lock(mutex_);
    e.cv.wait(lock, [&] { return e.out.buffered > 0 || e.err.buffered > 0 || e.finished(); });
}

BoxliteResult<ExitStatus> Session::wait_exit(ExecState& e, std::optional<std::chrono::milliseconds> timeout) {
    std::unique_lock lock(mutex_);
    if (timeout) {
        if (!e.cv.wait_for(lock, *timeout, [&] { return e.finished(); })) {
            return fail(ErrorKind::Execution, "execution {} did not finish within {} ms", e.id, timeout->count());
        }
    } else {
        e.cv.wait(lock, [&] { return e.finished(); });
    }
    if (e.exit) return *e.exit;
    return fail(*e.failure);
}

BoxliteResult<void> Session::ping(std::chrono::milliseconds timeout) {
    return request_and_wait(FrameType::Ping, pings_sent_, pongs_, "ping", timeout);
}

BoxliteResult<GuestMetrics> Session::metrics(std::chrono::milliseconds timeout) {
    BOXLITE_TRY_VOID(
        request_and_wait(FrameType::MetricsRequest, metrics_sent_, metrics_received_, "a metrics request", timeout));
    std::lock_guard lock(mutex_);
    return last_metrics_;
}

// Requests are numbered by `sent`; the reader counts answers in `answered` (both under mutex_),
// so a caller waits for the answer to its own request, not an earlier caller's.
BoxliteResult<void> Session::request_and_wait(FrameType type, std::uint64_t& sent, const std::uint64_t& answered,
                                              std::string_view what, std::chrono::milliseconds timeout) {
    std::uint64_t target = 0;
    {
        std::lock_guard lock(mutex_);
        if (dead_) return fail(*dead_);
        target = ++sent;
    }
    BOXLITE_TRY_VOID(send(type, 0, std::span<const std::byte>{}));
    std::unique_lock lock(mutex_);
    if (!control_cv_.wait_for(lock, timeout, [&] { return answered >= target || dead_; })) {
        return fail(ErrorKind::Rpc, "the agent did not answer {} within {} ms", what, timeout.count());
    }
    if (answered < target) return fail(*dead_);
    return {};
}

BoxliteResult<void> Session::shutdown(std::chrono::milliseconds timeout) {
    {
        std::lock_guard lock(mutex_);
        if (dead_) return fail(*dead_);
    }
    BOXLITE_TRY_VOID(send(FrameType::Shutdown, 0, std::span<const std::byte>{}));
    std::unique_lock lock(mutex_);
    control_cv_.wait_for(lock, timeout, [&] { return shutdown_acked_ || dead_; });
    if (!shutdown_acked_ && !dead_)
        return fail(ErrorKind::Rpc, "the agent did not acknowledge shutdown within {} ms", timeout.count());
    return {};
}

std::size_t Session::take(OutputBuffer& buf, std::span<std::byte> out) {
    std::size_t copied = 0;
    while (copied < out.size() && !buf.chunks.empty()) {
        auto& front = buf.chunks.front();
        const auto n = std::min(out.size() - copied, front.size() - buf.front_offset);
        std::copy_n(front.data() + buf.front_offset, n, out.data() + copied);
        copied += n;
        buf.front_offset += n;
        if (buf.front_offset == front.size()) {
            buf.chunks.pop_front();
            buf.front_offset = 0;
        }
    }
    buf.buffered -= copied;
    return copied;
}

void Session::read_loop() {
    FrameDecoder decoder;
    std::vector<std::byte> buf(256 * 1024);
    BoxliteError reason(ErrorKind::RpcTransport, "the agent closed the connection");
    while (true) {
        auto n = stream_.read_some(buf);
        if (!n) {
            reason = n.error();
            break;
        }
        if (*n == 0) break;
        decoder.feed(std::span<const std::byte>(buf.data(), *n));
        bool ok = true;
        while (ok) {
            auto frame = decoder.next();
            if (!frame) {
                reason = frame.error();
                ok = false;
                break;
            }
            if (!*frame) break;
            if (auto handled = dispatch(std::move(**frame)); !handled) {
                reason = handled.error();
                ok = false;
            }
        }
        if (!ok) {
            stream_.close();
            break;
        }
    }
    std::lock_guard lock(mutex_);
    dead_ = reason;
    for (auto& [id, state] : executions_) {
        if (!state->finished()) state->failure = reason;
        notify(*state);
    }
    executions_.clear();
    control_cv_.notify_all();
}

BoxliteResult<void> Session::dispatch_handshake(const Frame& f) {
    if (f.type == FrameType::Error && f.stream == 0) {
        auto e = ErrorMessage::decode(f.payload);
        return fail(ErrorKind::Portal, "the agent refused the connection: {}",
                    e ? e->message : std::string("(malformed error)"));
    }
    if (f.type != FrameType::HelloAck || f.stream != 0) {
        return fail(ErrorKind::Portal, "expected hello-ack, got {} on stream {}", to_string(f.type), f.stream);
    }
    BOXLITE_TRY(auto ack, HelloAck::decode(f.payload));
    if (ack.version < kMinVersion || ack.version > kMaxVersion) {
        return fail(ErrorKind::Portal, "the agent chose protocol version {}, this host speaks {}-{}", ack.version,
                    kMinVersion, kMaxVersion);
    }
    std::lock_guard lock(mutex_);
    version_ = ack.version;
    agent_version_ = ack.agent_version;
    features_ = ack.features;
    handshake_done_ = true;
    control_cv_.notify_all();
    return {};
}

BoxliteResult<void> Session::dispatch(Frame f) {
    // Only this thread writes handshake_done_, so reading it here needs no lock.
    if (!handshake_done_) return dispatch_handshake(f);
    std::vector<std::pair<Channel, std::uint64_t>> grants;
    std::shared_ptr<ExecState> state;
    bool kill_abandoned = false;
    auto change = Change::State;
    {
        std::lock_guard lock(mutex_);
        switch (f.type) {
            case FrameType::Pong:
                ++pongs_;
                control_cv_.notify_all();
                return {};
            case FrameType::MetricsReply: {
                BOXLITE_TRY(auto m, GuestMetrics::decode(f.payload));
                last_metrics_ = m;
                ++metrics_received_;
                control_cv_.notify_all();
                return {};
            }
            case FrameType::ShutdownAck:
                shutdown_acked_ = true;
                control_cv_.notify_all();
                return {};
            case FrameType::Error:
                if (f.stream == 0) {
                    BOXLITE_TRY(auto m, ErrorMessage::decode(f.payload));
                    return fail(ErrorKind::Rpc, "the agent ended the connection: {}", m.message);
                }
                break;
            case FrameType::HelloAck: return fail(ErrorKind::Portal, "the agent sent a second hello-ack");
            default:
                if (!agent_may_send(f.type)) {
                    return fail(ErrorKind::Portal, "the agent sent a {} frame, which only the host may send",
                                to_string(f.type));
                }
                break;  // the execution's own frames
        }
        auto it = executions_.find(f.stream);
        if (it == executions_.end()) {
            return fail(ErrorKind::Portal, "the agent sent {} for unknown execution {}", to_string(f.type), f.stream);
        }
        state = it->second;
        auto& e = *state;
        switch (f.type) {
            case FrameType::Error: {
                BOXLITE_TRY(auto m, ErrorMessage::decode(f.payload));
                if (!e.started) {
                    e.start_error = BoxliteError(ErrorKind::Execution, m.message);
                    if (e.abandoned) executions_.erase(it);  // nobody waits for it any more
                } else {
                    e.failure = BoxliteError(ErrorKind::Rpc, m.message);
                    executions_.erase(it);
                }
                break;
            }
            case FrameType::Started: {
                if (e.started) return fail(ErrorKind::Portal, "the agent started execution {} twice", e.id);
                BOXLITE_TRY(auto m, protocol::Started::decode(f.payload));
                e.started = true;
                e.pid = m.pid;
                e.stdin_credit = m.stdin_window;
                kill_abandoned = e.abandoned;
                break;
            }
            case FrameType::Stdout:
            case FrameType::Stderr: {
                if (!e.started)
                    return fail(ErrorKind::Portal, "the agent sent output before execution {} started", e.id);
                auto& buf = f.type == FrameType::Stderr ? e.err : e.out;
                if (f.payload.size() > buf.outstanding_credit) {
                    return fail(ErrorKind::Portal,
                                "the agent sent {} bytes on execution {} with only {} bytes of credit",
                                f.payload.size(), e.id, buf.outstanding_credit);
                }
                buf.outstanding_credit -= f.payload.size();
                counters_.bytes_out.fetch_add(f.payload.size(), std::memory_order_relaxed);
                if (buf.discard) {
                    grants.emplace_back(f.type == FrameType::Stderr ? Channel::Stderr : Channel::Stdout,
                                        f.payload.size());
                    buf.outstanding_credit += f.payload.size();
                } else if (!f.payload.empty()) {
                    buf.buffered += f.payload.size();
                    buf.chunks.push_back(std::move(f.payload));
                }
                change = f.type == FrameType::Stderr ? Change::Stderr : Change::Stdout;
                break;
            }
            case FrameType::Credit: {
                BOXLITE_TRY(auto m, Credit::decode(f.payload));
                if (m.channel != Channel::Stdin)
                    return fail(ErrorKind::Portal, "the agent granted credit for an output channel");
                e.stdin_credit = std::min<std::uint64_t>(e.stdin_credit + m.bytes, 1ULL << 40);
                change = Change::StdinCredit;
                break;
            }
            case FrameType::Exit: {
                if (!e.started) return fail(ErrorKind::Portal, "the agent ended execution {} before starting it", e.id);
                BOXLITE_TRY(auto m, ExitStatus::decode(f.payload));
                e.exit = std::move(m);
                executions_.erase(it);
                break;
            }
            default: break;
        }
        if (e.waker) e.waker();
    }
    // Woken after the lock is released, so that the woken thread does not wait for it at once.
    notify_waiters(*state, change);
    for (auto [channel, bytes] : grants) {
        BOXLITE_TRY_VOID(
            send(FrameType::Credit, f.stream, Credit{channel, static_cast<std::uint32_t>(bytes)}.encode()));
    }
    if (kill_abandoned) BOXLITE_TRY_VOID(send(FrameType::Signal, f.stream, SignalRequest{9}.encode()));
    return {};
}
}  // namespace boxlite::protocol
