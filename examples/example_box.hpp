// Shared set-up of the runnable examples (simplebox, lifecycle, list_boxes, cross_process,
// native): a runtime on the namespace engine in a temporary home, and a root filesystem.
//
//   <example>                      temporary home; a busybox rootfs built from /bin/busybox
//   <example> <rootfs-dir>         that directory as every box's root filesystem
//
// The namespace engine needs root; without it (or without busybox-static) the example prints
// "precondition: …" and exits with kSkipExitCode, which ctest reports as skipped
// (SKIP_RETURN_CODE in examples/CMakeLists.txt), as the engine tests (tests/agent) do. As root,
// an engine that cannot run is a failure.
//
// Each example checks what it shows (Checks below): a wrong result prints "FAILED: …" and
// makes the exit code non-zero, so `ctest` tests the output, not just that nothing crashed.
#pragma once

#include <boxlite/boxlite.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

namespace example {

using namespace boxlite;
namespace fs = std::filesystem;

/// The exit code of an example that cannot run here (automake's and ctest's "skipped").
inline constexpr int kSkipExitCode = 77;

inline int report(const BoxliteError& error) {
    fmt::print(stderr, "error: {}\n", error);
    return 1;
}

/// An example's assertions about its own output.
class Checks {
public:
    explicit Checks(std::string name) : name_(std::move(name)) {}

    /// Records `what`; a false `ok` prints "FAILED: what (got …)".
    template <class T>
    void expect_eq(const T& got, const T& want, std::string_view what) {
        if (got == want) return;
        ++failed_;
        fmt::print("FAILED: {} (got {:?}, expected {:?})\n", what, fmt::format("{}", got), fmt::format("{}", want));
    }
    void expect(bool ok, std::string_view what) {
        if (ok) return;
        ++failed_;
        fmt::print("FAILED: {}\n", what);
    }

    /// The example's exit code: 0 with "<name>: ok", or 1.
    [[nodiscard]] int finish() const {
        if (failed_ == 0) {
            fmt::print("{}: ok\n", name_);
            return 0;
        }
        fmt::print("{}: FAILED ({} check{} failed)\n", name_, failed_, failed_ == 1 ? "" : "s");
        return 1;
    }

private:
    std::string name_;
    int failed_ = 0;
};

/// A temporary directory removed at scope exit.
struct Scratch {
    fs::path path;
    Scratch() {
        std::string pattern = (fs::temp_directory_path() / "boxlite-example-XXXXXX").string();
        if (::mkdtemp(pattern.data()) != nullptr) path = pattern;
    }
    ~Scratch() {
        std::error_code ec;
        if (!path.empty()) fs::remove_all(path, ec);
    }
};

/// A minimal busybox root filesystem under `dir` (busybox + applet links + /etc/passwd).
inline std::optional<fs::path> make_busybox_rootfs(const fs::path& dir) {
    const fs::path busybox = fs::exists("/bin/busybox") ? "/bin/busybox" : "/usr/bin/busybox";
    if (!fs::exists(busybox)) return std::nullopt;
    const auto root = dir / "rootfs";
    std::error_code ec;
    for (const char* d : {"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root"}) {
        fs::create_directories(root / d, ec);
    }
    fs::copy_file(busybox, root / "bin/busybox", ec);
    if (ec) return std::nullopt;
    std::string list;
    if (FILE* pipe = ::popen((busybox.string() + " --list-full").c_str(), "r")) {
        char buf[4096];
        while (auto n = std::fread(buf, 1, sizeof buf, pipe)) list.append(buf, n);
        ::pclose(pipe);
    }
    std::size_t pos = 0;
    while (pos < list.size()) {
        auto end = list.find('\n', pos);
        if (end == std::string::npos) end = list.size();
        const auto applet = list.substr(pos, end - pos);
        pos = end + 1;
        if (applet.empty() || applet == "bin/busybox") continue;
        fs::create_directories((root / applet).parent_path(), ec);
        fs::create_symlink("/bin/busybox", root / applet, ec);
    }
    if (FILE* f = std::fopen((root / "etc/passwd").c_str(), "w")) {
        std::fputs("root:x:0:0:root:/root:/bin/sh\n", f);
        std::fclose(f);
    }
    fs::permissions(root / "tmp", fs::perms(01777), ec);
    return root;
}

/// Everything an example needs; `ready == false` means it cannot run (already explained), and
/// `exit_code` is then kSkipExitCode or, for a real error, 1.
struct Setup {
    Scratch scratch;
    std::optional<BoxliteRuntime> runtime;
    fs::path home;
    fs::path rootfs;
    bool ready = false;
    int exit_code = 0;

    BoxOptions box_options() const {
        BoxOptions options;
        options.rootfs = RootfsSpec::path(rootfs);
        return options;
    }
};

inline void setup(Setup& s, int argc, char** argv, const char* name) {
    if (::geteuid() != 0) {
        fmt::print("{}: skipped — precondition: not root (the namespace engine needs namespaces, overlayfs, cgroups)\n",
                   name);
        s.exit_code = kSkipExitCode;
        return;
    }
    s.home = s.scratch.path / "home";
    if (argc > 1) {
        s.rootfs = argv[1];
    } else if (auto rootfs = make_busybox_rootfs(s.scratch.path)) {
        s.rootfs = *rootfs;
    } else {
        fmt::print("{}: skipped — precondition: busybox-static is not installed (and no rootfs was given)\n", name);
        s.exit_code = kSkipExitCode;
        return;
    }
    BoxliteOptions options;
    options.home_dir = s.home;
    options.engine = EngineKind::Namespace;
    auto runtime = open_runtime(options);
    if (!runtime) {
        s.exit_code = report(runtime.error());
        return;
    }
    // Root was the precondition: an engine that still cannot run is a failure, not a skip.
    if (auto ok = runtime->engine().available(); !ok) {
        fmt::print("FAILED: {}: the namespace engine is unavailable even as root: {}\n", name, ok.error());
        s.exit_code = 1;
        return;
    }
    s.runtime.emplace(std::move(*runtime));
    s.ready = true;
}

}  // namespace example
