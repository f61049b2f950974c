// HomeLayout::ensure(): see include/boxlite/storage/home_layout.hpp for which folders are private.
#include <boxlite/storage/home_layout.hpp>

#include <sys/stat.h>

#include <cerrno>
#include <system_error>

namespace boxlite {
namespace {

constexpr mode_t kPrivateDirMode = 0700;

/// mkdir(0700), then chmod: the umask may have taken bits away (0700 & ~umask), and an older
/// home may have the folder at 0755.
BoxliteResult<void> ensure_private_dir(const std::filesystem::path& dir) {
    if (::mkdir(dir.c_str(), kPrivateDirMode) != 0 && errno != EEXIST) {
        return fail_errno(ErrorKind::Storage, fmt::format("cannot create BoxLite home folder {}", dir.string()), errno);
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        return fail_errno(ErrorKind::Storage, fmt::format("cannot inspect BoxLite home folder {}", dir.string()),
                          errno);
    }
    if (!S_ISDIR(st.st_mode)) {
        return fail(ErrorKind::Storage, "BoxLite home folder {} exists but is not a directory", dir.string());
    }
    if ((st.st_mode & 07777) != kPrivateDirMode && ::chmod(dir.c_str(), kPrivateDirMode) != 0) {
        return fail_errno(ErrorKind::Storage,
                          fmt::format("cannot make {} private (mode {:o}; it holds box secrets)", dir.string(),
                                      st.st_mode & 07777),
                          errno);
    }
    return {};
}

BoxliteResult<void> ensure_dir(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(ErrorKind::Storage, "cannot create BoxLite home folder {}: {}", dir.string(), ec.message());
    return {};
}

}  // namespace

BoxliteResult<void> HomeLayout::ensure() const {
    std::error_code ec;
    if (!std::filesystem::is_directory(root_, ec)) {
        // Parents are ordinary folders; the home itself is private because BoxLite made it.
        if (root_.has_parent_path()) BOXLITE_TRY_VOID(ensure_dir(root_.parent_path()));
        BOXLITE_TRY_VOID(ensure_private_dir(root_));
    }
    for (const auto& dir : {boxes_dir(), db_dir(), logs_dir()}) BOXLITE_TRY_VOID(ensure_private_dir(dir));
    for (const auto& dir : {images_dir(), init_dir()}) BOXLITE_TRY_VOID(ensure_dir(dir));
    return {};
}

}  // namespace boxlite
