// run, create, exec, cp: boxes made from the command line, and commands streamed into them.

#include "cli/attach.hpp"
#include "cli/commands_internal.hpp"
#include "cli/terminal.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace boxlite::cli {

namespace {

BoxliteResult<void> require_terminal(const CreateRequest& request) {
    if (request.tty && request.interactive && !is_terminal(STDIN_FILENO)) {
        return fail(ErrorKind::InvalidArgument, "the input device is not a TTY (drop -t, or run from a terminal)");
    }
    return {};
}

// Command execution and file copy come from the agent component (LiteBox::exec, copy_in,
// copy_out). The CLI detects them at compile time so it builds, and says Unsupported, in a tree
// that does not have them yet.
// Whichever of exec()/run() hands back a streaming Execution (the reference calls it exec).
template <class Box>
constexpr bool kExecStreams = requires(Box& box, const BoxCommand& command) {
    box.exec(command)->stdout();
    box.exec(command)->wait();
};
template <class Box>
constexpr bool kRunStreams = requires(Box& box, const BoxCommand& command) {
    box.run(command)->stdout();
    box.run(command)->wait();
};
template <class Box>
constexpr bool kCanExec = kExecStreams<Box> || kRunStreams<Box>;
/// A box whose agent connection can be had (LiteBox::open_agent) and can start a command
/// (LiteBox::exec(agent, command)), and its type.
template <class Box>
constexpr bool kOpensAgent = requires(Box& box, const BoxCommand& command,
                                      std::remove_cvref_t<decltype(*std::declval<Box&>().open_agent())>& agent) {
    box.open_agent()->shutdown(std::chrono::milliseconds(1));
    box.exec(agent, command);
};
// The real box must take the own-connection path (a signature change would otherwise turn it off
// silently: `run` would then connect to the agent a second time to stop the box).
static_assert(kOpensAgent<LiteBox>);
template <class Box>
struct AgentOf {
    using type = std::monostate;
};
template <class Box>
requires kOpensAgent<Box>
struct AgentOf<Box> {
    using type = typename decltype(std::declval<Box&>().open_agent())::value_type;
};

template <class Box>
auto start_execution(Box& box, const BoxCommand& command) {
    if constexpr (kExecStreams<Box>) {
        return box.exec(command);
    } else {
        return box.run(command);
    }
}
template <class Box>
constexpr bool kCanCopy = requires(Box& box, const std::string& a, const std::string& b) {
    box.copy_in(a, b);
    box.copy_out(a, b);
};

tl::unexpected<BoxliteError> no_exec() {
    return fail(ErrorKind::Unsupported, "command execution is not in this build of BoxLite yet");
}

/// Starts `command` in box `box_id` in the background, where it outlives this process.
///
/// The guest agent ends an execution when the connection that started it closes (nobody could
/// read its output any more), so a command that must outlive the CLI needs a connection that
/// stays: a `boxlite exec` worker in its own session, started here, holds it and appends the
/// command's output to the box's console log (what `boxlite logs` shows). The worker reports on a
/// pipe once the command runs, so errors (no such program, box not runnable) still reach the user.
/// `remove_box`: `run -d --rm` — the worker removes the box once the command has ended.
BoxliteResult<void> spawn_detached(Context& context, const std::string& box_id, const std::filesystem::path& log,
                                   const BoxCommand& command, bool remove_box = false) {
    char self[PATH_MAX];
    const auto length = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) return fail_errno(ErrorKind::Internal, "readlink /proc/self/exe", errno);
    self[length] = '\0';
    const auto options = context.runtime_options();
    std::vector<std::string> argv = {self,
                                     "--home",
                                     options.home_dir.string(),
                                     "--engine",
                                     std::string(to_string(context.global().engine)),
                                     "exec",
                                     "--worker-log",
                                     log.string(),
                                     "--worker-ready-fd",
                                     "3"};
    for (const auto& [key, value] : command.environment()) {
        argv.push_back("-e");
        argv.push_back(key + "=" + value);
    }
    if (const auto& dir = command.working_directory()) {
        argv.push_back("-w");
        argv.push_back(*dir);
    }
    if (const auto& user = command.user_name()) {
        argv.push_back("-u");
        argv.push_back(*user);
    }
    if (command.is_tty()) argv.push_back("-t");
    if (remove_box) argv.push_back("--worker-remove");
    argv.push_back(box_id);
    argv.push_back("--");
    argv.push_back(command.program());
    for (const auto& arg : command.arguments()) argv.push_back(arg);

