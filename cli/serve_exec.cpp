// `boxlite serve` in the `boxlite` executable: the REST server lives in boxlite-serve (the same
// CLI with lib/server and OpenSSL's TLS linked in), so every other command starts without loading
// libssl and libcrypto. The arguments were parsed and validated here already (help included);
// boxlite-serve gets the same command line and parses it again, in the same process (execv).
#include "cli/commands_internal.hpp"

#include "engine/common/helper_binary.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

namespace boxlite::cli {

BoxliteResult<int> cmd_serve(Context& context) {
    BOXLITE_TRY(const auto server, engine::locate_helper_binary("boxlite-serve", "BOXLITE_SERVE"));
    const auto& argv = context.invocation().argv;
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    std::fflush(nullptr);
    ::execv(server.c_str(), args.data());
    return fail_errno(ErrorKind::Internal, fmt::format("starting the server {}", server.string()), errno);
}

}  // namespace boxlite::cli
