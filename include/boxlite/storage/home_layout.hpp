// HomeLayout: the paths inside a BoxLite home directory (DESIGN.md, "Home directory").
//
//   images/      OCI image layout, disk images, unpacked rootfs trees
//   boxes/<id>/  config.json (mirror of the database row), disk, console log, sockets
//   init/        guest kernel and initramfs
//   logs/        runtime logs
//   lock         lock file (held shared by every open runtime, exclusively while migrating)
//   db/          boxes.db, images.db
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <system_error>
#include <utility>

namespace boxlite {

class HomeLayout {
public:
    explicit HomeLayout(std::filesystem::path root) : root_(std::move(root)) {}

    [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
    [[nodiscard]] std::filesystem::path images_dir() const { return root_ / "images"; }
    [[nodiscard]] std::filesystem::path boxes_dir() const { return root_ / "boxes"; }
    [[nodiscard]] std::filesystem::path box_dir(const BoxID& id) const { return boxes_dir() / id.str(); }
    [[nodiscard]] std::filesystem::path box_config_mirror(const BoxID& id) const {
        return box_dir(id) / "config.json";
    }
    [[nodiscard]] std::filesystem::path init_dir() const { return root_ / "init"; }
    [[nodiscard]] std::filesystem::path logs_dir() const { return root_ / "logs"; }
    [[nodiscard]] std::filesystem::path db_dir() const { return root_ / "db"; }
    [[nodiscard]] std::filesystem::path boxes_db() const { return db_dir() / "boxes.db"; }
    [[nodiscard]] std::filesystem::path images_db() const { return db_dir() / "images.db"; }
    [[nodiscard]] std::filesystem::path lock_file() const { return root_ / "lock"; }

    /// Creates the top-level folders (idempotent). Called when storage opens, never by
    /// validation: a rejected create must leave the home untouched.
    [[nodiscard]] BoxliteResult<void> ensure() const {
        for (const auto& dir : {root_, images_dir(), boxes_dir(), init_dir(), logs_dir(), db_dir()}) {
            std::error_code ec;
            std::filesystem::create_directories(dir, ec);
            if (ec) {
                return fail(ErrorKind::Storage, "cannot create BoxLite home folder {}: {}", dir.string(),
                            ec.message());
            }
        }
        return {};
    }

private:
    std::filesystem::path root_;
};

}  // namespace boxlite
