// The three policies a box is parameterized over, as C++20 concepts.
//
//   template <Engine E, Transport T, Storage S> class BasicRuntime;
//
// Each concept lists its requirements; concepts_tests/ checks good and bad policies against them.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_id.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/engine_handle.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
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
};

/// Everything an engine needs to start a box. The runtime has validated and persisted
/// the config and prepared the root filesystem in the engine's `rootfs_kind()`.
struct EngineLaunch {
    const BoxConfig* config = nullptr;
    std::filesystem::path box_dir;     ///< <home>/boxes/<id>/, exists
    std::filesystem::path rootfs;      ///< directory or ext4 image, read-only, shared between boxes
    /// The image's defaults merged with BoxOptions (entrypoint+cmd, env, working dir, user) — what
    /// the box's main process would run; engines that have no main process may ignore it.
    std::vector<std::string> init_command;
    /// The main process's environment: the image's Env overridden by BoxOptions::env.
    std::vector<std::pair<std::string, std::string>> env;
    /// BoxOptions::working_dir, else the image's WorkingDir, else "/".
    std::string working_dir = "/";
    /// BoxOptions::user, else the image's User; empty = root.
    std::string user;
    /// Where the engine may report what it measured (may be null; an engine that measures
    /// nothing ignores it).
    EngineStartTimings* timings = nullptr;
};

/// Engine-level measurements of one running box.
struct EngineMetrics {
    std::uint64_t memory_bytes = 0;    ///< resident memory of the box (guest or cgroup)
    std::uint64_t cpu_time_ns = 0;     ///< CPU time consumed by the box
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
concept Engine = requires(E& engine, const E& const_engine, const EngineLaunch& launch,
                          const EngineHandle& handle, std::chrono::milliseconds timeout) {
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
// ByteStream: a connected, bidirectional, blocking byte stream to a guest agent.
//
//   read_some(buf)    reads 1..buf.size() bytes; 0 means the peer closed (EOF)
//   write_all(data)   writes every byte or fails
//   shutdown_write()  half-close: the peer reads EOF, we can still read
//   close()           closes both directions; a read_some blocked in another thread returns
//   native_handle()   a pollable file descriptor, or -1
// ---------------------------------------------------------------------------------------------
template <class S>
concept ByteStream = std::movable<S> && requires(S& stream, std::span<std::byte> buffer,
                                                 std::span<const std::byte> data) {
    { stream.read_some(buffer) } -> std::same_as<BoxliteResult<std::size_t>>;
    { stream.write_all(data) } -> std::same_as<BoxliteResult<void>>;
    { stream.shutdown_write() } -> std::same_as<BoxliteResult<void>>;
    { stream.close() } -> std::same_as<void>;
    { stream.native_handle() } -> std::same_as<int>;
};

// ---------------------------------------------------------------------------------------------
// Transport: connects to an agent endpoint (EngineHandle::endpoint) and yields a ByteStream.
//
//   stream_type           the ByteStream it yields
//   connect(ep, timeout)  retries until the agent accepts or `timeout` passes; RpcTransport
//                         error naming the endpoint otherwise; InvalidArgument when the
//                         endpoint's scheme is not this transport's
// ---------------------------------------------------------------------------------------------
template <class T>
concept Transport = requires(T& transport, std::string_view endpoint, std::chrono::milliseconds timeout) {
    typename T::stream_type;
    requires ByteStream<typename T::stream_type>;
    { transport.connect(endpoint, timeout) } -> std::same_as<BoxliteResult<typename T::stream_type>>;
};

/// A box's two records, as Storage returns them.
struct BoxRecord {
    BoxConfig config;
    BoxState state;
};

// ---------------------------------------------------------------------------------------------
// Storage: box config (immutable) + box state (mutable), crash-safe, shared by processes.
//
//   insert(config, state)      AlreadyExists when the id or the name is taken; atomic
//   get(id)                    NotFound when absent
//   lookup(id_or_name)         by exact name, full id, or unique id prefix; NotFound when nothing
//                              matches, InvalidArgument when a prefix is ambiguous
//   list()                     every box, oldest first
//   update_state(id, state)    NotFound when absent
//   update_state_if(id, expected, state)
//                              compare-and-swap: stores `state` only when the stored state still
//                              equals `expected` (operator==), atomically with respect to every
//                              other writer of the same storage, in any process; true when it did,
//                              false when the state had changed, NotFound when absent. Writers that
//                              do not hold the box's lock (a reader noticing a dead engine) use it,
//                              so they never overwrite what a concurrent start() or stop() wrote
//   remove(id)                 NotFound when absent
// ---------------------------------------------------------------------------------------------
template <class S>
concept Storage = requires(S& storage, const BoxConfig& config, const BoxState& state, const BoxID& id,
                           std::string_view id_or_name) {
    { storage.insert(config, state) } -> std::same_as<BoxliteResult<void>>;
    { storage.get(id) } -> std::same_as<BoxliteResult<BoxRecord>>;
    { storage.lookup(id_or_name) } -> std::same_as<BoxliteResult<BoxRecord>>;
    { storage.list() } -> std::same_as<BoxliteResult<std::vector<BoxRecord>>>;
    { storage.update_state(id, state) } -> std::same_as<BoxliteResult<void>>;
    { storage.update_state_if(id, state, state) } -> std::same_as<BoxliteResult<bool>>;
    { storage.remove(id) } -> std::same_as<BoxliteResult<void>>;
};

}  // namespace boxlite
