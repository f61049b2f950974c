// Execution: one command running in a box, with its streams — the reference's `Execution`.
//
//   auto exec = box.exec(BoxCommand("sh").args({"-c", "cat; echo done >&2"}));
//   auto in = exec->stdin();   auto out = exec->stdout();   auto err = exec->stderr();
//   in->write("hello\n"); in->close();
//   while (auto line = out->read_line()) { if (!*line) break; use(**line); }
//   BoxliteResult<ExecResult> result = exec->wait();   // exit_code: N, or -N if killed by signal N
//
// Each stream can be taken once (a second call returns nullopt). A stream that is never taken,
// or is dropped, is discarded so the process never blocks on an unread pipe. Dropping stdin
// closes it (the process reads EOF).
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/protocol/messages.hpp>
#include <boxlite/protocol/session.hpp>

#include <csignal>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace boxlite {

/// How an execution ended, as the reference's ExecResult.
struct ExecResult {
    /// The exit status, or -N when signal N killed the process.
    int exit_code = 0;
    /// Set when the runtime ended the command (timeout) or the agent reported a failure.
    std::optional<std::string> error_message;
    bool timed_out = false;

    [[nodiscard]] bool success() const noexcept { return exit_code == 0 && !error_message; }
    friend bool operator==(const ExecResult&, const ExecResult&) = default;
};

/// The most stdout and stderr together that `collect()` (and `run()`) keep by default: a box that
/// prints without end must not grow the caller's memory without end. Larger outputs are read as
/// streams (`Execution::stdout()` / `stderr()`), or collected with a larger limit.
inline constexpr std::size_t kDefaultMaxOutputBytes = std::size_t{256} << 20;

/// A finished command with everything it printed (the convenience `run`).
struct ExecOutput {
    int exit_code = 0;
    std::string stdout_text;
    std::string stderr_text;
    std::optional<std::string> error_message;
    bool timed_out = false;

    [[nodiscard]] bool success() const noexcept { return exit_code == 0 && !error_message; }
};

namespace detail {
/// The error of a collect() whose command printed more than `max_output_bytes`.
inline BoxliteError output_limit_exceeded(std::size_t max_output_bytes) {
    return BoxliteError(ErrorKind::Execution,
                        fmt::format("the command printed more than {} bytes (stdout and stderr together), the most "
                                    "collect() keeps, and was killed; read a larger output as a stream (exec(), then "
                                    "stdout() and stderr()), or pass a larger max_output_bytes",
                                    max_output_bytes));
}

struct ExecLink {
    std::shared_ptr<protocol::Session> session;
    std::shared_ptr<protocol::ExecState> state;
};
}  // namespace detail

/// The write end of an execution's stdin.
class ExecStdin {
public:
    ExecStdin(ExecStdin&&) noexcept = default;
    ExecStdin& operator=(ExecStdin&& other) noexcept {
        if (this != &other) {
            (void)close();
            link_ = std::move(other.link_);
        }
        return *this;
    }
    ExecStdin(const ExecStdin&) = delete;
    ExecStdin& operator=(const ExecStdin&) = delete;
    ~ExecStdin() { (void)close(); }

