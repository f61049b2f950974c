// NamespaceEngine: boxes as Linux namespaces on the host kernel — no VM, container-grade isolation.
//
// start() spawns `boxlite-shim namespace …` (lib/shim/namespace_mode.cpp) detached from the
// caller's process tree (double fork, own session), and returns once the shim reports that the
// guest agent, PID 1 of the box's new PID/mount/UTS/IPC/net namespaces, accepts connections on
// <box_dir>/agent.sock. The box root is an overlayfs: lower = the read-only rootfs directory,
// upper/work = <box_dir>/upper and <box_dir>/work, so writes survive stop/start and go with
// the box directory.
//
//   detach=false  the shim watches a pipe whose write end only this process holds; when this
//                 process exits (even by SIGKILL) the pipe closes and the shim kills the box.
//   stop()        asks the agent to shut down (it SIGTERMs every process, waits briefly, exits);
//                 after `timeout` the shim is SIGKILLed, which kills PID 1 (PDEATHSIG) and with
//                 it the whole PID namespace.
//   is_alive()    the shim's pid with the recorded start time exists and is not a zombie.
//   network       only loopback, whatever NetworkSpec's mode says: outbound networking for this
//                 engine is a later issue, and the shim logs a warning saying so. What cannot be
//                 honoured silently — port forwards (BoxOptions::ports) and an allow_net list —
//                 makes start() fail with ErrorKind::Unsupported before anything runs.
//   isolation     capability bounding set, seccomp filter, masked /proc, nodev mounts
//                 (lib/shim/namespace_mode.cpp, docs/namespace-engine.md); SecurityOptions'
//                 jailer_enabled=false keeps all capabilities, seccomp_enabled=false the filter off.
//
// Needs root (CAP_SYS_ADMIN) and overlayfs; available() names what is missing.
#pragma once

#include <boxlite/concepts.hpp>
#include <boxlite/detail/process.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>
#include <boxlite/protocol/client.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include <fmt/ranges.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace boxlite {

namespace detail {

/// Finds a helper binary: $<env_var>, then next to the running executable, then the build
/// tree's bin/ (BOXLITE_BUILD_BIN_DIR), then the install libexec dir.
[[nodiscard]] inline std::optional<std::filesystem::path> locate_helper_binary(std::string_view name,
                                                                                const char* env_var) {
    namespace fs = std::filesystem;
    std::error_code ec;
    auto usable = [&](const fs::path& p) { return !p.empty() && fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0; };
    if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') {
        if (usable(env)) return fs::path(env);
        return std::nullopt;  // an explicit setting that is wrong must not be papered over
    }
    const auto self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec && usable(self.parent_path() / name)) return self.parent_path() / name;
#ifdef BOXLITE_BUILD_BIN_DIR
    if (usable(fs::path(BOXLITE_BUILD_BIN_DIR) / name)) return fs::path(BOXLITE_BUILD_BIN_DIR) / name;
#endif
#ifdef BOXLITE_INSTALL_LIBEXEC_DIR
    if (usable(fs::path(BOXLITE_INSTALL_LIBEXEC_DIR) / name)) return fs::path(BOXLITE_INSTALL_LIBEXEC_DIR) / name;
#endif
    return std::nullopt;
}

/// Write ends of the detach=false watchdog pipes, keyed by shim pid. They are O_CLOEXEC and
/// never written: their only job is to close when this process dies.
struct WatchdogRegistry {
    std::mutex mutex;
    std::map<std::int32_t, int> fds;

    static WatchdogRegistry& instance() {
        static WatchdogRegistry registry;
        return registry;
    }
    void add(std::int32_t pid, int fd) {
        std::lock_guard lock(mutex);
        if (auto it = fds.find(pid); it != fds.end()) ::close(it->second);
        fds[pid] = fd;
    }
    void release(std::int32_t pid) {
        std::lock_guard lock(mutex);
        if (auto it = fds.find(pid); it != fds.end()) {
            ::close(it->second);
            fds.erase(it);
        }
    }
};

/// Removes box cgroups left behind by shims that were SIGKILLed while nobody cleaned up after
/// them (their box records may be gone already). Only empty cgroups untouched for a minute are
/// removed, so a shim that has just created its cgroup and not yet joined it is never raced.
void sweep_stale_cgroups();

}  // namespace detail

class NamespaceEngine {
public:
    struct Settings {
        /// Empty: located with locate_helper_binary("boxlite-shim", "BOXLITE_SHIM").
        std::filesystem::path shim;
        /// Empty: located with locate_helper_binary("boxlite-agent", "BOXLITE_AGENT").
        std::filesystem::path agent;
        std::chrono::milliseconds start_timeout{30000};
    };

    NamespaceEngine() : NamespaceEngine(Settings{}) {}
    explicit NamespaceEngine(Settings settings) : settings_(std::move(settings)) {
        if (settings_.shim.empty()) {
            if (auto p = detail::locate_helper_binary("boxlite-shim", "BOXLITE_SHIM")) settings_.shim = *p;
        }
        if (settings_.agent.empty()) {
            if (auto p = detail::locate_helper_binary("boxlite-agent", "BOXLITE_AGENT")) settings_.agent = *p;
        }
    }

    [[nodiscard]] std::string_view kind() const noexcept { return "namespace"; }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return RootfsKind::Directory; }
    [[nodiscard]] const Settings& settings() const noexcept { return settings_; }

    [[nodiscard]] BoxliteResult<void> available() const;

    BoxliteResult<EngineHandle> start(const EngineLaunch& launch);

    BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds timeout);

    BoxliteResult<void> kill(const EngineHandle& handle);

    [[nodiscard]] bool is_alive(const EngineHandle& handle) const {
        return detail::process_alive(handle.pid, handle.pid_start_time);
    }

    BoxliteResult<EngineMetrics> metrics(const EngineHandle& handle);

    /// What this engine cannot honour, refused rather than ignored.
    [[nodiscard]] static BoxliteResult<void> supports(const BoxConfig& config) {
        const auto& options = config.options;
        if (!options.ports.empty()) {
            return fail(ErrorKind::Unsupported,
                        "port forwarding ({}) is not supported by the namespace engine yet (boxes get loopback only); "
                        "remove the port mappings of box {} or use a VM engine",
                        fmt::format("{}", fmt::join(options.ports, ", ")), config.id);
        }
        if (!options.network.allow_net.empty()) {
            return fail(ErrorKind::Unsupported,
                        "allow_net ({}) is not supported by the namespace engine yet (boxes get loopback only): "
                        "there is no outbound network to restrict; remove allow_net from box {}",
                        fmt::format("{}", fmt::join(options.network.allow_net, ", ")), config.id);
        }
        return {};
    }

private:
    static std::string trim(std::string s) {
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        return s;
    }

    static std::filesystem::path box_dir_of(const EngineHandle& handle) {
        std::string_view endpoint = handle.endpoint;
        if (endpoint.rfind("unix:", 0) == 0) endpoint.remove_prefix(5);
        return std::filesystem::path(std::string(endpoint)).parent_path();
    }

    static std::map<std::string, std::string> cgroup_info(const EngineHandle& handle);

    /// What a SIGKILLed shim could not undo: the socket and the cgroup directories.
    BoxliteResult<void> cleanup(const EngineHandle& handle);

    Settings settings_;
};

static_assert(Engine<NamespaceEngine>);

}  // namespace boxlite