    std::error_code ec;
    std::filesystem::create_directories(log.parent_path(), ec);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", log.string()), errno);
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) {
        ::close(log_fd);
        return fail_errno(ErrorKind::Internal, "pipe2", errno);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDERR_FILENO);
    posix_spawn_file_actions_adddup2(&actions, ready[1], 3);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);  // no terminal, no signals from ours
    std::vector<char*> c_argv;
    for (auto& arg : argv) c_argv.push_back(arg.data());
    c_argv.push_back(nullptr);
    pid_t pid = 0;
    const int spawned = ::posix_spawn(&pid, self, &actions, &attributes, c_argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(log_fd);
    ::close(ready[1]);
    if (spawned != 0) {
        ::close(ready[0]);
        return fail_errno(ErrorKind::Internal, "starting the background exec worker", spawned);
    }
    context.debug("background worker pid {} for box {}, output to {}", pid, box_id, log.string());
    // "ok" once the command runs; anything else is the worker's error line.
    std::string report;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd fd{ready[0], POLLIN, 0};
        if (::poll(&fd, 1, 200) <= 0) continue;
        char buffer[512];
        const auto n = ::read(ready[0], buffer, sizeof buffer);
        if (n <= 0) break;
        report.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(ready[0]);
    while (!report.empty() && report.back() == '\n') report.pop_back();
    if (report == "ok") return {};
    if (report.empty()) {
        return fail(ErrorKind::Execution, "the background command did not start in box {} (see `boxlite logs {}`)",
                    box_id, box_id);
    }
    return fail(ErrorKind::Execution, "{}", report);
}

/// Runs `command` in `box` attached to this process's stdio; the ExecResult's exit code.
/// `relay`: see attach(). `then_shut_down` (`run` of a namespace box, which stops the box once the
/// command has ended): the command runs on an agent connection of its own, and once it has ended
/// the agent is asked on that same connection to stop everything and exit (the graceful part of a
/// stop, with this as its timeout), so the stop that follows finds the box ending instead of
/// connecting and handshaking a second time (docs/performance.md, `run --rm`, fifth pass). Only
/// the namespace engine's stop tells an agent socket that is gone from one not there yet; the VM
/// engines' stop would wait out its connect budget for an agent that has powered its guest off
/// already. A box type without open_agent() runs the command as without it.
template <class Box>
BoxliteResult<int> run_attached(Box& box, const BoxCommand& command, bool interactive, Context& context,
                                SignalRelay* relay = nullptr,
                                std::optional<std::chrono::milliseconds> then_shut_down = std::nullopt) {
    if constexpr (!kCanExec<Box>) {
        (void)box;
        (void)command;
        (void)interactive;
        (void)context;
        (void)relay;
        (void)then_shut_down;
        return no_exec();
    } else {
        // -i from a pipe: the command reads the pipe itself where the box can take it (the
        // namespace engine), as runc hands a container the caller's descriptors; attach() then
        // leaves fd 0 alone. Anything but a read-only FIFO (a terminal above all) streams.
        BoxCommand with_stdin = command;
        if (interactive && !command.is_tty() && attach_detail::passable_stdin(STDIN_FILENO)) {
            with_stdin.stdin_descriptor(STDIN_FILENO);
            // A 1 MiB pipe, as the frame path makes it (best effort: the host's pipe limits may
            // refuse): on an idle machine a 64 KiB pipe between two cores costs a wake-up per
            // 64 KiB, and 1 GiB then took 0.49 s instead of 0.31 s (docs/performance.md).
            if (::fcntl(STDIN_FILENO, F_GETPIPE_SZ) < static_cast<int>(attach_detail::kStdinPipeSize)) {
                (void)::fcntl(STDIN_FILENO, F_SETPIPE_SZ, static_cast<int>(attach_detail::kStdinPipeSize));
            }
        }
        constexpr bool kOwnConnection = kExecStreams<Box> && kOpensAgent<Box>;
        std::optional<typename AgentOf<Box>::type> agent;  // the command's connection, when it is ours
        auto open_execution = [&]() -> decltype(start_execution(box, with_stdin)) {
            if constexpr (kOwnConnection) {
                if (then_shut_down) {
                    BOXLITE_TRY(auto opened, box.open_agent());
                    agent.emplace(std::move(opened));
                    return box.exec(*agent, with_stdin);
                }
            }
            return start_execution(box, with_stdin);
        };
        BOXLITE_TRY(auto execution, open_execution());
        context.debug("execution {} started in box {}", execution.id(), box.id());
        AttachOptions options;
        options.interactive = interactive;
        options.tty = command.is_tty();
        if constexpr (requires { execution.stdin_passed(); }) {
            if (execution.stdin_passed()) {
                context.debug("the command reads this process's stdin pipe itself");
                options.interactive = false;
                options.stdin_passed = true;
            }
        }
        BOXLITE_TRY(auto result, attach(execution, options, relay));
        context.debug("execution ended: exit code {}{}{}", result.exit_code, result.timed_out ? " (timed out)" : "",
                      result.error_message ? ", " + *result.error_message : std::string());
        if constexpr (kOwnConnection) {
            // Best effort: the stop that follows does it all again if this did not happen.
            if (agent) {
                if (auto down = agent->shutdown(*then_shut_down); !down) {
                    context.debug("asking the agent of box {} to shut down: {}", box.id(), down.error().to_string());
                }
            }
        }
        if (result.error_message && result.exit_code == 0) {
            return fail(ErrorKind::Execution, "{}", *result.error_message);
        }
        if (result.error_message && !result.timed_out) {
            // E.g. an OOM kill: the status (137) alone does not say why.
            const auto line = fmt::format("boxlite: {}\n", *result.error_message);
            std::fputs(line.c_str(), stderr);
        }
        return exit_status_for(result.exit_code);
    }
}

