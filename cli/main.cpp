// boxlite: the command-line interface over the BoxLite runtime.
#include "cli/app.hpp"
#include "cli/commands.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

namespace {

extern "C" void on_sigpipe(int) {}

/// A reader that leaves (`boxlite run --rm … | head -1`) must not kill the CLI while it owns a
/// running box: with SIGPIPE caught, writes fail with EPIPE and each command decides (attach.hpp,
/// logs, stats). Caught rather than ignored because an ignored SIGPIPE would be inherited by
/// everything the CLI executes (the shim, the background exec worker); a handler resets to the
/// default action at execve.
void catch_sigpipe() {
    struct sigaction action {};
    action.sa_handler = on_sigpipe;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGPIPE, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
    catch_sigpipe();
    const std::vector<std::string> args(argv, argv + argc);
    auto invocation = boxlite::cli::parse_command_line(args);
    if (!invocation) {
        const auto& stop = invocation.error();
        std::fputs(stop.out.c_str(), stdout);
        std::fputs(stop.err.c_str(), stderr);
        return stop.status;
    }
    int status = 0;
    try {
        status = boxlite::cli::run_invocation(*invocation);
    } catch (const std::system_error& error) {
        // fmt::print throws when stdout's reader left: end quietly, as SIGPIPE would have.
        if (error.code().value() != EPIPE) throw;
        return boxlite::cli::kExitOutputClosed;
    }
    if (std::fflush(stdout) != 0 && errno == EPIPE) return boxlite::cli::kExitOutputClosed;
    return status;
}
