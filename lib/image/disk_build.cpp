// Box roots of the image store: the image's layers unpacked into a rootfs directory (namespace
// engine), and the ext4 base disk built from that tree with mke2fs -d, owners and modes corrected
// with debugfs (VM engines).
#include "store_impl.hpp"
#include "unpack.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::image {
namespace {

/// An ext4 image at `disk` holding the tree `tree` (mke2fs -d). Size: what the tree occupies, plus
/// room for ext4's metadata and the journal.
BoxliteResult<void> make_ext4(const fs::path& tree, const fs::path& disk) {
    std::uint64_t bytes = 0;
    std::uint64_t inodes = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        struct stat entry {};
        if (::lstat(it->path().c_str(), &entry) != 0) continue;
        ++inodes;
        bytes += static_cast<std::uint64_t>(entry.st_blocks) * 512 + 4096;
    }
    if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.string(), ec.message());
    const std::uint64_t mib = 1ull << 20;
    std::uint64_t size = bytes + bytes / 4 + inodes * 256 + 48 * mib;
    size = (size + mib - 1) / mib * mib;
    const std::uint64_t inode_count = inodes + inodes / 4 + 4096;
    return run_program({"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-N", std::to_string(inode_count),
                        "-L", "boxlite-rootfs", "-d", tree.string(), disk.string(), fmt::format("{}k", size / 1024)},
                       ErrorKind::Storage);
}

/// fsync of the file or directory at `path`.
BoxliteResult<void> sync_file(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, "opening " + path.string() + " to sync it", errno);
    const int synced = ::fsync(fd);
    const int saved = errno;
    ::close(fd);
    if (synced != 0) return fail_errno(ErrorKind::Storage, "fsync " + path.string(), saved);
    return {};
}

}  // namespace

BoxliteResult<std::pair<fs::path, bool>> ImageStore::Impl::build_rootfs(const ImageInfo& image) {
    const auto target = rootfs / std::string(digest_hex(image.manifest_digest));
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
    BOXLITE_TRY(auto shared, store_lock(base::FileLock::Mode::Shared));
    BOXLITE_TRY(auto lock, named_lock("rootfs", image.manifest_digest));
    if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
    std::vector<fs::path> layers;
    for (const auto& layer : image.layers) {
        if (!has_blob(layer.digest)) {
            return fail(ErrorKind::Image, "image {}: layer {} is missing from the store (pull it again)",
                        image.reference, layer.digest);
        }
        layers.push_back(blob_path(layer.digest));
    }
    auto unpacked = unpack_image(layers, target, options.unpack);
    if (!unpacked) return fail(unpacked.error().with_context(fmt::format("unpacking image {}", image.reference)));
    return std::pair{target, true};
}

