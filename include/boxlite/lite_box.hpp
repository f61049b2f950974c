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
#include <boxlite/execution.hpp>
#include <boxlite/protocol/client.hpp>
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

    // --- the agent connection ------------------------------------------------------------------
    // The guest agent connection that command execution and file copy are built on.

    /// Connects to the box's guest agent through T, starting the box first when it can run
    /// commands and is not running (Configured, Stopped). InvalidState on a stopping box.
    [[nodiscard]] BoxliteResult<stream_type> connect_agent() { return core_->connect_agent(id_); }

    /// Counters for BoxMetrics/RuntimeMetrics, to be called by exec and copy implementations.
    void record_command(bool succeeded) { core_->record_command(id_, succeeded); }
    void record_bytes(std::uint64_t sent, std::uint64_t received) { core_->record_bytes(id_, sent, received); }

    // --- commands and file copies -------------------------------------------------------------
    // Built on connect_agent() and record_command()/record_bytes(). Each call opens its own agent
    // connection (the protocol multiplexes, but a connection per execution keeps executions
    // independent of each other's handles and lifetimes).

    /// Starts `command` in the box (starting the box first when it is Configured or Stopped) and
    /// returns its streaming handle, as the reference's `LiteBox::exec`.
    [[nodiscard]] BoxliteResult<Execution> exec(const BoxCommand& command) {
        BOXLITE_TRY(auto agent, open_agent());
        return exec(agent, command);
    }

    /// Starts `command` on an agent connection the caller holds (open_agent()), counted and
    /// reported as exec(command) does; the connection can then carry more requests (a shutdown
    /// once the command has ended, as `boxlite run` asks).
    [[nodiscard]] BoxliteResult<Execution> exec(protocol::AgentClient& agent, const BoxCommand& command) {
        auto execution = agent.exec(command);
        record_command(execution.has_value());
        if (!execution)
            return fail(execution.error().with_context(fmt::format("running '{}' in box {}", command.program(), id_)));
        return execution;
    }

    /// Runs `command` to completion and returns its exit code with everything it printed (at
    /// most `max_output_bytes` of stdout and stderr together: see Execution::collect).
    [[nodiscard]] BoxliteResult<ExecOutput> run(const BoxCommand& command,
                                                std::size_t max_output_bytes = kDefaultMaxOutputBytes) {
        BOXLITE_TRY(auto execution, exec(command));
        return execution.collect(max_output_bytes);
    }

    /// Copies a host file or directory tree into the box (into `box_path` when it is a directory
    /// or ends with '/', else as `box_path`); modes, symlinks and (as root) ownership kept.
    BoxliteResult<void> copy_in(const std::string& host_path, const std::string& box_path) {
        BOXLITE_TRY(auto agent, open_agent());
        auto copied = agent.copy_in(host_path, box_path);
        record_command(copied.has_value());
        if (!copied) return fail(copied.error().with_context(fmt::format("box {}", id_)));
        return {};
    }

    /// Copies a file or tree out of the box; entries that would escape `host_path` are refused.
    BoxliteResult<void> copy_out(const std::string& box_path, const std::string& host_path) {
        BOXLITE_TRY(auto agent, open_agent());
        auto copied = agent.copy_out(box_path, host_path);
        record_command(copied.has_value());
        if (!copied) return fail(copied.error().with_context(fmt::format("box {}", id_)));
        return {};
    }

    /// A connection to the box's agent for the low-level API (several executions on one
    /// connection, ping, guest metrics).
    [[nodiscard]] BoxliteResult<protocol::AgentClient> open_agent() {
        BOXLITE_TRY(auto stream, connect_agent());
        auto agent = protocol::AgentClient::connect(std::move(stream));
        if (!agent) return fail(agent.error().with_context(fmt::format("agent of box {}", id_)));
        agent->on_close([core = core_, id = id_](const protocol::SessionCounters& counters) {
            core->record_bytes(id, counters.bytes_in.load(), counters.bytes_out.load());
        });
        return agent;
    }

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
