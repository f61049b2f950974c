// ImageConfig: the parts of an OCI image config a box needs, and how they become the box's
// defaults. BoxOptions override the image exactly as `docker run` flags override Dockerfile
// instructions:
//
//   entrypoint   BoxOptions::entrypoint, else the image's Entrypoint
//   cmd          BoxOptions::cmd; else the image's Cmd, *unless* BoxOptions::entrypoint was given
//                (a new entrypoint drops the image's Cmd, as `docker run --entrypoint` does)
//   argv         entrypoint + cmd
//   env          the image's Env, then BoxOptions::env (same name: the box's value wins)
//   working_dir  BoxOptions::working_dir, else the image's WorkingDir, else "/"
//   user         BoxOptions::user, else the image's User, else "" (root)
#pragma once

#include <boxlite/box_options.hpp>
#include <boxlite/error.hpp>
#include <boxlite/image/platform.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::image {

struct ImageConfig {
    Platform platform;
    std::vector<std::string> env;  ///< "NAME=value", as in the image
    std::optional<std::vector<std::string>> entrypoint;
    std::optional<std::vector<std::string>> cmd;
    std::string working_dir;
    std::string user;
    std::map<std::string, std::string> labels;
    std::string stop_signal;
    std::string created;                ///< RFC 3339, as in the image ("" when absent)
    std::vector<std::string> diff_ids;  ///< sha256 of each uncompressed layer

    friend bool operator==(const ImageConfig&, const ImageConfig&) = default;
};

/// Parses an OCI / Docker image config blob. Image error naming what is wrong on malformed input.
[[nodiscard]] BoxliteResult<ImageConfig> parse_image_config(std::string_view json);

/// What a box runs by default, once the image config and the BoxOptions are merged.
struct ProcessDefaults {
    std::vector<std::string> argv;                          ///< entrypoint + cmd; may be empty
    std::vector<std::pair<std::string, std::string>> env;   ///< image order, overrides in place, new last
    std::string working_dir = "/";
    std::string user;                                       ///< "" = root

    friend bool operator==(const ProcessDefaults&, const ProcessDefaults&) = default;
};

/// Merges the image's defaults with the caller's BoxOptions (rules at the top of this file).
[[nodiscard]] inline ProcessDefaults merge_process_defaults(const ImageConfig& image, const BoxOptions& options) {
    ProcessDefaults out;
    const std::vector<std::string> no_args;
    const auto& entrypoint = options.entrypoint ? *options.entrypoint : image.entrypoint.value_or(no_args);
    const auto& cmd = options.cmd ? *options.cmd : (options.entrypoint ? no_args : image.cmd.value_or(no_args));
    out.argv.insert(out.argv.end(), entrypoint.begin(), entrypoint.end());
    out.argv.insert(out.argv.end(), cmd.begin(), cmd.end());

    auto set_env = [&out](std::string name, std::string value) {
        for (auto& [existing, existing_value] : out.env) {
            if (existing == name) {
                existing_value = std::move(value);
                return;
            }
        }
        out.env.emplace_back(std::move(name), std::move(value));
    };
    for (const auto& entry : image.env) {
        // "NAME" without '=' is legal in a config (Docker passes the host's value); a box has no
        // host environment to inherit, so it becomes an empty value.
        const auto eq = entry.find('=');
        if (eq == 0) continue;
        if (eq == std::string::npos) set_env(entry, "");
        else set_env(entry.substr(0, eq), entry.substr(eq + 1));
    }
    for (const auto& [name, value] : options.env) set_env(name, value);

    if (options.working_dir && !options.working_dir->empty()) out.working_dir = *options.working_dir;
    else if (!image.working_dir.empty()) out.working_dir = image.working_dir;
    out.user = options.user ? *options.user : image.user;
    return out;
}

}  // namespace boxlite::image
