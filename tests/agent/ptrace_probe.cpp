// Run inside a box by limits_test.cpp: tries PTRACE_ATTACH on the pid it is given and prints
// "attached" or "refused <errno name>". Static, so it runs in any box root.
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fputs("usage: ptrace_probe PID\n", stderr);
        return 2;
    }
    const auto pid = static_cast<pid_t>(std::atoi(argv[1]));
    if (::ptrace(PTRACE_ATTACH, pid, nullptr, nullptr) != 0) {
        std::printf("refused %s\n", errno == EPERM ? "EPERM" : std::strerror(errno));
        return 1;
    }
    ::waitpid(pid, nullptr, __WALL);
    ::ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
    // The attach's SIGSTOP can still be pending here: the first stop waited for may have been
    // another (the target's execve, when it was attached to between fork and exec). Delivered
    // after the detach, it would stop the target for good, and the test's `kill` (SIGTERM) would
    // stay pending on it. SIGCONT discards a pending stop and continues a stopped process.
    ::kill(pid, SIGCONT);
    std::puts("attached");
    return 0;
}