    /// Writes every byte, blocking while the box has not consumed earlier ones (flow control).
    BoxliteResult<void> write(std::span<const std::byte> data) {
        if (!link_.session) return fail(ErrorKind::InvalidState, "stdin was moved from");
        return link_.session->write_stdin(*link_.state, data);
    }
    BoxliteResult<void> write(std::string_view text) {
        return write(std::as_bytes(std::span(text.data(), text.size())));
    }
    /// Sends what the box can take now (possibly nothing) without blocking; returns the count.
    /// With Execution::set_waker(), for event loops.
    BoxliteResult<std::size_t> try_write_some(std::span<const std::byte> data) {
        if (!link_.session) return fail(ErrorKind::InvalidState, "stdin was moved from");
        return link_.session->try_write_stdin(*link_.state, data);
    }
    /// Moves what the pipe `fd` holds now (up to one frame) into the process's stdin without
    /// copying it through this process; nullopt when it cannot (see Session::splice_stdin), then
    /// read the fd and write() instead. `fd` must have no other reader.
    BoxliteResult<std::optional<std::size_t>> splice_from(int fd) {
        if (!link_.session) return fail(ErrorKind::InvalidState, "stdin was moved from");
        return link_.session->splice_stdin(*link_.state, fd);
    }
    /// EOF for the process. Idempotent.
    BoxliteResult<void> close() {
        if (!link_.session) return {};
        return link_.session->close_stdin(*link_.state);
    }

private:
    friend class Execution;
    explicit ExecStdin(detail::ExecLink link) : link_(std::move(link)) {}
    detail::ExecLink link_;
};

/// The read end of stdout or stderr: raw bytes, lines, or everything.
class ExecOutputStream {
public:
    ExecOutputStream(ExecOutputStream&&) noexcept = default;
    ExecOutputStream& operator=(ExecOutputStream&&) noexcept = default;
    ExecOutputStream(const ExecOutputStream&) = delete;
    ExecOutputStream& operator=(const ExecOutputStream&) = delete;
    ~ExecOutputStream() {
        if (link_.session) link_.session->discard_output(*link_.state, channel_);
    }

    /// Up to buffer.size() bytes; 0 at end of stream.
    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer) {
        if (!pending_.empty()) {
            const auto n = std::min(buffer.size(), pending_.size());
            std::memcpy(buffer.data(), pending_.data(), n);
            pending_.erase(0, n);
            return n;
        }
        return link_.session->read_output(*link_.state, channel_, buffer);
    }

    /// read_some() without blocking: nullopt while nothing has arrived and the stream has not
    /// ended. With Execution::set_waker(), for event loops.
    BoxliteResult<std::optional<std::size_t>> try_read_some(std::span<std::byte> buffer) {
        if (!pending_.empty()) {
            const auto n = std::min(buffer.size(), pending_.size());
            std::memcpy(buffer.data(), pending_.data(), n);
            pending_.erase(0, n);
            return std::optional<std::size_t>(n);
        }
        return link_.session->try_read_output(*link_.state, channel_, buffer);
    }

    /// The next line without its '\n'; nullopt at end of stream (a last line without '\n' is
    /// returned as is first).
    BoxliteResult<std::optional<std::string>> read_line() {
        while (true) {
            if (const auto nl = pending_.find('\n'); nl != std::string::npos) {
                std::string line = pending_.substr(0, nl);
                pending_.erase(0, nl + 1);
                return std::optional<std::string>(std::move(line));
            }
            char buf[16 * 1024];
            BOXLITE_TRY(auto n,
                        link_.session->read_output(*link_.state, channel_, std::as_writable_bytes(std::span(buf))));
            if (n == 0) {
                if (pending_.empty()) return std::optional<std::string>{};
                return std::optional<std::string>(std::exchange(pending_, {}));
            }
            pending_.append(buf, n);
        }
    }

    /// Everything until end of stream.
    BoxliteResult<std::string> read_all() {
        std::string all = std::exchange(pending_, {});
        char buf[64 * 1024];
        while (true) {
            BOXLITE_TRY(auto n,
                        link_.session->read_output(*link_.state, channel_, std::as_writable_bytes(std::span(buf))));
            if (n == 0) return all;
            all.append(buf, n);
        }
    }

private:
    friend class Execution;
    ExecOutputStream(detail::ExecLink link, protocol::Channel channel) : link_(std::move(link)), channel_(channel) {}
    detail::ExecLink link_;
    protocol::Channel channel_;
    std::string pending_;
};

using ExecStdout = ExecOutputStream;
using ExecStderr = ExecOutputStream;

