// The terminal side of `run -it` / `exec -it`: raw mode that is always undone, window sizes, and
// signals turned into events an I/O loop can poll.
//
// Raw mode must be restored on every way out of the process — normal return, std::exit, an
// exception unwinding, a fatal signal (SIGTERM/SIGHUP with no relay, SIGSEGV, SIGABRT …). So the
// saved termios also lives in a process-wide slot that an atexit hook and the fatal-signal
// handlers restore from (tcsetattr is async-signal-safe), and the handlers then re-raise the signal
// with its default action so the exit status still says what killed us.
#pragma once

#include <boxlite/error.hpp>

#include <csignal>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

namespace boxlite::cli {

[[nodiscard]] bool is_terminal(int fd) noexcept;

struct WindowSize {
    std::uint16_t rows = 0;
    std::uint16_t cols = 0;
    friend bool operator==(const WindowSize&, const WindowSize&) = default;
};

/// The window size of the terminal on `fd`; nullopt when it is not a terminal or reports 0x0.
[[nodiscard]] std::optional<WindowSize> window_size(int fd) noexcept;

/// Puts a terminal into raw mode (no echo, no line editing, no signal keys: Ctrl-C reaches the
/// box as byte 0x03) and restores it when destroyed, or when the process ends in any other way.
class RawTerminal {
public:
    /// InvalidArgument when `fd` is not a terminal; Internal when tcsetattr fails.
    [[nodiscard]] static BoxliteResult<RawTerminal> enter(int fd);

    RawTerminal(RawTerminal&& other) noexcept;
    RawTerminal& operator=(RawTerminal&&) = delete;
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    ~RawTerminal();

    /// Restores the saved mode now (idempotent).
    void restore() noexcept;

private:
    explicit RawTerminal(int fd) : fd_(fd) {}
    int fd_ = -1;
};

/// Installs handlers that restore a saved terminal and re-raise, for signals that would otherwise
/// end the process without running destructors. Idempotent.
void install_fatal_signal_restore();

/// Delivers signals through a self-pipe: handlers write the signal number, the I/O loop polls
/// `fd()` and calls `drain()`. Previous handlers come back when the relay is destroyed. One relay
/// at a time per process.
class SignalRelay {
public:
    [[nodiscard]] static BoxliteResult<SignalRelay> install(std::initializer_list<int> signals);

    SignalRelay(SignalRelay&& other) noexcept;
    SignalRelay& operator=(SignalRelay&&) = delete;
    SignalRelay(const SignalRelay&) = delete;
    SignalRelay& operator=(const SignalRelay&) = delete;
    ~SignalRelay();

    [[nodiscard]] int fd() const noexcept { return read_fd_; }
    /// The signals received since the last call, in arrival order (non-blocking).
    [[nodiscard]] std::vector<int> drain();

private:
    SignalRelay() = default;
    int read_fd_ = -1;
    std::vector<std::pair<int, struct sigaction>> previous_;
};

}  // namespace boxlite::cli
