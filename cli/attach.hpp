// Attaching the caller's terminal or pipes to a command running in a box: `run` and `exec`
// without -d.
//
//   stdout/stderr  one thread each copies the box's stream to fd 1 / fd 2 as bytes arrive
//   stdin (-i)     a thread copies fd 0 into the box; EOF on fd 0 closes the box's stdin
//   -t             the box gives one merged stream; with -i the caller's terminal is put in raw
//                  mode (restored on every exit path, see terminal.hpp) so keys — Ctrl-C included,
//                  as byte 0x03 — reach the box's terminal, which turns them into signals there
//   signals        SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 received by the CLI are
//                  passed to the box process (Docker's sig-proxy); SIGWINCH sends the new window
//                  size
//   reader gone    when fd 1 or fd 2 is a pipe whose reader left (`boxlite run … yes | head -1`;
//                  main() makes that EPIPE, not a fatal SIGPIPE) the stream is no longer
//                  forwarded and the box command gets SIGPIPE, as a local writer would: it ends,
//                  attach() returns its result and the caller still stops and removes the box.
//                  Its output is drained meanwhile, so one that ignores SIGPIPE never blocks.
//
// The Execution type is a template parameter so this header does not depend on the protocol
// headers; it needs stdin(), stdout(), stderr(), signal(n), resize_tty(rows, cols), wait().
#pragma once

#include "cli/terminal.hpp"

#include <boxlite/error.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <csignal>
#include <optional>
#include <span>
#include <thread>
#include <utility>
#include <vector>

namespace boxlite::cli {

struct AttachOptions {
    bool interactive = false;  ///< forward fd 0 to the box's stdin
    /// The command reads fd 0 itself (Execution::stdin_passed()): nothing is forwarded and the
    /// box's stdin is not closed here (it ends when every writer of the pipe has closed it).
    bool stdin_passed = false;
    bool tty = false;  ///< the command has a terminal in the box
    int in_fd = STDIN_FILENO;
    int out_fd = STDOUT_FILENO;
    int err_fd = STDERR_FILENO;
};

/// The signals attach() relays to the box command (SIGWINCH becomes a resize).
inline constexpr std::initializer_list<int> kRelayedSignals = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT,
                                                               SIGUSR1, SIGUSR2, SIGWINCH};

namespace attach_detail {

/// Whether `fd` may be handed to the box command as its stdin (BoxCommand::stdin_descriptor):
/// only the read end of an anonymous pipe. Never a terminal (the box could push input into the
/// caller's shell with TIOCSTI), a regular file, a socket, a named FIFO, or anything open for
/// writing. (The library checks the same again, lib/base/fd_passing.hpp; so does the agent.)
inline bool passable_stdin(int fd) {
    struct stat st {};
    struct statfs fs {};
    if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
    if (::fstatfs(fd, &fs) != 0 || fs.f_type != PIPEFS_MAGIC) return false;
    const int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_ACCMODE) == O_RDONLY;
}

/// write(2) until done; the errno that stopped it (EPIPE: the reader left), or 0.
inline int write_fully(int fd, const std::byte* data, std::size_t size) {
    while (size > 0) {
        const auto n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return 0;
}

/// Bytes the stdin thread reads before sending: one stdin frame's worth (kMaxChunk), so a fast
/// writer's data crosses in 256 KiB frames instead of one frame per pipe read (64 KiB, or 16
/// KiB as this buffer was).
inline constexpr std::size_t kStdinBatch = 256 * 1024;
inline constexpr std::size_t kStdinPipeSize = 1024 * 1024;

struct ReadReady {
    std::size_t bytes = 0;
    bool eof = false;  ///< read() returned 0 (or failed): nothing more will come
};

/// After a read that returned data: reads into `rest` what `fd` already holds, without waiting
/// (poll with a zero timeout before each read, so an interactive stdin is sent at once).
inline ReadReady read_ready(int fd, std::span<std::byte> rest) {
    ReadReady got;
    while (got.bytes < rest.size()) {
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, 0);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0 || (p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) break;
        const auto n = ::read(fd, rest.data() + got.bytes, rest.size() - got.bytes);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) {
            got.eof = true;
            break;
        }
        got.bytes += static_cast<std::size_t>(n);
    }
    return got;
}

class Pipe {
public:
    Pipe() {
        if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) fds_[0] = fds_[1] = -1;
    }
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
    ~Pipe() {
        for (int fd : fds_) {
            if (fd >= 0) ::close(fd);
        }
    }
    [[nodiscard]] bool ok() const noexcept { return fds_[0] >= 0; }
    [[nodiscard]] int read_end() const noexcept { return fds_[0]; }
    void notify() const noexcept {
        const char byte = 1;
        [[maybe_unused]] auto n = ::write(fds_[1], &byte, 1);
    }

private:
    int fds_[2] = {-1, -1};
};

}  // namespace attach_detail

