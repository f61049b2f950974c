#include "base/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::base {
namespace {

/// The child's side, after fork: async-signal-safe calls only.
[[noreturn]] void exec_child(const SpawnOptions& options, char* const* argv, int target_count, pid_t parent) {
    if (options.kill_with_parent && !options.detach) {
        // The parent may have died between fork and here: then no signal would ever come.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(126);
    }
    // A detached child is already in the session its intermediate parent made (and must not lead
    // one: a session leader that opens a terminal would acquire it).
    if (options.new_session && !options.detach) ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Every source is first copied above the targets, without O_CLOEXEC: a source that already
    // sits on its target would make dup2 a no-op that keeps close-on-exec, and a source on
    // another's target would be clobbered.
    constexpr int kMaxTargets = 64;
    int moved[kMaxTargets];
    for (int target = 0; target < target_count; ++target) {
        const int source = options.fds[static_cast<std::size_t>(target)];
        moved[target] = source >= 0 ? ::fcntl(source, F_DUPFD, target_count) : -1;
        if (source >= 0 && moved[target] < 0) ::_exit(126);
    }
    for (int target = 0; target < target_count; ++target) {
        if (moved[target] >= 0) {
            if (::dup2(moved[target], target) != target) ::_exit(126);
        } else {
            ::close(target);
        }
    }
    ::close_range(static_cast<unsigned>(target_count), ~0U, 0);
    ::execv(argv[0], argv);
    if (options.exec_failure_fd >= 0 && !options.exec_failure_line.empty()) {
        [[maybe_unused]] auto n = ::write(options.exec_failure_fd, options.exec_failure_line.data(),
                                          options.exec_failure_line.size());
    }
    ::_exit(127);
}

}  // namespace

BoxliteResult<std::int32_t> spawn(const SpawnOptions& options) {
    if (options.argv.empty()) return fail(ErrorKind::InvalidArgument, "spawn: empty argv");
    if (options.fds.size() > 64) return fail(ErrorKind::InvalidArgument, "spawn: more than 64 descriptors to hand on");
    // Everything the child needs exists before fork.
    std::vector<std::string> args = options.argv;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int target_count = static_cast<int>(options.fds.size());

    // With `detach`, the intermediate child reports its fork's result on this pipe, and that report
    // (not its exit status) is what counts: a tool that hooks process exit, such as valgrind's leak
    // check in a forked child of a threaded program, may change the status of a child that did its
    // job.
    int report[2] = {-1, -1};
    if (options.detach && ::pipe2(report, O_CLOEXEC) != 0) {
        return fail_errno(ErrorKind::Engine, "pipe for " + options.argv.front(), errno);
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        const int error = errno;
        if (options.detach) {
            ::close(report[0]);
            ::close(report[1]);
        }
        return fail_errno(ErrorKind::Engine, "fork for " + options.argv.front(), error);
    }
    if (pid == 0) {
        if (options.detach) {
            if (options.new_session) ::setsid();
            const pid_t grandchild = ::fork();
            if (grandchild != 0) {
                const int result = grandchild > 0 ? 0 : errno;
                [[maybe_unused]] auto n = ::write(report[1], &result, sizeof result);
                ::_exit(0);  // the report says how it went; the status is not read
            }
        }
        exec_child(options, argv.data(), target_count, parent);
    }
    if (!options.detach) return pid;
    ::close(report[1]);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
    int result = -1;
    ssize_t got = -1;
    do {
        got = ::read(report[0], &result, sizeof result);
    } while (got < 0 && errno == EINTR);
    ::close(report[0]);
    if (got != static_cast<ssize_t>(sizeof result)) {
        return fail(ErrorKind::Engine, "fork for {} (detached) failed: the intermediate process ended without a word",
                    options.argv.front());
    }
    if (result != 0) return fail_errno(ErrorKind::Engine, "fork for " + options.argv.front() + " (detached)", result);
    return 0;
}

}  // namespace boxlite::base