/// The background worker of `exec -d` / `run -d`: starts the command, reports on `ready_fd`,
/// then streams its output to our stdout/stderr (the box's console log) until it ends; with
/// `remove_box` (`run -d --rm`) it then removes the box, as Docker removes a `--rm` container
/// whose main process exited (also when `boxlite stop` ended the command).
template <class Box, class Runtime>
BoxliteResult<int> run_worker(Box& box, Runtime& runtime, const BoxCommand& command, int ready_fd, bool remove_box,
                              Context& context) {
    ::signal(SIGHUP, SIG_IGN);
    auto report = [&](const std::string& line) {
        [[maybe_unused]] auto n = ::write(ready_fd, line.data(), line.size());
        ::close(ready_fd);
    };
    if constexpr (!kCanExec<Box>) {
        (void)runtime;
        (void)command;
        (void)remove_box;
        (void)context;
        auto error = no_exec();
        report(error.value().to_string() + "\n");
        return error;
    } else {
        // A command that did not start is reported, and `run -d` cleans up after it.
        auto execution = start_execution(box, command);
        if (!execution) {
            report(execution.error().to_string() + "\n");
            return fail(execution.error());
        }
        report("ok\n");
        auto remove = [&](BoxliteResult<int> outcome) -> BoxliteResult<int> {
            if (!remove_box) return outcome;
            auto stopped = box.stop();
            if (!stopped) context.debug("stopping box {}: {}", box.id(), stopped.error().to_string());
            auto removed = runtime.remove(box.id().str(), true);
            if (!removed) context.debug("removing box {}: {}", box.id(), removed.error().to_string());
            return outcome;
        };
        AttachOptions options;  // no stdin; with -t the box's terminal output goes to the log
        options.tty = command.is_tty();
        auto result = attach(*execution, options);
        if (!result) return remove(fail(result.error()));
        context.debug("background command ended: exit code {}", result->exit_code);
        return remove(exit_status_for(result->exit_code));
    }
}

}  // namespace

BoxliteResult<int> cmd_create(Context& context) {
    BOXLITE_TRY(auto request, to_create_request(context.invocation().create, CallerContext::current(), false));
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    if (!request.image.empty()) {
        // Pull now, so `start` later needs no network and a bad reference fails here.
        BOXLITE_TRY(auto defaults, prepare_image_for_run(context, request.image, false));
        (void)defaults;
    }
    BOXLITE_TRY(auto box, runtime->create(request.options, request.name));
    fmt::print("{}\n", box.id());
    return kExitSuccess;
}

