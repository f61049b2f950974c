// Where the engines find their helper binaries (boxlite-shim, boxlite-shim-kvm, boxlite-agent).
//
// One policy for every engine and helper, in this order:
//   1. an explicit path (an engine option), then $<env_var>: when given, it must name an
//      executable file, or the answer is an error naming it — a setting that is wrong is never
//      papered over by trying other places;
//   2. next to the running executable;
//   3. the build tree's bin/ (only in a library built in that tree, never an installed one);
//   4. <the library's own directory>/../libexec/boxlite/ (the relative path from the install's
//      libdir to its libexecdir), found with dladdr(): an installed tree finds its helpers
//      wherever it was installed or moved to, and nothing is baked into its consumers;
//   5. the same from the bindir, for the `boxlite` CLI, which links the core statically (dladdr()
//      then names the executable).
#pragma once

#include <boxlite/error.hpp>

#include <filesystem>
#include <string_view>

namespace boxlite::engine {

[[nodiscard]] BoxliteResult<std::filesystem::path> locate_helper_binary(
    std::string_view name, const char* env_var, const std::filesystem::path& explicit_path = {});

}  // namespace boxlite::engine
