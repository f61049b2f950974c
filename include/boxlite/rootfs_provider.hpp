// The root filesystem seam: how the runtime turns a box's RootfsSpec into the path its engine
// boots from (engine.rootfs_kind(): an unpacked directory, or an ext4 disk image).
//
//   RootfsSpec::RootfsPath  the runtime uses the directory itself (checked to exist), for
//                           Directory engines. For Ext4Disk engines (the VMs) it builds the box's
//                           own ext4 from the directory at its first start, the way an image's
//                           base disk is built (image::directory_disk), and boots that from then on.
//   RootfsSpec::Image       the runtime calls the ImageRootfsProvider below: at create (pull
//                           what is missing, pin the image to the box) and at every start (the
//                           pinned image, no network). It returns the rootfs in the requested
//                           kind plus the image's config defaults (entrypoint, cmd, env, working
//                           dir, user), which the runtime merges with BoxOptions into EngineLaunch.
//                           When the box is removed the runtime releases its pin.
//
// The provider is a runtime member (RuntimeSettings::image_provider), so tests can pass a fake
// one; `default_image_rootfs_provider()` (the image store, lib/image) is what real runtimes get.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/boxlite_options.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/rootfs_spec.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite {

/// What an OCI image's config says about how to run it (all optional: images may omit any).
struct ImageDefaults {
    std::vector<std::string> entrypoint;
    std::vector<std::string> cmd;
    std::vector<std::pair<std::string, std::string>> env;
    std::string working_dir;
    std::string user;

    friend bool operator==(const ImageDefaults&, const ImageDefaults&) = default;
};

/// A root filesystem ready for an engine, and what getting it cost (BoxMetrics' stages).
struct PreparedRootfs {
    std::filesystem::path path;  ///< directory or ext4 image, per the requested RootfsKind
    ImageDefaults defaults;
    std::string image_id;  ///< the pinned image (its manifest digest); empty for directories
    /// Resolving the reference and fetching what was missing (the first call for a box);
    /// nullopt when nothing was resolved (the box's pinned image) or the provider does not say.
    std::optional<std::chrono::nanoseconds> pull_time;
    /// Building the tree (unpack) or the ext4 disk; nullopt when a cached one was used.
    std::optional<std::chrono::nanoseconds> build_time;
};

/// Turns image references into root filesystems for boxes. Both members are called from several
/// threads at once, for different boxes.
struct ImageRootfsProvider {
    /// prepare(image, kind, runtime options, box): the first call for a box resolves and fetches
    /// the image and pins it to the box; later calls return the same image.
    std::function<BoxliteResult<PreparedRootfs>(const RootfsSpec::Image& image, RootfsKind kind,
                                                const BoxliteOptions& options, const BoxID& box)>
        prepare;
    /// release(box, runtime options): the box is gone; its image may be garbage-collected.
    /// May be empty (nothing to release).
    std::function<BoxliteResult<void>(const BoxID& box, const BoxliteOptions& options)> release;
};

namespace image {
/// The image store behind RootfsSpec::Image (lib/image/provider.cpp): one ImageStore per home
/// directory, shared by the runtime's threads; pulls what is missing (BoxliteOptions::
/// image_registries searched for unqualified names), pins the image to the box with a store
/// lease, then returns the unpacked tree (Directory) or the ext4 base disk (Ext4Disk) and the
/// image config's defaults.
[[nodiscard]] ImageRootfsProvider store_rootfs_provider();

/// The ext4 disk at `disk` built from the directory `tree` as an image's base disk is (mke2fs -d,
/// sized to the tree plus room for metadata; owners, modes and links as they are in the tree),
/// when `disk` does not exist yet; an existing one is kept (a box's QCOW2 overlay sits on it, so
/// it must not change under the box). The bool says whether it was built now. A tree whose walk
/// (names, modes, owners, sizes, inodes, times; entries changed within the last 2 s never
/// trusted) matches an earlier build's is not built again: `disk` becomes a hard link to that
/// build's base in `<home>/images/directory-disks/` (docs/qemu-engine.md).
[[nodiscard]] BoxliteResult<std::pair<std::filesystem::path, bool>> directory_disk(const std::filesystem::path& tree,
                                                                                   const std::filesystem::path& disk);
}  // namespace image

/// The provider real runtimes get.
[[nodiscard]] inline ImageRootfsProvider default_image_rootfs_provider() { return image::store_rootfs_provider(); }

/// The command, environment, working directory and user the box's main process gets:
/// BoxOptions override the image's defaults, as `docker run` does (an overridden entrypoint
/// drops the image's cmd unless cmd is given too).
inline void merge_launch_defaults(const BoxOptions& options, const ImageDefaults& image, EngineLaunch& launch) {
    std::vector<std::string> command = options.entrypoint.value_or(image.entrypoint);
    if (options.cmd) {
        command.insert(command.end(), options.cmd->begin(), options.cmd->end());
    } else if (!options.entrypoint) {
        command.insert(command.end(), image.cmd.begin(), image.cmd.end());
    }
    launch.init_command = std::move(command);

    launch.env = image.env;
    for (const auto& [key, value] : options.env) {
        bool replaced = false;
        for (auto& entry : launch.env) {
            if (entry.first == key) {
                entry.second = value;
                replaced = true;
            }
        }
        if (!replaced) launch.env.emplace_back(key, value);
    }
    // An empty working_dir counts as unset, in image_config.hpp's merge_process_defaults too.
    const auto& working_dir = options.working_dir && !options.working_dir->empty() ? *options.working_dir
                                                                                   : image.working_dir;
    launch.working_dir = working_dir.empty() ? "/" : working_dir;
    launch.user = options.user.value_or(image.user);
}

}  // namespace boxlite
