// A second process for the namespace tests: creates boxes and exits abruptly, or reattaches.
//   boxlite_agent_test_helper start-attached <home> <rootfs>   prints "<id> <shim-pid>", _exit(0)
//   boxlite_agent_test_helper start-detached <home> <rootfs>   same with detach=true
//   boxlite_agent_test_helper exec <home> <id> <program> [args...]   prints the command's stdout
#include <boxlite/boxlite.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>

using namespace boxlite;

int main(int argc, char** argv) {
    if (argc < 4) return 2;
    const std::string mode = argv[1];
    BoxliteOptions options;
    options.home_dir = argv[2];
    options.engine = EngineKind::Namespace;
    auto runtime = open_runtime(options);
    if (!runtime) {
        std::fprintf(stderr, "%s\n", runtime.error().to_string().c_str());
        return 1;
    }
    if (mode == "exec") {
        if (argc < 5) return 2;
        auto box = runtime->get(argv[3]);
        if (!box) return 1;
        BoxCommand command(argv[4]);
        for (int i = 5; i < argc; ++i) command.arg(argv[i]);
        auto out = box->run(command);
        if (!out) {
            std::fprintf(stderr, "%s\n", out.error().to_string().c_str());
            return 1;
        }
        std::fwrite(out->stdout_text.data(), 1, out->stdout_text.size(), stdout);
        return out->exit_code;
    }
    BoxOptions box_options;
    box_options.rootfs = RootfsSpec::path(argv[3]);
    box_options.auto_remove = false;
    box_options.detach = mode == "start-detached";
    auto box = runtime->create(box_options);
    if (!box) return 1;
    auto out = box->run(BoxCommand("sh").args({"-c", "echo 'written by the creator' > /root/marker"}));
    if (!out || out->exit_code != 0) return 1;
    std::printf("%s %d\n", box->id().str().c_str(), box->info()->pid.value_or(0));
    std::fflush(stdout);
    // No destructors: as if the process crashed. Only the kernel closing our fds remains.
    ::_exit(0);
}
