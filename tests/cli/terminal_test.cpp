// Raw mode on a real pseudo-terminal: entered, restored by the destructor, and restored when the
// process is killed by a signal; the signal relay's self-pipe.
#include "cli/terminal.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <pty.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

namespace boxlite::cli {
namespace {

struct Pty {
    int master = -1;
    int slave = -1;
    Pty() {
        struct winsize ws {};
        ws.ws_row = 24;
        ws.ws_col = 80;
        if (::openpty(&master, &slave, nullptr, nullptr, &ws) != 0) master = slave = -1;
    }
    ~Pty() {
        if (master >= 0) ::close(master);
        if (slave >= 0) ::close(slave);
    }
};

bool canonical(int fd) {
    struct termios mode {};
    ::tcgetattr(fd, &mode);
    return (mode.c_lflag & ICANON) != 0 && (mode.c_lflag & ECHO) != 0 && (mode.c_lflag & ISIG) != 0;
}

TEST(Terminal, WindowSizeAndIsTerminal) {
    Pty pty;
    ASSERT_GE(pty.slave, 0) << "openpty failed";
    EXPECT_TRUE(is_terminal(pty.slave));
    EXPECT_EQ(window_size(pty.slave), (WindowSize{24, 80}));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    EXPECT_FALSE(is_terminal(fds[0]));
    EXPECT_FALSE(window_size(fds[0]));
    auto not_a_tty = RawTerminal::enter(fds[0]);
    ASSERT_FALSE(not_a_tty);
    EXPECT_NE(not_a_tty.error().message().find("not a TTY"), std::string::npos);
    ::close(fds[0]);
    ::close(fds[1]);
}

TEST(Terminal, RawModeRestoredByDestructor) {
    Pty pty;
    ASSERT_GE(pty.slave, 0);
    ASSERT_TRUE(canonical(pty.slave));
    {
        auto raw = RawTerminal::enter(pty.slave);
        ASSERT_TRUE(raw) << raw.error().to_string();
        EXPECT_FALSE(canonical(pty.slave));
        // Ctrl-C is a byte in raw mode: ISIG is off.
        struct termios mode {};
        ::tcgetattr(pty.slave, &mode);
        EXPECT_EQ(mode.c_lflag & ISIG, 0U);
    }
    EXPECT_TRUE(canonical(pty.slave));
}

TEST(Terminal, RawModeRestoredWhenKilledBySignal) {
    for (int signal_number : {SIGTERM, SIGHUP}) {
        Pty pty;
        ASSERT_GE(pty.slave, 0);
        int ready[2];
        ASSERT_EQ(::pipe(ready), 0);
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            ::close(ready[0]);
            auto raw = RawTerminal::enter(pty.slave);
            const char ok = raw ? 'y' : 'n';
            [[maybe_unused]] auto w = ::write(ready[1], &ok, 1);
            while (true) ::pause();
        }
        ::close(ready[1]);
        char ok = 0;
        ASSERT_EQ(::read(ready[0], &ok, 1), 1);
        ::close(ready[0]);
        ASSERT_EQ(ok, 'y');
        EXPECT_FALSE(canonical(pty.slave));
        ::kill(child, signal_number);
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status));
        EXPECT_EQ(WTERMSIG(status), signal_number);  // the death is still reported as that signal
        EXPECT_TRUE(canonical(pty.slave)) << "terminal left raw after signal " << signal_number;
    }
}

TEST(Terminal, RawModeRestoredOnExit) {
    Pty pty;
    ASSERT_GE(pty.slave, 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto raw = RawTerminal::enter(pty.slave);
        // std::exit skips the destructor of `raw`; the atexit hook must restore.
        std::exit(raw ? 7 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 7);
    EXPECT_TRUE(canonical(pty.slave));
}

TEST(Terminal, SignalRelayDeliversThroughThePipe) {
    auto relay = SignalRelay::install({SIGWINCH, SIGUSR1});
    ASSERT_TRUE(relay) << relay.error().to_string();
    EXPECT_FALSE(SignalRelay::install({SIGUSR2}));  // one at a time
    ::raise(SIGWINCH);
    ::raise(SIGUSR1);
    ::raise(SIGWINCH);
    EXPECT_EQ(relay->drain(), (std::vector<int>{SIGWINCH, SIGUSR1, SIGWINCH}));
    EXPECT_TRUE(relay->drain().empty());
}

}  // namespace
}  // namespace boxlite::cli
