// cross_process: a detached box outlives the process that created it; another process, started
// after the creator has exited, finds it by name and runs commands in it.
//
//   boxlite_example_cross_process [rootfs-dir]
//   (internally runs itself twice: --create <home> <rootfs>, then --attach <home> <creator-pid>)
//
// Three processes: this one only orchestrates; the creator makes the box, writes a file in it and
// exits; only then is the attacher started, which reattaches by name and reads the file back.
#include "example_box.hpp"

#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <vector>

using namespace boxlite;

namespace {

constexpr const char* kName = "shared";
constexpr const char* kMessage = "hello across processes\n";

BoxliteResult<BoxliteRuntime> open_home(const char* home) {
    BoxliteOptions options;
    options.home_dir = home;
    options.engine = EngineKind::Namespace;
    return open_runtime(options);
}

/// The first process: creates a detached box, leaves a file in it, and exits normally.
int create(const char* home, const char* rootfs) {
    auto runtime = open_home(home);
    if (!runtime) return example::report(runtime.error());
    BoxOptions options;
    options.rootfs = RootfsSpec::path(rootfs);
    options.detach = true;  // lives on without this process
    options.auto_remove = false;
    auto box = runtime->create(options, kName);
    if (!box) return example::report(box.error());
    auto wrote = box->run(BoxCommand("sh").args({"-c", fmt::format("printf '{}' > /root/from-creator", kMessage)}));
    if (!wrote) return example::report(wrote.error());
    if (wrote->exit_code != 0) return 1;
    fmt::print("[pid {}] created detached box {} and exits now\n", ::getpid(), box->id());
    return 0;
}

/// The second process, started after the creator is gone: reattaches by name, reads the file.
int attach(const char* home, pid_t creator) {
    example::Checks checks("cross_process (attacher)");
    checks.expect(::kill(creator, 0) != 0 && errno == ESRCH, "the creator has exited before the attacher runs");
    auto runtime = open_home(home);
    if (!runtime) return example::report(runtime.error());
    auto box = runtime->get(kName);
    if (!box) return example::report(box.error());
    auto info = box->info();
    if (!info) return example::report(info.error());
    fmt::print("[pid {}] reattached to {} ({}) — its creator, pid {}, is gone\n", ::getpid(), box->id(), info->status,
               creator);
    checks.expect_eq(info->status, BoxStatus::Running, "the detached box outlived its creator");
    auto out = box->run(BoxCommand("cat").arg("/root/from-creator"));
    if (!out) return example::report(out.error());
    fmt::print("[pid {}] read: {}", ::getpid(), out->stdout_text);
    checks.expect_eq(out->stdout_text, std::string(kMessage), "the creator's file");
    return checks.finish();
}

/// Runs this program again with `args` and waits for it: (pid, exit code or -signal).
std::pair<pid_t, int> run_self(const char* argv0, std::vector<std::string> args) {
    std::fflush(stdout);
    std::vector<char*> argv{const_cast<char*>(argv0)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t child = ::fork();
    if (child == 0) {
        ::execv("/proc/self/exe", argv.data());
        ::_exit(127);
    }
    int status = 0;
    if (child < 0 || ::waitpid(child, &status, 0) != child) return {child, -1};
    return {child, WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status)};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "--create") return create(argv[2], argv[3]);
    if (argc == 4 && std::string(argv[1]) == "--attach") return attach(argv[2], static_cast<pid_t>(std::stol(argv[3])));
    example::Setup s;
    example::setup(s, argc, argv, "cross_process");
    if (!s.ready) return s.exit_code;
    example::Checks checks("cross_process");

    const auto [creator, created] = run_self(argv[0], {"--create", s.home.string(), s.rootfs.string()});
    fmt::print("[pid {}] the creator (pid {}) exited with {}\n", ::getpid(), creator, created);
    checks.expect_eq(created, 0, "the creator's exit code");
    if (created == 0) {
        const auto [attacher, attached] = run_self(argv[0], {"--attach", s.home.string(), std::to_string(creator)});
        fmt::print("[pid {}] the attacher (pid {}) exited with {}\n", ::getpid(), attacher, attached);
        checks.expect_eq(attached, 0, "the attacher's exit code");
    }
    (void)s.runtime->remove(kName, /*force=*/true);
    return checks.finish();
}
