// NamespaceEngine: boxes as Linux namespaces on the host kernel — no VM, container-grade isolation.
//
// start() spawns `boxlite-shim namespace …` (lib/shim/namespace_mode.cpp) detached from the
// caller's process tree (double fork, own session), and returns once the shim reports that the
// guest agent, PID 1 of the box's new PID/mount/UTS/IPC/net namespaces, accepts connections on
// <box_dir>/agent.sock. The box root is an overlayfs: lower = the read-only rootfs directory,
// upper/work = <box_dir>/upper and <box_dir>/work, so writes survive stop/start and go with
// the box directory. With BoxOptions::disk_size_gb they are on <box_dir>/disk.ext4 instead, a
// sparse ext4 image of that size loop-mounted in the box's own mount namespace (writing past
// it is ENOSPC); without a loop device or mkfs.ext4 such a box is refused (Unsupported).
//
//   detach=false  the shim watches a pipe whose write end only this process holds; when this
//                 process exits (even by SIGKILL) the pipe closes and the shim kills the box.
//   stop()        asks the agent to shut down (it SIGTERMs every process, waits briefly, exits);
//                 after `timeout` the shim is SIGKILLed, which kills PID 1 (PDEATHSIG) and with
//                 it the whole PID namespace.
//   is_alive()    the shim's pid with the recorded start time exists and is not a zombie.
//   network       NetworkMode::Enabled: eth0 (a tap made in the box's netns) pumped by the shim
//                 through the egress firewall (allow_net) to a passt it starts; Disabled:
//                 loopback only (docs/networking.md). Port forwards (BoxOptions::ports) are
//                 passt's -t/-u; a host port already taken is a Config error at start.
//   isolation     capability bounding set, seccomp filter, masked /proc, nodev mounts
//                 (lib/shim/namespace_mode.cpp, docs/namespace-engine.md); SecurityOptions'
//                 jailer_enabled=false keeps all capabilities, seccomp_enabled=false the filter off.
//
// Needs root (CAP_SYS_ADMIN) and overlayfs; available() names what is missing. The members are
// compiled in lib/engine/namespace/ (engine.cpp, probe.cpp, launch.cpp).
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace boxlite {

struct NamespaceEngineOptions {
    /// The boxlite-shim executable; empty: $BOXLITE_SHIM, next to the running program, the build
    /// tree's bin/, then <libdir>/../libexec/boxlite/. A path given here or in the environment
    /// that is not an executable file makes available() fail naming it.
    std::filesystem::path shim;
    /// The boxlite-agent executable; empty: $BOXLITE_AGENT, then the same places.
    std::filesystem::path agent;
    std::chrono::milliseconds start_timeout{30000};
    /// agent.log (the agent's stdout and stderr) rotates to agent.log.1 when it reaches this
    /// size, so a box costs the host at most twice this much log.
    std::uint64_t log_max_bytes = std::uint64_t{4} << 20;
};

class NamespaceEngine {
public:
    NamespaceEngine();
    explicit NamespaceEngine(NamespaceEngineOptions options);

    [[nodiscard]] std::string_view kind() const noexcept { return "namespace"; }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return RootfsKind::Directory; }
    [[nodiscard]] BoxliteResult<void> available() const;
    BoxliteResult<EngineHandle> start(const EngineLaunch& launch);
    BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds timeout);
    BoxliteResult<void> kill(const EngineHandle& handle);
    [[nodiscard]] bool is_alive(const EngineHandle& handle) const;
    BoxliteResult<EngineMetrics> metrics(const EngineHandle& handle);

    /// Ports on a disabled network, and an allow_net list the firewall cannot parse (Config).
    [[nodiscard]] static BoxliteResult<void> supports(const BoxConfig& config);

    /// The options, with the helper binaries located (empty where they were not found).
    [[nodiscard]] const NamespaceEngineOptions& options() const noexcept { return options_; }

private:
    NamespaceEngineOptions options_;
    /// Why a helper binary was not found (empty when both were).
    std::string missing_helpers_;
};

static_assert(Engine<NamespaceEngine>);

}  // namespace boxlite
