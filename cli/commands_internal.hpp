// Shared by the subcommand implementations (commands.cpp, exec_commands.cpp, image_commands.cpp):
// the runtime a command works on, and helpers for box JSON and output.
#pragma once

#include "cli/app.hpp"

#include <boxlite/boxlite.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

namespace boxlite::cli {

/// What one CLI invocation works with; the runtime is opened on first use (version and help
/// never touch the home directory).
class Context {
public:
    explicit Context(const Invocation& invocation) : invocation_(invocation) {}

    [[nodiscard]] const Invocation& invocation() const noexcept { return invocation_; }
    [[nodiscard]] const GlobalFlags& global() const noexcept { return invocation_.global; }

    /// BoxliteOptions from the global flags: --home, --registry (prepended), --engine.
    [[nodiscard]] BoxliteOptions runtime_options() const;

    /// The runtime on the home, with the chosen engine (opened once).
    [[nodiscard]] BoxliteResult<BoxliteRuntime*> runtime(RuntimeSettings settings = {});

    /// Prints a `debug:` line on stderr when --debug is on.
    template <class... Args>
    void debug(fmt::format_string<Args...> format, Args&&... args) const {
        if (invocation_.global.debug) {
            // fputs, not fmt::print: a closed stderr must not throw out of a box's clean-up path.
            const auto line = fmt::format("debug: {}\n", fmt::format(format, std::forward<Args>(args)...));
            std::fputs(line.c_str(), stderr);
        }
    }

private:
    const Invocation& invocation_;
    std::optional<BoxliteRuntime> runtime_;
};

/// The RuntimeSettings of this CLI: image rootfs provider backed by the image store when the
/// build has one (image_commands.cpp), else the library's default; boxes started detached from
/// this process (start_detached), except by a foreground `run`, whose box dies with it.
[[nodiscard]] RuntimeSettings cli_runtime_settings(const Context& context);

/// "3 seconds ago", "2 hours ago", as Docker's CREATED column.
[[nodiscard]] std::string time_ago(std::chrono::system_clock::time_point then,
                                   std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

/// The `inspect` document of a box: Docker-like PascalCase, secrets reduced to their names.
[[nodiscard]] nlohmann::json inspect_json(const BoxConfig& config, const BoxInfo& info, const HomeLayout& layout);

// Subcommands implemented outside commands.cpp.
[[nodiscard]] BoxliteResult<int> cmd_run(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_create(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_exec(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_cp(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_pull(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_images(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_images_rm(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_images_prune(Context& context);
[[nodiscard]] BoxliteResult<int> cmd_load(Context& context);
/// `boxlite serve`: in the `boxlite` executable, an exec of boxlite-serve with the same command
/// line (serve_exec.cpp); in boxlite-serve, the REST server itself (serve_command.cpp).
[[nodiscard]] BoxliteResult<int> cmd_serve(Context& context);
/// ls, rm and exec against the server of --url (remote_commands.cpp).
[[nodiscard]] BoxliteResult<int> cmd_remote(Context& context);
/// Makes sure `reference` is in the image store (pulling it, with progress on stderr, when it is
/// not) and returns the image's defaults (entrypoint, cmd, env, working dir, user).
[[nodiscard]] BoxliteResult<ImageDefaults> prepare_image_for_run(Context& context, const std::string& reference,
                                                                 bool quiet);
/// The number of images in the store (info), or nullopt when the build has no image store.
[[nodiscard]] std::optional<std::size_t> image_count(Context& context);

}  // namespace boxlite::cli
