// Test helpers every test may use (link boxlite_test_support): temporary directories and homes,
// a free loopback port, a busybox root filesystem built from Debian's busybox-static, the paths
// of the built helper binaries, and the host preconditions tests skip on.
//
// A test skips only when a precondition is missing (not root, no /dev/kvm, a tool not
// installed, a kernel feature absent), never because set-up failed, and its message starts
// with "precondition: " (scripts/test lists every skip and checks it against
// tests/skip-allowlist.txt).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace boxlite::test {

namespace fs = std::filesystem;

/// A fresh directory, removed with everything in it when the object dies.
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "boxlite-test") {
        std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
        path_ = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    [[nodiscard]] const fs::path& path() const noexcept { return path_; }
    [[nodiscard]] std::string str() const { return path_.string(); }
    /// The path of `name` inside the directory, as a string.
    [[nodiscard]] std::string operator/(const std::string& name) const { return (path_ / name).string(); }

private:
    fs::path path_;
};

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago (the kernel's pick).
inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    ::close(fd);
    if (!ok) throw std::runtime_error("could not bind a port on 127.0.0.1");
    return ntohs(addr.sin_port);
}

/// Sets BOXLITE_HOME to a temporary directory for the object's lifetime.
class TempHome {
public:
    TempHome() : dir_("boxlite-home") {
        if (const char* old = std::getenv("BOXLITE_HOME")) previous_ = old;
        ::setenv("BOXLITE_HOME", dir_.str().c_str(), 1);
    }
    ~TempHome() {
        if (previous_) ::setenv("BOXLITE_HOME", previous_->c_str(), 1);
        else ::unsetenv("BOXLITE_HOME");
    }
    [[nodiscard]] const fs::path& path() const noexcept { return dir_.path(); }

private:
    TempDir dir_;
    std::optional<std::string> previous_;
};

/// Runs a shell command, returns its stdout; throws when it fails.
inline std::string shell(const std::string& command) {
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (status != 0) throw std::runtime_error("command failed (" + std::to_string(status) + "): " + command);
    return out;
}

inline void write_file(const fs::path& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
}

inline std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// A /proc file's bytes, or "" when it cannot be read whole. A process may end between the open
/// and the read (ESRCH), which std::ifstream's stream iterators turn into an exception.
inline std::string read_proc_file(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            out.clear();
            break;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

/// Where Debian's busybox-static lives; nullopt when the package is missing.
inline std::optional<fs::path> busybox_binary() {
    for (const char* candidate : {"/bin/busybox", "/usr/bin/busybox"}) {
        if (fs::exists(candidate)) {
            const auto type = shell(std::string("file -bL ") + candidate + " 2>/dev/null || true");
            if (type.find("statically linked") != std::string::npos || type.find("static-pie") != std::string::npos) {
                return fs::path(candidate);
            }
        }
    }
    return std::nullopt;
}

/// A minimal root filesystem: busybox with every applet linked, /etc/passwd and /etc/group
/// (root, nobody and a "box" user 1000), and the usual empty mount points. Built once per machine
/// under the temp directory and shared read-only (it is only ever an overlay lower layer).
/// Returns nullopt when busybox-static is not installed.
inline std::optional<fs::path> busybox_rootfs() {
    static const std::optional<fs::path> cached = []() -> std::optional<fs::path> {
        const auto busybox = busybox_binary();
        if (!busybox) return std::nullopt;
        const fs::path root = fs::temp_directory_path() / ("boxlite-busybox-rootfs-v1-" + std::to_string(::getuid()));
        if (fs::exists(root / ".complete")) return root;
        // Build next to it and rename, so concurrent test processes never see a half-made tree.
        TempDir staging("boxlite-rootfs-staging");
        const auto tree = staging.path() / "rootfs";
        for (const char* dir : {"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
                                "home/box", "var/tmp", "mnt"}) {
            fs::create_directories(tree / dir);
        }
        fs::copy_file(*busybox, tree / "bin/busybox");
        fs::permissions(tree / "bin/busybox", fs::perms(0755));
        std::istringstream applets(shell(busybox->string() + " --list-full"));
        std::string applet;
        while (std::getline(applets, applet)) {
            if (applet.empty() || applet == "bin/busybox") continue;
            const auto link = tree / applet;
            fs::create_directories(link.parent_path());
            std::error_code ec;
            fs::create_symlink("/bin/busybox", link, ec);
        }
        write_file(tree / "etc/passwd",
                   "root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1000:box:/home/box:/bin/sh\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
        write_file(tree / "etc/group", "root:x:0:\nbox:x:1000:\nnogroup:x:65534:\n");
        write_file(tree / "etc/hostname", "busybox\n");
        fs::permissions(tree / "tmp", fs::perms(01777));
        ::chown((tree / "home/box").c_str(), 1000, 1000);
        write_file(tree / ".complete", "");
        std::error_code ec;
        fs::rename(tree, root, ec);  // loses the race harmlessly if another process won
        if (!fs::exists(root / ".complete"))
            throw std::runtime_error("could not build the busybox rootfs at " + root.string());
        return root;
    }();
    return cached;
}

/// The build directory's bin/ (agent and shim), baked in by tests/support/CMakeLists.txt.
inline fs::path built_binary(const std::string& name) {
#ifdef BOXLITE_TEST_BIN_DIR
    return fs::path(BOXLITE_TEST_BIN_DIR) / name;
#else
    return fs::path(name);
#endif
}

inline bool is_root() { return ::geteuid() == 0; }

/// Whether `tool` is on PATH.
inline bool have_tool(const std::string& tool) {
    return std::system(("command -v '" + tool + "' >/dev/null 2>&1").c_str()) == 0;
}

/// Why this host cannot limit a box's memory, pids and CPU through cgroups, or "" when it can.
/// Judged from the host alone (the kernel's cgroup mounts), never from what the product
/// reports: a pure cgroup v2 host lists memory, pids and cpu in /sys/fs/cgroup/cgroup.controllers;
/// a hybrid v1 host mounts /sys/fs/cgroup/{memory,pids,cpu} writable.
inline std::string cgroup_limits_unsupported_reason() {
    if (!is_root()) return "precondition: not root (creating cgroups needs root)";
    const std::string controllers = read_file("/sys/fs/cgroup/cgroup.controllers");
    if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
        for (const char* c : {"memory", "pids", "cpu"}) {
            if (controllers.find(c) == std::string::npos)
                return std::string("precondition: cgroup v2 without the ") + c + " controller";
        }
        if (::access("/sys/fs/cgroup", W_OK) != 0) return "precondition: /sys/fs/cgroup is not writable";
        return {};
    }
    for (const char* c : {"memory", "pids", "cpu"}) {
        const std::string dir = std::string("/sys/fs/cgroup/") + c;
        if (!fs::exists(dir + "/cgroup.procs"))
            return "precondition: no cgroup v2 hierarchy and no cgroup v1 " + std::string(c) + " hierarchy";
        if (::access(dir.c_str(), W_OK) != 0) return "precondition: " + dir + " is not writable";
    }
    return {};
}

}  // namespace boxlite::test