BoxliteResult<int> cmd_run(Context& context) {
    BOXLITE_TRY(auto request, to_create_request(context.invocation().create, CallerContext::current(), true));
    BOXLITE_TRY_VOID(require_terminal(request));
    auto settings = cli_runtime_settings(context);
    settings.start_detached = request.detach;  // a foreground run's box dies with this process
    BOXLITE_TRY(auto* runtime, context.runtime(settings));
    ImageDefaults defaults;
    if (!request.image.empty()) {
        // No box exists yet: Ctrl-C during the pull just ends the CLI.
        BOXLITE_TRY(defaults, prepare_image_for_run(context, request.image, request.detach));
    }
    BOXLITE_TRY(auto command, to_run_command(request, defaults.entrypoint, defaults.cmd));

    // Every CLI box outlives the CLI (detach = true), so from the create on a signal must not
    // end this process before it has cleaned up: signals are recorded here, each set-up step
    // checks for one, and once the command runs attach() passes them on to it.
    BOXLITE_TRY(auto relay, SignalRelay::install(kRelayedSignals));
    auto setup_signal = [&relay]() -> int {
        for (int signal_number : relay.drain()) {
            if (signal_number != SIGWINCH) return signal_number;  // attach() sends the size anyway
        }
        return 0;
    };
    BOXLITE_TRY(auto box, runtime->create(request.options, request.name));
    context.debug("created box {} ({})", box.id(), request.image.empty() ? "rootfs" : request.image);

    // Whatever happens from here, a --rm box goes away and a foreground box is stopped.
    auto finish = [&](BoxliteResult<int> outcome) -> BoxliteResult<int> {
        if (request.detach && outcome) return outcome;
        auto stopped = box.stop();
        if (!stopped) context.debug("stopping box {}: {}", box.id(), stopped.error().to_string());
        if (request.remove) {
            auto removed = runtime->remove(box.id().str(), true);
            if (!removed) context.debug("removing box {}: {}", box.id(), removed.error().to_string());
        }
        return outcome;
    };
    // Interrupted before the command ran: the box never did anything, so it goes, --rm or not,
    // and the CLI ends with the status the signal would have given it.
    auto abandon = [&](int signal_number) -> BoxliteResult<int> {
        context.debug("signal {} while setting up box {}: removing it", signal_number, box.id());
        auto removed = runtime->remove(box.id().str(), true);
        if (!removed) context.debug("removing box {}: {}", box.id(), removed.error().to_string());
        return 128 + signal_number;
    };
    if (const int signal_number = setup_signal()) return abandon(signal_number);
    if (auto started = box.start(); !started) return finish(fail(started.error()));
    if (const int signal_number = setup_signal()) return abandon(signal_number);
    if (request.detach) {
        // The command runs in the background; the box lives on until `boxlite stop` (with
        // --rm, until the command ends: the worker then removes it).
        auto started_command = spawn_detached(context, box.id().str(),
                                              runtime->layout().box_dir(box.id()) / "console.log", command,
                                              request.remove);
        if (!started_command) return finish(fail(started_command.error()));
        if (const int signal_number = setup_signal()) return abandon(signal_number);
        fmt::print("{}\n", box.id());
        return kExitSuccess;
    }
    // The runtime's engine is the new box's: known without reading the box back.
    std::optional<std::chrono::milliseconds> then_shut_down;
    if (runtime->engine().kind() == "namespace") then_shut_down = cli_runtime_settings(context).stop_timeout;
    return finish(run_attached(box, command, request.interactive, context, &relay, then_shut_down));
}

BoxliteResult<int> cmd_exec(Context& context) {
    const auto& args = context.invocation().exec;
    BOXLITE_TRY(auto command, to_exec_command(args, CallerContext::current()));
    if (args.tty && args.interactive && !is_terminal(STDIN_FILENO)) {
        return fail(ErrorKind::InvalidArgument, "the input device is not a TTY (drop -t, or run from a terminal)");
    }
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto box, runtime->get(args.box));
    if (args.worker_ready_fd >= 0) {
        return run_worker(box, *runtime, command, args.worker_ready_fd, args.worker_remove, context);
    }
    if (args.detach) {
        // Start the box here (a configured or stopped box) so the worker only attaches.
        BOXLITE_TRY_VOID(box.start());
        BOXLITE_TRY_VOID(
            spawn_detached(context, box.id().str(), runtime->layout().box_dir(box.id()) / "console.log", command));
        return kExitSuccess;
    }
    return run_attached(box, command, args.interactive, context);
}

namespace {
template <class Box>
BoxliteResult<int> copy(Box& box, const CopyRequest& request, const std::string& host) {
    if constexpr (kCanCopy<Box>) {
        if (request.into_box) {
            BOXLITE_TRY_VOID(box.copy_in(host, request.box_path));
        } else {
            BOXLITE_TRY_VOID(box.copy_out(request.box_path, host));
        }
        return kExitSuccess;
    } else {
        (void)box;
        (void)request;
        (void)host;
        return fail(ErrorKind::Unsupported, "file copy is not in this build of BoxLite yet");
    }
}
}  // namespace

BoxliteResult<int> cmd_cp(Context& context) {
    const auto& args = context.invocation().copy;
    BOXLITE_TRY(auto request, parse_copy(args.source, args.destination));
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto box, runtime->get(request.box));
    std::error_code ec;
    const auto host = std::filesystem::absolute(request.host_path, ec).string();
    return copy(box, request, host);
}

}  // namespace boxlite::cli
