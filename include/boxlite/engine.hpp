// The Engine concept and its value types: what turns a stored box config plus a prepared root
// filesystem into a running box. A runtime is parameterized over one (BasicRuntime<E, T, S>);
// concepts_tests/ checks good and bad engines against it.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite {

/// The form of root filesystem an engine boots from.
enum class RootfsKind : std::uint8_t {
    Directory,  ///< an unpacked tree (namespace engine: overlayfs lower layer)
    Ext4Disk,   ///< a raw ext4 image (VM engines: base of the box's QCOW2 overlay)
};

/// What an engine measured while starting a box, for BoxMetrics; nullopt = not measured.
struct EngineStartTimings {
    /// The guest starting up: from the VM's first instruction (or the namespace init's exec)
    /// until the guest agent accepts connections.
    std::optional<std::chrono::nanoseconds> guest_boot;
    /// The guest setting up the container (mounts, pivot into the image root) inside that.
    std::optional<std::chrono::nanoseconds> container_init;
    /// VM engines: finding (or making, the first time) the guest kernel and initramfs.
    std::optional<std::chrono::nanoseconds> guest_assets;
    /// VM engines: creating or growing the box's disk overlay.
    std::optional<std::chrono::nanoseconds> disk;
};

/// Everything an engine needs to start a box. The runtime has validated and persisted
/// the config and prepared the root filesystem in the engine's `rootfs_kind()`.
struct EngineLaunch {
    const BoxConfig* config = nullptr;
    std::filesystem::path box_dir;  ///< <home>/boxes/<id>/, exists
    std::filesystem::path rootfs;   ///< directory or ext4 image, read-only, shared between boxes
    /// The image's defaults merged with BoxOptions (entrypoint+cmd, env, working dir, user) — what
    /// the box's main process would run; engines that have no main process may ignore it.
    std::vector<std::string> init_command;
    /// The main process's environment: the image's Env overridden by BoxOptions::env.
    std::vector<std::pair<std::string, std::string>> env;
    /// BoxOptions::working_dir, else the image's WorkingDir, else "/".
    std::string working_dir = "/";
    /// BoxOptions::user, else the image's User; empty = root.
    std::string user;
    /// BoxliteOptions::kernel: the guest kernel of VM engines (empty: their search order).
    std::filesystem::path kernel;
    /// Where the engine may report what it measured (may be null; an engine that measures
    /// nothing ignores it).
    EngineStartTimings* timings = nullptr;
    /// Records the box as running (the runtime persists Running + `handle`), called by an engine
    /// that supports it once the box runs and before the box is told it may stay: a box whose
    /// starter dies (kill -9) before this returns, or for which it fails, ends itself, so no box
    /// ever runs that storage does not know. Empty, or not called: the runtime records the box
    /// after start() returns.
    std::function<BoxliteResult<void>(const EngineHandle& handle)> record_started;
    /// The descriptor of the box's lock file, flock'ed by the starting process (or -1). An engine
    /// that calls record_started may hand it to the box's process until then: a starter killed
    /// half-way then leaves the box locked until that process has ended itself, so nobody
    /// (`rm`, say) works on the box while it is still being set up.
    int box_lock_fd = -1;
    /// Where the box's logs on the host rotate (BoxliteOptions::log_max_bytes); unset: the
    /// engine's own default.
    std::optional<std::uint64_t> log_max_bytes;
};

/// Engine-level measurements of one running box.
struct EngineMetrics {
    std::uint64_t memory_bytes = 0;  ///< resident memory of the box (guest or cgroup)
    std::uint64_t cpu_time_ns = 0;   ///< CPU time consumed by the box
    std::uint32_t process_count = 0;
};

// ---------------------------------------------------------------------------------------------
// Engine: turns a stored box config plus a prepared rootfs into a running box.
//
//   kind()            the engine's name, stored in BoxConfig::engine ("namespace", "kvm", ...)
//   rootfs_kind()     which form of rootfs start() expects
//   available()       void, or UnsupportedEngine saying why this host cannot run it (fast)
//   start(launch)     runs the box; returns once the guest agent accepts connections at
//                     the returned handle's endpoint
//   stop(h, timeout)  graceful shutdown, then forceful after `timeout`; idempotent
//   kill(h)           immediate forceful stop; idempotent
//   is_alive(h)       the engine process behind h still exists (pid and start time match)
//   metrics(h)        EngineMetrics of the running box
// ---------------------------------------------------------------------------------------------
template <class E>
concept Engine = requires(E& engine, const E& const_engine, const EngineLaunch& launch, const EngineHandle& handle,
                          std::chrono::milliseconds timeout) {
    { const_engine.kind() } -> std::convertible_to<std::string_view>;
    { const_engine.rootfs_kind() } -> std::same_as<RootfsKind>;
    { const_engine.available() } -> std::same_as<BoxliteResult<void>>;
    { engine.start(launch) } -> std::same_as<BoxliteResult<EngineHandle>>;
    { engine.stop(handle, timeout) } -> std::same_as<BoxliteResult<void>>;
    { engine.kill(handle) } -> std::same_as<BoxliteResult<void>>;
    { const_engine.is_alive(handle) } -> std::same_as<bool>;
    { engine.metrics(handle) } -> std::same_as<BoxliteResult<EngineMetrics>>;
};

// ---------------------------------------------------------------------------------------------
// PerKindEngine: an Engine that can also hand out an engine of another kind, so that one runtime
// drives boxes of every engine in one home (a box keeps the engine it was created with).
//
//   engine_for(kind)  an engine whose kind() is `kind` ("namespace", "kvm", ...), or an error
//                     saying why that engine cannot be made here (UnsupportedEngine)
//
// The runtime (detail/runtime_core.hpp) detects it: it asks engine_for() once per kind, when a
// box of that kind is first driven, and keeps the result. For an Engine without it, a box of
// another kind cannot be started ("created for the X engine, but this runtime runs the Y engine").
// AnyEngine models it when made by select_engine() (engine/select.hpp).
// ---------------------------------------------------------------------------------------------
template <class E>
concept PerKindEngine = Engine<E> && requires(const E& engine, std::string_view kind) {
    { engine.engine_for(kind) } -> std::same_as<BoxliteResult<E>>;
};

}  // namespace boxlite
