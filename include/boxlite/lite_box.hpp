// BasicBox<E, T, S>: a handle to one box of a BasicRuntime (LiteBox for BoxliteRuntime).
//
// Cheap to copy; copies refer to the same box. The handle caches only the box's identity
// (id, name): info(), start(), stop() and metrics() read the current state from storage each
// time, so a handle sees what other handles, threads and processes did. After the box is
// removed, every call fails with NotFound.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/box_info.hpp>
#include <boxlite/box_metrics.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/detail/runtime_core.hpp>
#include <boxlite/engine/any_engine.hpp>
#include <boxlite/error.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/any_transport.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace boxlite {

template <Engine E, Transport T, Storage S>
class BasicRuntime;

template <Engine E, Transport T, Storage S>
class BasicBox {
public:
    using runtime_type = BasicRuntime<E, T, S>;
    using stream_type = typename T::stream_type;

    [[nodiscard]] const BoxID& id() const noexcept { return id_; }
    [[nodiscard]] const std::optional<std::string>& name() const noexcept { return name_; }

    /// A snapshot of the box; never touches the engine beyond a liveness probe.
    [[nodiscard]] BoxliteResult<BoxInfo> info() const {
        BOXLITE_TRY(auto record, core_->get(id_));
        return BoxInfo::from(record.config, record.state);
    }

    /// The box's immutable config (options as created).
    [[nodiscard]] BoxliteResult<BoxConfig> config() const {
        BOXLITE_TRY(auto record, core_->get(id_));
        return std::move(record.config);
    }

    /// Configured/Stopped -> Running. A running box is left as it is.
    BoxliteResult<void> start() { return core_->start(id_); }

    /// Running -> Stopping -> Stopped (Configured -> Stopped); a stopped box is left as it is.
    /// With auto_remove (the default) the box is removed afterwards.
    BoxliteResult<void> stop() { return core_->stop(id_); }

    [[nodiscard]] BoxliteResult<BoxMetrics> metrics() const { return core_->box_metrics(id_); }

    // --- exec seam ---------------------------------------------------------------------------
    // The guest agent connection that command execution and file copy are built on.

    /// Connects to the box's guest agent through T, starting the box first when it can run
    /// commands and is not running (Configured, Stopped). InvalidState on a stopping box.
    [[nodiscard]] BoxliteResult<stream_type> connect_agent() { return core_->connect_agent(id_); }

    /// Counters for BoxMetrics/RuntimeMetrics, to be called by exec and copy implementations.
    void record_command(bool succeeded) { core_->record_command(id_, succeeded); }
    void record_bytes(std::uint64_t sent, std::uint64_t received) { core_->record_bytes(id_, sent, received); }

    // >>> EXEC SEAM (issue 3, helper A): run(BoxCommand) -> Execution, exec(...) -> ExecResult,
    // >>> copy_in, copy_out go here, built on connect_agent() and record_command()/record_bytes().
    // <<< end of exec seam

    friend bool operator==(const BasicBox& a, const BasicBox& b) noexcept { return a.id_ == b.id_; }

private:
    friend class BasicRuntime<E, T, S>;
    using Core = detail::RuntimeCore<E, T, S>;

    BasicBox(std::shared_ptr<Core> core, BoxID id, std::optional<std::string> name)
        : core_(std::move(core)), id_(std::move(id)), name_(std::move(name)) {}

    std::shared_ptr<Core> core_;
    BoxID id_;
    std::optional<std::string> name_;
};

/// The box handle of BoxliteRuntime.
using LiteBox = BasicBox<AnyEngine, AnyTransport, SqliteStorage>;

}  // namespace boxlite
