// run, create, exec, cp: boxes made from the command line, and commands streamed into them.
#include "cli/commands_internal.hpp"

namespace boxlite::cli {

BoxliteResult<int> cmd_create(Context& context) {
    BOXLITE_TRY(auto request, to_create_request(context.invocation().create, CallerContext::current(), false));
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto box, runtime->create(request.options, request.name));
    fmt::print("{}\n", box.id());
    return kExitSuccess;
}

BoxliteResult<int> cmd_run(Context&) {
    return fail(ErrorKind::Unsupported, "'run' needs command execution, which this build does not have yet");
}
BoxliteResult<int> cmd_exec(Context&) {
    return fail(ErrorKind::Unsupported, "'exec' needs command execution, which this build does not have yet");
}
BoxliteResult<int> cmd_cp(Context&) {
    return fail(ErrorKind::Unsupported, "'cp' needs file copy, which this build does not have yet");
}

}  // namespace boxlite::cli
