// cross_process: a detached box outlives the process that created it; another process finds it
// by name and runs commands in it.
//
//   boxlite_example_cross_process [rootfs-dir]
//   (internally re-runs itself as: boxlite_example_cross_process --attach <home> <name>)
#include "example_box.hpp"

#include <sys/wait.h>

using namespace boxlite;

namespace {

/// The second process: opens the same home, reattaches by name, runs a command.
int attach(const char* home, const char* name) {
    BoxliteOptions options;
    options.home_dir = home;
    options.engine = EngineKind::Namespace;
    auto runtime = open_runtime(options);
    if (!runtime) return example::report(runtime.error());
    auto box = runtime->get(name);
    if (!box) return example::report(box.error());
    fmt::print("[pid {}] reattached to {} ({})\n", ::getpid(), box->id(), box->info()->status);
    auto out = box->run(BoxCommand("cat").arg("/root/from-creator"));
    if (!out) return example::report(out.error());
    fmt::print("[pid {}] read: {}", ::getpid(), out->stdout_text);
    return out->stdout_text == "hello across processes\n" ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "--attach") return attach(argv[2], argv[3]);
    example::Setup s;
    example::setup(s, argc, argv, "cross_process");
    if (!s.ready) return s.exit_code;
    auto& runtime = *s.runtime;

    auto options = s.box_options();
    options.detach = true;  // lives on without this process
    options.auto_remove = false;
    auto box = runtime.create(options, "shared");
    if (!box) return example::report(box.error());
    auto wrote = box->run(BoxCommand("sh").args({"-c", "echo 'hello across processes' > /root/from-creator"}));
    if (!wrote) return example::report(wrote.error());
    fmt::print("[pid {}] created detached box {}\n", ::getpid(), box->id());

    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
        ::execl("/proc/self/exe", argv[0], "--attach", s.home.c_str(), "shared", nullptr);
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    (void)runtime.remove("shared", /*force=*/true);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
