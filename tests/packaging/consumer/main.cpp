// Consumer of an installed BoxLite, built against the install prefix only.
//
//   consumer <home> <rootfs dir>           create, list, inspect and remove a box on the mock engine
//   consumer <home> <rootfs dir> run       and then run one on the namespace engine: a box whose
//                                          root is <rootfs dir> made here from busybox-static
//                                          execs `echo`; the installed library must find its
//                                          boxlite-shim and boxlite-agent on its own
//
// Prints "consumer ok" on success; with `run` where the namespace engine cannot run (not root),
// "run skipped: <why>" before it.
#include <boxlite/boxlite.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace {

namespace fs = std::filesystem;

int report(const boxlite::BoxliteError& error) {
    fmt::print(stderr, "{}\n", error);
    return 1;
}

/// busybox-static with the few applets the box uses, and the usual mount points.
bool make_busybox_rootfs(const fs::path& root) {
    std::error_code ec;
    fs::path busybox;
    for (const char* candidate : {"/bin/busybox", "/usr/bin/busybox"}) {
        if (fs::exists(candidate, ec)) busybox = candidate;
    }
    if (busybox.empty()) return false;
    for (const char* dir : {"bin", "etc", "proc", "sys", "dev", "tmp", "root"}) fs::create_directories(root / dir, ec);
    fs::copy_file(busybox, root / "bin/busybox", fs::copy_options::overwrite_existing, ec);
    if (ec) return false;
    for (const char* applet : {"sh", "echo", "cat", "true"}) fs::create_symlink("busybox", root / "bin" / applet, ec);
    return true;
}

int run_a_box(const fs::path& home, const fs::path& rootfs) {
    boxlite::BoxliteOptions options;
    options.home_dir = home;
    options.engine = boxlite::EngineKind::Namespace;
    auto runtime = boxlite::open_runtime(options);
    if (!runtime) return report(runtime.error());
    if (::geteuid() != 0) {
        fmt::print("run skipped: the namespace engine needs root\n");
        return 0;
    }
    // As root the engine must be usable: a helper binary the installed library cannot find is
    // exactly what this test is for.
    if (auto ok = runtime->engine().available(); !ok) return report(ok.error());
    if (!make_busybox_rootfs(rootfs)) {
        fmt::print(stderr, "busybox-static is not installed: no rootfs for the box\n");
        return 1;
    }
    boxlite::BoxOptions box_options;
    box_options.rootfs = boxlite::RootfsSpec::path(rootfs);
    box_options.auto_remove = false;  // removed below, after stop
    auto box = runtime->create(box_options, "consumer-run");
    if (!box) return report(box.error());
    auto output = box->run(boxlite::BoxCommand("echo").arg("hello from an installed boxlite"));
    if (!output) return report(output.error());
    if (output->stdout_text != "hello from an installed boxlite\n") {
        fmt::print(stderr, "echo printed '{}'\n", output->stdout_text);
        return 1;
    }
    if (auto stopped = box->stop(); !stopped) return report(stopped.error());
    if (auto removed = runtime->remove("consumer-run"); !removed) return report(removed.error());
    fmt::print("consumer ran a box: {}", output->stdout_text);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3 && !(argc == 4 && std::string(argv[3]) == "run")) {
        std::fprintf(stderr, "usage: consumer <home> <rootfs dir> [run]\n");
        return 2;
    }
    {
        boxlite::BoxliteOptions options;
        options.home_dir = argv[1];
        options.engine = boxlite::EngineKind::Mock;
        auto runtime = boxlite::open_runtime(options);
        if (!runtime) return report(runtime.error());
        boxlite::BoxOptions box_options;
        box_options.rootfs = boxlite::RootfsSpec::path(argv[2]);
        auto box = runtime->create(box_options, "consumer-box");
        if (!box) return report(box.error());
        // Bound first: iterating `*runtime->list_info()` would iterate a destroyed temporary.
        auto infos = runtime->list_info();
        if (!infos || infos->size() != 1) return 1;
        fmt::print("{}\n", infos->front());
        if (auto removed = runtime->remove("consumer-box"); !removed) return report(removed.error());
    }
    if (argc == 4) {
        if (int rc = run_a_box(fs::path(argv[1]) / "run-home", fs::path(argv[2]) / "busybox"); rc != 0) return rc;
    }
    fmt::print("consumer ok (boxlite {})\n", boxlite::version());
    return 0;
}