class Execution {
public:
    Execution(std::shared_ptr<protocol::Session> session, std::shared_ptr<protocol::ExecState> state)
        : link_{std::move(session), std::move(state)} {}
    Execution(Execution&&) noexcept = default;
    Execution& operator=(Execution&&) noexcept = default;
    Execution(const Execution&) = delete;
    Execution& operator=(const Execution&) = delete;
    ~Execution() {
        if (!link_.session) return;
        // Streams nobody took would fill up and stall the process: discard them.
        if (!stdout_taken_) link_.session->discard_output(*link_.state, protocol::Channel::Stdout);
        if (!stderr_taken_) link_.session->discard_output(*link_.state, protocol::Channel::Stderr);
        if (!stdin_taken_) (void)link_.session->close_stdin(*link_.state);
    }

    /// The execution's unique id (a ULID, as the reference's ExecutionId): distinct for every
    /// execution of every box, whichever connection it runs on.
    [[nodiscard]] const std::string& id() const { return link_.state->execution_id; }
    /// The process id inside the box.
    [[nodiscard]] std::int32_t pid() const { return link_.state->pid; }
    /// The command reads the host pipe given as BoxCommand::stdin_descriptor() itself: nothing
    /// is to be written to stdin() (its write fails, its close does nothing).
    [[nodiscard]] bool stdin_passed() const { return link_.state->stdin_passed; }

    [[nodiscard]] std::optional<ExecStdin> stdin() {
        if (std::exchange(stdin_taken_, true)) return std::nullopt;
        return ExecStdin(link_);
    }
    [[nodiscard]] std::optional<ExecOutputStream> stdout() {
        if (std::exchange(stdout_taken_, true)) return std::nullopt;
        return ExecOutputStream(link_, protocol::Channel::Stdout);
    }
    [[nodiscard]] std::optional<ExecOutputStream> stderr() {
        if (std::exchange(stderr_taken_, true)) return std::nullopt;
        return ExecOutputStream(link_, protocol::Channel::Stderr);
    }

    /// Waits for the process to end. Streams not taken yet are discarded first.
    BoxliteResult<ExecResult> wait() {
        if (!stdout_taken_) {
            stdout_taken_ = true;
            link_.session->discard_output(*link_.state, protocol::Channel::Stdout);
        }
        if (!stderr_taken_) {
            stderr_taken_ = true;
            link_.session->discard_output(*link_.state, protocol::Channel::Stderr);
        }
        BOXLITE_TRY(auto status, link_.session->wait_exit(*link_.state));
        return to_result(status);
    }

    /// wait() without blocking: nullopt while the process runs.
    [[nodiscard]] std::optional<BoxliteResult<ExecResult>> try_wait() {
        auto status = link_.session->try_exit(*link_.state);
        if (!status) return std::nullopt;
        if (!*status) return BoxliteResult<ExecResult>(fail(std::move(*status).error()));
        return BoxliteResult<ExecResult>(to_result(**status));
    }

    /// `waker` runs whenever the execution may have progressed (output, stdin credit, exit),
    /// and once right away, so an event loop can retry the try_ calls instead of blocking. It
    /// runs with the connection locked, on its reader thread: it may only post a notice.
    void set_waker(std::function<void()> waker) { link_.session->set_waker(*link_.state, std::move(waker)); }

