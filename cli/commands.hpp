// The subcommands: each takes the parsed Invocation and returns the process exit status.
#pragma once

#include "cli/app.hpp"

namespace boxlite::cli {

/// Runs the invocation; prints errors (one line, more with --debug) and returns the exit status:
/// 0 success, 1 runtime error, N / 128+N for a box command's exit / signal.
[[nodiscard]] int run_invocation(const Invocation& invocation);

}  // namespace boxlite::cli
