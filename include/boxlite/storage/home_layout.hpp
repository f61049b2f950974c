// HomeLayout: the paths inside a BoxLite home directory (DESIGN.md, "Home directory").
//
//   images/      OCI image layout, disk images, unpacked rootfs trees
//   boxes/<id>/  config.json (mirror of the database row), disk, console log, sockets
//   init/        guest kernel and initramfs
//   logs/        runtime logs
//   lock         lock file (held shared by every open SqliteStorage, exclusively while one
//                creates or migrates the database; see sqlite_storage.hpp)
//   db/          boxes.db, images.db
//
// Box records hold secrets (BoxOptions::secrets, in clear: the runtime needs them at every
// start), so boxes/, db/ and logs/ are private to the owner (0700, whatever the umask), and
// so is the home itself when BoxLite creates it. A home that already exists keeps its mode:
// it is the user's folder, and its private parts are protected by their own modes.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <utility>

namespace boxlite {

class HomeLayout {
public:
    explicit HomeLayout(std::filesystem::path root) : root_(std::move(root)) {}

    [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
    [[nodiscard]] std::filesystem::path images_dir() const { return root_ / "images"; }
    [[nodiscard]] std::filesystem::path boxes_dir() const { return root_ / "boxes"; }
    [[nodiscard]] std::filesystem::path box_dir(const BoxID& id) const { return boxes_dir() / id.str(); }
    [[nodiscard]] std::filesystem::path box_config_mirror(const BoxID& id) const { return box_dir(id) / "config.json"; }
    [[nodiscard]] std::filesystem::path init_dir() const { return root_ / "init"; }
    [[nodiscard]] std::filesystem::path logs_dir() const { return root_ / "logs"; }
    [[nodiscard]] std::filesystem::path db_dir() const { return root_ / "db"; }
    [[nodiscard]] std::filesystem::path boxes_db() const { return db_dir() / "boxes.db"; }
    [[nodiscard]] std::filesystem::path images_db() const { return db_dir() / "images.db"; }
    [[nodiscard]] std::filesystem::path lock_file() const { return root_ / "lock"; }

    /// Creates the top-level folders (idempotent), the private ones 0700, and tightens private
    /// folders left wider by an older BoxLite. Called when storage opens, never by validation:
    /// a rejected create must leave the home untouched. (lib/core/home_layout.cpp)
    [[nodiscard]] BoxliteResult<void> ensure() const;

private:
    std::filesystem::path root_;
};

}  // namespace boxlite
