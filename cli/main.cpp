// boxlite: the command-line interface over the BoxLite runtime.
#include "cli/app.hpp"
#include "cli/commands.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv, argv + argc);
    auto invocation = boxlite::cli::parse_command_line(args);
    if (!invocation) {
        const auto& stop = invocation.error();
        fmt::print(stdout, "{}", stop.out);
        fmt::print(stderr, "{}", stop.err);
        return stop.status;
    }
    return boxlite::cli::run_invocation(*invocation);
}
