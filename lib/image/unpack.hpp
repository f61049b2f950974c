// Safe layer unpacking into a root directory.
//
// Every path in a layer is resolved component by component from a directory fd of the root with
// O_NOFOLLOW: an entry whose parent path goes through a symlink, names "..", is absolute, or whose
// hardlink target does the same, is refused — so nothing is ever created, changed or removed
// outside the root, whatever the layer (and the layers below it) contain. Symlink *entries* are
// created as they are (they are data inside the root; nothing here ever follows one).
//
// OCI semantics: `.wh.<name>` deletes <name> from the layers below, `.wh..wh..opq` empties its
// directory of everything the layers below put there. Character and block devices and sockets
// are skipped (a box gets its /dev from the engine); FIFOs are created. Ownership is kept when we
// run as root; xattrs are set where the filesystem allows; directory modes and times are applied
// after the layer so a read-only directory can still be filled.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/image/image_store.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace boxlite::image {

struct UnpackStats {
    std::uint64_t entries = 0;
    std::uint64_t bytes = 0;
    std::uint64_t skipped_devices = 0;
    std::uint64_t whiteouts = 0;
};

class LayerUnpacker {
public:
    /// `root` must be an existing, empty (or previously unpacked-into) directory.
    [[nodiscard]] static BoxliteResult<LayerUnpacker> open(const std::filesystem::path& root, UnpackLimits limits);

    LayerUnpacker(LayerUnpacker&&) noexcept;
    LayerUnpacker& operator=(LayerUnpacker&&) = delete;
    LayerUnpacker(const LayerUnpacker&) = delete;
    LayerUnpacker& operator=(const LayerUnpacker&) = delete;
    ~LayerUnpacker();

    /// Applies one layer (tar, tar+gzip, tar+zstd: detected from the content). `what` names the
    /// layer in errors (its digest). Image error for any hostile or malformed entry.
    [[nodiscard]] BoxliteResult<void> apply(const std::filesystem::path& layer, std::string_view what);

    [[nodiscard]] const UnpackStats& stats() const noexcept { return stats_; }

private:
    LayerUnpacker(int root_fd, UnpackLimits limits) : root_fd_(root_fd), limits_(limits) {}
    int root_fd_ = -1;
    UnpackLimits limits_;
    UnpackStats stats_;
};

/// Unpacks `layers` in order into `target` (created; must not exist) via a temporary sibling
/// directory renamed into place: on failure nothing is left at `target` or beside it.
[[nodiscard]] BoxliteResult<UnpackStats> unpack_image(std::span<const std::filesystem::path> layers,
                                                      const std::filesystem::path& target, const UnpackLimits& limits);

/// The owner and permission bits a layer entry declares for a path.
struct DeclaredOwnership {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t mode = 0;  ///< permission bits, 07777
};

/// What the layers, applied in order, declare for each path they leave ("etc/passwd"; the root is
/// not listed): the last entry that wrote a path wins, whiteouts and opaque directories forget
/// what they remove, a hardlink gets its target's. Only headers are read. An unpacked tree holds
/// these exactly only when unpacked as root; an ext4 disk built from a tree unpacked by anyone
/// else is corrected with this (directories the layers never list were created 0:0).
[[nodiscard]] BoxliteResult<std::map<std::string, DeclaredOwnership>> declared_ownership(
    std::span<const std::filesystem::path> layers, const UnpackLimits& limits);

/// sha256 of a layer's uncompressed tar stream (gzip, zstd or none, detected from the content):
/// what an image config's rootfs.diff_ids lists.
[[nodiscard]] BoxliteResult<std::string> uncompressed_sha256(const std::filesystem::path& layer);

/// Recursively removes `path` without following symlinks; missing is fine.
void remove_tree(const std::filesystem::path& path) noexcept;

}  // namespace boxlite::image
