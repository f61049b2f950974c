// ImageConfig: the parts of an OCI image config a box needs, and how they become the box's
// defaults. BoxOptions override the image exactly as `docker run` flags override Dockerfile
// instructions:
//
//   entrypoint   BoxOptions::entrypoint, else the image's Entrypoint
//   cmd          BoxOptions::cmd; else the image's Cmd, *unless* BoxOptions::entrypoint was given
//                (a new entrypoint drops the image's Cmd, as `docker run --entrypoint` does)
//   argv         entrypoint + cmd
//   env          the image's Env, then BoxOptions::env (same name: the box's value wins)
//   working_dir  BoxOptions::working_dir, else the image's WorkingDir, else "/" (an empty
//                working_dir counts as unset: a process needs a directory to start in)
//   user         BoxOptions::user, else the image's User, else "" (root)
#pragma once

#include <boxlite/box_options.hpp>
#include <boxlite/error.hpp>
#include <boxlite/image/platform.hpp>
#include <boxlite/rootfs_provider.hpp>

#include <algorithm>
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
    std::vector<std::string> argv;                         ///< entrypoint + cmd; may be empty
    std::vector<std::pair<std::string, std::string>> env;  ///< image order, overrides in place, new last
    std::string working_dir = "/";
    std::string user;  ///< "" = root

    friend bool operator==(const ProcessDefaults&, const ProcessDefaults&) = default;
};

/// The image config's defaults as the runtime's rootfs seam carries them (ImageDefaults). Env
/// entries split at the first '='; "NAME" alone (legal in a config: Docker passes the host's
/// value) becomes an empty value, as a box has no host environment to inherit; a later entry for
/// the same name replaces the earlier one in place.
[[nodiscard]] inline ImageDefaults image_defaults(const ImageConfig& image) {
    ImageDefaults out;
    out.entrypoint = image.entrypoint.value_or(std::vector<std::string>{});
    out.cmd = image.cmd.value_or(std::vector<std::string>{});
    for (const auto& entry : image.env) {
        const auto eq = entry.find('=');
        if (eq == 0) continue;
        std::string name = entry.substr(0, eq);
        std::string value = eq == std::string::npos ? std::string() : entry.substr(eq + 1);
        const auto same = std::find_if(out.env.begin(), out.env.end(), [&](const auto& e) { return e.first == name; });
        if (same != out.env.end()) same->second = std::move(value);
        else out.env.emplace_back(std::move(name), std::move(value));
    }
    out.working_dir = image.working_dir;
    out.user = image.user;
    return out;
}

/// Merges the image's defaults with the caller's BoxOptions (rules at the top of this file). It
/// is the runtime's own merge (merge_launch_defaults), so this is exactly what a box's main
/// process gets.
[[nodiscard]] inline ProcessDefaults merge_process_defaults(const ImageConfig& image, const BoxOptions& options) {
    EngineLaunch launch;
    merge_launch_defaults(options, image_defaults(image), launch);
    return ProcessDefaults{std::move(launch.init_command), std::move(launch.env), std::move(launch.working_dir),
                           std::move(launch.user)};
}

}  // namespace boxlite::image