    /// Reads stdout and stderr to their ends, then waits. Needs both streams untaken. A command
    /// whose stdout and stderr together pass `max_output_bytes` is killed, and the result is an
    /// Execution error naming the limit (nothing of its output is returned half).
    BoxliteResult<ExecOutput> collect(std::size_t max_output_bytes = kDefaultMaxOutputBytes) {
        if (stdout_taken_ || stderr_taken_) {
            return fail(ErrorKind::InvalidState, "collect() needs stdout and stderr, but one was already taken");
        }
        if (max_output_bytes == 0) {
            return fail(ErrorKind::InvalidArgument, "collect()'s max_output_bytes must be at least 1");
        }
        stdout_taken_ = stderr_taken_ = true;
        if (!stdin_taken_) {
            stdin_taken_ = true;
            BOXLITE_TRY_VOID(link_.session->close_stdin(*link_.state));
        }
        ExecOutput output;
        char buf[64 * 1024];
        auto& session = *link_.session;
        auto& state = *link_.state;
        bool out_open = true, err_open = true;
        while (out_open || err_open) {
            session.wait_any_output(state);
            // Drain whichever has data; a finished stream reads 0 without blocking.
            for (auto channel : {protocol::Channel::Stdout, protocol::Channel::Stderr}) {
                bool& open = channel == protocol::Channel::Stdout ? out_open : err_open;
                if (!open) continue;
                if (session.buffered(state, channel) == 0 && !finished()) continue;
                BOXLITE_TRY(auto n, session.read_output(state, channel, std::as_writable_bytes(std::span(buf))));
                if (n == 0) {
                    open = false;
                } else if (output.stdout_text.size() + output.stderr_text.size() + n > max_output_bytes) {
                    return fail(over_output_limit(max_output_bytes));
                } else {
                    (channel == protocol::Channel::Stdout ? output.stdout_text : output.stderr_text).append(buf, n);
                }
            }
        }
        BOXLITE_TRY(auto status, session.wait_exit(state));
        auto result = to_result(status);
        output.exit_code = result.exit_code;
        output.error_message = std::move(result.error_message);
        output.timed_out = result.timed_out;
        return output;
    }

    /// SIGKILL to the process group.
    BoxliteResult<void> kill() { return signal(SIGKILL); }
    /// Signal `signo` (1-64) to the process group.
    BoxliteResult<void> signal(int signo) {
        if (signo < 1 || signo > 64) return fail(ErrorKind::InvalidArgument, "signal {} is out of range 1-64", signo);
        return link_.session->send(protocol::FrameType::Signal, link_.state->id,
                                   protocol::SignalRequest{signo}.encode());
    }
    /// New terminal size for a tty execution (the process gets SIGWINCH).
    BoxliteResult<void> resize_tty(std::uint16_t rows, std::uint16_t cols) {
        if (rows == 0 || cols == 0)
            return fail(ErrorKind::InvalidArgument, "tty size {}x{} must be at least 1x1", rows, cols);
        return link_.session->send(protocol::FrameType::Resize, link_.state->id,
                                   protocol::ResizeRequest{rows, cols}.encode());
    }

private:
    bool finished() { return link_.session->finished(*link_.state); }

    /// collect()'s end for a command that printed more than it keeps: killed, the rest of its
    /// output dropped as it comes, its exit waited for (so the box holds nothing of it).
    BoxliteError over_output_limit(std::size_t max_output_bytes) {
        (void)signal(SIGKILL);
        link_.session->discard_output(*link_.state, protocol::Channel::Stdout);
        link_.session->discard_output(*link_.state, protocol::Channel::Stderr);
        (void)link_.session->wait_exit(*link_.state);
        return detail::output_limit_exceeded(max_output_bytes);
    }
    static ExecResult to_result(const protocol::ExitStatus& status) {
        ExecResult result;
        result.exit_code = status.code;
        result.timed_out = status.timed_out;
        if (!status.message.empty()) result.error_message = status.message;
        return result;
    }

    detail::ExecLink link_;
    bool stdin_taken_ = false;
    bool stdout_taken_ = false;
    bool stderr_taken_ = false;
};

}  // namespace boxlite

/// "exit_code=0 success=true", plus "timed_out=true" and "error=..." when they apply.
template <>
struct fmt::formatter<boxlite::ExecResult> : fmt::formatter<std::string_view> {
    auto format(const boxlite::ExecResult& result, format_context& ctx) const {
        auto text = fmt::format("exit_code={} success={}", result.exit_code, result.success());
        if (result.timed_out) text += " timed_out=true";
        if (result.error_message) text += fmt::format(" error=\"{}\"", *result.error_message);
        return fmt::formatter<std::string_view>::format(text, ctx);
    }
};
