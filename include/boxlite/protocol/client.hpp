// AgentClient: the host's handle on one connection to a box's guest agent.
//
//   BOXLITE_TRY(auto stream, UnixTransport{}.connect(handle.endpoint, 5s));
//   BOXLITE_TRY(auto agent, protocol::AgentClient::connect(std::move(stream)));
//   BOXLITE_TRY(auto exec, agent.exec(BoxCommand("echo").arg("hi")));
//
// One connection multiplexes any number of executions (stream ids); copies are executions too.
// The client is a cheap shared handle: copies talk over the same connection.
#pragma once

#include <boxlite/box_command.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/execution.hpp>
#include <boxlite/protocol/messages.hpp>
#include <boxlite/protocol/session.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::tar {
class Writer;  // the archive writer behind copy_in (lib/protocol/tar.hpp, compiled in the library)
}  // namespace boxlite::tar

namespace boxlite::protocol {

/// Box-level defaults a command inherits (BoxOptions::env / working_dir / user); the
/// command's own values win.
struct ExecDefaults {
    std::vector<std::pair<std::string, std::string>> env;
    std::optional<std::string> working_dir;
    std::optional<std::string> user;
};

[[nodiscard]] inline ExecRequest make_exec_request(const BoxCommand& command, const ExecDefaults& defaults = {}) {
    ExecRequest request;
    request.kind = ExecKind::Command;
    request.program = command.program();
    request.args = command.arguments();
    std::vector<std::pair<std::string, std::string>> merged = defaults.env;
    for (const auto& entry : command.environment()) {
        // Not a structured binding: clang before 16 cannot capture one in a lambda.
        const auto& key = entry.first;
        auto it = std::find_if(merged.begin(), merged.end(), [&key](const auto& kv) { return kv.first == key; });
        if (it != merged.end()) it->second = entry.second;
        else merged.emplace_back(key, entry.second);
    }
    for (const auto& [key, value] : merged) request.env.push_back(key + "=" + value);
    request.working_dir = command.working_directory().value_or(defaults.working_dir.value_or(""));
    request.user = command.user_name().value_or(defaults.user.value_or(""));
    request.tty = command.is_tty();
    if (const auto& t = command.timeout_value(); t && t->count() > 0) {
        request.timeout_ms = static_cast<std::uint64_t>(t->count());
    }
    return request;
}

/// Checks a command before it reaches the agent, with messages that say what is allowed.
[[nodiscard]] inline BoxliteResult<void> validate_command(const BoxCommand& command) {
    if (command.program().empty()) return fail(ErrorKind::InvalidArgument, "command program must not be empty");
    for (const auto& [key, value] : command.environment()) {
        if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos) {
            return fail(ErrorKind::InvalidArgument,
                        "environment variable name '{}' must be non-empty without '=' or NUL", key);
        }
    }
    if (const auto& dir = command.working_directory(); dir && (dir->empty() || dir->front() != '/')) {
        return fail(ErrorKind::InvalidArgument, "working directory '{}' must be an absolute path", *dir);
    }
    if (const auto& t = command.timeout_value(); t && t->count() < 0) {
        return fail(ErrorKind::InvalidArgument, "timeout must not be negative, got {} ms", t->count());
    }
    return {};
}

/// An execution the agent has been asked to start (AgentClient::begin_exec), for callers that
/// must not block while it starts: poll() after each call of the waker given to begin_exec.
class PendingExecution {
public:
    PendingExecution(std::shared_ptr<Session> session, std::shared_ptr<ExecState> state)
        : session_(std::move(session)), state_(std::move(state)) {}

    /// nullopt until the agent has answered; then the Execution (handed out once; later calls
    /// fail with InvalidState) or the reason it did not start.
    [[nodiscard]] std::optional<BoxliteResult<Execution>> poll() {
        if (!state_) return BoxliteResult<Execution>(fail(ErrorKind::InvalidState, "the execution was already taken"));
        auto started = session_->try_started(*state_);
        if (!started) return std::nullopt;
        if (!*started) {
            state_.reset();
            return BoxliteResult<Execution>(fail(std::move(*started).error()));
        }
        return BoxliteResult<Execution>(Execution(session_, std::exchange(state_, nullptr)));
    }

    /// Nobody will use the execution: it is killed once started (or now, if it has).
    void abandon() {
        if (state_) session_->abandon(*std::exchange(state_, nullptr));
    }

private:
    std::shared_ptr<Session> session_;
    std::shared_ptr<ExecState> state_;
};

