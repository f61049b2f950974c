#include "base/spawn.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
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
    // The caller's handlers must not run here (this process may share the caller's memory, see
    // spawn()), and a signal blocked until now may arrive as soon as the mask is cleared.
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction action {};
        if (::sigaction(sig, nullptr, &action) != 0) continue;
        if (action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN) continue;
        action = {};
        action.sa_handler = SIG_DFL;
        ::sigaction(sig, &action, nullptr);
    }
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

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kShareMemoryUntilExec = false;  // the sanitizers' runtimes expect fork()
#else
constexpr bool kShareMemoryUntilExec = true;
#endif

/// What the processes made by spawn() read from the caller's memory, which they share until
/// their exec (clone with CLONE_VM | CLONE_VFORK, as posix_spawn does): no copy of the caller's
/// page tables, which for a large process such as the CLI cost more than the exec itself.
struct Shared {
    const SpawnOptions* options;
    char* const* argv;
    int target_count;
    pid_t parent;
    char* program_stack;  ///< top of the stack of the program's process (detach)
    int fork_error;       ///< written by the intermediate process (detach)
};

int program_main(void* arg) {
    auto* shared = static_cast<Shared*>(arg);
    exec_child(*shared->options, shared->argv, shared->target_count, shared->parent);
}

/// The intermediate process of a detached spawn: makes the program's process, which it leaves
/// to init as it exits. Suspended until that process has exec'd (CLONE_VFORK), as the caller is
/// until this one has exited.
int intermediate_main(void* arg) {
    auto* shared = static_cast<Shared*>(arg);
    if (shared->options->new_session) ::setsid();
    const int pid = ::clone(program_main, shared->program_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, shared);
    shared->fork_error = pid > 0 ? 0 : errno;
    ::_exit(0);
}

/// A stack for a process made with CLONE_VM (it must not run on the caller's).
class ChildStacks {
public:
    explicit ChildStacks(int count) : size_(static_cast<std::size_t>(count) * kStack) {
        base_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (base_ == MAP_FAILED) base_ = nullptr;
    }
    ~ChildStacks() {
        if (base_ != nullptr) ::munmap(base_, size_);
    }
    ChildStacks(const ChildStacks&) = delete;
    ChildStacks& operator=(const ChildStacks&) = delete;
    [[nodiscard]] bool valid() const noexcept { return base_ != nullptr; }
    /// The top of stack `i` (stacks grow down).
    [[nodiscard]] char* top(int i) const noexcept {
        return static_cast<char*>(base_) + (static_cast<std::size_t>(i) + 1) * kStack;
    }

private:
    static constexpr std::size_t kStack = 64 * 1024;
    void* base_ = nullptr;
    std::size_t size_ = 0;
};

/// All signals blocked in the calling thread for its lifetime: a process made with CLONE_VM
/// must not run the caller's handlers before it has reset them (exec_child).
class BlockAllSignals {
public:
    BlockAllSignals() {
        sigset_t all;
        sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
    }
    ~BlockAllSignals() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
    BlockAllSignals(const BlockAllSignals&) = delete;
    BlockAllSignals& operator=(const BlockAllSignals&) = delete;

private:
    sigset_t saved_{};
};

/// spawn() with the program's process (and the intermediate one) sharing the caller's memory
/// until exec. Returns the child's pid (not detached), 0 (detached), or -1 with errno.
pid_t spawn_sharing_memory(const SpawnOptions& options, char* const* argv, int target_count) {
    ChildStacks stacks(options.detach ? 2 : 1);
    if (!stacks.valid()) return -1;
    Shared shared{&options, argv, target_count, ::getpid(), options.detach ? stacks.top(1) : nullptr, 0};
    const BlockAllSignals blocked;
    if (!options.detach) return ::clone(program_main, stacks.top(0), CLONE_VM | CLONE_VFORK | SIGCHLD, &shared);
    const int intermediate = ::clone(intermediate_main, stacks.top(0), CLONE_VM | CLONE_VFORK | SIGCHLD, &shared);
    if (intermediate < 0) return -1;
    while (::waitpid(intermediate, nullptr, 0) < 0 && errno == EINTR) {}
    if (shared.fork_error != 0) {
        errno = shared.fork_error;
        return -1;
    }
    return 0;
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
    if constexpr (kShareMemoryUntilExec) {
        const pid_t pid = spawn_sharing_memory(options, argv.data(), target_count);
        if (pid < 0) {
            return fail_errno(ErrorKind::Engine,
                              "fork for " + options.argv.front() + (options.detach ? " (detached)" : ""), errno);
        }
        return pid;
    }

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
