// The subcommands (see commands.hpp).
#include "cli/commands.hpp"

#include "cli/output.hpp"

#include <boxlite/version.hpp>

#include <cstdio>

namespace boxlite::cli {

namespace {

BoxliteResult<int> cmd_version(const Invocation& inv) {
    nlohmann::json data = {{"Version", std::string(boxlite::version())}, {"ApiVersion", "v1"}};
    if (!inv.version.format) {
        fmt::print("boxlite version {}\n", boxlite::version());
        return kExitSuccess;
    }
    BOXLITE_TRY(auto text, render_object(data, *inv.version.format));
    fmt::print("{}", text);
    return kExitSuccess;
}

}  // namespace

int run_invocation(const Invocation& inv) {
    BoxliteResult<int> result = fail(ErrorKind::Unsupported, "'{}' is not available yet", inv.command);
    if (inv.command == "version") result = cmd_version(inv);
    if (result) return *result;
    std::fflush(stdout);
    fmt::print(stderr, "Error: {}\n", result.error().to_string());
    if (inv.global.debug) fmt::print(stderr, "debug: error kind {}\n", result.error().kind());
    return kExitRuntimeError;
}

}  // namespace boxlite::cli