/// Streams until the command's output ends, then waits for it; returns its ExecResult.
/// `relay`: one the caller installed with kRelayedSignals before the command started (so no
/// signal in between is lost); without one, attach() installs its own.
template <class Exec>
[[nodiscard]] auto attach(Exec& exec, const AttachOptions& options, SignalRelay* relay = nullptr)
    -> decltype(exec.wait()) {
    using attach_detail::Pipe;
    Pipe outputs_done;
    Pipe stop_input;
    Pipe reader_gone;
    if (!outputs_done.ok() || !stop_input.ok() || !reader_gone.ok()) {
        return fail_errno(ErrorKind::Internal, "pipe2", errno);
    }

    // Signals first, so none arriving from here on is lost or kills us with the box running.
    std::optional<SignalRelay> own_relay;
    if (relay == nullptr) {
        auto installed = SignalRelay::install(kRelayedSignals);
        if (!installed) return fail(installed.error());
        own_relay.emplace(std::move(*installed));
        relay = &*own_relay;
    }

    std::optional<RawTerminal> raw;
    if (options.tty && options.interactive && is_terminal(options.in_fd)) {
        auto entered = RawTerminal::enter(options.in_fd);
        if (!entered) return fail(entered.error());
        raw.emplace(std::move(*entered));
    }
    const int size_fd = is_terminal(options.out_fd) ? options.out_fd : options.in_fd;
    if (options.tty) {
        if (auto size = window_size(size_fd)) (void)exec.resize_tty(size->rows, size->cols);
    }

    auto out = exec.stdout();
    auto err = exec.stderr();
    auto in = exec.stdin();
    std::atomic<int> open_outputs{2};
    auto pump_output = [&](auto& stream, int fd) {
        bool destination_open = true;
        std::byte buffer[32 * 1024];
        while (stream) {
            auto n = stream->read_some(std::span(buffer));
            if (!n || *n == 0) break;
            if (!destination_open) continue;
            const int error = attach_detail::write_fully(fd, buffer, *n);
            if (error == 0) continue;
            destination_open = false;
            if (error == EPIPE) reader_gone.notify();
        }
        if (--open_outputs == 0) outputs_done.notify();
    };
    std::thread out_thread([&] { pump_output(out, options.out_fd); });
    std::thread err_thread([&] { pump_output(err, options.err_fd); });

    std::thread in_thread;
    if (options.interactive && in) {
        in_thread = std::thread([&] {
            // A pipe on fd 0 holds 64 KiB by default: each read then takes a quarter frame and
            // the writer and this thread wake each other for every 64 KiB. A 1 MiB pipe lets a
            // fast writer run ahead (best effort: the pipe-size limits of the host may refuse).
            // From a pipe the bytes are spliced into the agent's socket (they never pass through
            // this process); a pipe is read by this thread alone.
            struct stat st {};
            const bool from_pipe = ::fstat(options.in_fd, &st) == 0 && S_ISFIFO(st.st_mode);
            if (from_pipe && ::fcntl(options.in_fd, F_GETPIPE_SZ) < static_cast<int>(attach_detail::kStdinPipeSize)) {
                (void)::fcntl(options.in_fd, F_SETPIPE_SZ, static_cast<int>(attach_detail::kStdinPipeSize));
            }
            std::vector<std::byte> buffer(attach_detail::kStdinBatch);
            while (true) {
                pollfd fds[2] = {{options.in_fd, POLLIN, 0}, {stop_input.read_end(), POLLIN, 0}};
                if (::poll(fds, 2, -1) < 0) {
                    if (errno == EINTR) continue;
                    break;
                }
                if ((fds[1].revents & POLLIN) != 0) return;  // the command ended first
                if (fds[0].revents == 0) continue;
                if constexpr (requires { in->splice_from(0); }) {
                    if (from_pipe) {
                        auto spliced = in->splice_from(options.in_fd);
                        if (!spliced) return;
                        if (*spliced) continue;  // else empty: read() tells EOF from a spurious wake-up
                    }
                }
                const auto n = ::read(options.in_fd, buffer.data(), buffer.size());
                if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                if (n <= 0) break;  // EOF (or a dead fd): the box reads EOF too
                const auto more = attach_detail::read_ready(options.in_fd,
                                                            std::span(buffer).subspan(static_cast<std::size_t>(n)));
                const auto filled = static_cast<std::size_t>(n) + more.bytes;
                if (!in->write(std::span<const std::byte>(buffer.data(), filled))) return;
                if (more.eof) break;
            }
            (void)in->close();
        });
    } else if (in && !options.stdin_passed) {
        (void)in->close();
    }

    // Relay signals until both output streams have ended.
    bool sent_sigpipe = false;
    while (true) {
        pollfd fds[3] = {{relay->fd(), POLLIN, 0},
                         {outputs_done.read_end(), POLLIN, 0},
                         {sent_sigpipe ? -1 : reader_gone.read_end(), POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0 && errno != EINTR) break;
        if ((fds[2].revents & POLLIN) != 0) {
            sent_sigpipe = true;
            (void)exec.signal(SIGPIPE);
        }
        if ((fds[0].revents & POLLIN) != 0) {
            for (int signal_number : relay->drain()) {
                if (signal_number == SIGWINCH) {
                    if (auto size = window_size(size_fd); size && options.tty) {
                        (void)exec.resize_tty(size->rows, size->cols);
                    }
                } else {
                    (void)exec.signal(signal_number);
                }
            }
        }
        if ((fds[1].revents & POLLIN) != 0) break;
    }
    out_thread.join();
    err_thread.join();
    stop_input.notify();
    if (in_thread.joinable()) in_thread.join();
    raw.reset();  // the terminal is the caller's again before anything else is printed
    return exec.wait();
}

}  // namespace boxlite::cli
