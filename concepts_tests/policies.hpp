// Minimal policies for the concept tests: one that satisfies each concept, and variants that
// each break exactly one requirement. A variant is the good policy minus one thing, so a
// failing static_assert points at that one thing.
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/storage.hpp>
#include <boxlite/transport.hpp>
#include <boxlite/transport/fd_stream.hpp>

#include <chrono>
#include <span>
#include <string_view>
#include <vector>

namespace boxlite::concept_tests {

// --- engines -------------------------------------------------------------------------------

struct GoodEngine {
    std::string_view kind() const { return "good"; }
    RootfsKind rootfs_kind() const { return RootfsKind::Directory; }
    BoxliteResult<void> available() const { return {}; }
    BoxliteResult<EngineHandle> start(const EngineLaunch&) { return EngineHandle{}; }
    BoxliteResult<void> stop(const EngineHandle&, std::chrono::milliseconds) { return {}; }
    BoxliteResult<void> kill(const EngineHandle&) { return {}; }
    bool is_alive(const EngineHandle&) const { return false; }
    BoxliteResult<EngineMetrics> metrics(const EngineHandle&) { return EngineMetrics{}; }
};

/// A GoodEngine that also makes engines of other kinds (PerKindEngine).
struct GoodPerKindEngine : GoodEngine {
    BoxliteResult<GoodPerKindEngine> engine_for(std::string_view) const { return GoodPerKindEngine{}; }
};

/// engine_for() that yields another type than the engine's own.
struct EngineForOtherType : GoodEngine {
    BoxliteResult<GoodEngine> engine_for(std::string_view) const { return GoodEngine{}; }
};

/// No kill().
struct EngineWithoutKill {
    std::string_view kind() const { return "bad"; }
    RootfsKind rootfs_kind() const { return RootfsKind::Directory; }
    BoxliteResult<void> available() const { return {}; }
    BoxliteResult<EngineHandle> start(const EngineLaunch&) { return EngineHandle{}; }
    BoxliteResult<void> stop(const EngineHandle&, std::chrono::milliseconds) { return {}; }
    bool is_alive(const EngineHandle&) const { return false; }
    BoxliteResult<EngineMetrics> metrics(const EngineHandle&) { return EngineMetrics{}; }
};

/// start() returns a bare handle instead of BoxliteResult<EngineHandle>.
struct EngineWithPlainStart : GoodEngine {
    EngineHandle start(const EngineLaunch&) { return EngineHandle{}; }
};

/// is_alive() is not const: the runtime probes liveness through a const engine.
struct EngineWithMutableIsAlive {
    std::string_view kind() const { return "bad"; }
    RootfsKind rootfs_kind() const { return RootfsKind::Directory; }
    BoxliteResult<void> available() const { return {}; }
    BoxliteResult<EngineHandle> start(const EngineLaunch&) { return EngineHandle{}; }
    BoxliteResult<void> stop(const EngineHandle&, std::chrono::milliseconds) { return {}; }
    BoxliteResult<void> kill(const EngineHandle&) { return {}; }
    bool is_alive(const EngineHandle&) { return false; }
    BoxliteResult<EngineMetrics> metrics(const EngineHandle&) { return EngineMetrics{}; }
};

/// rootfs_kind() returns a string.
struct EngineWithStringRootfsKind : GoodEngine {
    std::string_view rootfs_kind() const { return "directory"; }
};

// --- streams and transports ----------------------------------------------------------------

struct GoodTransport {
    using stream_type = FdStream;
    BoxliteResult<FdStream> connect(std::string_view, std::chrono::milliseconds) { return FdStream{}; }
};

/// No stream_type.
struct TransportWithoutStreamType {
    BoxliteResult<FdStream> connect(std::string_view, std::chrono::milliseconds) { return FdStream{}; }
};

/// A stream without shutdown_write().
struct StreamWithoutShutdown {
    BoxliteResult<std::size_t> read_some(std::span<std::byte>) { return std::size_t{0}; }
    BoxliteResult<void> write_all(std::span<const std::byte>) { return {}; }
    void close() {}
    int native_handle() { return -1; }
};

struct TransportWithBadStream {
    using stream_type = StreamWithoutShutdown;
    BoxliteResult<StreamWithoutShutdown> connect(std::string_view, std::chrono::milliseconds) { return {}; }
};

/// connect() without a timeout.
struct TransportWithoutTimeout {
    using stream_type = FdStream;
    BoxliteResult<FdStream> connect(std::string_view) { return FdStream{}; }
};

// --- storage -------------------------------------------------------------------------------

struct GoodStorage {
    BoxliteResult<void> insert(const BoxConfig&, const BoxState&) { return {}; }
    BoxliteResult<BoxRecord> get(const BoxID&) { return fail(ErrorKind::NotFound, "x"); }
    BoxliteResult<BoxRecord> lookup(std::string_view) { return fail(ErrorKind::NotFound, "x"); }
    BoxliteResult<std::vector<BoxRecord>> list() { return std::vector<BoxRecord>{}; }
    BoxliteResult<void> update_state(const BoxID&, const BoxState&) { return {}; }
    BoxliteResult<bool> update_state_if(const BoxID&, const BoxState&, const BoxState&) { return true; }
    BoxliteResult<void> remove(const BoxID&, RemoveSync = RemoveSync::Durable) { return {}; }
};

/// No lookup(): id-or-name resolution is part of the contract.
struct StorageWithoutLookup {
    BoxliteResult<void> insert(const BoxConfig&, const BoxState&) { return {}; }
    BoxliteResult<BoxRecord> get(const BoxID&) { return fail(ErrorKind::NotFound, "x"); }
    BoxliteResult<std::vector<BoxRecord>> list() { return std::vector<BoxRecord>{}; }
    BoxliteResult<void> update_state(const BoxID&, const BoxState&) { return {}; }
    BoxliteResult<bool> update_state_if(const BoxID&, const BoxState&, const BoxState&) { return true; }
    BoxliteResult<void> remove(const BoxID&, RemoveSync = RemoveSync::Durable) { return {}; }
};

/// No update_state_if(): a storage without compare-and-swap lets a reader that noticed a dead
/// engine overwrite the state a concurrent start() wrote.
struct StorageWithoutCompareAndSwap {
    BoxliteResult<void> insert(const BoxConfig&, const BoxState&) { return {}; }
    BoxliteResult<BoxRecord> get(const BoxID&) { return fail(ErrorKind::NotFound, "x"); }
    BoxliteResult<BoxRecord> lookup(std::string_view) { return fail(ErrorKind::NotFound, "x"); }
    BoxliteResult<std::vector<BoxRecord>> list() { return std::vector<BoxRecord>{}; }
    BoxliteResult<void> update_state(const BoxID&, const BoxState&) { return {}; }
    BoxliteResult<void> remove(const BoxID&, RemoveSync = RemoveSync::Durable) { return {}; }
};

/// remove() reports failure as bool instead of BoxliteResult<void>.
struct StorageWithBoolRemove : GoodStorage {
    bool remove(const BoxID&, RemoveSync = RemoveSync::Durable) { return true; }
};

}  // namespace boxlite::concept_tests
