// Raw terminal mode, window sizes and the signal self-pipe (see terminal.hpp).
#include "cli/terminal.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <mutex>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

namespace boxlite::cli {

namespace {

// The one terminal mode to put back. Written before `g_saved_fd` is published, read by signal
// handlers only after they claim the fd with an exchange, so at most one restorer runs.
struct termios g_saved_mode {};
std::atomic<int> g_saved_fd{-1};
std::atomic<int> g_relay_write_fd{-1};
std::once_flag g_atexit_once;

void restore_saved_terminal() noexcept {
    const int fd = g_saved_fd.exchange(-1);
    if (fd >= 0) ::tcsetattr(fd, TCSADRAIN, &g_saved_mode);
}

extern "C" void restore_at_exit() { restore_saved_terminal(); }

extern "C" void fatal_signal_handler(int signal_number) {
    const int saved_errno = errno;
    restore_saved_terminal();
    errno = saved_errno;
    // SA_RESETHAND put the default action back and SA_NODEFER leaves the signal unblocked, so
    // this ends the process with the status the signal would have given it.
    ::raise(signal_number);
}

extern "C" void relay_signal_handler(int signal_number) {
    const int saved_errno = errno;
    const int fd = g_relay_write_fd.load();
    if (fd >= 0) {
        const auto byte = static_cast<unsigned char>(signal_number);
        // A full pipe means plenty of undrained signals already; dropping one is harmless.
        [[maybe_unused]] auto written = ::write(fd, &byte, 1);
    }
    errno = saved_errno;
}

}  // namespace

bool is_terminal(int fd) noexcept { return ::isatty(fd) == 1; }

std::optional<WindowSize> window_size(int fd) noexcept {
    struct winsize ws {};
    if (::ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0) return std::nullopt;
    return WindowSize{ws.ws_row, ws.ws_col};
}

BoxliteResult<RawTerminal> RawTerminal::enter(int fd) {
    if (!is_terminal(fd)) {
        return fail(ErrorKind::InvalidArgument, "the input device is not a TTY (fd {})", fd);
    }
    struct termios original {};
    if (::tcgetattr(fd, &original) != 0) return fail_errno(ErrorKind::Internal, "tcgetattr", errno);
    struct termios raw = original;
    ::cfmakeraw(&raw);
    // Keep output post-processing so our own messages ("\n") still land at column 0.
    raw.c_oflag |= OPOST;
    std::call_once(g_atexit_once, [] { std::atexit(restore_at_exit); });
    install_fatal_signal_restore();
    g_saved_mode = original;
    g_saved_fd.store(fd);
    if (::tcsetattr(fd, TCSADRAIN, &raw) != 0) {
        const int error = errno;
        g_saved_fd.store(-1);
        return fail_errno(ErrorKind::Internal, "tcsetattr (raw mode)", error);
    }
    return RawTerminal(fd);
}

RawTerminal::RawTerminal(RawTerminal&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

RawTerminal::~RawTerminal() { restore(); }

void RawTerminal::restore() noexcept {
    if (fd_ < 0) return;
    fd_ = -1;
    restore_saved_terminal();
}

void install_fatal_signal_restore() {
    static std::once_flag once;
    std::call_once(once, [] {
        for (int signal_number : {SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
            struct sigaction current {};
            if (::sigaction(signal_number, nullptr, &current) != 0) continue;
            // An ignored signal (nohup) stays ignored; someone else's handler stays theirs.
            if (current.sa_handler != SIG_DFL || (current.sa_flags & SA_SIGINFO) != 0) continue;
            struct sigaction action {};
            action.sa_handler = fatal_signal_handler;
            sigemptyset(&action.sa_mask);
            action.sa_flags = SA_RESETHAND | SA_NODEFER;
            ::sigaction(signal_number, &action, nullptr);
        }
    });
}

BoxliteResult<SignalRelay> SignalRelay::install(std::initializer_list<int> signals) {
    if (g_relay_write_fd.load() >= 0) return fail(ErrorKind::Internal, "a signal relay is already installed");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return fail_errno(ErrorKind::Internal, "pipe2", errno);
    SignalRelay relay;
    relay.read_fd_ = fds[0];
    g_relay_write_fd.store(fds[1]);
    for (int signal_number : signals) {
        struct sigaction action {};
        action.sa_handler = relay_signal_handler;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        struct sigaction previous {};
        if (::sigaction(signal_number, &action, &previous) != 0) {
            return fail_errno(ErrorKind::Internal, "sigaction", errno);
        }
        relay.previous_.emplace_back(signal_number, previous);
    }
    return relay;
}

SignalRelay::SignalRelay(SignalRelay&& other) noexcept
    : read_fd_(other.read_fd_), previous_(std::move(other.previous_)) {
    other.read_fd_ = -1;
    other.previous_.clear();
}

SignalRelay::~SignalRelay() {
    if (read_fd_ < 0) return;
    for (auto& [signal_number, previous] : previous_) ::sigaction(signal_number, &previous, nullptr);
    const int write_fd = g_relay_write_fd.exchange(-1);
    if (write_fd >= 0) ::close(write_fd);
    ::close(read_fd_);
}

std::vector<int> SignalRelay::drain() {
    std::vector<int> received;
    unsigned char buffer[64];
    while (true) {
        const auto n = ::read(read_fd_, buffer, sizeof buffer);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) received.push_back(buffer[i]);
    }
    return received;
}

}  // namespace boxlite::cli
