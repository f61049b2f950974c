// run, create, exec, cp: boxes made from the command line, and commands streamed into them.
#include "cli/attach.hpp"
#include "cli/commands_internal.hpp"
#include "cli/terminal.hpp"

#include <unistd.h>

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

/// Starts `command` in `box` without attaching to it.
template <class Box>
BoxliteResult<void> start_detached(Box& box, const BoxCommand& command) {
    if constexpr (kCanExec<Box>) {
        BOXLITE_TRY(auto execution, start_execution(box, command));
        (void)execution;
        return {};
    } else {
        (void)box;
        (void)command;
        return no_exec();
    }
}

/// Runs `command` in `box` attached to this process's stdio; the ExecResult's exit code.
template <class Box>
BoxliteResult<int> run_attached(Box& box, const BoxCommand& command, bool interactive, Context& context) {
    if constexpr (!kCanExec<Box>) {
        (void)box;
        (void)command;
        (void)interactive;
        (void)context;
        return no_exec();
    } else {
        BOXLITE_TRY(auto execution, start_execution(box, command));
        context.debug("execution {} started in box {}", execution.id(), box.id());
        AttachOptions options;
        options.interactive = interactive;
        options.tty = command.is_tty();
        BOXLITE_TRY(auto result, attach(execution, options));
        context.debug("execution ended: exit code {}{}{}", result.exit_code, result.timed_out ? " (timed out)" : "",
                      result.error_message ? ", " + *result.error_message : std::string());
        if (result.error_message && result.exit_code == 0) {
            return fail(ErrorKind::Execution, "{}", *result.error_message);
        }
        return exit_status_for(result.exit_code);
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
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    ImageDefaults defaults;
    if (!request.image.empty()) {
        BOXLITE_TRY(defaults, prepare_image_for_run(context, request.image, request.detach));
    }
    BOXLITE_TRY(auto command, to_run_command(request, defaults.entrypoint, defaults.cmd));
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
    if (auto started = box.start(); !started) return finish(fail(started.error()));
    if (request.detach) {
        // The command runs in the background; the box lives on until `boxlite stop`.
        auto started_command = start_detached(box, command);
        if (!started_command) return finish(fail(started_command.error()));
        fmt::print("{}\n", box.id());
        return kExitSuccess;
    }
    return finish(run_attached(box, command, request.interactive, context));
}

BoxliteResult<int> cmd_exec(Context& context) {
    const auto& args = context.invocation().exec;
    BOXLITE_TRY(auto command, to_exec_command(args, CallerContext::current()));
    if (args.tty && args.interactive && !is_terminal(STDIN_FILENO)) {
        return fail(ErrorKind::InvalidArgument, "the input device is not a TTY (drop -t, or run from a terminal)");
    }
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto box, runtime->get(args.box));
    if (args.detach) {
        BOXLITE_TRY_VOID(start_detached(box, command));
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
