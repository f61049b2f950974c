#include "engine/common/helper_binary.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace boxlite::engine {
namespace {

namespace fs = std::filesystem;

bool usable(const fs::path& path) {
    std::error_code ec;
    return !path.empty() && fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

/// The directory of the file this function was loaded from: the shared library, or the
/// executable when the library was linked statically.
fs::path own_directory() {
    Dl_info info{};
    if (::dladdr(reinterpret_cast<const void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr) return {};
    std::error_code ec;
    auto path = fs::weakly_canonical(fs::path(info.dli_fname), ec);
    if (ec) return {};
    return path.parent_path();
}

}  // namespace

BoxliteResult<fs::path> locate_helper_binary(std::string_view name, const char* env_var,
                                             const fs::path& explicit_path) {
    if (!explicit_path.empty()) {
        if (usable(explicit_path)) return explicit_path;
        return fail(ErrorKind::Config, "the {} binary given as '{}' is not an executable file", name,
                    explicit_path.string());
    }
    if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') {
        if (usable(env)) return fs::path(env);
        return fail(ErrorKind::Config, "{}={} does not name an executable file ({} binary); fix or unset it", env_var,
                    env, name);
    }
    std::error_code ec;
    const auto self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec && usable(self.parent_path() / name)) return self.parent_path() / name;
    const auto own = own_directory();
#ifdef BOXLITE_BUILD_LIB_DIR
    // Only the library in its build tree, or the CLI built there with the core linked in (not a
    // copy installed from them, not even one installed under the build tree), looks in that
    // tree's bin/.
    if (!own.empty() && (fs::equivalent(own, fs::path(BOXLITE_BUILD_LIB_DIR), ec) ||
                         fs::equivalent(own, fs::path(BOXLITE_BUILD_CLI_DIR), ec))) {
        const auto built = fs::path(BOXLITE_BUILD_BIN_DIR) / name;
        if (usable(built)) return built;
    }
#endif
#ifdef BOXLITE_LIBEXEC_FROM_LIBDIR
    if (!own.empty()) {
        const auto installed = (own / BOXLITE_LIBEXEC_FROM_LIBDIR / name).lexically_normal();
        if (usable(installed)) return installed;
    }
#endif
#ifdef BOXLITE_LIBEXEC_FROM_BINDIR
    // The installed CLI, which links the core statically: its own file is <prefix>/<bindir>/boxlite.
    if (!own.empty()) {
        const auto installed = (own / BOXLITE_LIBEXEC_FROM_BINDIR / name).lexically_normal();
        if (usable(installed)) return installed;
    }
#endif
    return fail(ErrorKind::UnsupportedEngine,
                "the {} binary was not found (set {}, or install it in <prefix>/libexec/boxlite/ beside the library)",
                name, env_var);
}

}  // namespace boxlite::engine