class AgentClient {
public:
    /// Deadline of the handshake and of ping / metrics / shutdown replies.
    static constexpr std::chrono::milliseconds kControlTimeout{10000};
    /// Deadline of an execution's Started reply (the agent forks and execs before answering).
    static constexpr std::chrono::milliseconds kStartTimeout{30000};

    /// Performs the hello handshake on `stream` (failing after `timeout` when the peer says
    /// nothing) and starts the connection's reader thread.
    template <ByteStream S>
    [[nodiscard]] static BoxliteResult<AgentClient> connect(S stream,
                                                            std::chrono::milliseconds timeout = kControlTimeout) {
        auto session = std::make_shared<Session>(ErasedStream::from(std::move(stream)));
        BOXLITE_TRY_VOID(session->handshake(timeout));
        return AgentClient(std::move(session));
    }

    [[nodiscard]] BoxliteResult<Execution> exec(const BoxCommand& command, const ExecDefaults& defaults = {}) {
        BOXLITE_TRY_VOID(validate_command(command));
        BOXLITE_TRY(auto state, session_->start(make_exec_request(command, defaults), start_timeout_,
                                                command.stdin_descriptor_value()));
        return Execution(session_, std::move(state));
    }

    /// exec() without waiting for the agent to start the process: `waker` is called when the
    /// answer (and later, anything else) arrives; see PendingExecution and Session::set_waker.
    [[nodiscard]] BoxliteResult<PendingExecution> begin_exec(const BoxCommand& command, std::function<void()> waker,
                                                             const ExecDefaults& defaults = {}) {
        BOXLITE_TRY_VOID(validate_command(command));
        BOXLITE_TRY(auto state, session_->begin(make_exec_request(command, defaults), std::move(waker)));
        return PendingExecution(session_, std::move(state));
    }

    /// How long exec() and the copies wait for the agent to start a process.
    void set_start_timeout(std::chrono::milliseconds timeout) { start_timeout_ = timeout; }

    /// Runs a command to completion and returns what it printed (at most `max_output_bytes` of
    /// stdout and stderr together: see Execution::collect).
    [[nodiscard]] BoxliteResult<ExecOutput> run(const BoxCommand& command, const ExecDefaults& defaults = {},
                                                std::size_t max_output_bytes = kDefaultMaxOutputBytes) {
        BOXLITE_TRY(auto execution, exec(command, defaults));
        return execution.collect(max_output_bytes);
    }

    /// Copies a host file or tree into the box (docker-cp naming: into `guest_dest` when it is an
    /// existing directory or ends with '/', else as `guest_dest`). Symlinks are copied as links.
    BoxliteResult<void> copy_in(const std::string& host_source, const std::string& guest_dest);

    /// Writes the archive that copy_in_stream() sends.
    using ArchiveProducer = std::function<BoxliteResult<void>(tar::Writer&)>;

    /// Sends a tar stream produced by `produce` to be extracted at `guest_dest` (also the way a
    /// raw archive reaches the agent, e.g. in tests of hostile archives).
    BoxliteResult<void> copy_in_stream(const std::string& guest_dest, const ArchiveProducer& produce);

    /// Copies a file or tree out of the box to the host (same naming rules as copy_in). The
    /// archive from the box is hostile: entries that would escape `host_dest` are refused.
    BoxliteResult<void> copy_out(const std::string& guest_source, const std::string& host_dest);

    BoxliteResult<void> ping(std::chrono::milliseconds timeout = kControlTimeout) { return session_->ping(timeout); }
    BoxliteResult<GuestMetrics> metrics(std::chrono::milliseconds timeout = kControlTimeout) {
        return session_->metrics(timeout);
    }
    /// Asks the agent to stop every process and exit (the box stops).
    BoxliteResult<void> shutdown(std::chrono::milliseconds timeout = kControlTimeout) {
        return session_->shutdown(timeout);
    }

    [[nodiscard]] bool alive() const { return session_->alive(); }
    [[nodiscard]] const std::string& agent_version() const noexcept { return session_->agent_version(); }
    [[nodiscard]] std::uint16_t protocol_version() const noexcept { return session_->version(); }
    [[nodiscard]] SessionCounters& counters() const noexcept { return session_->counters(); }
    /// `callback(counters)` runs when the connection closes (the last client/execution is gone).
    void on_close(std::function<void(const SessionCounters&)> callback) { session_->set_on_close(std::move(callback)); }

private:
    explicit AgentClient(std::shared_ptr<Session> session) : session_(std::move(session)) {}
    std::shared_ptr<Session> session_;
    std::chrono::milliseconds start_timeout_ = kStartTimeout;
};

}  // namespace boxlite::protocol
