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
#include <boxlite/protocol/tar.hpp>

#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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
            return fail(ErrorKind::InvalidArgument, "environment variable name '{}' must be non-empty without '=' or NUL", key);
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

class AgentClient {
public:
    /// Deadline of the handshake and of ping / metrics / shutdown replies.
    static constexpr std::chrono::milliseconds kControlTimeout{10000};
    /// Deadline of an execution's Started reply (the agent forks and execs before answering).
    static constexpr std::chrono::milliseconds kStartTimeout{30000};

    /// Performs the hello handshake on `stream` (failing after `timeout` when the peer says
    /// nothing) and starts the connection's reader thread.
    template <ByteStream S>
    [[nodiscard]] static BoxliteResult<AgentClient> connect(S stream, std::chrono::milliseconds timeout = kControlTimeout) {
        auto session = std::make_shared<Session>(ErasedStream::from(std::move(stream)));
        BOXLITE_TRY_VOID(session->handshake(timeout));
        return AgentClient(std::move(session));
    }

    [[nodiscard]] BoxliteResult<Execution> exec(const BoxCommand& command, const ExecDefaults& defaults = {}) {
        BOXLITE_TRY_VOID(validate_command(command));
        BOXLITE_TRY(auto state, session_->start(make_exec_request(command, defaults), start_timeout_));
        return Execution(session_, std::move(state));
    }

    /// How long exec() and the copies wait for the agent to start a process.
    void set_start_timeout(std::chrono::milliseconds timeout) { start_timeout_ = timeout; }

    /// Runs a command to completion and returns what it printed.
    [[nodiscard]] BoxliteResult<ExecOutput> run(const BoxCommand& command, const ExecDefaults& defaults = {}) {
        BOXLITE_TRY(auto execution, exec(command, defaults));
        return execution.collect();
    }

    /// Copies a host file or tree into the box (docker-cp naming: into `guest_dest` when it is an
    /// existing directory or ends with '/', else as `guest_dest`). Symlinks are copied as links.
    BoxliteResult<void> copy_in(const std::string& host_source, const std::string& guest_dest) {
        struct stat st {};
        if (::lstat(host_source.c_str(), &st) != 0) {
            return fail_errno(ErrorKind::InvalidArgument, "copy_in source '" + host_source + "' on the host", errno);
        }
        return copy_in_stream(guest_dest, [&](tar::Writer& writer) -> BoxliteResult<void> {
            BOXLITE_TRY_VOID(writer.add_tree(host_source, tar::top_name(host_source)));
            return writer.finish();
        });
    }

    /// Sends a tar stream produced by `produce` to be extracted at `guest_dest` (also the way a
    /// raw archive reaches the agent, e.g. in tests of hostile archives).
    template <class Produce>
    BoxliteResult<void> copy_in_stream(const std::string& guest_dest, Produce&& produce) {
        if (guest_dest.empty() || guest_dest.front() != '/') {
            return fail(ErrorKind::InvalidArgument, "copy_in destination '{}' must be an absolute path in the box", guest_dest);
        }
        ExecRequest request;
        request.kind = ExecKind::CopyIn;
        request.program = "copy-in";
        request.path = guest_dest;
        BOXLITE_TRY(auto state, session_->start(request, start_timeout_));
        Execution execution(session_, state);
        auto in = execution.stdin();
        auto err = execution.stderr();
        tar::Writer writer([&](std::span<const std::byte> data) { return in->write(data); });
        auto produced = produce(writer);
        (void)in->close();
        auto message = err->read_all();
        BOXLITE_TRY(auto result, execution.wait());
        if (result.exit_code != 0) {
            return fail(ErrorKind::Execution, "copy_in to '{}' failed in the box: {}", guest_dest,
                        message && !message->empty() ? *message : fmt::format("exit code {}", result.exit_code));
        }
        if (!produced) return fail(produced.error().with_context("copy_in to '" + guest_dest + "'"));
        return {};
    }

    /// Copies a file or tree out of the box to the host (same naming rules as copy_in). The
    /// archive from the box is hostile: entries that would escape `host_dest` are refused.
    BoxliteResult<void> copy_out(const std::string& guest_source, const std::string& host_dest) {
        if (guest_source.empty() || guest_source.front() != '/') {
            return fail(ErrorKind::InvalidArgument, "copy_out source '{}' must be an absolute path in the box", guest_source);
        }
        if (host_dest.empty()) return fail(ErrorKind::InvalidArgument, "copy_out destination must not be empty");
        ExecRequest request;
        request.kind = ExecKind::CopyOut;
        request.program = "copy-out";
        tar::Placement placement;
        if (host_dest.back() == '/') {
            std::error_code ec;
            std::filesystem::create_directories(host_dest, ec);
            if (ec) return fail(ErrorKind::Storage, "creating copy_out destination '{}': {}", host_dest, ec.message());
            placement = {host_dest, std::nullopt};
        } else {
            placement = tar::place(host_dest);
            struct stat st {};
            if (::stat(placement.directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
                return fail(ErrorKind::InvalidArgument, "copy_out destination '{}': directory '{}' does not exist on the host",
                            host_dest, placement.directory);
            }
        }
        // The archive comes from the guest: whatever names it uses, everything lands under the
        // one name the copy promises (`host_dest/<basename of guest_source>` or `host_dest`),
        // never beside it among the destination's other files.
        if (const auto top = tar::top_name(guest_source); !placement.rename_top && top != ".") placement.rename_top = top;
        request.path = guest_source;
        BOXLITE_TRY(auto state, session_->start(request, start_timeout_));
        Execution execution(session_, state);
        auto out = execution.stdout();
        auto err = execution.stderr();
        tar::Extractor extractor([&](std::span<std::byte> buf) { return out->read_some(buf); },
                                 tar::ExtractOptions{placement.rename_top, false});
        auto extracted = extractor.extract_to(placement.directory);
        if (!extracted) (void)execution.kill();
        // Drain what is left so the box-side writer can finish.
        std::array<std::byte, 16 * 1024> scratch{};
        while (true) {
            auto n = out->read_some(scratch);
            if (!n || *n == 0) break;
        }
        auto message = err->read_all();
        BOXLITE_TRY(auto result, execution.wait());
        if (!extracted) return fail(extracted.error().with_context("copy_out of '" + guest_source + "'"));
        if (result.exit_code != 0) {
            return fail(ErrorKind::Execution, "copy_out of '{}' failed in the box: {}", guest_source,
                        message && !message->empty() ? *message : fmt::format("exit code {}", result.exit_code));
        }
        return {};
    }

    BoxliteResult<void> ping(std::chrono::milliseconds timeout = kControlTimeout) { return session_->ping(timeout); }
    BoxliteResult<GuestMetrics> metrics(std::chrono::milliseconds timeout = kControlTimeout) { return session_->metrics(timeout); }
    /// Asks the agent to stop every process and exit (the box stops).
    BoxliteResult<void> shutdown(std::chrono::milliseconds timeout = kControlTimeout) { return session_->shutdown(timeout); }

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