BoxliteResult<void> ImageStore::Impl::correct_disk_ownership(const ImageInfo& image, const fs::path& tree,
                                                             const fs::path& disk) {
    struct stat top {};
    if (::lstat(tree.c_str(), &top) != 0) return fail_errno(ErrorKind::Storage, "stat " + tree.string(), errno);
    if (top.st_uid == 0) return {};
    std::vector<fs::path> layers;
    for (const auto& layer : image.layers) layers.push_back(blob_path(layer.digest));
    BOXLITE_TRY(const auto declared, declared_ownership(layers, options.unpack));

    std::string script;
    std::string unquotable;
    auto correct = [&](const std::string& relative, const struct stat& st, const DeclaredOwnership& want) {
        std::string commands;
        std::string quoted = "\"/";
        for (char c : relative) {
            if (c == '"') quoted += '"';  // debugfs reads "" inside quotes as one quote
            quoted += c;
        }
        quoted += '"';
        if (st.st_uid != want.uid) commands += fmt::format("sif {} uid {}\n", quoted, want.uid);
        if (st.st_gid != want.gid) commands += fmt::format("sif {} gid {}\n", quoted, want.gid);
        if (!S_ISLNK(st.st_mode) && (st.st_mode & 07777) != want.mode) {
            commands += fmt::format("sif {} mode 0{:o}\n", quoted, (st.st_mode & S_IFMT) | want.mode);
        }
        if (commands.empty()) return;
        if (relative.find_first_of("\n\r") != std::string::npos) {
            if (unquotable.empty()) unquotable = relative;
            return;
        }
        script += commands;
    };
    // Directories no layer lists were created by unpack, as root would have: 0:0, 0755.
    const DeclaredOwnership implicit_dir{0, 0, 0755};
    correct("", top, implicit_dir);
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        const auto relative = it->path().lexically_relative(tree).string();
        if (const auto found = declared.find(relative); found != declared.end()) {
            correct(relative, st, found->second);
        } else if (S_ISDIR(st.st_mode)) {
            correct(relative, st, implicit_dir);
        }
    }
    if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.string(), ec.message());
    if (!unquotable.empty()) {
        return fail(ErrorKind::Image,
                    "image {}: the path '{}' has a line break, which debugfs cannot address; build the disk as "
                    "root (then no correction is needed)",
                    image.reference, unquotable);
    }
    if (script.empty()) return {};
    const auto script_path = fs::path(disk.string() + ".debugfs");
    BOXLITE_TRY_VOID(write_file_atomic(script_path, script));
    std::string diagnostics;
    auto ran = run_program({"debugfs", "-w", "-f", script_path.string(), disk.string()}, ErrorKind::Storage,
                           &diagnostics);
    ::unlink(script_path.c_str());
    BOXLITE_TRY_VOID(ran);
    // debugfs exits 0 whatever its commands did; anything on stderr but its banner is a failure.
    std::string errors;
    std::size_t start = 0;
    while (start < diagnostics.size()) {
        auto end = diagnostics.find('\n', start);
        if (end == std::string::npos) end = diagnostics.size();
        const auto line = diagnostics.substr(start, end - start);
        if (!line.empty() && !line.starts_with("debugfs ")) errors += (errors.empty() ? "" : "; ") + line;
        start = end + 1;
    }
    if (!errors.empty()) {
        return fail(ErrorKind::Storage, "setting the owners and modes the layers declare in {} with debugfs: {}",
                    disk.string(), errors.substr(0, 1000));
    }
    return {};
}

BoxliteResult<std::pair<fs::path, bool>> ImageStore::Impl::build_disk(const ImageInfo& image) {
    const auto target = disks / fmt::format("{}.ext4", digest_hex(image.manifest_digest));
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};
    BOXLITE_TRY(auto tree, build_rootfs(image));
    BOXLITE_TRY(auto shared, store_lock(base::FileLock::Mode::Shared));
    BOXLITE_TRY(auto lock, named_lock("disk", image.manifest_digest));
    if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};

    const auto temp = disks /
                      fmt::format(".tmp-{}-{}.ext4", digest_hex(image.manifest_digest).substr(0, 16), random_suffix());
    auto built = make_ext4(tree.first, temp);
    if (built) built = correct_disk_ownership(image, tree.first, temp);
    // On disk before the rename makes it the cache's: after a power loss, every box of this image
    // would boot whatever of it had reached the disk (mke2fs and debugfs do not sync).
    if (built) built = sync_file(temp);
    if (!built) {
        ::unlink(temp.c_str());
        return fail(built.error().with_context(fmt::format("building the ext4 disk of image {}", image.reference)));
    }
    if (::rename(temp.c_str(), target.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, "renaming into " + target.string(), saved);
    }
    BOXLITE_TRY_VOID(sync_file(disks));  // the rename itself
    return std::pair{target, true};
}

BoxliteResult<fs::path> ImageStore::rootfs_directory(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_rootfs(image));
    return built.first;
}

BoxliteResult<fs::path> ImageStore::disk_image(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_disk(image));
    return built.first;
}

BoxliteResult<std::pair<fs::path, bool>> directory_disk(const fs::path& tree, const fs::path& disk) {
    struct stat st {};
    if (::lstat(disk.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{disk, false};
    const auto temp = fs::path(disk.string() + fmt::format(".tmp-{}", random_suffix()));
    if (auto built = make_ext4(tree, temp); !built) {
        ::unlink(temp.c_str());
        return fail(built.error().with_context(
            fmt::format("building an ext4 disk from the rootfs directory {}", tree.string())));
    }
    if (::rename(temp.c_str(), disk.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, "renaming into " + disk.string(), saved);
    }
    return std::pair{disk, true};
}

}  // namespace boxlite::image
